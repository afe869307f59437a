"""Flatten and Reshape: the channels keep their identity while the dims around them are regrouped.

A Reshape may keep the channel axis (the dims after it regrouped), merge it with the dims after it
(each channel becomes a block of features: NCHW Flatten, attention output [B, S, H, dh] →
[B, S, H·dh]), split it into attention heads (the group is coarsened to whole heads), insert or
remove dims of size 1 around it ([B, C] → [B, 1, C]), or merge it with dims *before* it, where the
channel is the inner factor: [B, T·k, C] → [B, T, k·C] (frames stacked), an NHWC Flatten
[B, H, W, C] → [B, H·W·C]. In row-major order the merged axis then holds k copies of the channel
layout side by side (tiles), channel c of copy t at entry t·C·q + c·q (q: the dims after the
channels); every copy reads its own columns of the consumer, as a Concat of the same tensor k times
does. Flatten is the Reshape to [Π dims before axis, Π the rest].
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxfold.analysis.groups import (
    RESHAPES_CHANNELS,
    SPLITS_UNITS,
    UNKNOWN_SHAPE,
    UNTRACED_RESHAPE,
    BlockReason,
    Layout,
    Segment,
)
from onnxfold.analysis.registry import register_rule
from onnxfold.analysis.rules.joins import coarsened, scaled, shifted
from onnxfold.analysis.shape_trace import ShapeEntry, copied_dim, static_dims, tensor_shape, untraced_node
from onnxfold.analysis.walk import Analysis
from onnxfold.ir.shapes import made_up_dim

#: At most this many segments in a tiled layout (copies × the layout's segments): an NHWC Flatten of
#: a 7×7 map gives 49 copies; [B, 2048, 64] flattened whole would give 2048, each a member of the
#: consumer's weight, and is blocked instead.
MAX_TILE_SEGMENTS = 1024


def tiled(segments: tuple[Segment, ...], copies: int, length: int, inner: int) -> tuple[Segment, ...]:
    """``copies`` copies of ``segments`` (``length`` entries each) side by side, every entry a block
    of ``inner`` features: copy t of channel c starts at t·length·inner + c·block·inner."""
    one = scaled(segments, inner)
    return tuple(seg for t in range(copies) for seg in shifted(one, t * length * inner))


def _too_many(walk: Analysis, node: gs.Node, lay: Layout, copies: int) -> bool:
    if copies * len(lay.segments) <= MAX_TILE_SEGMENTS:
        return False
    message = f"{node.op} {node.name} stacks {copies} copies of the channels (more than {MAX_TILE_SEGMENTS} segments)"
    walk.block(lay, BlockReason(RESHAPES_CHANNELS, message, node.name))
    return True


@register_rule("Flatten")
def flatten(walk: Analysis, node: gs.Node) -> None:
    lay = walk.layout(node.inputs[0])
    if lay is None:
        return
    axis = int(node.attrs.get("axis", 1))
    axis = axis + lay.rank if axis < 0 else axis
    shape = tensor_shape(node.inputs[0])
    flatten_from(walk, node, lay, axis, shape)


def flatten_from(
    walk: Analysis,
    node: gs.Node,
    lay: Layout,
    axis: int,
    shape: tuple | None,
    shape_const: gs.Constant | None = None,
    shape_index: int | None = None,
) -> None:
    """Merge the channel axis with every dim after it (Flatten, or a Reshape at ``axis``): channel c
    becomes a block of Π(trailing dims) features; blocked when the trailing dims are unknown."""
    if axis < lay.axis:  # the channel axis is merged with dims before it: copies of the channels
        before, after = (shape[axis : lay.axis], shape[lay.axis + 1 :]) if shape is not None else (None, None)
        if not static_dims(before) or not static_dims(after):
            message = f"{node.op} {node.name} merges the channel axis with dims of unknown size"
            walk.block(lay, BlockReason(UNKNOWN_SHAPE, message, node.name))
            return
        copies = int(np.prod(before, dtype=np.int64))
        if not _too_many(walk, node, lay, copies):
            inner = int(np.prod(after, dtype=np.int64))
            walk.set_layout(node.outputs[0], Layout(2, 1, tiled(lay.segments, copies, lay.length, inner)))
        return
    if axis != lay.axis:
        walk.block(
            lay,
            BlockReason(
                RESHAPES_CHANNELS, f"{node.op} {node.name} merges the channel axis with other axes", node.name
            ),
        )
        return
    trailing = shape[axis + 1 :] if shape is not None else None
    if trailing is None or not static_dims(trailing):
        walk.block(
            lay,
            BlockReason(
                UNKNOWN_SHAPE,
                f"{node.op} {node.name} flattens dims of unknown size after the channels",
                node.name,
            ),
        )
        return
    inner = int(np.prod(trailing)) if trailing else 1
    segs = scaled(lay.segments, inner)
    if shape_const is not None and shape_index is not None:
        for s in segs:
            walk.add_shape_member(s, shape_const, shape_index, node)
    # Flatten always gives [prod(dims before axis), rest]; a Reshape keeps the leading dims
    out = Layout(2, 1, segs) if node.op == "Flatten" else Layout(axis + 1, axis, segs)
    walk.set_layout(node.outputs[0], out)


@register_rule("Reshape")
def reshape(walk: Analysis, node: gs.Node) -> None:
    """Reshapes that keep the channel axis, merge it with the dims after it (Flatten, attention
    output [B,S,H,dh]→[B,S,H·dh]), or split it into (units, unit size) (attention heads
    [B,S,H·dh]→[B,S,H,dh]: the channel space is coarsened to whole heads). The target may be a
    constant or built from Shape/Gather/Concat; the entry that counts channels is rewritten."""
    lay = walk.layout(node.inputs[0])
    if lay is None:
        return
    in_shape = tensor_shape(node.inputs[0])
    if in_shape is not None:  # dims inference made up that the graph fixes (a −1 head count of 1)
        in_shape = tuple(
            walk.known_dim(node.inputs[0], i) or d if made_up_dim(d) else d for i, d in enumerate(in_shape)
        )
    entries = walk.target_entries(node.inputs[1])
    out_shape = tensor_shape(node.outputs[0])
    traced = entries is not None and in_shape is not None and len(in_shape) == lay.rank
    if traced and regroup_leading(walk, node, lay, entries, in_shape):
        return  # the leading entries, computed or not, only regroup rows the last entry fixes
    if entries is not None and in_shape is not None:  # computed entries must be proven copies
        if any(
            e.computed is not None and not computed_copy(e, i, in_shape, out_shape)
            for i, e in enumerate(entries)
        ):
            entries = None
    if entries is None or in_shape is None or len(in_shape) != lay.rank:
        culprit = untraced_node(node.inputs[1], walk.rank_of) if entries is None else None
        where = f" (an entry computed by {culprit.op} {culprit.name})" if culprit is not None else ""
        message = f"Reshape {node.name} has a target shape that cannot be traced{where}"
        walk.block(lay, BlockReason(UNTRACED_RESHAPE, message, node.name))
        return
    copy_zero = not int(node.attrs.get("allowzero", 0))
    c, rank, out_rank, length = lay.axis, lay.rank, len(entries), lay.length

    def copies(e: ShapeEntry, i: int, same_position: bool) -> bool:
        d = in_shape[i]
        return (
            same_dim(e, i, in_shape)
            or (same_position and computed_copy(e, i, in_shape, out_shape))
            or (same_position and e.value == 0 and copy_zero)
            or (e.value is not None and e.value > 0 and isinstance(d, (int, np.integer)) and e.value == d)
        )

    if regroup_leading(walk, node, lay, entries, in_shape) or split_trailing(
        walk, node, lay, entries, in_shape
    ):
        return
    if unit_axes(walk, node, lay, entries, in_shape, copies):
        return
    explicit_tail = all(e.value is not None and e.value > 0 for e in entries[c:])
    lead_ok = out_rank > c and all(
        copies(e, i, True) or (e.value == -1 and explicit_tail) for i, e in enumerate(entries[:c])
    )
    if not lead_ok:
        if not merge_before(walk, node, lay, entries, in_shape, copies, copy_zero):
            message = f"Reshape {node.name} moves the channel axis"
            walk.block(lay, BlockReason(RESHAPES_CHANNELS, message, node.name))
        return
    entry = entries[c]
    shrinkable = entry.const is not None and entry.value is not None and entry.value > 0
    # −1 at the channel position with every other dim copied in place: the element count makes it the
    # channel count (the legacy exporter's [B, −1, S, dh] of attention outputs)
    inferred = (
        entry.value == -1
        and out_rank == rank
        and all(copies(e, i, True) for i, e in enumerate(entries) if i != c)
    )
    if (copies(entry, c, True) or entry.value == length or inferred) and in_shape[c] == length:
        # channel axis kept; the dims after it may be regrouped freely
        if shrinkable:
            for seg in lay.segments:
                walk.add_shape_member(seg, entry.const, entry.index, node, entry.path)
        walk.passthrough(node, Layout(out_rank, c, lay.segments))
        return
    if out_rank < rank:  # merge the channel axis with the m dims after it
        m = rank - out_rank
        # dims shape inference left unknown may still be fixed by the graph (repeat_kv's Expand)
        merged = [
            d if isinstance(d, (int, np.integer)) else walk.known_dim(node.inputs[0], c + 1 + j)
            for j, d in enumerate(in_shape[c + 1 : c + 1 + m])
        ]
        proven = [copies(e, c + 1 + m + j, False) for j, e in enumerate(entries[c + 1 :])]
        # element count: with the leading dims copied and the channel entry explicit
        # (length·inner), one tail entry not proven a copy must be the one input dim left
        # (repeat_kv's [B, kv, rep, S, dh] → [B, H, S, dh] where S has another symbol)
        by_count = (
            static_dims(merged)
            and proven.count(False) == 1
            and entry.value == length * int(np.prod(merged))
            and all(copies(e, i, True) for i, e in enumerate(entries[:c]))
        )
        tail_ok = all(proven) or by_count
        if not static_dims(merged) or not tail_ok:
            # BlazeFace's [1, 1, 48, 48] -> [1, 2304, 1] read "dims of unknown size": they were known
            known = static_dims(merged) and static_dims(list(in_shape))
            message = (
                f"Reshape {node.name} merges the channel axis with the dims after it into "
                f"{[e.value for e in entries]}, which no channel mapping follows"
                if known
                else f"Reshape {node.name} merges the channel axis with dims of unknown size"
            )
            walk.block(lay, BlockReason(RESHAPES_CHANNELS if known else UNKNOWN_SHAPE, message, node.name))
            return
        inner = int(np.prod(merged))
        if entry.value not in (-1, length * inner):
            walk.block(
                lay,
                BlockReason(RESHAPES_CHANNELS, f"Reshape {node.name} reshapes the channel axis", node.name),
            )
            return
        segs = scaled(lay.segments, inner)
        if entry.value > 0:
            if entry.const is None:
                walk.block(
                    lay,
                    BlockReason(
                        UNTRACED_RESHAPE,
                        f"Reshape {node.name} takes the channel count from a computed value",
                        node.name,
                    ),
                )
                return
            for seg in segs:
                walk.add_shape_member(seg, entry.const, entry.index, node, entry.path)
        walk.set_layout(node.outputs[0], Layout(out_rank, c, segs))
        return
    if out_rank == rank + 1:  # split the channel axis into (units, unit size): attention heads
        unit_e = entries[c + 1]
        unit = unit_e.value if unit_e.value is not None and unit_e.value > 0 else None
        tail_ok = all(copies(e, c + 1 + j, False) for j, e in enumerate(entries[c + 2 :]))
        if (
            unit is None
            or not tail_ok
            or length % unit
            or entry.value not in (-1, length // unit)
            or (entry.value > 0 and entry.const is None)
        ):
            message = f"Reshape {node.name} splits the channel axis in a way that cannot be followed"
            walk.block(lay, BlockReason(UNTRACED_RESHAPE, message, node.name))
            return
        reason = BlockReason(SPLITS_UNITS, f"Reshape {node.name} splits channels across groups", node.name)
        if not walk.coarsen_segments(lay, unit, node, reason):
            return
        segs = coarsened(lay.segments, unit)
        if entry.value > 0:
            for seg in segs:
                walk.add_shape_member(seg, entry.const, entry.index, node, entry.path)
        walk.set_layout(node.outputs[0], Layout(out_rank, c, segs))
        return
    walk.block(
        lay, BlockReason(RESHAPES_CHANNELS, f"Reshape {node.name} reshapes the channel axis", node.name)
    )


def same_dim(e: ShapeEntry, i: int, in_shape) -> bool:
    """Whether entry ``e``, read at run time from dim ``e.dim_of`` of ``e.source``, is the Reshape
    input's dim ``i``: the inferred dims agree (the same static value or symbol; the source may be
    another tensor, such as the graph input the exporter read the batch from), or, where either is
    unknown (or a symbol ONNX's inference made up for an unknown dim, ``unk__N``), the index is the
    same."""
    if e.dim_of is None:
        return False
    theirs, ours = copied_dim(e), in_shape[i]
    return e.dim_of == i if theirs is None or made_up_dim(ours) else theirs == ours


def computed_copy(e: ShapeEntry, i: int, in_shape, out_shape) -> bool:
    """Whether entry ``e``, computed at run time by arithmetic the trace does not follow, gives
    output dim ``i`` the input's dim ``i``: the exporter's inferred dims say so, the same static value
    or the same symbol (dynamo's ``((seq − 5)//8 − 3)//2 + 1`` of a sequence after strided convs),
    never one that inference made up (``unk__N``)."""
    if e.computed is None or out_shape is None or i >= min(len(in_shape), len(out_shape)):
        return False
    ours, theirs = in_shape[i], out_shape[i]
    return ours is not None and not made_up_dim(ours) and not made_up_dim(theirs) and ours == theirs


def regroup_leading(walk: Analysis, node: gs.Node, lay: Layout, entries: list[ShapeEntry], in_shape) -> bool:
    """The channel axis and every dim after it become the last output dim; the dims before it are
    regrouped freely ([B·S, C] ↔ [B, S, C] around a 2-D Gemm, [B, S, H, dh] → [B·S, H·dh], a Flatten).
    The last target entry must be an explicit constant counting exactly those elements, C·Π(dims
    after C): in row-major order each output row is then one input block of them, whatever the
    leading entries say, computed at run time or not (a sequence-first attention's [L·B, H·D], L·B
    a product of Shape reads). The constant is rewritten with the fold."""
    c, last = lay.axis, entries[-1]
    after = in_shape[c + 1 :]
    if not static_dims(after) or in_shape[c] != lay.length or last.const is None:
        return False
    inner = int(np.prod(after, dtype=np.int64))
    if last.value != lay.length * inner:
        return False
    segs = scaled(lay.segments, inner)
    for seg in segs:
        walk.add_shape_member(seg, last.const, last.index, node, last.path)
    walk.passthrough(node, Layout(len(entries), len(entries) - 1, segs))
    return True


def split_trailing(walk: Analysis, node: gs.Node, lay: Layout, entries: list[ShapeEntry], in_shape) -> bool:
    """The channel axis, last, split into (units, unit size) while the dims before it are regrouped
    freely ([B·S, H·dh] → [B, S, H, dh]: onnxsim's projections around a 2-D Gemm): the last two
    target entries must be constants H and dh with H·dh = C; in row-major order each input row's
    channels are then one output [H, dh] block, whatever the leading entries say. The group is
    coarsened to units of dh (heads), and H is rewritten with the fold."""
    c, heads, unit = lay.axis, entries[-2] if len(entries) > 2 else None, entries[-1]
    if heads is None or c != len(in_shape) - 1 or in_shape[c] != lay.length or heads.const is None:
        return False
    if not (heads.value and unit.value and heads.value > 0 and unit.value > 1):
        return False
    if heads.value * unit.value != lay.length:
        return False
    reason = BlockReason(SPLITS_UNITS, f"Reshape {node.name} splits channels across groups", node.name)
    if walk.coarsen_segments(lay, unit.value, node, reason):
        segs = coarsened(lay.segments, unit.value)
        for seg in segs:
            walk.add_shape_member(seg, heads.const, heads.index, node, heads.path)
        walk.set_layout(node.outputs[0], Layout(len(entries), len(entries) - 2, segs))
    return True


def unit_axes(
    walk: Analysis, node: gs.Node, lay: Layout, entries: list[ShapeEntry], in_shape, copies
) -> bool:
    """A Reshape that only inserts or removes dims of size 1 and so moves the channel axis
    ([B, C] → [B, 1, C], [B, 1, C] → [B, C]), as Unsqueeze and Squeeze do: every other output entry
    copies its input dim (one may be −1). False when it is not such a Reshape, or the channel axis
    stays where it is (the general cases handle that)."""
    c = lay.axis
    ins = [i for i, d in enumerate(in_shape) if not (isinstance(d, (int, np.integer)) and d == 1)]
    outs = [j for j, e in enumerate(entries) if e.value != 1]
    if len(ins) != len(outs) or c not in ins or lay.length == 1:
        return False
    free = [j for i, j in zip(ins, outs, strict=True) if not copies(entries[j], i, i == j)]
    if len(free) > 1 or (free and entries[free[0]].value != -1):
        return False
    j = outs[ins.index(c)]
    entry = entries[j]
    if j == c or (j not in free and (entry.value is None or entry.value <= 0 or entry.const is None)):
        return False  # channel axis in place, or its count a copy of another dim: the general cases
    if entry.value is not None and entry.value > 0:
        for seg in lay.segments:
            walk.add_shape_member(seg, entry.const, entry.index, node, entry.path)
    walk.passthrough(node, Layout(len(entries), j, lay.segments))
    return True


def _batch_inferred(entries: list[ShapeEntry], in_shape) -> bool:
    """Whether the target's leading −1 stands for the input's first dim: every other entry an explicit
    constant, together the elements of every static input dim after the first (CREPE's
    ``[N, 4, 64, 1] → [−1, 256]`` after its channel permute)."""
    rest = in_shape[1:]
    if not entries or entries[0].value != -1 or len(entries) < 2 or not static_dims(rest):
        return False
    if any(e.value is None or e.value <= 0 or e.const is None for e in entries[1:]):
        return False
    return int(np.prod([e.value for e in entries[1:]], dtype=np.int64)) == int(np.prod(rest, dtype=np.int64))


def _sizes(entries: list[ShapeEntry], in_shape, start: int, copy_zero: bool) -> list[int] | None:
    """The sizes of output entries ``start:`` when the input dims from ``start`` on are static: each a
    constant, a copy of a static input dim, or the one −1 by element count; None otherwise."""
    tail = in_shape[start:]
    if not static_dims(tail):
        return None
    out: list[int] = []
    for k, e in enumerate(entries[start:], start):
        if e.value is not None and e.value > 0:
            out.append(int(e.value))
        elif e.value == -1:
            out.append(-1)
        elif e.value == 0 and copy_zero and k < len(in_shape) and static_dims([in_shape[k]]):
            out.append(int(in_shape[k]))
        elif e.value is None and e.dim_of is not None and static_dims([in_shape[e.dim_of]]):
            out.append(int(in_shape[e.dim_of]))
        else:
            return None
    total = int(np.prod(tail, dtype=np.int64))
    if out.count(-1) > 1:
        return None
    if -1 in out:
        known = int(np.prod([v for v in out if v != -1], dtype=np.int64))
        if known <= 0 or total % known:
            return None
        out[out.index(-1)] = total // known
    return out if int(np.prod(out, dtype=np.int64)) == total else None


def merge_before(
    walk: Analysis, node: gs.Node, lay: Layout, entries: list[ShapeEntry], in_shape, copies, copy_zero: bool
) -> bool:
    """The channel axis merged with dims before it (and maybe after it), the channel the inner
    factor: [B, T·k, C] → [B, T, k·C], [B, H, W, C] → [B, H·W·C]. With q = Π(input dims after the
    channels) and R = Π(output dims after the one that takes them), R must divide q and that dim
    holds k = size·R / (C·q) copies of the channels, each channel a block of q / R. True when handled
    (the layout set, or the channels blocked); False when it is not such a Reshape."""
    c = lay.axis
    a = 0
    while a < min(c, len(entries)) and copies(entries[a], a, True):
        a += 1
    if a == 0 and c > 1 and _batch_inferred(entries, in_shape):  # [−1, k·C·q]: the leading −1 is B
        a = 1
    out = _sizes(entries, in_shape, a, copy_zero) if a < c else None
    if out is None:
        return False
    length = lay.length
    q = int(np.prod(in_shape[c + 1 :], dtype=np.int64))
    before = int(np.prod(in_shape[a:c], dtype=np.int64))
    r = 1
    for j in reversed(range(len(out))):
        if r > q:
            return False
        if q % r == 0 and out[j] % (length * (q // r)) == 0:
            break
        r *= out[j]
    else:
        return False
    block = q // r
    count = out[j] // (length * block)
    if count < 1 or before % count:
        return False
    entry = entries[a + j]
    if entry.value != -1 and (entry.value is None or entry.value <= 0 or entry.const is None):
        message = f"Reshape {node.name} takes the width of the merged channel axis from a computed value"
        walk.block(lay, BlockReason(UNTRACED_RESHAPE, message, node.name))
        return True
    if _too_many(walk, node, lay, count):
        return True
    segs = tiled(lay.segments, count, length, block)
    if entry.value > 0:
        for seg in segs:
            walk.add_shape_member(seg, entry.const, entry.index, node, entry.path)
    walk.set_layout(node.outputs[0], Layout(len(entries), a + j, segs))
    return True
