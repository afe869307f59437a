"""Activation-aware channel selection and least-squares compensation of the consumers: pure numpy.

A group's channels reach each consumer m as an input x ∈ ℝⁿ (per sample and position) with
second moments measured on samples (:mod:`onnxfold.folding.moments`). The consumer computes
y = Mᵀx, M (n, d) its rows tied to the channels (every output and kernel tap). Removing the
channels outside a keep set K and reading the kept ones through a mix T (n × k),

    x̂ = T x_K + c,        the consumer's new columns Mᵀ T, its bias + Mᵀ c,

costs E‖Mᵀ(x − x̂)‖² = tr(Mᵀ R M), R the second moment of the residual x − x̂. Rows of T for kept
channels are the identity (a kept channel is read exactly as before), so only the removed rows are
solved, by ridge least squares on the kept ones (a consumer's optimal new columns Mᵀ T are the same
for every M, so one T per consumer input serves all its rows):

    T_D = C_DK (C_KK + λ I)⁻¹,   c = μ_D − T_D μ_K,   λ = α · mean(diag C_KK),

with C the covariance and μ the mean where the consumer has a bias to absorb c, else C the
uncentred second moment and c = 0. The keep set is chosen greedily for all consumers at once: each
step adds the channel j of largest Σ_m ‖(R_m M_m)_j‖² / (R_m)_jj, the drop of tr(Mᵀ R M) when j
joins K (R_m then loses its rank-one part along j: a pivoted Cholesky weighted by the consumer).

* :func:`wanda_keep`: the k channels of largest Σ_m ‖M_m,j‖² · E[x_j²] (Wanda's |W|·‖x‖ per channel):
  the error of removing each channel alone, no mixing, the activation-aware pruning baseline.
* :func:`greedy_keep` + :func:`ridge_mix`: the least-squares merge (``hybrid``); with exact
  duplicates the removed channel is explained by its twin.
* :func:`fold_error`: the same error for a cluster fold, x̂ = U·mean_cluster(x) (optimistic: a merged
  channel's activation is assumed to be its members' mean).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Ridge strength relative to the mean kept-channel variance.
RIDGE = 1e-3
#: A residual variance below this fraction of the largest channel variance counts as explained.
EXPLAINED = 1e-10
#: At most this many greedy steps: above, several channels join K per step.
MAX_STEPS = 256


@dataclass
class ConsumerStats:
    """One consumer input's statistics and the consumer rows it feeds.

    ``second`` (n, n): E[x xᵀ]; ``mean`` (n,): E[x]; ``rows`` (n, d): the consumer's entries tied to
    each channel; ``bias``: whether the consumer has a bias that can absorb a constant c."""

    second: np.ndarray
    mean: np.ndarray
    rows: np.ndarray
    bias: bool = False

    def moment(self) -> np.ndarray:
        """C: the covariance where a bias absorbs the mean, else the uncentred second moment."""
        if self.bias:
            return self.second - np.outer(self.mean, self.mean)
        return self.second


def wanda_keep(stats: list[ConsumerStats], k: int) -> np.ndarray:
    """Sorted indices of the k channels of largest Σ_m ‖M_m,j‖²·E[x_j²] (ties: the lower index)."""
    score = sum(np.einsum("nd,nd->n", s.rows, s.rows) * np.diag(s.second) for s in stats)
    order = np.argsort(-np.asarray(score), kind="stable")
    return np.sort(order[:k])


def greedy_keep(stats: list[ConsumerStats], k: int) -> np.ndarray:
    """Sorted indices of k channels chosen greedily to minimise Σ_m tr(M_mᵀ R_m M_m) (module docstring):
    the first k of :func:`greedy_order`."""
    return np.sort(greedy_order(stats, k))


def steps_of(k: int) -> int:
    """Channels one greedy step takes for a keep set of k: 1 up to :data:`MAX_STEPS`, then more."""
    return max(1, -(-int(k) // MAX_STEPS))


def greedy_order(stats: list[ConsumerStats], k: int, per_step: int | None = None) -> np.ndarray:
    """The first k channels in the order the greedy choice takes them, ``per_step`` a step (default
    :func:`steps_of` k). Its first j are the order's for j, at the same ``per_step``: a step's picks
    are its largest gains, so a shorter run's last step takes the first of them, and every earlier
    step is the same; one run at the longest width serves every shorter one.

    The channels a step picks leave R_m and R_m M_m by a blocked pivoted Cholesky
    (:func:`_condition_on`), updated in place; a chosen channel's row and column of R_m are zero from
    then on, so once a quarter of the channels held are chosen, the arrays keep only the others. On a
    3072-channel MLP group of a DistilBERT the rank-one updates over every channel took 52 s, most
    of a search's planning (new arrays each step: on this kind of machine, mostly page faults)."""
    n = len(stats[0].mean)
    k = max(0, min(int(k), n))
    residual = [np.array(s.moment(), dtype=np.float64, order="C") for s in stats]
    weighted = [np.ascontiguousarray(r @ s.rows) for r, s in zip(residual, stats, strict=True)]
    floor = [EXPLAINED * max(float(np.max(np.diag(r), initial=0.0)), 1e-300) for r in residual]
    chosen: list[int] = []
    held = np.arange(n)  # the channels R_m and R_m M_m are over
    free = np.ones(n, dtype=bool)  # of those, the ones not chosen
    per_step = per_step or steps_of(k)
    while len(chosen) < k:
        gain = np.zeros(len(held))
        for r, rm, f in zip(residual, weighted, floor, strict=True):
            d = np.diag(r)
            ok = d > f
            gain[ok] += np.einsum("nd,nd->n", rm, rm)[ok] / d[ok]
        gain[~free] = -np.inf
        take = min(per_step, k - len(chosen))
        picks = np.argsort(-gain, kind="stable")[:take]
        chosen.extend(held[picks].tolist())
        free[picks] = False
        for r, rm, f in zip(residual, weighted, floor, strict=True):
            _condition_on(r, rm, picks, f)
        if free.sum() < 0.75 * len(held) and len(chosen) < k:
            keep = np.flatnonzero(free)
            residual = [np.ascontiguousarray(r[np.ix_(keep, keep)]) for r in residual]
            weighted = [np.ascontiguousarray(rm[keep]) for rm in weighted]
            held, free = held[keep], np.ones(len(keep), dtype=bool)
    return np.asarray(chosen, dtype=np.int64)


