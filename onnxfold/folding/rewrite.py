"""Apply cluster assignments to tensors: pure numpy, layout given by each member.

For a member on axis a with offset o and block b, channel c owns the entries
[o + c·b, o + (c+1)·b) of axis a. With labels ℓ (n,) and cluster sizes |c|:

* average:  out[j] = (1/|j|) Σ_{i: ℓ_i = j} x[i]        (producer rows, biases, BN vectors)
* sum:      out[j] = Σ_{i: ℓ_i = j} x[i]                (consumer input columns)
* shape:    entry o of a shape vector loses (n − k)·b     (Reshape targets, Resize sizes)

* mix:      out[j] = Σ_i T[i, j] x[i]                 (consumer columns with a least-squares mix T)

A label of −1 marks a *dropped* channel (structured pruning): its entries are removed from every
member, whatever the role, and the kept channels keep their order (labels 0…k−1 ascending).

All arithmetic is done in float64 and cast back to the tensor's dtype.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from onnxfold.analysis.groups import AVERAGE, SHAPE, SUM


@dataclass(frozen=True)
class SliceEdit:
    """One group's edit of one tensor axis."""

    axis: int
    offset: int
    block: int
    role: str
    labels: np.ndarray
    k: int
    #: (n, k) mix T of a consumer (role sum) in place of the cluster sums: out[j] = Σ_i T[i, j] x[i]
    matrix: np.ndarray | None = field(default=None, compare=False)


def merge_rows(x: np.ndarray, labels: np.ndarray, k: int, role: str) -> np.ndarray:
    """Merge the first axis of ``x`` (n, …) into (k, …) by cluster mean or sum; label −1 drops a row."""
    labels = np.asarray(labels)
    kept = labels >= 0
    if not kept.all():
        x, labels = x[kept], labels[kept]
    # rows sorted by cluster (stable: each cluster's rows keep their order), then one sum per run
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=k)
    if (counts == 0).any():
        raise ValueError("labels leave a cluster empty")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    out = np.add.reduceat(x[order].astype(np.float64, copy=False), starts, axis=0)
    if role == AVERAGE:
        out /= counts.astype(np.float64).reshape((k,) + (1,) * (x.ndim - 1))
    elif role != SUM:
        raise ValueError(f"unknown role {role!r}")
    return out


def apply_edits(array: np.ndarray, edits: Sequence[SliceEdit]) -> np.ndarray:
    """Apply every edit to ``array``. Edits on one axis are applied from the highest offset down,
    so that shrinking a later slice never moves an earlier one."""
    dtype = array.dtype
    result = np.asarray(array)
    shape_edits = [e for e in edits if e.role == SHAPE]
    for e in sorted((e for e in edits if e.role != SHAPE), key=lambda e: (e.axis, -e.offset)):
        n = len(e.labels)
        moved = np.moveaxis(result, e.axis, 0)
        lo, hi = e.offset, e.offset + n * e.block
        if hi > moved.shape[0]:
            raise ValueError(f"slice [{lo}, {hi}) exceeds axis {e.axis} of length {moved.shape[0]}")
        segment = moved[lo:hi].reshape((n, e.block) + moved.shape[1:])
        if e.matrix is not None and e.role == SUM:
            mixed = np.tensordot(np.asarray(e.matrix, dtype=np.float64).T, segment.astype(np.float64), 1)
            merged = mixed.astype(dtype)
        else:
            merged = merge_rows(segment, e.labels, e.k, e.role).astype(dtype)
        merged = merged.reshape((e.k * e.block,) + moved.shape[1:])
        moved = np.concatenate([moved[:lo].astype(dtype), merged, moved[hi:].astype(dtype)], axis=0)
        result = np.moveaxis(moved, 0, e.axis)
    if shape_edits:
        result = result.copy()
        flat = result.reshape(-1)
        for e in shape_edits:
            flat[e.offset] -= (len(e.labels) - e.k) * e.block
    return np.ascontiguousarray(result)
