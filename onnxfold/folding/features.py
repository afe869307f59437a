"""What a group's channels are clustered (or ranked) on: one (n, d) feature matrix per group.

Every member marked as a feature contributes the block of its tensor slice tied to the channels
(docs/method.md §1.3): producer rows, biases, BN γ/β, per-channel constants, consumer input columns.

* ``raw``        the blocks concatenated as they are (the choice of the paper and the authors' CV code);
* ``blocknorm``  each block B_m scaled to unit Frobenius norm first, B_m/‖B_m‖_F, so that a wide
                 block (e.g. the columns of a wide consumer) does not drown the producer rows;
* ``fused``      producer rows of every producer→BN pair BN-normalised, W/σ, and their bias
                 (b − μ)/σ (a column −μ/σ when the producer has no bias), σ = sqrt(var + eps), as the
                 authors' Fold-AR code clusters; every other block raw. Graphs without BN: ``raw``.

BN running statistics and shape entries are never features (``Member.feature``). Matrices above
``FLOAT32_ABOVE`` entries are built in float32 to bound memory; smaller ones in float64.

Channels whose producer-side entries (every ``average`` member, BN statistics included) are equal, to
float rounding, compute the same activation, so the consumer reads only the sum of their columns,
however it is split among them. Each of their blocks is replaced by its mean over each such set
(:func:`same_activations`), so that they share one feature row and the fold merges them exactly
(docs/method.md §6.5): a Keras duplicate oracle whose consumer split each weight as w·a, w·(1 − a)
with a outside [0.25, 0.75] was folded at 0.10–0.90 relative error, its duplicates paired by distance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import onnx_graphsurgeon as gs

from onnxfold.analysis.groups import AVERAGE, SHAPE, ChannelGroup, Member
from onnxfold.folding.cluster import FLOAT32_ABOVE
from onnxfold.report.timing import step

FEATURE_MODES = ("raw", "blocknorm", "fused")
ValueFn = Callable[[str], np.ndarray]


def member_matrix(member: Member, values: np.ndarray, n: int, dtype: type = np.float64) -> np.ndarray:
    """The (n, d) slice of a member tensor: row c holds every entry tied to channel c (for a split
    member, the entries of c's own slab)."""
    if member.split > 1:
        slabs = np.split(np.asarray(values), member.split, axis=member.split_axis)
        one = replace(member, split=1)
        return np.concatenate([member_matrix(one, s, n // member.split, dtype) for s in slabs])
    with step("read"):  # a memory-mapped tensor's pages are read here
        moved = np.moveaxis(np.asarray(values), member.axis, 0)
        rows = moved[member.offset : member.offset + n * member.block]
        return rows.reshape(n, -1).astype(dtype)


def _bn_normalizers(
    group: ChannelGroup, values: ValueFn, graph: gs.Graph
) -> tuple[dict[tuple[str, int], tuple[np.ndarray, np.ndarray]], list[np.ndarray]]:
    """Per producer weight/bias tensor of a BN pair: (shift, 1/σ) with feature = (x − shift)/σ;
    plus the −μ/σ columns of pairs whose producer has no bias."""
    from onnxfold.analysis.group_producers import group_producers

    norm: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
    extra: list[np.ndarray] = []
    for p in group_producers(group, graph):
        if p.bn is None:
            continue
        mean = np.asarray(values(p.bn.mean), dtype=np.float64)
        inv = 1.0 / np.sqrt(np.asarray(values(p.bn.var), dtype=np.float64) + p.bn.eps)
        norm[(p.weight, p.axis)] = (np.zeros_like(mean), inv)
        if p.bias is not None:
            norm[(p.bias, p.bias_axis)] = (mean, inv)
        else:
            extra.append((-mean * inv)[:, None])
    return norm, extra


def feature_width(member: Member, values: ValueFn) -> int:
    """Entries per channel a member contributes: its block times the size of the other axes (of one
    slab, for a split member)."""
    shape = np.shape(values(member.tensor))
    others = int(np.prod(shape, dtype=np.int64)) // max(int(shape[member.axis]), 1) if shape else 1
    return member.block * others // member.split


def group_features(
    group: ChannelGroup, values: ValueFn, mode: str = "raw", graph: gs.Graph | None = None
) -> np.ndarray:
    """The (n, d) feature matrix of ``group`` (see the module docstring for ``mode``)."""
    if mode not in FEATURE_MODES:
        raise ValueError(f"unknown features {mode!r} (expected one of {', '.join(FEATURE_MODES)})")
    with step("features"):
        return _group_features(group, values, mode, graph)


def _group_features(group: ChannelGroup, values: ValueFn, mode: str, graph: gs.Graph | None) -> np.ndarray:
    n = group.size
    norm: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
    blocks: list[np.ndarray] = []
    if mode == "fused" and graph is not None:
        norm, blocks = _bn_normalizers(group, values, graph)
    used = [m for m in group.members if m.feature and m.role != SHAPE]
    width = sum(feature_width(m, values) for m in used)
    dtype = np.float32 if n * width > FLOAT32_ABOVE else np.float64
    built: dict[int, np.ndarray] = {}  # each member's rows, read once for both uses below

    def rows(m: Member) -> np.ndarray:
        if id(m) not in built:
            built[id(m)] = member_matrix(m, values(m.tensor), n, dtype)
        return built[id(m)]

    sets = same_activations([rows(m) for m in group.members if m.role == AVERAGE])
    for m in used:
        block = rows(m)
        key = (m.tensor, m.axis)
        if key in norm and m.role == AVERAGE and m.offset == 0 and m.block == 1:
            shift, inv = norm[key]
            block = (block - shift[:, None]) * inv[:, None]
        if sets is not None:  # one row per same activation: the mean of its copies
            sums = np.zeros((int(sets.max()) + 1, block.shape[1]), dtype=block.dtype)
            np.add.at(sums, sets, block)
            block = (sums / np.bincount(sets)[:, None].astype(block.dtype))[sets]
        blocks.append(block)
    if mode == "blocknorm":
        scaled = []
        for b in blocks:
            f = float(np.linalg.norm(b))
            scaled.append(b / f if f > 0 else b)
        blocks = scaled
    return np.hstack(blocks) if blocks else np.zeros((n, 0))


#: channels whose producer-side entries differ by at most this, relative to each member's largest
#: magnitude, compute the same activation (an exporter's constant folding rounds copies apart by an ulp)
SAME_RTOL = 1e-6


def _finite_scale(rows: np.ndarray) -> float:
    """The largest finite magnitude in ``rows`` (0 when none): a mask's -inf sets no tolerance."""
    finite = np.abs(rows[np.isfinite(rows)]) if rows.size else rows
    return float(finite.max()) if finite.size else 0.0


def same_activations(producers: list[np.ndarray]) -> np.ndarray | None:
    """An id per channel, equal for channels whose rows in every matrix of ``producers`` (the group's
    ``average`` members: producer rows, biases, BN parameters and statistics, per-channel constants,
    each [n, d]) agree within :data:`SAME_RTOL` of that matrix's largest magnitude, so that they
    compute the same activation; None when every channel differs (or there is no such matrix).
    Rows are ordered by a random projection, neighbours within its tolerance compared in full (tf2onnx
    folded BN into a duplicated conv's bias 1 ulp apart in 2 of 6 pairs). Equal infinities agree (a
    mask's -inf among the constants) and NaN agrees with nothing."""
    n = len(producers[0]) if producers else 0
    if n < 2:
        return None
    with step("duplicates"):
        rng = np.random.default_rng(0)
        key, reach = np.zeros(n), 0.0
        scales = [_finite_scale(r) for r in producers]
        for r, scale in zip(producers, scales, strict=True):
            direction = rng.standard_normal(r.shape[1])
            finite = np.nan_to_num(np.asarray(r, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
            key += finite @ direction / (scale or 1.0)  # in float64 whatever the rows' type
            reach += SAME_RTOL * float(np.abs(direction).sum())
        order = np.argsort(key, kind="stable")
        runs = [r for r in np.split(order, np.flatnonzero(np.diff(key[order]) > 2 * reach) + 1) if len(r) > 1]
        if not runs:
            return None
        ids = np.arange(n)
        for run in runs:  # each run against its first channel not yet taken: no pairs, O(run) per copy
            left = run
            while len(left) > 1:
                close = np.ones(len(left), dtype=bool)
                for r, scale in zip(producers, scales, strict=True):
                    rows, first = r[left], r[left[0]]
                    apart = np.where(rows == first, 0.0, np.abs(rows - first))  # -inf == -inf: 0, not nan
                    close &= np.nan_to_num(apart, nan=np.inf).max(axis=1, initial=0.0) <= SAME_RTOL * scale
                close[0] = True  # a row holding NaN still is its own channel: the loop moves on
                ids[left[close]] = left[0]
                left = left[~close]
        _, ids = np.unique(ids, return_inverse=True)
    return ids if int(ids.max()) + 1 < n else None