def _condition_on(r: np.ndarray, rm: np.ndarray, picks: np.ndarray, floor: float) -> None:
    """In place: R and R M given the channels ``picks``, R −= U Uᵀ and R M −= U V, the columns
    u = R[:, j] / √R_jj and rows v = (R M)_j / √R_jj of the successive pivots j (a pick whose
    residual variance is at most ``floor`` is explained already and skipped). R is symmetric, so
    its transpose, the Fortran-ordered view BLAS updates in place, is R."""
    from scipy.linalg import blas

    panel = r[:, picks].copy()  # the pivots' columns, kept current as earlier pivots are taken
    rows = rm[picks].copy()
    us, vs = [], []
    for t, j in enumerate(picks.tolist()):
        pivot = panel[j, t]
        if pivot <= floor:
            continue
        u = panel[:, t] / np.sqrt(pivot)
        v = rows[t] / np.sqrt(pivot)
        panel -= np.outer(u, u[picks])
        rows -= np.outer(u[picks], v)
        us.append(u)
        vs.append(v)
    if not us:
        return
    u, v = np.stack(us, axis=1), np.stack(vs)
    if u.shape[1] == 1 or r.dtype != np.float64:
        r -= u @ u.T
        rm -= u @ v
        return
    if not np.shares_memory(blas.dgemm(-1.0, u, u, beta=1.0, c=r.T, trans_b=True, overwrite_c=True), r):
        r -= u @ u.T  # BLAS wrote a copy (not reached with the layouts above)
    out = blas.dgemm(-1.0, v, u, beta=1.0, c=rm.T, trans_a=True, trans_b=True, overwrite_c=True)
    if not np.shares_memory(out, rm):
        rm -= u @ v


