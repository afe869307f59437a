"""Attention: fused attention ops (ONNX ``Attention``, com.microsoft ``MultiHeadAttention``) and the
head coarsening that grouped-query attention needs when q·kᵀ is an explicit MatMul.

Heads fold as whole units: a group's channels are coarsened to blocks of head_dim (its ``unit``),
so clustering merges heads, never channels within one. The head-count attributes of a fused op
lose n − k when its group folds (:func:`fix_head_counts`).
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from onnxfold.analysis.groups import (
    ATTENTION_HEADS,
    SECONDARY_OUTPUT,
    SPLITS_UNITS,
    TRACKED_PARAMETER,
    BlockReason,
    ChannelGroup,
    Layout,
)
from onnxfold.analysis.registry import register_op, register_rule
from onnxfold.analysis.walk import Analysis

#: the attributes that count heads, per fused attention op
HEAD_ATTRS = {"Attention": ["q_num_heads", "kv_num_heads"], "MultiHeadAttention": ["num_heads"]}


@register_rule("Attention")
@register_rule("MultiHeadAttention", domain="com.microsoft")
def fused_attention(walk: Analysis, node: gs.Node) -> None:
    """Attention fused into one op on 3-D [B, S, heads·head_dim] inputs: ONNX ``Attention``
    (opset 23: ``q_num_heads``/``kv_num_heads``) and com.microsoft ``MultiHeadAttention``
    (``num_heads``). q, k and v are coarsened to whole heads and share one assignment (head h
    of q meets head h of k and v); the output carries v's head blocks to the output projection;
    the head-count attributes lose n − k when the group folds. Grouped-query heads, past/present
    key-value tensors, a packed bias and other outputs keep the heads as they are (blocked)."""
    names = HEAD_ATTRS[node.op]
    if node.op == "Attention":
        extras, outputs = node.inputs[3:4], node.outputs[1:]
        blockers = [t for t in node.inputs[4:] if t.name]
    else:
        extras, outputs = node.inputs[4:6], node.outputs[1:]
        blockers = [t for i, t in enumerate(node.inputs[3:], 3) if t.name and i in (3, 6, 7, 8)]
    counts = [node.attrs.get(a) for a in names]
    q, k, v = (node.inputs[i] if len(node.inputs) > i else None for i in range(3))
    lays = [walk.layout(t) for t in (q, k, v)]
    reason = None
    if None in counts or len(set(counts)) != 1:
        reason = BlockReason(
            ATTENTION_HEADS,
            f"{node.op} {node.name}: heads without equal query/key-value counts (grouped-query)",
            node.name,
        )
    elif any(lay is None for lay in lays) or any(lay.rank != 3 or lay.axis != 2 for lay in lays):
        reason = BlockReason(
            ATTENTION_HEADS,
            f"{node.op} {node.name}: q, k and v are not all tracked [B, S, heads·head_dim] tensors",
            node.name,
        )
    elif blockers:
        reason = BlockReason(
            ATTENTION_HEADS,
            f"{node.op} {node.name} takes {blockers[0].name} (bias or past key/value) per head",
            node.name,
            blockers[0].name,
        )
    elif any(t.name and (t.outputs or t in walk.graph.outputs) for t in outputs):
        reason = BlockReason(
            SECONDARY_OUTPUT,
            f"{node.op} {node.name} returns present key/value (or scores) per head",
            node.name,
        )
    elif any(walk.layout(t) is not None for t in extras):
        reason = BlockReason(
            TRACKED_PARAMETER, f"{node.op} {node.name} takes a mask computed from these channels", node.name
        )
    if reason is None:
        heads = int(counts[0])
        units = [lay.length // heads if lay.length % heads == 0 else 0 for lay in lays]
        if 0 in units or any(len(lay.segments) != len(lays[0].segments) for lay in lays):
            reason = BlockReason(
                SPLITS_UNITS, f"{node.op} {node.name}: channel counts are not whole heads", node.name
            )
    if reason is not None:
        walk.block_inputs(node, reason)
        return
    for lay, unit in zip(lays, units, strict=True):
        reason = BlockReason(SPLITS_UNITS, f"{node.op} {node.name} splits heads across groups", node.name)
        if not walk.coarsen_segments(lay, unit, node, reason):
            walk.block_inputs(node, reason)
            return
    lays = [walk.layout(t) for t in (q, k, v)]
    for lay in lays[1:]:
        walk.unite(lays[0], lay)
    for sg in lays[0].segments:
        walk.unit_attrs[sg.space] += [(node.name, a) for a in names]
    walk.set_layout(node.outputs[0], Layout(3, 2, lays[2].segments))


def align_units(walk: Analysis, node: gs.Node, tracked: list) -> list:
    """Grouped-query attention: q has H heads (block 1), k/v carry kv heads each repeated for
    a group of H/kv query heads (block H/kv). Coarsen q to whole query groups so both sides
    count the same units: one KV head plus its query group folds as one. Returns ``tracked``
    with the layouts as they are after the coarsening."""
    (ta, la, ra), (tb, lb, rb) = tracked
    if len(la.segments) != 1 or len(lb.segments) != 1 or la.length != lb.length:
        return tracked
    sa, sb = la.segments[0], lb.segments[0]
    if sa.block == sb.block:
        return tracked
    fine, coarse = (sa, sb) if sa.block < sb.block else (sb, sa)
    if coarse.block % fine.block or not walk.coarsen(fine.space, coarse.block // fine.block, node):
        return tracked
    return [(t, walk.layouts[t.name], r) for t, _, r in tracked]


def fix_head_counts(node: gs.Node, folds: list[tuple[ChannelGroup, int]], tensors: dict) -> None:
    """Every head-count attribute a folded group names loses the group's n − k heads."""
    for group, k in folds:
        for node_name, attr in group.unit_attrs:
            if node_name == node.name:
                node.attrs[attr] = int(node.attrs[attr]) - (group.size - k)


register_op("Attention", fix_attrs=fix_head_counts)
register_op("MultiHeadAttention", "com.microsoft", fix_attrs=fix_head_counts)
