"""Clustering of channel feature vectors: features in, assignment out. No graph knowledge.

Folding channel rows W (n × d) into k clusters minimises ‖W − C W‖²_F with the projector
C = U(UᵀU)⁻¹Uᵀ, which is exactly k-means on the rows (method.md §1.1). We run a seeded
scikit-learn k-means (k-means++ init, several restarts, best inertia kept), so the same input
and options always give the same labels. When d > n the rows are first expressed in the
n-dimensional basis of their span (an exact isometry: squared distances are unchanged), which
makes wide consumers (e.g. a Flatten→Gemm with thousands of columns per channel) cheap.
"""
from __future__ import annotations

import hashlib
import warnings

import numpy as np
from threadpoolctl import threadpool_limits


def cluster_count(n: int, sparsity: float, round_to: int = 1) -> int:
    """k = max(1, round(n·(1 − sparsity))), at most n − 1 when sparsity > 0, optionally a multiple of round_to."""
    if n <= 1 or sparsity <= 0:
        return n
    k = max(1, int(round(n * (1.0 - sparsity))))
    k = min(k, n - 1)
    if round_to > 1 and n > round_to:
        k = max(round_to, int(round(k / round_to)) * round_to)
        k = min(k, n)
    return k


def isometric_embedding(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` in an orthonormal basis of their (centred) span: same pairwise distances, ≤ n columns."""
    n, d = x.shape
    if d <= n:
        return x
    centred = x - x.mean(axis=0, keepdims=True)
    gram = centred @ centred.T
    vals, vecs = np.linalg.eigh(gram)
    keep = vals > vals.max(initial=0.0) * 1e-12
    return vecs[:, keep] * np.sqrt(vals[keep])


def canonical_labels(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters by first appearance, so cluster j's lowest channel precedes cluster j+1's."""
    mapping: dict[int, int] = {}
    out = np.empty(len(labels), dtype=np.int64)
    for i, lab in enumerate(labels.tolist()):
        out[i] = mapping.setdefault(lab, len(mapping))
    return out


def duplicate_ids(x: np.ndarray) -> np.ndarray:
    """Id per row such that rows with identical bytes share an id (ids in first-appearance order)."""
    seen: dict[bytes, int] = {}
    ids = np.empty(len(x), dtype=np.int64)
    for i, row in enumerate(np.ascontiguousarray(x)):
        ids[i] = seen.setdefault(hashlib.blake2b(row.tobytes(), digest_size=20).digest(), len(seen))
    return ids


def split_to_count(labels: np.ndarray, k: int) -> np.ndarray:
    """Split the largest clusters (moving their last member out) until there are exactly k.

    Used when there are fewer distinct rows than k: splitting identical rows keeps the fold exact.
    """
    labels = labels.copy()
    count = int(labels.max()) + 1 if len(labels) else 0
    while count < k:
        sizes = np.bincount(labels, minlength=count)
        big = int(np.argmax(sizes))
        if sizes[big] <= 1:
            break
        labels[np.nonzero(labels == big)[0][-1]] = count
        count += 1
    return canonical_labels(labels)


#: above this many dimensions, rows are projected onto their top principal components
MAX_DIM = 512
#: n·k·d multiply-adds of one Lloyd pass above which one global k-means is replaced by a partitioned one
WORK_BUDGET = 4e8
#: rows per partition of the partitioned k-means
PARTITION = 512
#: feature matrices with more entries than this are randomly projected instead of PCA-reduced
RANDOM_PROJECTION_ABOVE = 2e8


def reduce_dims(x: np.ndarray, max_dim: int = MAX_DIM, seed: int = 0) -> np.ndarray:
    """At most ``max_dim`` columns: exact (isometric) when the rows span ≤ max_dim dimensions,
    else the projection onto the top ``max_dim`` principal components (randomised SVD)."""
    n, d = x.shape
    if d <= max_dim:
        return x
    if n <= max_dim:
        return isometric_embedding(x)
    if n * d > RANDOM_PROJECTION_ABOVE:  # too large for an SVD: Johnson-Lindenstrauss projection
        rng = np.random.default_rng(seed)
        return x @ (rng.standard_normal((d, max_dim)) / np.sqrt(max_dim))
    from sklearn.utils.extmath import randomized_svd

    centred = x - x.mean(axis=0, keepdims=True)
    u, s, _ = randomized_svd(centred, max_dim, n_iter=4, random_state=seed)
    return u * s


def _kmeans(x: np.ndarray, k: int, seed: int, n_init: int, max_iter: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    if k >= len(x):
        return np.arange(len(x))
    if k <= 1:
        return np.zeros(len(x), dtype=np.int64)
    # fewer restarts when one run is already expensive (the best inertia over restarts is kept)
    work = len(x) * k * x.shape[1]
    restarts = max(1, min(n_init, int(1e9 // max(work, 1))))
    # scikit-learn's OpenMP threads busy-wait: on a loaded machine small problems ran 5-10x slower
    # with them, so only large problems get more than one thread
    threads = None if work > 1e8 else 1
    with warnings.catch_warnings(), threadpool_limits(limits=threads):
        warnings.simplefilter("ignore")
        return KMeans(n_clusters=k, n_init=restarts, max_iter=max_iter, random_state=seed).fit_predict(x)


def allocate(sizes: np.ndarray, k: int) -> np.ndarray:
    """Split k clusters over partitions proportionally to their sizes (largest remainders), 1 ≤ k_i ≤ n_i."""
    share = sizes * (k / sizes.sum())
    out = np.clip(np.floor(share).astype(np.int64), 1, sizes)
    while out.sum() < k:
        room = np.where(out < sizes, share - out, -np.inf)
        out[int(np.argmax(room))] += 1
    while out.sum() > k:
        spare = np.where(out > 1, out - share, -np.inf)
        out[int(np.argmax(spare))] -= 1
    return out


def partitioned_kmeans(x: np.ndarray, k: int, seed: int, n_init: int, max_iter: int) -> np.ndarray:
    """Coarse k-means into ⌈n/PARTITION⌉ partitions, then k-means inside each with a share of k
    proportional to its size. Clusters never span partitions; cost ≈ n·(n/PARTITION + PARTITION·k/n)·d."""
    n = len(x)
    parts = _kmeans(x, int(np.ceil(n / PARTITION)), seed, 1, max_iter)
    ids = np.unique(parts)
    sizes = np.array([(parts == i).sum() for i in ids])
    shares = allocate(sizes, k)
    labels = np.empty(n, dtype=np.int64)
    offset = 0
    for i, k_i in zip(ids, shares, strict=True):
        rows = np.nonzero(parts == i)[0]
        labels[rows] = _kmeans(x[rows], int(k_i), seed, n_init, max_iter) + offset
        offset += int(k_i)
    return labels


def kmeans_labels(features: np.ndarray, k: int, seed: int = 0, n_init: int = 10, max_iter: int = 300) -> np.ndarray:
    """Cluster the n rows of ``features`` into at most k groups; returns canonical labels (n,).

    Exact duplicate rows always share a cluster when k ≥ the number of distinct rows. Large
    problems are made tractable in three steps: rows beyond 512 dimensions are projected on their
    top principal components (a random projection for huge matrices); restarts shrink when one
    run is expensive; and when one Lloyd pass would exceed :data:`WORK_BUDGET` multiply-adds the
    clustering is partitioned (:func:`partitioned_kmeans`).
    """
    x = np.asarray(features, dtype=np.float64)
    n = x.shape[0]
    if k >= n:
        return np.arange(n, dtype=np.int64)
    if k <= 1:
        return np.zeros(n, dtype=np.int64)
    x = x.reshape(n, -1)
    inverse = duplicate_ids(x)
    if int(inverse.max()) + 1 <= k:
        # every distinct row gets its own cluster: the fold is exact
        return split_to_count(canonical_labels(inverse), k)
    emb = reduce_dims(x, MAX_DIM, seed)
    if n * k * emb.shape[1] > WORK_BUDGET and n > 2 * PARTITION:
        labels = partitioned_kmeans(emb, k, seed, n_init, max_iter)
    else:
        labels = _kmeans(emb, k, seed, n_init, max_iter)
    return canonical_labels(labels)