def ridge_mix(stat: ConsumerStats, keep: np.ndarray, alpha: float = RIDGE) -> tuple[np.ndarray, np.ndarray]:
    """(T (n, k), c (n,)): kept rows the identity, removed rows by ridge least squares on the kept
    channels; c = 0 unless the consumer has a bias."""
    n = len(stat.mean)
    keep = np.asarray(keep, dtype=np.int64)
    drop = np.setdiff1d(np.arange(n), keep)
    cov = stat.moment()
    t = np.zeros((n, len(keep)))
    t[keep, np.arange(len(keep))] = 1.0
    c = np.zeros(n)
    if len(drop) and len(keep):
        ckk = cov[np.ix_(keep, keep)]
        lam = alpha * max(float(np.mean(np.diag(ckk))), 1e-300)
        t[drop] = np.linalg.solve(ckk + lam * np.eye(len(keep)), cov[np.ix_(keep, drop)]).T
    if stat.bias and len(drop):
        c[drop] = stat.mean[drop] - t[drop] @ stat.mean[keep]
    return t, c


def merge_mix(stat: ConsumerStats, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, c) of Neuron Merging: each removed channel read as z·x_j of the one kept channel j that
    explains it best (max C_dj²/C_jj, z = C_dj/C_jj); c as in :func:`ridge_mix`."""
    n = len(stat.mean)
    keep = np.asarray(keep, dtype=np.int64)
    cov = stat.moment()
    t = np.zeros((n, len(keep)))
    t[keep, np.arange(len(keep))] = 1.0
    diag = np.maximum(np.diag(cov)[keep], 1e-300)
    for d in np.setdiff1d(np.arange(n), keep).tolist():
        cross = cov[d, keep]
        j = int(np.argmax(cross * cross / diag))
        t[d, j] = cross[j] / diag[j]
    c = np.zeros(n)
    if stat.bias:
        drop = np.setdiff1d(np.arange(n), keep)
        c[drop] = stat.mean[drop] - t[drop] @ stat.mean[keep]
    return t, c


def mix_error(stat: ConsumerStats, keep: np.ndarray, t: np.ndarray) -> float:
    """E‖Mᵀ(x − T x_K − c)‖² for the c of the mix (only removed rows have a residual)."""
    n = len(stat.mean)
    drop = np.setdiff1d(np.arange(n), np.asarray(keep, dtype=np.int64))
    if not len(drop):
        return 0.0
    cov = stat.moment()
    td = t[drop]
    keep = np.asarray(keep, dtype=np.int64)
    cross = cov[np.ix_(drop, keep)] @ td.T
    res = cov[np.ix_(drop, drop)] - cross - cross.T + td @ cov[np.ix_(keep, keep)] @ td.T
    md = stat.rows[drop]
    return float(max(np.einsum("ij,ij->", md.T @ res, md.T), 0.0))


def fold_error(stat: ConsumerStats, labels: np.ndarray) -> float:
    """E‖Mᵀ(x − U·mean_cluster(x))‖² with the uncentred second moment (a fold has no constant term).

    U·mean_cluster is the symmetric projector Π onto cluster-constant vectors, so the error is
    tr(Qᵀ S Q) with Q = M − ΠM (each row minus its cluster's mean row)."""
    labels = np.asarray(labels, dtype=np.int64)
    k = int(labels.max()) + 1
    sums = np.zeros((k, stat.rows.shape[1]))
    np.add.at(sums, labels, stat.rows)
    means = sums / np.bincount(labels, minlength=k)[:, None]
    q = stat.rows - means[labels]
    return float(max(np.einsum("nd,nd->", q, stat.second @ q), 0.0))


def drop_error(stat: ConsumerStats, keep: np.ndarray) -> float:
    """E‖Mᵀ(x − x_K)‖²: plain removal with no mix (uncentred: nothing absorbs the mean)."""
    n = len(stat.mean)
    drop = np.setdiff1d(np.arange(n), np.asarray(keep, dtype=np.int64))
    md = stat.rows[drop]
    res = stat.second[np.ix_(drop, drop)]
    return float(max(np.einsum("ij,ij->", md.T @ res, md.T), 0.0))
