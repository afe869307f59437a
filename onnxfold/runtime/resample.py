"""How far a continuous fidelity (r2, cosine, relerr) measured on n samples can be trusted on new ones.

A search that keeps the largest of many candidates whose fidelity on n samples reaches the target
picks, among near ties, the one those n samples flatter most; and a mean over few samples rests on
the few with large errors. On OpenNSFW (tf2onnx, 48 images) a search to r2 0.95 kept a candidate
at 0.960 whose r2 on 48 new images was 0.863.

The bootstrap asks how the fidelity varies with the draw of samples: resample the n samples with
replacement (multinomial counts w_s, Σ w_s = n), recompute the metric, repeat R times. Each metric
is a function of per-sample sums, so a resample only reweighs them:

* ``r2``: per channel j, E_j = Σ_s w_s e_sj (e: squared error), S1_j = Σ_s w_s Σa, S2_j = Σ_s w_s Σa²,
  N_j = Σ_s w_s n_sj; r2_j = clip(1 − E_j / (S2_j − S1_j² / N_j), 0, 1); their mean (each channel
  weighted by the share of its elements drawn, so a channel axis that is the sample axis, as in a
  time-major output, averages over the drawn samples); rank 3: the smaller over axes 1 and 2, as
  :func:`~onnxfold.runtime.fidelity.fidelity_value` takes it;
* ``cosine``: Σ w ab / sqrt(Σ w a² · Σ w b²); ``relerr``: 1 − sqrt(Σ w (a − b)² / Σ w a²);
* ``mask``: Σ w |A ∩ B| / Σ w |A ∪ B| (:mod:`onnxfold.runtime.probability_maps`);
* ``boxes``: 2 Σ w matched / Σ w boxes (:mod:`onnxfold.runtime.detections`).

:func:`low_value` is the :data:`LOW_QUANTILE` quantile of the R values: a one-sided 80% bound. On
that OpenNSFW candidate it is 0.877 (the median 0.957); a candidate meets a target only if this
bound does too (:meth:`~onnxfold.runtime.fidelity.OutputFidelity.meets`). Counts (top1, sequence)
have their own correction, the rule of succession.
"""

from __future__ import annotations

import numpy as np

from onnxfold.runtime.padding import broadcast_keep, denormals_as_zeros, without_holes
from onnxfold.runtime.probability_maps import THRESHOLD, threshold
from onnxfold.runtime.r2 import TEMPLATE_SAMPLES, TEMPLATE_SHARE, channel_axes, flat_channels

#: Resamples drawn (fixed seed: the same outputs give the same bound).
RESAMPLES = 1000
#: The quantile of the resampled fidelities taken as its lower value (a one-sided 80% bound).
LOW_QUANTILE = 0.2
#: Fewer samples than this are not resampled (two samples say nothing about their spread).
MIN_SAMPLES = 8
METRICS = ("r2", "cosine", "relerr", "mask")


