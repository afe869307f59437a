"""Convolutions whose groups tie channels: depthwise Conv and ConvTranspose (group = C_in: the channels
pass, as blocks of a multiplier's outputs) and grouped ones (1 < group < C_in: channels merge only within
their convolution groups). The rules of :mod:`.producers` hand them these cases."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from onnxfold.analysis.groups import AVERAGE, GROUPED_CONV, SUM, BlockReason, Layout, Segment
from onnxfold.analysis.walk import Analysis

#: how a grouped convolution's channels may merge
MERGE_WITHIN = "may only merge within their convolution group, and no part of the group holds two"


def optional_input(node: gs.Node, i: int) -> gs.Tensor | None:
    """Input ``i`` of ``node`` where it is given (named), else None."""
    return node.inputs[i] if len(node.inputs) > i and node.inputs[i].name else None


def depthwise_conv(
    walk: Analysis, node: gs.Node, lay: Layout, multiplier: int, transposed: bool = False
) -> None:
    """A depthwise Conv (group = C_in, weight [m·C_in, 1, k…]) or ConvTranspose (``transposed``, weight
    [C_in, m, k…]: a U-Net's learnt per-channel upsampling): output channels c·m … c·m + m − 1 come from
    input channel c alone, so the channels pass, each as a block of m outputs (a segment's block b
    becomes b·m), and the weight rows and biases of channel c follow it (averaged entry by entry): a
    Conv's m rows of the block, a ConvTranspose's one row c. The ``group`` attribute counts the input
    entries: it loses n − k per segment, times its block (``unit_attrs``). MobileNet's has m = 1;
    EEGNet's depthwise spatial filter m = 2."""
    w, b = node.inputs[1], optional_input(node, 2)
    rows = 1 if transposed else multiplier  # weight rows per input entry
    segments = []
    for seg in lay.segments:
        start, block = seg.start * multiplier, seg.block * multiplier
        walk.add_member(seg.space, w, 0, AVERAGE, node, seg.start * rows, seg.block * rows, "depthwise")
        if b is not None:
            walk.add_member(seg.space, b, 0, AVERAGE, node, start, block, "bias")
        segments.append(Segment(seg.space, start, seg.n, block))
        walk.unit_attrs[seg.space].append((node.name, "group", seg.block))  # an input channel per entry
    walk.set_layout(node.outputs[0], Layout(lay.rank, 1, tuple(segments)))


def grouped_conv(walk: Analysis, node: gs.Node, lay: Layout | None, space: int, group: int) -> None:
    """A Conv with 1 < ``group`` (not depthwise), weight [C_out, C_in/group, k…]: output channel o belongs
    to convolution group o // (C_out/group) and reads only the input channels of that group, through
    w[o, :]. Both sides stay valid grouped convolutions if channels merge only within their convolution
    group and every group keeps the same number: the output ``space`` and the input's space are cut into
    ``group`` parts, and the input columns (axis 1) are a split member, slab g of axis 0 reading part g.
    An input made of several groups' channels (a Concat) blocks: equal widths per convolution group
    would tie independent groups."""
    w = node.inputs[1]
    c_in = int(w.shape[1]) * group
    label = f"grouped {node.op} {node.name} (group={group})"
    walk.require_parts(
        space,
        group,
        BlockReason(GROUPED_CONV, f"{label}: its output channels {MERGE_WITHIN}", node.name),
    )
    if lay is None:
        return
    seg = lay.segments[0]
    if len(lay.segments) != 1 or seg.start != 0 or seg.n != c_in:
        message = (
            f"{label} reads channels of several groups (equal widths per convolution group would tie them)"
        )
        walk.block(lay, BlockReason(GROUPED_CONV, message, node.name))
        return
    walk.add_member(seg.space, w, 1, SUM, node, kind="weight", split=group, split_axis=0)
    walk.consumers[seg.space].append(node.name)
    reason = BlockReason(GROUPED_CONV, f"{label}: its input channels {MERGE_WITHIN}", node.name)
    walk.require_parts(seg.space, group, reason)
