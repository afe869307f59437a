"""Normalizations: BatchNormalization, InstanceNormalization, LayerNormalization (and the RMS norms
RMSNormalization, SimplifiedLayerNormalization), GroupNormalization, and onnxruntime's fused
SkipLayerNormalization, SkipSimplifiedLayerNormalization and EmbedLayerNormalization.

An inference BN or InstanceNorm on axis 1 is channel-wise: its per-channel vectors follow their
channel (``average`` members; BN running statistics are not clustering features). A LayerNorm over
axes after the channel axis passes the channels; one over the channel axis mixes them, as does
GroupNorm (blocked). The fused onnxruntime norms normalise over the last axis, where a transformer's
channels are: they block (their outputs start untracked, like any normalised residual stream).
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from onnxfold.analysis.groups import (
    AVERAGE,
    MIXES_CHANNELS,
    SECONDARY_OUTPUT,
    UNSUPPORTED_FORM,
    BlockReason,
)
from onnxfold.analysis.registry import register_rule
from onnxfold.analysis.walk import Analysis


@register_rule("BatchNormalization")
def batch_norm(walk: Analysis, node: gs.Node) -> None:
    """Inference BN on axis 1 with constant scale, bias, mean and var: channel-wise."""
    lay = walk.layout(node.inputs[0])
    if lay is None:
        return
    params = node.inputs[1:5]
    if (
        lay.axis != 1
        or not all(isinstance(p, gs.Constant) for p in params)
        or any(o.outputs for o in node.outputs[1:])
        or node.attrs.get("training_mode", 0)
    ):
        message = f"BatchNormalization {node.name} is not an inference BN on axis 1 with constants"
        walk.block(lay, BlockReason(UNSUPPORTED_FORM, message, node.name))
        return
    kinds = ("bn_scale", "bn_bias", "bn_mean", "bn_var")
    for seg in lay.segments:
        for p, kind in zip(params, kinds, strict=True):
            walk.add_member(
                seg.space,
                p,
                0,
                AVERAGE,
                node,
                seg.start,
                seg.block,
                kind,
                feature=kind in ("bn_scale", "bn_bias"),
            )
    walk.set_layout(node.outputs[0], lay)


@register_rule("InstanceNormalization")
def instance_norm(walk: Analysis, node: gs.Node) -> None:
    """Normalises each channel over its own spatial dims: channel-wise, scale and bias follow."""
    lay = walk.layout(node.inputs[0])
    if lay is None:
        return
    params = node.inputs[1:3]
    if lay.axis != 1 or not all(isinstance(p, gs.Constant) for p in params):
        message = f"InstanceNormalization {node.name} is not on axis 1 with constants"
        walk.block(lay, BlockReason(UNSUPPORTED_FORM, message, node.name))
        return
    for seg in lay.segments:
        for p, kind in zip(params, ("norm_scale", "norm_bias"), strict=True):
            walk.add_member(seg.space, p, 0, AVERAGE, node, seg.start, seg.block, kind)
    walk.set_layout(node.outputs[0], lay)


@register_rule("LayerNormalization")
@register_rule("RMSNormalization")
@register_rule("SimplifiedLayerNormalization")
def layer_norm(walk: Analysis, node: gs.Node) -> None:
    """Normalising over the axes after the channel axis keeps the channels; over it mixes them."""
    lay = walk.layout(node.inputs[0])
    if lay is None:
        return
    axis = int(node.attrs.get("axis", -1))
    axis = axis + lay.rank if axis < 0 else axis
    if lay.axis >= axis or not walk.only_first_input_tracked(node):
        walk.block(
            lay,
            BlockReason(MIXES_CHANNELS, f"{node.op} {node.name} normalises over the channel axis", node.name),
        )
        return
    if any(o.outputs for o in node.outputs[1:]):
        walk.block(
            lay,
            BlockReason(SECONDARY_OUTPUT, f"{node.op} {node.name} has used statistics outputs", node.name),
        )
        return
    walk.passthrough(node)


@register_rule("GroupNormalization")
def group_norm(walk: Analysis, node: gs.Node) -> None:
    """Statistics over groups of channels: merging channels would change them (blocked)."""
    message = f"GroupNormalization {node.name} normalises over groups of channels"
    walk.block_inputs(node, BlockReason(MIXES_CHANNELS, message, node.name))


@register_rule("SkipLayerNormalization", domain="com.microsoft")
@register_rule("SkipSimplifiedLayerNormalization", domain="com.microsoft")
@register_rule("EmbedLayerNormalization", domain="com.microsoft")
def fused_norm(walk: Analysis, node: gs.Node) -> None:
    """onnxruntime's fused norms: LayerNorm/RMSNorm of input + skip (+ bias), or of summed embeddings,
    over the last axis: channels on any tracked input are mixed by the statistic (blocked)."""
    message = f"{node.op} {node.name} normalises (input + skip) over the channel axis"
    if node.op == "EmbedLayerNormalization":
        message = f"{node.op} {node.name} normalises embeddings over the channel axis"
    walk.block_inputs(node, BlockReason(MIXES_CHANNELS, message, node.name))
