"""Apply cluster assignments to tensors: pure numpy, layout given by each member.

For a member on axis a with offset o and block b, channel c owns the entries
[o + c·b, o + (c+1)·b) of axis a. With labels ℓ (n,) and cluster sizes |c|:

* average:  out[j] = (1/|j|) Σ_{i: ℓ_i = j} x[i]        (producer rows, biases, BN vectors)
* sum:      out[j] = Σ_{i: ℓ_i = j} x[i]                (consumer input columns)
* shape:    entry o of a shape vector loses (n − k)·b     (Reshape targets, Resize sizes)

* mix:      out[j] = Σ_i T[i, j] x[i]                 (consumer columns with a least-squares mix T)

A *split* edit (``split`` > 1, a grouped convolution's input columns) cuts the tensor into ``split``
equal slabs along ``split_axis`` and edits slab s with the labels of channels [s·n/split,
(s+1)·n/split) only, less s·k/split: the group's parts keep their labels apart, so each slab's
labels are 0…k/split−1 (checked).

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
    split: int = 1
    split_axis: int = 0
    #: (n, k) mix T of a consumer (role sum) in place of the cluster sums: out[j] = Σ_i T[i, j] x[i]
    matrix: np.ndarray | None = field(default=None, compare=False)


def merge_rows(x: np.ndarray, labels: np.ndarray, k: int, role: str) -> np.ndarray:
    """Merge the first axis of ``x`` (n, …) into (k, …) by cluster mean or sum; label −1 drops a row."""
    return merge_along(x, 0, 0, 1, labels, k, role)


def merge_along(
    x: np.ndarray, axis: int, offset: int, block: int, labels: np.ndarray, k: int, role: str
) -> np.ndarray:
    """The entries [offset, offset + n·block) of ``axis`` merged by cluster, in float64: entry t of
    cluster j's block is the mean (or sum) of entry t of its members' blocks; label −1 drops a channel.

    Each cluster's members are added in channel order, x_a + x_b + x_c…: all first members are
    gathered at once along ``axis`` (``np.take``, in the array's own layout, no transposed copy), then
    all second members are added, and so on; at the large k of folding most clusters are singletons
    or pairs, so this is a few passes over the tensor."""
    if role not in (AVERAGE, SUM):
        raise ValueError(f"unknown role {role!r}")
    labels = np.asarray(labels)
    kept = np.nonzero(labels >= 0)[0]
    counts = np.bincount(labels[kept], minlength=k)
    if (counts == 0).any():
        raise ValueError("labels leave a cluster empty")
    members = kept[np.argsort(labels[kept], kind="stable")]  # channels by cluster, each in channel order
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    taps = np.arange(block)
    lead = (slice(None),) * axis
    out = None
    for rank in range(int(counts.max())):
        clusters = np.nonzero(counts > rank)[0]
        source = (offset + members[starts[clusters] + rank][:, None] * block + taps).ravel()
        part = np.take(x, source, axis=axis)
        if out is None:  # rank 0: every cluster has a first member, in cluster order
            out = part.astype(np.float64)
        else:
            target = lead + ((clusters[:, None] * block + taps).ravel(),)
            merged = out[target]  # gather, add, scatter: much faster than out[target] += part
            merged += part
            out[target] = merged
    if role == AVERAGE:
        shape = [1] * x.ndim
        shape[axis] = k * block
        out /= np.repeat(counts.astype(np.float64), block).reshape(shape)
    return out


def apply_edits(array: np.ndarray, edits: Sequence[SliceEdit]) -> np.ndarray:
    """Apply every edit to ``array``. Edits on one axis are applied from the highest offset down,
    so that shrinking a later slice never moves an earlier one."""
    dtype = array.dtype
    result = np.asarray(array)
    shape_edits = [e for e in edits if e.role == SHAPE]
    for e in sorted((e for e in edits if e.role != SHAPE), key=lambda e: (e.axis, -e.offset)):
        result = _split_edit(result, e, dtype) if e.split > 1 else _edit(result, e, dtype)
    if shape_edits:
        result = result.copy()
        flat = result.reshape(-1)
        for e in shape_edits:
            flat[e.offset] -= (len(e.labels) - e.k) * e.block
    return np.ascontiguousarray(result)


def _edit(result: np.ndarray, e: SliceEdit, dtype: np.dtype) -> np.ndarray:
    n = len(e.labels)
    lo, hi = e.offset, e.offset + n * e.block
    if hi > result.shape[e.axis]:
        raise ValueError(f"slice [{lo}, {hi}) exceeds axis {e.axis} of length {result.shape[e.axis]}")
    lead = (slice(None),) * e.axis
    if e.matrix is not None and e.role == SUM:
        moved = np.moveaxis(result, e.axis, 0)
        segment = moved[lo:hi].reshape((n, e.block) + moved.shape[1:])
        merged = np.tensordot(np.asarray(e.matrix, dtype=np.float64).T, segment.astype(np.float64), 1)
        merged = np.moveaxis(merged.astype(dtype).reshape((e.k * e.block,) + moved.shape[1:]), 0, e.axis)
    else:
        merged = merge_along(result, e.axis, lo, e.block, e.labels, e.k, e.role).astype(dtype)
    before, after = result[lead + (slice(0, lo),)], result[lead + (slice(hi, None),)]
    return np.concatenate([before.astype(dtype), merged, after.astype(dtype)], axis=e.axis)


def _split_edit(result: np.ndarray, e: SliceEdit, dtype: np.dtype) -> np.ndarray:
    """Slab s of ``split_axis`` edited with the labels of the s-th ``split``-th of the channels."""
    n, slabs = len(e.labels), e.split
    if n % slabs or e.k % slabs or result.shape[e.split_axis] % slabs:
        raise ValueError(f"{n} channels, k = {e.k} or axis {e.split_axis} do not cut into {slabs} slabs")
    size, per = n // slabs, e.k // slabs
    out = []
    for s, slab in enumerate(np.split(result, slabs, axis=e.split_axis)):
        labels = np.asarray(e.labels[s * size : (s + 1) * size])
        local = np.where(labels >= 0, labels - s * per, -1)
        if ((local < -1) | (local >= per)).any():
            raise ValueError(f"labels of slab {s} leave their part [{s * per}, {(s + 1) * per})")
        out.append(_edit(slab, SliceEdit(e.axis, e.offset, e.block, e.role, local, per), dtype))
    return np.concatenate(out, axis=e.split_axis)
