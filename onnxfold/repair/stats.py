"""Repair of the statistics that folding destroys (docs/method.md §2): pure numpy, no graph knowledge.

Folding replaces the pre-activations z_i of a cluster c (N_c members) by their mean. If the z_i
have unit variance and mean pairwise correlation E[c], the mean has variance
(1 + (N_c − 1)·E[c]) / N_c, below 1 unless E[c] = 1: the *variance collapse* (§2.1). The repairs:

Fold-AR, BN kept (§2.2).  Each Conv→BN pair of a folded cluster is first rewritten in normalised
  form, W' = W/σ, b' = b/σ, BN μ' = μ/σ, var' = 1 − eps (so the BN divides by exactly 1), with
  σ = sqrt(var + eps): the BN input minus μ' is (W·x + b − μ)/σ, the paper's fused channel with
  bias (b − μ)/σ, zero-mean and unit-variance on the training data. Keeping the shift −μ/σ in the
  BN's running mean instead of a conv bias is the same function (BN subtracts μ' before γ, and
  both are averaged alike by the merge), so a producer without bias never needs one.
  After the naive merge the BN γ of cluster c is multiplied by

      s_c = sqrt(N_c / (1 + (N_c − 1)·E[c])),   E[c] = mean over i ≠ j ∈ c of cos(w'_i, w'_j),

  the data-free estimate of E[c] for isotropic inputs (Σ_x ∝ I), clipped to [0, 1] so that
  s_c ∈ [1, sqrt(N_c)]. Singletons (N_c = 1) get s_c = 1 and are not rewritten at all.

Fold-AR, no BN (§2.5).  Under the same isotropy Var(z_i) ∝ ‖w_i‖², so the merged row w̄_c is
  rescaled to the members' mean norm: w_c ← w̄_c · mean_i ‖w_i‖ / ‖w̄_c‖ (bias kept as the
  average). The factor is ≥ 1 by the triangle inequality and is clipped to [1, sqrt(N_c)], the
  range of s_c; with equal norms it equals s_c above (E[c] the mean cosine of the rows).

Fold-R (§2.4, REPAIR of Jordan et al.).  Goal statistics of a folded channel are the mean over its
  members of the ORIGINAL model's statistics on calibration data; the folded channel, measured
  on the same data, is mapped to them by a per-channel affine a·z + b. Without BN the affine is
  folded into the producer (rows × a, bias ← a·bias + b). With BN the goal is expressed in the
  BN's normalised units, A_i = s_i/sqrt(var_i + eps), B_i = (m_i − μ_i)/sqrt(var_i + eps), and the
  BN statistics are re-estimated so that the normalised folded channel has mean B and std A:

      var' = max(ŝ²/A² − eps, 0),   μ' = m̂ − B·sqrt(var' + eps).

  With calibration data from the training distribution A ≈ 1 and B ≈ 0, i.e. μ' = m̂ and
  var' = ŝ² − eps ≈ ŝ²: the plain BN re-estimation of the paper. Exact duplicates get back their
  own statistics in every case.
"""

from __future__ import annotations

import numpy as np


def cluster_sizes(labels: np.ndarray, k: int) -> np.ndarray:
    """N_c for c < k (a label of −1, a dropped channel, belongs to no cluster)."""
    labels = np.asarray(labels)
    return np.bincount(labels[labels >= 0], minlength=k)[:k]


def multi_member(labels: np.ndarray, k: int) -> np.ndarray:
    """Boolean (n,): channel i lies in a cluster with at least two members."""
    labels = np.asarray(labels)
    sizes = cluster_sizes(labels, k)
    return (labels >= 0) & (sizes[np.maximum(labels, 0)] > 1)


