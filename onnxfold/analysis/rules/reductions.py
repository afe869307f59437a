"""Reductions and the softmax family: channels pass when the op works over other axes.

A reduction over the channel axis (or a softmax normalising over it) mixes channels (blocked);
``keepdims=0`` moves the channel axis down by the number of reduced axes before it. Before opset
13, Softmax/LogSoftmax/Hardmax normalise over all of [axis, rank).
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from onnxfold.analysis.groups import MIXES_CHANNELS, UNTRACED_SHAPE, BlockReason
from onnxfold.analysis.registry import register_rule
from onnxfold.analysis.shape_trace import node_axes
from onnxfold.analysis.walk import Analysis

REDUCE = (
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
)
SOFTMAX = ("Softmax", "LogSoftmax", "Hardmax")


def reduce(walk: Analysis, node: gs.Node) -> None:
    """Reduce* over axes other than the channel axis."""
    lay = walk.layout(node.inputs[0])
    if lay is None:
        return
    if not walk.only_first_input_tracked(node):
        return
    axes = node_axes(node, lay.rank)
    if axes is None:
        walk.block(lay, BlockReason(UNTRACED_SHAPE, f"{node.op} {node.name} has computed axes", node.name))
        return
    if not axes:
        if node.attrs.get("noop_with_empty_axes", 0):
            walk.passthrough(node)
            return
        axes = list(range(lay.rank))
    if lay.axis in axes:
        walk.block(
            lay,
            BlockReason(MIXES_CHANNELS, f"{node.op} {node.name} reduces over the channel axis", node.name),
        )
        return
    keep = int(node.attrs.get("keepdims", 1))
    if keep:
        walk.passthrough(node)
    else:
        new_axis = lay.axis - sum(1 for a in axes if a < lay.axis)
        walk.passthrough(node, lay.with_axis(lay.rank - len(axes), new_axis))


def softmax(walk: Analysis, node: gs.Node) -> None:
    """Softmax/LogSoftmax/Hardmax over an axis other than the channel axis."""
    lay = walk.layout(node.inputs[0])
    if lay is None:
        return
    axis = int(node.attrs.get("axis", -1 if node.op == "Softmax" else 1))
    axis = axis + lay.rank if axis < 0 else axis
    coerced = (walk.graph.opset or 13) < 13  # opset < 13: normalises over all of [axis, rank)
    if axis == lay.axis or (coerced and axis < lay.axis):
        walk.block(
            lay,
            BlockReason(MIXES_CHANNELS, f"{node.op} {node.name} normalises over the channel axis", node.name),
        )
        return
    walk.passthrough(node)


@register_rule("ArgMax")
@register_rule("ArgMin")
def arg_extreme(walk: Analysis, node: gs.Node) -> None:
    """ArgMax/ArgMin: over the channel axis, the index of a channel is the model's decision (a
    class id), which merged channels would renumber; over another axis, indices out, not channels.
    Blocked either way, with which it is (text2tashkeel's tagger read "reaches unsupported op ArgMax")."""
    lay = walk.layout(node.inputs[0])
    if lay is None:
        return
    axis = int(node.attrs.get("axis", 0))
    axis = axis + lay.rank if axis < 0 else axis
    if axis == lay.axis:
        message = f"{node.op} {node.name} picks one of these channels by index (a class decision)"
    else:
        message = f"{node.op} {node.name} turns these channels into indices along another axis"
    walk.block(lay, BlockReason(MIXES_CHANNELS, message, node.name))


for _op in REDUCE:
    register_rule(_op)(reduce)
for _op in SOFTMAX:
    register_rule(_op)(softmax)
