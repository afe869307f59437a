"""Structured magnitude pruning through the same groups and rewrite as folding (the SP L1/L2 baseline).

A group's channel c is scored by the norm of its feature vector f_c (the same concatenation of tied
slices that folding clusters, see :mod:`onnxfold.folding.features`): ‖f_c‖₁ for ``l1``, ‖f_c‖₂ for ``l2``.
The k highest-scoring channels are kept (ties: the lower index wins) and the rest dropped. The
assignment is written as labels: kept channels get 0…k−1 in their original order, dropped ones −1,
so every member loses the dropped entries — producer rows and consumer columns are removed, not
averaged or summed (:func:`onnxfold.folding.rewrite.merge_rows`).
"""

from __future__ import annotations

import numpy as np

PRUNE_METHODS = ("l1", "l2")


def channel_scores(features: np.ndarray, norm: str) -> np.ndarray:
    """‖f_c‖₁ or ‖f_c‖₂ of every row of the (n, d) feature matrix."""
    x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    if norm == "l1":
        return np.abs(x).sum(axis=1)
    if norm == "l2":
        return np.sqrt(np.einsum("nd,nd->n", x, x))
    raise ValueError(f"unknown pruning norm {norm!r} (expected l1 or l2)")


def magnitude_labels(features: np.ndarray, k: int, norm: str) -> np.ndarray:
    """Labels (n,) keeping the k channels with the largest ``norm`` score: 0…k−1 in order, −1 dropped."""
    scores = channel_scores(features, norm)
    n = len(scores)
    k = max(0, min(int(k), n))
    order = np.argsort(-scores, kind="stable")
    keep = np.zeros(n, dtype=bool)
    keep[order[:k]] = True
    labels = np.full(n, -1, dtype=np.int64)
    labels[keep] = np.arange(k)
    return labels