def _samples_first(x: np.ndarray, samples: int) -> tuple[np.ndarray, str] | None:
    """``x`` with its samples on a leading axis (a view), and their layout
    (:func:`~onnxfold.runtime.sequences.sample_axis`); None when no axis holds them."""
    from onnxfold.runtime.sequences import sample_axis

    where = sample_axis(x.shape, samples)
    if where == "leading":
        return x, where
    if where == "second":
        return np.moveaxis(x, 1, 0), where
    if where == "blocks":
        return x.reshape(samples, x.shape[0] // samples, *x.shape[1:]), where
    return None


#: the per-sample sums each metric needs (:func:`_per_sample`)
NEEDS = {
    "r2": ("s1", "s2", "err"),
    "cosine": ("s2", "bb", "ab"),
    "relerr": ("s2", "err"),
    "mask": ("inter", "union"),
}
PRODUCTS = {
    "s1": lambda a, b: a,
    "s2": lambda a, b: a * a,
    "err": lambda a, b: (a - b) ** 2,
    "bb": lambda a, b: b * b,
    "ab": lambda a, b: a * b,
    "inter": lambda a, b: (a > THRESHOLD) & (b > THRESHOLD),
    "union": lambda a, b: (a > THRESHOLD) | (b > THRESHOLD),
}


def _per_sample(
    a: np.ndarray,
    b: np.ndarray,
    samples: int,
    axis: int | None,
    need: tuple[str, ...],
    element: np.ndarray | None = None,
) -> dict[str, np.ndarray] | None:
    """Per sample s and channel j (on the output's ``axis``; None: one channel): the sums ``need`` of
    :data:`PRODUCTS` (Σa, Σa², Σ(a − b)², Σb², Σab) and the element count, each [samples, channels],
    in float64 one sample at a time; ``element``: each element's weight in them (None: 1)."""
    found = _samples_first(a, samples)
    if found is None:
        return None
    a_s, where = found
    b_s = _samples_first(b, samples)[0]
    w_s = None if element is None else _samples_first(element, samples)[0]
    diagonal = where == "second" and axis == 1  # the channels are the samples themselves
    if axis is None or diagonal:
        channels, keep = (samples if diagonal else 1), None
    else:
        keep = axis + (1 if where == "blocks" else 0) - 1  # the channel axis within one sample's slice
        channels = a.shape[axis]
    # r2's template (:func:`~onnxfold.runtime.r2.template_spread`): each sample's Σ (a − m_p)² too
    template = (
        np.mean(a_s, axis=0, dtype=np.float64)
        if "s1" in need
        and element is None
        and where == "leading"
        and keep is not None
        and samples >= TEMPLATE_SAMPLES
        and a_s[0].size >= channels * max(channels, 2)  # as many positions as channels: r2_on's rule
        else None
    )
    out = {
        k: np.zeros((samples, channels))
        for k in (*need, "count", *(("around",) if template is not None else ()))
    }
    for i in range(samples):
        ai, bi = np.asarray(a_s[i], dtype=np.float64), np.asarray(b_s[i], dtype=np.float64)
        over = tuple(d for d in range(ai.ndim) if d != keep)
        col = i if diagonal else slice(None)
        wi = None if w_s is None else np.asarray(w_s[i], dtype=np.float64)
        for name in need:
            value = PRODUCTS[name](ai, bi) if wi is None else PRODUCTS[name](ai, bi) * wi
            out[name][i, col] = value.sum(axis=over) if over else value
        if template is not None:
            out["around"][i] = ((ai - template) ** 2).sum(axis=over)
        if wi is None:
            out["count"][i, col] = ai.size / (1 if diagonal or keep is None else channels)
        else:
            out["count"][i, col] = wi.sum(axis=over) if over else wi
    return out


def _r2_draws(sums: dict[str, np.ndarray], weights: np.ndarray) -> np.ndarray:
    """r2 under each row of ``weights`` [R, n] from :func:`_per_sample`'s sums (module docstring)."""
    s1, s2, err, count = (weights @ sums[k] for k in ("s1", "s2", "err", "count"))  # [R, channels]
    spread = s2 - s1 * s1 / np.where(count > 0, count, 1.0)
    if "around" in sums:  # where the template holds the spread over every sample, around it (r2's rule)
        whole = {k: sums[k].sum(axis=0) for k in ("s1", "s2", "count", "around")}
        pooled = whole["s2"] - whole["s1"] ** 2 / np.maximum(whole["count"], 1.0)
        spread = np.where(
            whole["around"] <= (1.0 - TEMPLATE_SHARE) * pooled, weights @ sums["around"], spread
        )
    tiny = 1e-12 * np.maximum(s2, 1e-300)  # a constant channel: rounding, not spread
    fitted = np.clip(1.0 - err / np.where(spread > tiny, spread, 1.0), 0.0, 1.0)
    relative = np.where(err <= tiny, 0.0, np.sqrt(err / np.maximum(s2, 1e-300)))  # as r2's constant channel
    value = np.where(spread > tiny, fitted, np.clip(1.0 - relative, 0.0, 1.0))
    share = count / np.maximum(sums["count"].sum(axis=0), 1.0)  # each channel's drawn share of its elements
    return (value * share).sum(axis=1) / np.maximum(share.sum(axis=1), 1e-300)


def resampled(
    metric: str,
    ref: np.ndarray,
    cand: np.ndarray,
    samples: int,
    weights: np.ndarray,
    element: np.ndarray | None = None,
    positions: bool = False,
) -> np.ndarray | None:
    """``metric`` of ``cand`` against ``ref`` under each resample (rows of ``weights``, [R, samples]);
    None when the metric is not resampled or no axis holds the samples. ``element``: each element's
    weight in the sums (0 at padding), or None; ``positions``: axis 1 holds token positions, as
    :func:`~onnxfold.runtime.r2.r2` reads them."""
    a, b = np.asarray(ref), np.asarray(cand)
    if metric not in METRICS or a.shape != b.shape or a.size == 0:
        return None
    if metric == "r2":
        one = flat_channels(a.shape)  # as r2 reads it: [N, 1, 1, D] is [N, D]
        if one is not None:
            a, b = a.reshape(one), b.reshape(one)
            element = None if element is None else np.reshape(element, one)
        axes = channel_axes(a.shape, positions)
        draws = None
        for axis in axes:
            sums = _per_sample(a, b, samples, axis, NEEDS["r2"], element)
            if sums is None:
                return None
            got = _r2_draws(sums, weights)
            draws = got if draws is None else np.minimum(draws, got)
        return draws
    sums = _per_sample(a, b, samples, None, NEEDS[metric], element)
    if sums is None:
        return None
    got = {k: weights @ sums[k][:, 0] for k in NEEDS[metric]}
    if metric == "mask":  # pooled intersection over pooled union
        union = got["union"]
        return np.where(union > 0, got["inter"] / np.where(union > 0, union, 1.0), 1.0)
    aa = got["s2"]
    if metric == "cosine":
        den = np.sqrt(aa * got["bb"])
        both_zero = ((aa == 0) & (got["bb"] == 0)) * 1.0  # one zero, the other not: 0
        return np.where(den > 0, np.clip(got["ab"] / np.where(den > 0, den, 1.0), 0.0, 1.0), both_zero)
    err = got["err"]
    return np.where(aa > 0, np.maximum(0.0, 1.0 - np.sqrt(err / np.where(aa > 0, aa, 1.0))), (err == 0) * 1.0)


def _class_iou_draws(ref: np.ndarray, cand: np.ndarray, axis: int, weights: np.ndarray) -> np.ndarray:
    """The mean over classes of each class's pooled intersection over union of the argmaxes on
    ``axis`` (:func:`~onnxfold.runtime.probability_maps.class_iou`) under each resample ``weights``
    [R, n] of the samples on axis 0. MTCNN's face map (a Softmax over 2 classes) read mIoU 0.7019 beside
    a "lower value" of 0.9994 that thresholded both classes' probabilities at 0.5 instead."""
    a, b = np.asarray(ref).argmax(axis=axis), np.asarray(cand).argmax(axis=axis)
    flat = (len(a), -1)
    draws = []
    for c in np.union1d(np.unique(a), np.unique(b)):
        x, y = (a == c).reshape(flat), (b == c).reshape(flat)
        inter, union = weights @ (x & y).sum(axis=1), weights @ (x | y).sum(axis=1)
        draws.append(np.where(union > 0, inter / np.where(union > 0, union, 1.0), 1.0))
    return np.mean(draws, axis=0)


def draw_weights(samples: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """[resamples, samples] multinomial counts of a bootstrap (each row sums to ``samples``)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(samples, np.full(samples, 1.0 / samples), size=resamples).astype(np.float64)


def low_value(
    metric: str, ref: np.ndarray, cand: np.ndarray, samples: int | None, keep: np.ndarray | None = None
) -> float | None:
    """The :data:`LOW_QUANTILE` quantile of ``metric`` over bootstrap resamples of the samples; None
    for counts, for fewer than :data:`MIN_SAMPLES` samples, or when no axis holds them. ``keep``: the
    token positions [N, L] (:mod:`onnxfold.runtime.padding`): padded elements weigh 0 in every sum."""
    if metric == "boxes" and samples and samples >= MIN_SAMPLES and np.shape(ref)[0] == samples:
        from onnxfold.runtime.detections import box_counts

        matched, total = box_counts(ref, cand)
        weights = draw_weights(samples)
        drawn = weights @ total
        draws = np.where(drawn > 0, 2.0 * (weights @ matched) / np.maximum(drawn, 1e-12), 1.0)
        return float(np.quantile(draws, LOW_QUANTILE))
    from onnxfold.runtime.bins import BIN_READINGS

    if metric in BIN_READINGS and np.ndim(ref) and np.shape(ref)[-1] > 1 and np.shape(ref) == np.shape(cand):
        read = BIN_READINGS[metric]
        ref, cand, metric = read(ref), read(cand), "r2"  # as fidelity_value reads it
    if not samples or samples < MIN_SAMPLES or metric not in METRICS:
        return None
    ref, cand = np.asarray(ref), np.asarray(cand)
    if ref.shape == cand.shape:  # as fidelity_value reads them
        ref, cand = denormals_as_zeros(ref, cand)
    if metric == "mask" and np.shape(ref) == np.shape(cand) and np.shape(ref)[0] == samples:
        from onnxfold.runtime.probability_maps import class_axis

        axis = class_axis(ref)
        if axis is not None:  # a class map's mIoU, as fidelity_value reads it (not a threshold's IoU)
            return float(np.quantile(_class_iou_draws(ref, cand, axis, draw_weights(samples)), LOW_QUANTILE))
    if metric == "mask":  # logits decide at 0: moved so that THRESHOLD stands where they decide
        shift = THRESHOLD - threshold(ref if keep is None else np.asarray(ref)[keep])
        ref, cand = np.asarray(ref, dtype=np.float64) + shift, np.asarray(cand, dtype=np.float64) + shift
    held = None if keep is None else broadcast_keep(keep, np.shape(ref))
    if metric != "mask" and np.asarray(ref).dtype.kind == "f":  # NaN in the reference: no value there
        ref, cand, held, failed = without_holes(np.asarray(ref), np.asarray(cand), held)
        if failed:
            return 0.0
        if held is not None and not np.asarray(held).any():  # NaN everywhere in both (a NaN weight)
            return None  # nothing to bound: fidelity_value reads 1 there
    weight = None if held is None else np.asarray(held, dtype=np.float64)
    draws = resampled(metric, ref, cand, samples, draw_weights(samples), weight, keep is not None)
    return None if draws is None else float(np.quantile(draws, LOW_QUANTILE))


__all__ = ["LOW_QUANTILE", "RESAMPLES", "draw_weights", "low_value", "resampled"]
