"""The default target of a search on given samples whose outputs are all values, not decisions.

A decision (an argmax, a threshold, a label per position) has slack: an output may move a little and
decide alike, so a search on ``--inputs`` asks 0.95 of it (:data:`~onnxfold.passes.search.DEFAULT_MIN_FIDELITY`).
A value read by r2 (an image, a dense map, a waveform or another signal, a few numbers per sample, an
output shaped like its input) is the answer itself: r2 0.95 leaves 5% of its variance, an error of
√0.05 ≈ 22% of its spread, in every answer. On six such models a default search at 0.95 lost the task
that 0.99 kept: waifu2x's CUNet 0.94 dB of PSNR (0.99: 98% of images within 0.5 dB); a Conv-TasNet
denoiser 36% of its clips by more than 1 dB; WaveDenoiser's seismograms [N, 3, 5700] 15% of the
denoising gain, 31 of 96 records more than 1 dB off (0.99: 5%, 12 records); a speech-onset
regressor's heads at r2 0.9736 moved 46% of its onsets by more than 20 ms (0.99: 1%); a capillary
segmenter's flows and distance map (IoU 0.940, where 0.99 on the data-free proxy kept 0.978); an MLP
regressor's error rose where its r2 stayed above 0.95. An embedding or a feature sequence (a wide
last axis read by r2) feeds a comparison or a decision later, and keeps 0.95."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from onnxfold.runtime.r2 import channels_last_map, image_shape, signal_shape, wave_shape

#: the default target of a search on given samples where every judged output is a value (:func:`value_outputs`)
REGRESSION_MIN_FIDELITY = 0.99
#: at most this many values per sample (or per position, along a last axis) read as a regression's answer
FEW_VALUES = 16


def value_shape(shape: Sequence[int]) -> bool:
    """Whether an output of ``shape`` (samples first) read by r2 is a regression's answer: at most
    :data:`FEW_VALUES` values per sample, a few per position (``[N, T, k]``, k ≤ :data:`FEW_VALUES`),
    an image, a waveform, or a map ``[N, C, H, W]`` with H and W at least 8 (or ``[N, H, W, C]``:
    :func:`~onnxfold.runtime.r2.channels_last_map`). A wide last axis (an
    embedding ``[N, 384]``, a token's features ``[N, L, 768]``) is not."""
    shape = tuple(int(d) for d in shape)
    if int(np.prod(shape[1:], dtype=np.int64)) <= FEW_VALUES:
        return True
    if image_shape(shape) or wave_shape(shape) or signal_shape(shape):
        return True
    if len(shape) == 4 and (min(shape[2:]) >= 8 or channels_last_map(shape)):
        return True
    return len(shape) == 3 and shape[-1] <= FEW_VALUES


def value_outputs(
    metrics: Mapping[str, str],
    reference: Mapping[str, np.ndarray],
    states: Sequence[str] = (),
    feed: Mapping[str, np.ndarray] | None = None,
) -> list[str]:
    """The judged outputs where every one (recurrent ``states`` aside) is read by r2 alone and is a
    value (:func:`value_shape`, or shaped as a float input of ``feed`` is: a denoiser's or an
    enhancer's answer, whatever its rank); [] where any is read by a decision or is an embedding."""
    judged = [n for n in metrics if n not in states and metrics[n] != "none"]
    if not judged or any(metrics[n] != "r2" or n not in reference for n in judged):
        return []
    given = {np.shape(x) for x in (feed or {}).values() if np.asarray(x).dtype.kind == "f"}
    if not all(value_shape(np.shape(reference[n])) or np.shape(reference[n]) in given for n in judged):
        return []
    return judged


def default_note(values: Sequence[str], target: float) -> str:
    """Why a default search on given samples asks ``target`` of ``values``."""
    shown = ", ".join(values[:3]) + (f" and {len(values) - 3} more" if len(values) > 3 else "")
    return (
        f"the default target is {target:g} here: every output ({shown}) is a value read by r2 (an image, "
        "a map, a signal or a few numbers), where the error left is the answer's own; 0.95 suits decisions"
    )
