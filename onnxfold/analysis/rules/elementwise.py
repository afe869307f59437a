"""Element-wise ops and pools: unary activations, Clip, binary ops (Add, Mul …), pooling.

By Lemma B.1 of the paper, σ(U z) = U σ(z) for a channel-wise σ, so unary ops pass the channels
through. Binary ops that combine two tracked activations unite their spaces (one assignment for
both); a constant operand with one value per channel becomes an ``average`` member. Pools over
spatial axes pass the channels through. onnxruntime's contrib activations are channel-wise too:
Gelu/QuickGelu are unary; FastGelu(x, bias), BiasGelu(x, bias) and BiasAdd(x, bias, skip) add a per-channel
bias (an ``average`` member, sliced and merged with its channel) before the activation, like Add.
BiasSplitGelu gates one half of the channels with the other (blocked).
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from onnxfold.analysis.groups import (
    MIXES_CHANNELS,
    SECONDARY_OUTPUT,
    TRACKED_PARAMETER,
    UNALIGNED,
    UNKNOWN_SHAPE,
    UNSUPPORTED_FORM,
    BlockReason,
    Layout,
)
from onnxfold.analysis.registry import register_rule
from onnxfold.analysis.rules.fills import fills_apart
from onnxfold.analysis.shape_trace import tensor_shape
from onnxfold.analysis.walk import Analysis

UNARY = (
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Erf",
    "Elu",
    "Selu",
    "Celu",
    "Softplus",
    "Softsign",
    "Gelu",
    "Mish",
    "Exp",
    "Log",
    "Sqrt",
    "Neg",
    "Abs",
    "Reciprocal",
    "Sin",
    "Cos",
    "Floor",
    "Ceil",
    "Round",
    "Sign",
    "ThresholdedRelu",
    "Identity",
    "Dropout",
    "Cast",
    "Swish",
    "IsNaN",
    "IsInf",
    "Not",
)
POOL = ("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
BINARY = ("Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "PRelu", "Pow")


def unary(walk: Analysis, node: gs.Node) -> None:
    """y = σ(x) channel by channel: the channels pass (a used Dropout mask blocks them)."""
    if node.op == "Dropout" and len(node.outputs) > 1 and node.outputs[1].outputs:
        walk.block_inputs(node, BlockReason(SECONDARY_OUTPUT, f"Dropout {node.name} mask is used", node.name))
        return
    if walk.only_first_input_tracked(node):
        walk.passthrough(node)


@register_rule("Clip")
def clip(walk: Analysis, node: gs.Node) -> None:
    """Clip with scalar bounds is channel-wise."""
    for t in node.inputs[1:]:
        if t.name and not (isinstance(t, gs.Constant) and t.values.size == 1):
            walk.block_inputs(
                node, BlockReason(UNSUPPORTED_FORM, f"Clip {node.name} has non-scalar bounds", node.name)
            )
            return
    walk.passthrough(node)


def pool(walk: Analysis, node: gs.Node) -> None:
    """Pools over the spatial axes of [N, C, …] keep the channels."""
    lay = walk.layout(node.inputs[0])
    if lay is not None and lay.axis != 1:
        walk.block(
            lay, BlockReason(MIXES_CHANNELS, f"{node.op} {node.name} pools over the channel axis", node.name)
        )
        return
    walk.passthrough(node)


def _cut_to_align(
    walk: Analysis, node: gs.Node, tracked: list[tuple[gs.Tensor, Layout]], out_rank: int
) -> list[tuple[gs.Tensor, Layout]]:
    """Partition groups so that the tracked inputs' segments line up: a residual Add of one conv's
    output and a Concat (or a channel-padded shortcut, MediaPipe's BlazeFace) joins channels [0, a)
    of the conv with the Concat's first input and [a, b) with its second, two independent groups.
    Layouts that cannot be cut so (other axes, lengths, a cut inside a block) are returned as they are."""
    lays = [lay for _t, lay in tracked]
    if len(lays) < 2 or len({(lay.axis + out_rank - lay.rank, lay.length) for lay in lays}) > 1:
        return tracked
    bounds = sorted({b for lay in lays for sg in lay.segments for b in (sg.start, sg.start + sg.length)})
    for t, _ in tracked:
        if walk.cut(t.name, bounds, node) is None:
            break
    return [(t, walk.layouts[t.name]) for t, _ in tracked]  # a cut re-lays every tensor of its group


def binary(walk: Analysis, node: gs.Node) -> None:
    """Broadcasting element-wise ops: tracked inputs must line up (their spaces are united); an
    untracked input must be broadcast along the channel axis, or be a constant with one value per
    channel (an ``average`` member). Also Concat along an axis other than the channels'."""
    inputs = [t for t in node.inputs if t.name]
    tracked = [(t, walk.layouts[t.name]) for t in inputs if t.name in walk.layouts]
    if not tracked:
        return
    out_rank = max((walk.rank_of(t) or 0) for t in inputs)
    tracked, apart = fills_apart(walk, tracked, out_rank)
    if not tracked:
        return
    tracked = _broadcast_singles(walk, node, tracked, out_rank)
    tracked = _cut_to_align(walk, node, tracked, out_rank)
    ref_t, ref = tracked[0]
    out_axis = ref.axis + out_rank - ref.rank
    reason = None
    aligned = True  # channels of all inputs line up, so the output still carries ref's channels
    for _t, lay in tracked[1:]:
        if lay.axis + out_rank - lay.rank != out_axis or [(s.start, s.n, s.block) for s in lay.segments] != [
            (s.start, s.n, s.block) for s in ref.segments
        ]:
            reason = BlockReason(
                UNALIGNED, f"{node.op} {node.name} combines tensors whose channels do not line up", node.name
            )
            aligned = False
    constants: list[tuple[gs.Constant, int]] = []
    if node.op == "Pow" and (inputs[0] is not ref_t or len(tracked) > 1):
        reason = BlockReason(TRACKED_PARAMETER, f"Pow {node.name} has a tracked exponent", node.name)
    for t in inputs:
        if t.name in walk.layouts and t.name not in apart:
            continue
        shape = tensor_shape(t)
        if shape is None:
            reason = BlockReason(
                UNKNOWN_SHAPE,
                f"{node.op} {node.name} combines channels with {t.name} of unknown shape",
                node.name,
                t.name,
            )
            continue
        ax = out_axis - (out_rank - len(shape))
        if ax < 0 or shape[ax] == 1 or walk.known_dim(t, ax) == 1:
            continue
        if not isinstance(t, gs.Constant):
            reason = walk.untracked_reason(node, t, f"{node.op} {node.name} combines channels with ")
        elif shape[ax] != ref.length:
            reason = BlockReason(
                UNALIGNED,
                f"{node.op} {node.name}: constant {t.name} does not match the channel count",
                node.name,
                t.name,
            )
        else:
            constants.append((t, ax))
    if reason:
        for _, lay in tracked:
            walk.block(lay, reason)
        if aligned:  # keep following the (blocked) channels so later barriers add their reasons too
            walk.set_layout(node.outputs[0], Layout(out_rank, out_axis, ref.segments))
        return
    for _t, lay in tracked[1:]:
        walk.unite(ref, lay)
    for const, ax in constants:
        walk.add_average(ref, const, ax, node, "constant")
    walk.set_layout(node.outputs[0], Layout(out_rank, out_axis, ref.segments))


def _broadcast_singles(walk: Analysis, node: gs.Node, tracked: list, out_rank: int) -> list:
    """``tracked`` (tensor, layout) pairs without those that hold a single channel broadcast over the
    channels of a wider one on the same axis (attention pooling's weights [N, T, 1], a Linear of the
    stream to 1, times the stream [N, T, C]: every channel is scaled alike, so the stream's channels
    still line up); that single channel's own group is blocked, since it is read as a broadcast.
    Where none is wider, ``tracked`` as it is."""
    axes = {id(lay): lay.axis + out_rank - lay.rank for _, lay in tracked}
    widest = max(tracked, key=lambda pair: pair[1].length)
    singles = [
        (t, lay)
        for t, lay in tracked
        if lay.length == 1 < widest[1].length and axes[id(lay)] == axes[id(widest[1])]
    ]
    if not singles:
        return tracked
    for t, lay in singles:
        message = f"{node.op} {node.name} broadcasts this one channel over the {widest[1].length} of {widest[0].name}"
        walk.block(lay, BlockReason(UNSUPPORTED_FORM, message, node.name, t.name))
    rest = [pair for pair in tracked if all(pair[0] is not t for t, _ in singles)]
    return [widest] + [pair for pair in rest if pair is not widest]


@register_rule("Where")
def where(walk: Analysis, node: gs.Node) -> None:
    """y = cond ? a : b element by element, broadcasting like :func:`binary` (torch's SDPA export
    zeroes the NaN rows of the attention probabilities with ``Where(IsNaN(p), 0, p)``). A per-channel
    constant a or b is averaged like an Add's; a constant condition that differs between channels
    would select differently for channels merged into one (blocked)."""
    cond = node.inputs[0]
    lay = next((walk.layouts[t.name] for t in node.inputs if t.name in walk.layouts), None)
    shape = tensor_shape(cond)
    if lay is not None and isinstance(cond, gs.Constant) and shape is not None:
        out_rank = max((walk.rank_of(t) or 0) for t in node.inputs if t.name)
        ax = lay.axis + out_rank - lay.rank - (out_rank - len(shape))
        if ax >= 0 and shape[ax] != 1:
            message = f"Where {node.name} selects by a constant condition that differs between channels"
            walk.block_inputs(node, BlockReason(UNSUPPORTED_FORM, message, node.name, cond.name))
            return
    binary(walk, node)


@register_rule("BiasSplitGelu", domain="com.microsoft")
def bias_split_gelu(walk: Analysis, node: gs.Node) -> None:
    """y = (x + b)[…, :C/2] · gelu((x + b)[…, C/2:]): channel c meets channel C/2 + c (blocked)."""
    message = f"BiasSplitGelu {node.name} gates the first half of the channels with the second"
    walk.block_inputs(node, BlockReason(MIXES_CHANNELS, message, node.name))


for _op in UNARY:
    register_rule(_op)(unary)
for _op in ("Gelu", "QuickGelu"):
    register_rule(_op, domain="com.microsoft")(unary)
for _op in ("FastGelu", "BiasGelu", "BiasAdd"):
    register_rule(_op, domain="com.microsoft")(binary)
for _op in POOL:
    register_rule(_op)(pool)
for _op in BINARY:
    register_rule(_op)(binary)
