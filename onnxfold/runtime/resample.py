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
* ``cosine``: Σ w ab / sqrt(Σ w a² · Σ w b²); ``relerr``: 1 − sqrt(Σ w (a − b)² / Σ w a²).

:func:`low_value` is the :data:`LOW_QUANTILE` quantile of the R values: a one-sided 80% bound. On
that OpenNSFW candidate it is 0.877 (the median 0.957); a candidate meets a target only if this
bound does too (:meth:`~onnxfold.runtime.fidelity.OutputFidelity.meets`). Counts (top1, sequence)
have their own correction, the rule of succession.
"""

from __future__ import annotations

import numpy as np

#: Resamples drawn (fixed seed: the same outputs give the same bound).
RESAMPLES = 1000
#: The quantile of the resampled fidelities taken as its lower value (a one-sided 80% bound).
LOW_QUANTILE = 0.2
#: Fewer samples than this are not resampled (two samples say nothing about their spread).
MIN_SAMPLES = 8
METRICS = ("r2", "cosine", "relerr")


def sample_ids(shape: tuple[int, ...], samples: int) -> np.ndarray | None:
    """The sample index of every element of an output of ``shape`` over ``samples`` samples (the
    layouts of :func:`~onnxfold.runtime.fidelity.sample_axis`); None when no axis holds them."""
    from onnxfold.runtime.fidelity import sample_axis

    where = sample_axis(shape, samples)
    if where is None:
        return None
    if where == "second":
        ids = np.arange(samples).reshape(1, samples, *([1] * (len(shape) - 2)))
    else:  # leading, or blocks of the leading axis
        ids = (np.arange(shape[0]) * samples // shape[0]).reshape(shape[0], *([1] * (len(shape) - 1)))
    return np.broadcast_to(ids, shape)


def _sums(values: np.ndarray, ids: np.ndarray, groups: int) -> np.ndarray:
    """Σ of ``values`` per id in 0…groups−1 (float64)."""
    return np.bincount(ids.ravel(), weights=values.ravel(), minlength=groups)


def _r2_draws(
    a: np.ndarray, b: np.ndarray, sid: np.ndarray, n: int, weights: np.ndarray, axis: int
) -> np.ndarray:
    """r2 with channels on ``axis`` under each row of ``weights`` [R, n] (module docstring)."""
    channels = a.shape[axis]
    cid = np.broadcast_to(
        np.arange(channels).reshape([-1 if i == axis else 1 for i in range(a.ndim)]), a.shape
    )
    ids = sid * channels + cid
    size = n * channels
    per = [_sums(x, ids, size).reshape(n, channels) for x in (a, a * a, (a - b) ** 2, np.ones_like(a))]
    s1, s2, err, count = (weights @ p for p in per)  # [R, channels]
    safe = np.where(count > 0, count, 1.0)
    spread = s2 - s1 * s1 / safe
    tiny = 1e-12 * np.maximum(s2, 1e-300)  # a constant channel: rounding, not spread
    good = np.where(spread > tiny, np.clip(1.0 - err / np.where(spread > tiny, spread, 1.0), 0.0, 1.0), 0.0)
    value = np.where(spread > tiny, good, (err <= tiny).astype(np.float64))
    share = count / np.maximum(per[3].sum(axis=0), 1.0)  # each channel's drawn share of its elements
    return (value * share).sum(axis=1) / np.maximum(share.sum(axis=1), 1e-300)


def resampled(
    metric: str, ref: np.ndarray, cand: np.ndarray, samples: int, weights: np.ndarray
) -> np.ndarray | None:
    """``metric`` of ``cand`` against ``ref`` under each resample (rows of ``weights``, [R, samples]);
    None when the metric is not resampled or no axis holds the samples."""
    a = np.asarray(ref, dtype=np.float64)
    b = np.asarray(cand, dtype=np.float64)
    if metric not in METRICS or a.shape != b.shape or a.size == 0:
        return None
    sid = sample_ids(a.shape, samples)
    if sid is None:
        return None
    if metric == "r2":
        if a.ndim < 2:
            return _r2_draws(a.reshape(-1, 1), b.reshape(-1, 1), sid.reshape(-1, 1), samples, weights, 1)
        draws = _r2_draws(a, b, sid, samples, weights, 1)
        return np.minimum(draws, _r2_draws(a, b, sid, samples, weights, 2)) if a.ndim == 3 else draws
    aa, bb, ab = (weights @ _sums(x, sid, samples) for x in (a * a, b * b, a * b))
    if metric == "cosine":
        den = np.sqrt(aa * bb)
        return np.where(
            den > 0, np.clip(ab / np.where(den > 0, den, 1.0), 0.0, 1.0), (aa == bb).astype(float)
        )
    err = weights @ _sums((a - b) ** 2, sid, samples)
    return np.where(aa > 0, np.maximum(0.0, 1.0 - np.sqrt(err / np.where(aa > 0, aa, 1.0))), (err == 0) * 1.0)


def draw_weights(samples: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """[resamples, samples] multinomial counts of a bootstrap (each row sums to ``samples``)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(samples, np.full(samples, 1.0 / samples), size=resamples).astype(np.float64)


def low_value(metric: str, ref: np.ndarray, cand: np.ndarray, samples: int | None) -> float | None:
    """The :data:`LOW_QUANTILE` quantile of ``metric`` over bootstrap resamples of the samples; None
    for counts, for fewer than :data:`MIN_SAMPLES` samples, or when no axis holds them."""
    if not samples or samples < MIN_SAMPLES or metric not in METRICS:
        return None
    draws = resampled(metric, ref, cand, samples, draw_weights(samples))
    return None if draws is None else float(np.quantile(draws, LOW_QUANTILE))


__all__ = ["LOW_QUANTILE", "RESAMPLES", "draw_weights", "low_value", "resampled", "sample_ids"]