def mean_cosine(rows: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """E[c] = mean over ordered pairs i ≠ j in cluster c of cos(r_i, r_j); 1 for singletons.

    With unit rows u_i and S_c = Σ_{i∈c} u_i:  Σ_{i≠j} cos = ‖S_c‖² − N_c. A zero row counts as
    uncorrelated with every other row."""
    rows = np.asarray(rows, dtype=np.float64).reshape(len(labels), -1)
    labels = np.asarray(labels)
    norms = np.linalg.norm(rows, axis=1)
    unit = np.divide(rows, norms[:, None], out=np.zeros_like(rows), where=norms[:, None] > 0)
    keep = labels >= 0
    sums = np.zeros((k, rows.shape[1]))
    np.add.at(sums, labels[keep], unit[keep])
    nonzero = np.bincount(labels[keep], weights=(norms[keep] > 0).astype(float), minlength=k)[:k]
    sizes = cluster_sizes(labels, k).astype(np.float64)
    pairs = sizes * (sizes - 1)
    out = np.ones(k)
    multi = pairs > 0
    out[multi] = (np.einsum("kd,kd->k", sums, sums)[multi] - nonzero[multi]) / pairs[multi]
    return out


def ar_factors(correlation: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """s_c = sqrt(N_c / (1 + (N_c − 1)·clip(E[c], 0, 1))); exactly 1 where N_c ≤ 1."""
    sizes = np.asarray(sizes, dtype=np.float64)
    e = np.clip(np.asarray(correlation, dtype=np.float64), 0.0, 1.0)
    out = np.ones_like(sizes)
    multi = sizes > 1
    out[multi] = np.sqrt(sizes[multi] / (1.0 + (sizes[multi] - 1.0) * e[multi]))
    return out


def norm_factors(rows: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """f_c = mean_{i∈c} ‖r_i‖ / ‖mean_{i∈c} r_i‖, clipped to [1, sqrt(N_c)]; exactly 1 for singletons."""
    rows = np.asarray(rows, dtype=np.float64).reshape(len(labels), -1)
    labels = np.asarray(labels)
    keep = labels >= 0
    sizes = cluster_sizes(labels, k).astype(np.float64)
    means = np.zeros((k, rows.shape[1]))
    np.add.at(means, labels[keep], rows[keep])
    means /= np.maximum(sizes, 1.0)[:, None]
    mean_norm = np.bincount(labels[keep], weights=np.linalg.norm(rows[keep], axis=1), minlength=k)[:k]
    mean_norm /= np.maximum(sizes, 1.0)
    return _clipped_factors(mean_norm, np.linalg.norm(means, axis=1), sizes)


#: channels per block when row norms are taken across a tensor's layout (:func:`channel_norms`)
NORM_BLOCK = 256


def channel_norms(values: np.ndarray, axis: int) -> np.ndarray:
    """‖r_c‖ of every slice c along ``axis``, in float64: the same numbers as
    ``np.linalg.norm(rows(values, axis), axis=1)`` (each row made contiguous, then reduced), but taken
    :data:`NORM_BLOCK` channels at a time, so a tensor whose channels are its last axis is never
    transposed whole."""
    values = np.asarray(values)
    n = values.shape[axis]
    out = np.empty(n)
    for lo in range(0, n, NORM_BLOCK):
        block = np.take(values, np.arange(lo, min(lo + NORM_BLOCK, n)), axis=axis)
        block = np.ascontiguousarray(np.moveaxis(block.astype(np.float64), axis, 0))
        out[lo : lo + len(block)] = np.linalg.norm(block.reshape(len(block), -1), axis=1)
    return out


def norm_factors_along(values: np.ndarray, axis: int, labels: np.ndarray, k: int) -> np.ndarray:
    """:func:`norm_factors` of the channels along ``axis`` of ``values`` (bit for bit), without the
    float64 (n, d) copy of a transposed tensor: member norms by :func:`channel_norms`, cluster means by
    :func:`~onnxfold.folding.rewrite.merge_along` in the tensor's own layout."""
    from onnxfold.folding.rewrite import merge_along

    labels = np.asarray(labels)
    keep = labels >= 0
    sizes = cluster_sizes(labels, k).astype(np.float64)
    if not keep.any() or (sizes == 0).any():  # an empty cluster: the general form
        from onnxfold.analysis.group_producers import rows

        return norm_factors(rows(values, axis), labels, k)
    means = merge_along(np.asarray(values), axis, 0, 1, labels, k, "average")
    mean_norm = np.bincount(labels[keep], weights=channel_norms(values, axis)[keep], minlength=k)[:k]
    mean_norm /= sizes
    return _clipped_factors(mean_norm, channel_norms(means, axis), sizes)


def _clipped_factors(mean_norm: np.ndarray, merged: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """f_c = mean_norm_c / merged_c clipped to [1, sqrt(N_c)]; 1 for singletons and all-zero clusters."""
    out = np.ones(len(sizes))
    multi = sizes > 1
    cap = np.sqrt(sizes)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(merged > 0, mean_norm / np.where(merged > 0, merged, 1.0), cap)
    out[multi] = np.clip(ratio[multi], 1.0, cap[multi])
    out[multi & (mean_norm == 0)] = 1.0
    return out


def normalized_pair(
    weight: np.ndarray,
    axis: int,
    bias: np.ndarray | None,
    mean: np.ndarray,
    var: np.ndarray,
    eps: float,
    mask: np.ndarray,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """Normalised form of a producer→BN pair on the channels where ``mask`` is true (float64):
    W' = W/σ, b' = b/σ (None without bias), μ' = μ/σ, var' = 1 − eps; other channels keep their
    values exactly. The BN then computes γ·(W·x + b − μ)/σ + β, as before."""
    mask = np.asarray(mask, dtype=bool)
    mean = np.asarray(mean, dtype=np.float64)
    var = np.asarray(var, dtype=np.float64)
    inv = np.where(mask, 1.0 / np.sqrt(var + eps), 1.0)
    shape = [1] * np.ndim(weight)
    shape[axis] = -1
    w = np.asarray(weight, dtype=np.float64) * inv.reshape(shape)
    b = None if bias is None else np.asarray(bias, dtype=np.float64).reshape(-1) * inv
    return w, b, mean * inv, np.where(mask, 1.0 - eps, var)


def affine_to_goal(
    mean_hat: np.ndarray,
    std_hat: np.ndarray,
    goal_mean: np.ndarray,
    goal_std: np.ndarray,
    tiny: float = 1e-12,
) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) with a·z + b of mean goal_mean and std goal_std when z has (mean_hat, std_hat);
    a = 1 for a (numerically) constant channel, whose mean is still moved to the goal."""
    std_hat = np.asarray(std_hat, dtype=np.float64)
    a = np.where(std_hat > tiny, np.asarray(goal_std, dtype=np.float64) / np.maximum(std_hat, tiny), 1.0)
    return a, np.asarray(goal_mean, dtype=np.float64) - a * np.asarray(mean_hat, dtype=np.float64)


def bn_normalized_stats(
    mean_data: np.ndarray, var_data: np.ndarray, bn_mean: np.ndarray, bn_var: np.ndarray, eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """(A, B): std and mean of the BN-normalised channel (z − μ)/sqrt(var + eps) when z has the data
    statistics (mean_data, var_data)."""
    sigma = np.sqrt(np.asarray(bn_var, dtype=np.float64) + eps)
    return (
        np.sqrt(np.maximum(np.asarray(var_data, dtype=np.float64), 0.0)) / sigma,
        (np.asarray(mean_data, dtype=np.float64) - bn_mean) / sigma,
    )


def bn_stats_for_goal(
    mean_hat: np.ndarray, var_hat: np.ndarray, goal_std: np.ndarray, goal_mean: np.ndarray, eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """BN (μ', var') that map an input with data statistics (m̂, ŝ²) to a normalised channel of std
    ``goal_std`` (A) and mean ``goal_mean`` (B): var' = max(ŝ²/A² − eps, 0), μ' = m̂ − B·sqrt(var' + eps)."""
    var_hat = np.maximum(np.asarray(var_hat, dtype=np.float64), 0.0)
    a = np.asarray(goal_std, dtype=np.float64)
    var_new = np.where(a > 0, var_hat / np.where(a > 0, a, 1.0) ** 2 - eps, var_hat)
    var_new = np.maximum(var_new, 0.0)
    return np.asarray(mean_hat, dtype=np.float64) - goal_mean * np.sqrt(var_new + eps), var_new
