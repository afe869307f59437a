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


def kmeans_labels(features: np.ndarray, k: int, seed: int = 0, n_init: int = 10, max_iter: int = 300) -> np.ndarray:
    """Cluster the n rows of ``features`` into at most k groups; returns canonical labels (n,).

    Exact duplicate rows always share a cluster when k ≥ the number of distinct rows.
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
    emb = isometric_embedding(x)
    from sklearn.cluster import KMeans

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        km = KMeans(n_clusters=k, n_init=n_init, max_iter=max_iter, random_state=seed)
        labels = km.fit_predict(emb)
    return canonical_labels(labels)
