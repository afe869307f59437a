"""Attention: fused attention ops (ONNX ``Attention``; com.microsoft ``MultiHeadAttention``, ``Attention``
with a packed QKV weight, ``GroupQueryAttention``, ``RotaryEmbedding``) and the head coarsening that
grouped-query attention needs when q·kᵀ is an explicit MatMul.

Heads fold as whole units: a group's channels are coarsened to blocks of head_dim (its ``unit``),
so clustering merges heads, never channels within one. The head-count attributes of a fused op
lose (n − k) · heads per unit when its group folds (:func:`fix_head_counts`); a packed Attention's
``qkv_hidden_sizes`` lose as many heads' widths (:func:`fix_packed_attention`).
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from onnxfold.analysis.groups import (
    ATTENTION_HEADS,
    AVERAGE,
    COMPUTED_WEIGHT,
    OTHER_AXIS,
    SECONDARY_OUTPUT,
    SPLITS_UNITS,
    TRACKED_PARAMETER,
    BlockReason,
    ChannelGroup,
    Layout,
    Segment,
    shrink_unit_attrs,
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
        walk.unit_attrs[sg.space] += [(node.name, a, 1) for a in names]
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


def _given(node: gs.Node, i: int) -> gs.Tensor | None:
    """Input ``i`` of ``node`` if it is given (present and named), else None."""
    return node.inputs[i] if len(node.inputs) > i and node.inputs[i].name else None


def _used(walk: Analysis, t: gs.Tensor) -> bool:
    return bool(t.name) and bool(t.outputs or t in walk.graph.outputs)


def qkv_sizes(node: gs.Node) -> list[int] | None:
    """q, k and v widths of a packed com.microsoft Attention: ``qkv_hidden_sizes``, else the weight's
    columns in three equal parts; None when the weight is not a constant 2-D tensor."""
    w = node.inputs[1]
    if not isinstance(w, gs.Constant) or len(w.shape) != 2:
        return None
    sizes = node.attrs.get("qkv_hidden_sizes")
    return [int(v) for v in sizes] if sizes else [int(w.shape[1]) // 3] * 3


@register_rule("Attention", domain="com.microsoft")
def packed_attention(walk: Analysis, node: gs.Node) -> None:
    """com.microsoft ``Attention``: y = attention(x·W + b) with W = [hidden, q | k | v] packed
    (``qkv_hidden_sizes``, else three equal parts) and ``num_heads`` heads in each part. A producer of
    heads: it opens a space of ``num_heads`` units whose members are W's q, k and v column blocks and
    the same slices of b (``average``; head h of q, k and v fold together), and it reads x through W's
    rows like a MatMul (``sum``). The output carries v's head blocks. A past key/value input, a used
    present output, an attention bias (per head) or a computed weight keep the heads (blocked)."""
    x, w, b = node.inputs[0], node.inputs[1], _given(node, 2)
    lay = walk.layout(x)
    sizes = qkv_sizes(node)
    heads = int(node.attrs.get("num_heads", 0))
    if sizes is None or (b is not None and not isinstance(b, gs.Constant)):
        walk.block_inputs(
            node,
            BlockReason(
                COMPUTED_WEIGHT, f"{node.op} {node.name} has a computed packed QKV weight", node.name
            ),
        )
        return
    if lay is not None and lay.axis != lay.rank - 1:
        walk.block(
            lay,
            BlockReason(
                OTHER_AXIS, f"{node.op} {node.name} reads channels on an axis other than the last", node.name
            ),
        )
    elif lay is not None:
        walk.add_consumer(lay, w, 0, node)
    reason = None
    if heads < 1 or sum(sizes) != w.shape[1] or any(size % heads for size in sizes):
        reason = BlockReason(
            SPLITS_UNITS, f"{node.op} {node.name}: q, k and v widths {sizes} are not whole heads", node.name
        )
    elif _given(node, 4) is not None or _given(node, 6) is not None:
        reason = BlockReason(
            ATTENTION_HEADS,
            f"{node.op} {node.name} takes a past key/value per head",
            node.name,
            node.inputs[4].name,
        )
    elif _given(node, 5) is not None:
        reason = BlockReason(
            ATTENTION_HEADS,
            f"{node.op} {node.name} adds an attention bias per head",
            node.name,
            node.inputs[5].name,
        )
    elif any(_used(walk, t) for t in node.outputs[1:]):
        reason = BlockReason(
            SECONDARY_OUTPUT, f"{node.op} {node.name} returns present key/value per head", node.name
        )
    elif _given(node, 3) is not None and walk.layout(node.inputs[3]) is not None:
        reason = BlockReason(
            TRACKED_PARAMETER, f"{node.op} {node.name} takes a mask computed from these channels", node.name
        )
    if heads < 1 or sum(sizes) != w.shape[1]:
        walk.block(lay, reason)
        return
    space = walk.new_space(heads, node.name)
    v_head = sizes[2] // heads
    walk.spaces[space].unit = v_head
    offset = 0
    for size in sizes:
        walk.add_member(space, w, 1, AVERAGE, node, offset, size // heads, "weight")
        if b is not None:
            walk.add_member(space, b, 0, AVERAGE, node, offset, size // heads, "bias")
        offset += size
    walk.unit_attrs[space].append((node.name, "num_heads", 1))
    if reason is not None:
        walk.block_space(space, reason)
    rank = walk.rank_of(x) or 3
    walk.set_layout(node.outputs[0], Layout(rank, rank - 1, (Segment(space, 0, heads, v_head),)))


@register_rule("GroupQueryAttention", domain="com.microsoft")
def group_query_attention(walk: Analysis, node: gs.Node) -> None:
    """com.microsoft ``GroupQueryAttention``: ``num_heads`` query heads over ``kv_num_heads`` key/value
    heads, query head h reading KV head h // g (g = num_heads / kv_num_heads), all of one head size.

    With separate q, k and v inputs and no KV cache: one KV head and its g query heads fold as one unit
    (q coarsened to g heads, k and v to one; one assignment), ``kv_num_heads`` losing n − k and
    ``num_heads`` g·(n − k). With a KV cache (a past key/value input or a used present output: its width
    is part of the model's signature) the KV heads stay, and the query heads fold on their own within
    the group of their KV head: their space is cut into ``kv_num_heads`` parts, each keeping the same
    count, and only ``num_heads`` changes. A packed QKV input, an attention bias or head sink (per head)
    and a used ``output_qk`` keep every head (blocked)."""
    heads, kv_heads = int(node.attrs.get("num_heads", 0)), int(node.attrs.get("kv_num_heads", 0))
    q, k, v = node.inputs[0], _given(node, 1), _given(node, 2)
    lays = [walk.layout(t) for t in (q, k, v)]
    label = f"{node.op} {node.name}"

    def block_all(reason: BlockReason) -> None:
        for lay in lays:
            walk.block(lay, reason)

    per_head = [t for t in (_given(node, 10), _given(node, 11)) if t is not None]
    if k is None or v is None:
        block_all(
            BlockReason(
                ATTENTION_HEADS,
                f"{label} takes packed QKV (query and key/value heads in one input)",
                node.name,
            )
        )
        return
    if heads < 1 or kv_heads < 1 or heads % kv_heads:
        block_all(
            BlockReason(ATTENTION_HEADS, f"{label}: num_heads is not a multiple of kv_num_heads", node.name)
        )
        return
    if per_head:
        block_all(
            BlockReason(
                ATTENTION_HEADS,
                f"{label} takes {per_head[0].name} per head (attention bias or head sink)",
                node.name,
                per_head[0].name,
            )
        )
        return
    if len(node.outputs) > 3 and _used(walk, node.outputs[3]):
        block_all(BlockReason(SECONDARY_OUTPUT, f"{label} returns its attention scores per head", node.name))
        return
    if any(lay is not None and (lay.rank != 3 or lay.axis != 2) for lay in lays):
        block_all(
            BlockReason(
                ATTENTION_HEADS, f"{label}: q, k and v are not all [B, S, heads·head_size] tensors", node.name
            )
        )
        return
    if lays[0] is None:
        block_all(
            BlockReason(
                ATTENTION_HEADS, f"{label}: its query is not tracked, so no head can follow", node.name
            )
        )
        return
    cache = [t for t in (_given(node, 3), _given(node, 4)) if t is not None]
    present = [t for t in node.outputs[1:3] if _used(walk, t)]
    group = heads // kv_heads
    if lays[1] is None or lays[2] is None or cache or present:
        if cache:
            why = (
                f"{label} takes the KV cache {cache[0].name}: its KV heads are part of the model's signature"
            )
        elif present:
            why = f"{label} returns present key/value {present[0].name} per KV head"
        else:
            why = f"{label}: k or v is not tracked, so its KV heads cannot follow"
        kv_reason = BlockReason(ATTENTION_HEADS, why, node.name, cache[0].name if cache else "")
        walk.block(lays[1], kv_reason)
        walk.block(lays[2], kv_reason)
        query_heads(walk, node, lays[0], heads, kv_heads)
        return
    head_size = lays[1].length // kv_heads
    units = [lays[0].length // kv_heads, head_size, head_size]
    if lays[1].length % kv_heads or lays[0].length != heads * head_size or lays[2].length != lays[1].length:
        block_all(BlockReason(SPLITS_UNITS, f"{label}: channel counts are not whole heads", node.name))
        return
    for lay, unit in zip(lays, units, strict=True):
        reason = BlockReason(SPLITS_UNITS, f"{label} splits heads across groups", node.name)
        if not walk.coarsen_segments(lay, unit, node, reason):
            block_all(reason)
            return
    lays = [walk.layout(t) for t in (q, k, v)]
    if any(len(lay.segments) != len(lays[0].segments) for lay in lays):
        block_all(
            BlockReason(SPLITS_UNITS, f"{label}: q, k and v are laid out in different segments", node.name)
        )
        return
    walk.unite(lays[0], lays[1])
    walk.unite(lays[0], lays[2])
    for sg in lays[1].segments:
        walk.unit_attrs[sg.space] += [(node.name, "kv_num_heads", 1), (node.name, "num_heads", group)]
    walk.set_layout(node.outputs[0], Layout(3, 2, lays[0].segments))


def query_heads(walk: Analysis, node: gs.Node, lay: Layout, heads: int, kv_heads: int) -> None:
    """The query heads of a GroupQueryAttention whose KV heads stay: coarsened to whole heads, merging
    only within the query group of one KV head (``kv_num_heads`` equal parts, each keeping the same
    count); the output carries them to the output projection."""
    label = f"{node.op} {node.name}"
    reason = BlockReason(SPLITS_UNITS, f"{label}: query channels are not whole heads", node.name)
    if len(lay.segments) != 1 or lay.length % heads:
        walk.block(lay, reason)
        return
    if not walk.coarsen_segments(lay, lay.length // heads, node, reason):
        return
    lay = walk.layout(node.inputs[0])
    space = lay.segments[0].space
    within = BlockReason(
        ATTENTION_HEADS,
        f"{label}: query heads may only merge within the query group of their KV head, and no group holds two",
        node.name,
    )
    walk.require_parts(space, kv_heads, within)
    walk.unit_attrs[space].append((node.name, "num_heads", 1))
    walk.set_layout(node.outputs[0], Layout(3, 2, lay.segments))


@register_rule("RotaryEmbedding", domain="com.microsoft")
def rotary_embedding(walk: Analysis, node: gs.Node) -> None:
    """com.microsoft ``RotaryEmbedding`` rotates channel pairs within each head by position: on
    [B, N, S, head_size] the heads (axis 1) pass through; on [B, S, hidden] the channels are coarsened to
    whole heads (head_size = hidden / ``num_heads``, or twice the cos cache's width when ``num_heads`` is
    0), and ``num_heads`` counts the units."""
    lay = walk.layout(node.inputs[0])
    if lay is None or not walk.only_first_input_tracked(node):
        return
    heads = int(node.attrs.get("num_heads", 0))
    label = f"{node.op} {node.name}"
    if lay.rank == 4 and lay.axis == 1:
        walk.passthrough(node)
        return
    cos = _given(node, 2)
    head_size = (
        lay.length // heads if heads else (2 * int(cos.shape[-1]) if isinstance(cos, gs.Constant) else 0)
    )
    reason = BlockReason(SPLITS_UNITS, f"{label}: channels are not whole heads", node.name)
    if lay.rank != 3 or lay.axis != 2 or head_size < 1 or lay.length % head_size:
        walk.block(lay, reason)
        return
    if not walk.coarsen_segments(lay, head_size, node, reason):
        return
    lay = walk.layout(node.inputs[0])
    if heads:
        for sg in lay.segments:
            walk.unit_attrs[sg.space].append((node.name, "num_heads", 1))
    walk.passthrough(node, lay)


def fix_head_counts(node: gs.Node, folds: list[tuple[ChannelGroup, int]], tensors: dict) -> None:
    """Every head-count attribute a folded group names loses the group's n − k units, times the heads
    per unit (:func:`~onnxfold.analysis.groups.shrink_unit_attrs`)."""
    shrink_unit_attrs(node, folds, tensors)


def fix_packed_attention(node: gs.Node, folds: list[tuple[ChannelGroup, int]], tensors: dict) -> None:
    """A packed com.microsoft Attention: ``num_heads`` as :func:`fix_head_counts`; each of the q, k and v
    widths in ``qkv_hidden_sizes`` keeps width / heads per head."""
    heads = int(node.attrs["num_heads"])
    sizes = node.attrs.get("qkv_hidden_sizes")
    fix_head_counts(node, folds, tensors)
    if sizes:
        node.attrs["qkv_hidden_sizes"] = [int(size) // heads * int(node.attrs["num_heads"]) for size in sizes]


register_op("Attention", fix_attrs=fix_head_counts)
register_op("MultiHeadAttention", "com.microsoft", fix_attrs=fix_head_counts)
register_op("Attention", "com.microsoft", fix_attrs=fix_packed_attention)
register_op("GroupQueryAttention", "com.microsoft", fix_attrs=fix_head_counts)
register_op("RotaryEmbedding", "com.microsoft", fix_attrs=fix_head_counts)
