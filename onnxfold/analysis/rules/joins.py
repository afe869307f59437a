"""Joins and cuts on the channel axis: Concat, Split, Slice of channels, and the segment index arithmetic.

A segment ``Segment(space, start, n, block)`` puts channel c of ``space`` at entries
[start + c·block, start + (c+1)·block) of the channel axis. Every rule that moves channels along
the axis uses the helpers here:

* :func:`shifted`   Concat: an input's segments move by the width of the inputs before it;
* :func:`window`    Split/Slice: the segments inside [lo, hi), re-based to lo;
* :func:`scaled`    Flatten/Reshape merging the channel axis with ``inner`` trailing elements:
  start and block × inner;
* :func:`coarsened` Reshape splitting channels into (units, unit): start and n ÷ unit, block 1.

A cut that falls inside a group partitions the group (:func:`cut_at`), like a fused qkv projection
split into q, k and v; the split sizes or slice bounds become ``shape`` members.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxfold.analysis.groups import (
    SHARED_TENSOR,
    SPLITS_UNITS,
    UNALIGNED,
    UNKNOWN_SHAPE,
    UNSUPPORTED_FORM,
    UNTRACED_SHAPE,
    UNTRACKED_TENSOR,
    BlockReason,
    Layout,
    Segment,
    shrink_unit_attrs,
)
from onnxfold.analysis.registry import register_op, register_rule
from onnxfold.analysis.rules.elementwise import binary
from onnxfold.analysis.shape_trace import const_values
from onnxfold.analysis.walk import Analysis

Segments = tuple[Segment, ...]


def shifted(segments: Segments, offset: int) -> list[Segment]:
    return [Segment(s.space, offset + s.start, s.n, s.block) for s in segments]


def window(segments: Segments, lo: int, hi: int) -> Segments:
    return tuple(Segment(s.space, s.start - lo, s.n, s.block) for s in segments if lo <= s.start < hi)


def scaled(segments: Segments, inner: int) -> Segments:
    return tuple(Segment(s.space, s.start * inner, s.n, s.block * inner) for s in segments)


def coarsened(segments: Segments, unit: int) -> Segments:
    return tuple(Segment(s.space, s.start // unit, s.n // unit, 1) for s in segments)


@register_rule("Concat")
def concat(walk: Analysis, node: gs.Node) -> None:
    """On the channel axis, inputs' segments lie side by side (an untracked input of known width is
    a blocked space of its own); on another axis, channels must line up as for Add."""
    inputs = [t for t in node.inputs if t.name]
    tracked = [walk.layouts[t.name] for t in inputs if t.name in walk.layouts]
    if not tracked:
        return
    rank = tracked[0].rank
    axis = int(node.attrs.get("axis", 1))
    axis = axis + rank if axis < 0 else axis
    if any(lay.axis != tracked[0].axis or lay.rank != rank for lay in tracked):
        reason = BlockReason(
            UNALIGNED, f"Concat {node.name} joins tensors with different channel axes", node.name
        )
        for lay in tracked:
            walk.block(lay, reason)
        return
    if axis != tracked[0].axis:
        binary(walk, node)  # concatenating along another axis: channels must line up, as for Add
        return
    segments: list[Segment] = []
    start = 0
    for t in inputs:
        lay = walk.layouts.get(t.name)
        if lay is None:
            width = walk.known_dim(t, axis)  # inferred, or fixed by the graph (a Resize's sizes)
            if width is None:
                reason = BlockReason(
                    UNKNOWN_SHAPE, f"Concat {node.name} has an input of unknown width", node.name, t.name
                )
                for other in tracked:
                    walk.block(other, reason)
                return
            frozen = walk.new_space(width, node.name, producer=False)
            walk.block_space(
                frozen,
                BlockReason(
                    UNTRACKED_TENSOR, f"untracked input {t.name} of Concat {node.name}", node.name, t.name
                ),
            )
            segments.append(Segment(frozen, start, width))
            start += width
            continue
        segments += shifted(lay.segments, start)
        start += lay.length
    walk.set_layout(node.outputs[0], Layout(rank, axis, tuple(segments)))


@register_rule("Split")
def split(walk: Analysis, node: gs.Node) -> None:
    """On the channel axis at constant sizes: each output carries the segments inside its range; a
    cut inside a group partitions it; the (unshared) split input is rewritten with the fold."""
    lay = walk.layout(node.inputs[0])
    if lay is None:
        return
    axis = int(node.attrs.get("axis", 0))
    axis = axis + lay.rank if axis < 0 else axis
    if axis != lay.axis:
        for out in node.outputs:
            walk.set_layout(out, lay)
        return
    sizes = None
    sizes_t = node.inputs[1] if len(node.inputs) > 1 and node.inputs[1].name else None
    if sizes_t is not None:
        sizes = const_values(sizes_t)
    elif node.attrs.get("split") is not None:
        sizes = np.asarray(node.attrs["split"])
    elif "num_outputs" in node.attrs or len(node.outputs) > 0:
        count = int(node.attrs.get("num_outputs", len(node.outputs)))
        if lay.length % count == 0:
            sizes = np.full(count, lay.length // count)
    if sizes is None:
        message = f"Split {node.name} has unknown split sizes on the channel axis"
        walk.block(lay, BlockReason(UNTRACED_SHAPE, message, node.name))
        return
    bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    lay = cut_at(walk, node, bounds[1:-1])
    if lay is None:
        return
    in_attr = sizes_t is None and node.attrs.get("split") is not None  # opset < 13 (YOLOv8 at opset 12)
    if not in_attr and (sizes_t is None or len(walk.graph_consumers(sizes_t)) != 1):
        # folding changes the widths: only an unshared 'split' input (or attribute) can be rewritten
        message = f"Split {node.name} has no rewritable split sizes on the channel axis"
        code = UNSUPPORTED_FORM if sizes_t is None else SHARED_TENSOR  # sizes implied, or a shared input
        walk.block(lay, BlockReason(code, message, node.name))
        return
    for i, out in enumerate(node.outputs):
        segs = window(lay.segments, bounds[i], bounds[i + 1])
        for s in segs:
            if in_attr:  # entry i of the attribute loses the segment's removed channels
                walk.unit_attrs[s.space].append((node.name, f"split#{i}", s.block))
            else:
                walk.add_shape_member(s, sizes_t, i, node)
        walk.set_layout(out, Layout(lay.rank, lay.axis, segs))


def slice_channels(walk: Analysis, node: gs.Node, lay: Layout) -> bool:
    """A Slice taking channels [lo, hi) with constant bounds (a fused qkv or gate_up projection cut
    apart, Phi-3): a cut inside a group partitions it, as for Split, and the output carries the
    segments inside the range. The bounds are rewritten: ``start`` loses the folded channels of
    every segment before it, ``end`` those of every segment up to it (an end at or past the
    channel count stays, it means "to the end"). False if the Slice is not of that form."""
    starts_t, ends_t = node.inputs[1], node.inputs[2]
    steps_t = node.inputs[4] if len(node.inputs) > 4 and node.inputs[4].name else None
    if not isinstance(starts_t, gs.Constant) or not isinstance(ends_t, gs.Constant):
        return False
    if steps_t is not None and (
        not isinstance(steps_t, gs.Constant) or int(np.asarray(steps_t.values)[0]) != 1
    ):
        return False
    lo, hi, length = int(np.asarray(starts_t.values)[0]), int(np.asarray(ends_t.values)[0]), lay.length
    if lo < 0 or hi <= lo or lo >= length:
        return False
    open_end = hi >= length
    hi = min(hi, length)
    lay = cut_at(walk, node, [lo, hi])
    if lay is None:
        return True
    for seg in lay.segments:
        if seg.start + seg.length <= lo:
            walk.add_shape_member(seg, starts_t, 0, node)
        if not open_end and seg.start + seg.length <= hi:
            walk.add_shape_member(seg, ends_t, 0, node)
    walk.passthrough(node, Layout(lay.rank, lay.axis, window(lay.segments, lo, hi)))
    return True


def cut_at(walk: Analysis, node: gs.Node, bounds) -> Layout | None:
    """Partition every group of ``node``'s first input that a channel bound falls inside (a fused
    projection cut apart by Split or Slice); the input's layout after the cuts, or None when a cut
    is not on a unit boundary (then blocked)."""
    lay = walk.cut(node.inputs[0].name, bounds, node)
    if lay is None:
        message = f"{node.op} {node.name} cuts a group's channels apart on the channel axis"
        walk.block(walk.layouts[node.inputs[0].name], BlockReason(SPLITS_UNITS, message, node.name))
    return lay


register_op("Split", fix_attrs=shrink_unit_attrs)  # a 'split' attribute's entries (opset < 13)
