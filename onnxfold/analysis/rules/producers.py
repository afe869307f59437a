"""Producers: Conv, ConvTranspose, Gemm, MatMul with a constant weight, MatMul of two activations, and
the embedding lookup (Gather of rows of a constant table).

A producer opens a space on its output channel axis; its weight's output slices and its bias join
the space as ``average`` members, and the input's channels join the weight's input axis as ``sum``
members. The weight layout of each op (its :func:`weight_axes`), its MAC count and the attribute
a fold must fix (a depthwise Conv's ``group``) are registered here too.

MACs per run (``y`` the output, ``w`` the weight, ``K`` the contracted dim):

* Conv:          prod(y) · C_in/group · prod(kernel)     (w = [C_out, C_in/group, k…])
* ConvTranspose: prod(x) · C_out/group · prod(kernel)    (w = [C_in, C_out/group, k…])
* Gemm:          M · K · N                                (Y[M, N] = A[M, K] B[K, N])
* MatMul:        prod(y) · K                              (K = last dim of A)
* Gather:        0                                        (y[..., e] = table[ids[...], e]: a lookup)

The integer variants (ConvInteger, QLinearConv, MatMulInteger, QLinearMatMul) count the same way.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxfold.analysis.groups import (
    AVERAGE,
    COMPUTED_WEIGHT,
    GROUPED_CONV,
    MIXES_CHANNELS,
    OTHER_AXIS,
    UNALIGNED,
    UNKNOWN_SHAPE,
    UNSUPPORTED_OP,
    UNTRACKED_TENSOR,
    BlockReason,
    ChannelGroup,
    Layout,
    Segment,
    shrink_unit_attrs,
)
from onnxfold.analysis.registry import register_op, register_rule
from onnxfold.analysis.rules.attention import align_units
from onnxfold.analysis.rules.conv_groups import (
    MERGE_WITHIN,
    depthwise_conv,
    grouped_conv,
    optional_input,
)
from onnxfold.analysis.shape_trace import tensor_shape
from onnxfold.analysis.walk import Analysis

ShapeFn = Callable[..., "list | None"]
DimFn = Callable[[object], int]


def _reads_axis_1(walk: Analysis, node: gs.Node, lay: Layout | None, blocks: bool = False) -> Layout | None:
    """``lay`` if its channels lie on axis 1 one by one (``blocks``: or in blocks of several entries, as
    a depthwise Conv with a multiplier writes them, which a Conv of group 1 or a depthwise one reads
    through members of the same blocks), else block it and return None."""
    if lay is not None and (lay.axis != 1 or (not blocks and any(s.block != 1 for s in lay.segments))):
        walk.block(
            lay,
            BlockReason(
                OTHER_AXIS,
                f"{node.op} {node.name} reads its channels on axis 1 one by one, and these lie on axis {lay.axis}"
                if lay.axis != 1
                else f"{node.op} {node.name} reads its channels one by one, and these arrive in blocks of "
                f"{max(sg.block for sg in lay.segments)} (heads or groups a Reshape merged into its channel axis)",
                node.name,
            ),
        )
        return None
    return lay


@register_rule("Conv")
def conv(walk: Analysis, node: gs.Node) -> None:
    """group 1: a producer; depthwise (group = C_in = C_out): channels pass, filters are averaged;
    other groupings: a producer whose input and output channels merge only within their convolution
    groups (:func:`grouped_conv`)."""
    x, w, b = node.inputs[0], node.inputs[1], optional_input(node, 2)
    lay = walk.layout(x)
    if not isinstance(w, gs.Constant) or (b is not None and not isinstance(b, gs.Constant)):
        walk.block(
            lay,
            BlockReason(
                COMPUTED_WEIGHT, f"weight of {node.op} {node.name} is computed, not a constant", node.name
            ),
        )
        return
    out_c, in_per_group = w.shape[0], w.shape[1]
    group = int(node.attrs.get("group", 1))
    rank = walk.rank_of(x) or len(w.shape)
    c_in = in_per_group * group
    depthwise = 1 < group == c_in and in_per_group == 1 and out_c % c_in == 0
    lay = _reads_axis_1(walk, node, lay, blocks=group == 1 or depthwise)
    if depthwise and lay is not None:
        depthwise_conv(walk, node, lay, out_c // c_in)
        return
    space = walk.new_space(out_c, node.name)
    walk.add_member(space, w, 0, AVERAGE, node, kind="weight")
    if b is not None:
        walk.add_member(space, b, 0, AVERAGE, node, kind="bias")
    if group == 1:
        if lay is not None:
            walk.add_consumer(lay, w, 1, node)
    else:
        grouped_conv(walk, node, lay, space, group)
    walk.set_layout(node.outputs[0], Layout(rank, 1, (Segment(space, 0, out_c),)))


@register_rule("ConvTranspose")
def conv_transpose(walk: Analysis, node: gs.Node) -> None:
    """Constant weight [C_in, C_out/group, k…]: a producer on weight axis 1, reading its input on axis 0.
    With 1 < group, input channel c (row c) writes only the outputs of its convolution group, and output
    channel g·C_out/group + j is column j of the rows of group g: both sides are cut into ``group``
    parts, and the output columns are a split member (slab g of axis 0 holds part g)."""
    x, w, b = node.inputs[0], node.inputs[1], optional_input(node, 2)
    lay = walk.layout(x)
    group = int(node.attrs.get("group", 1))
    if not isinstance(w, gs.Constant) or (b is not None and not isinstance(b, gs.Constant)):
        walk.block(
            lay, BlockReason(COMPUTED_WEIGHT, f"{node.op} {node.name} has a computed weight", node.name)
        )
        return
    depthwise = 1 < group == w.shape[0]
    lay = _reads_axis_1(walk, node, lay, blocks=depthwise)
    if depthwise and lay is not None:
        depthwise_conv(walk, node, lay, int(w.shape[1]), transposed=True)
        return
    out_c = w.shape[1] * group
    space = walk.new_space(out_c, node.name)
    walk.add_member(space, w, 1, AVERAGE, node, kind="weight", split=group, split_axis=0)
    if b is not None:
        walk.add_member(space, b, 0, AVERAGE, node, kind="bias")
    label = f"grouped {node.op} {node.name} (group={group})"
    walk.require_parts(
        space, group, BlockReason(GROUPED_CONV, f"{label}: its output channels {MERGE_WITHIN}", node.name)
    )
    seg = lay.segments[0] if lay is not None else None
    if lay is not None and group > 1 and (len(lay.segments) != 1 or seg.start or seg.n != w.shape[0]):
        message = (
            f"{label} reads channels of several groups (equal widths per convolution group would tie them)"
        )
        walk.block(lay, BlockReason(GROUPED_CONV, message, node.name))
    elif lay is not None:
        walk.add_consumer(lay, w, 0, node)
        reason = BlockReason(GROUPED_CONV, f"{label}: its input channels {MERGE_WITHIN}", node.name)
        walk.require_parts(seg.space, group, reason)
    walk.set_layout(node.outputs[0], Layout(walk.rank_of(x) or len(w.shape), 1, (Segment(space, 0, out_c),)))


@register_rule("Gemm")
def gemm(walk: Analysis, node: gs.Node) -> None:
    """Y = A·B (+ C) with constant B: a producer on B's output axis (1, or 0 with transB); a C with one
    value per output channel is a bias."""
    a, w, c = node.inputs[0], node.inputs[1], optional_input(node, 2)
    lay = walk.layout(a)
    trans_a = int(node.attrs.get("transA", 0))
    if not isinstance(w, gs.Constant) or isinstance(a, gs.Constant):
        walk.block(lay, BlockReason(COMPUTED_WEIGHT, f"Gemm {node.name} has no constant weight B", node.name))
        walk.block(
            walk.layout(w),
            BlockReason(MIXES_CHANNELS, f"Gemm {node.name} multiplies two activations", node.name),
        )
        return
    out_axis, in_axis = gemm_axes(node)
    n = w.shape[out_axis]
    if lay is not None and lay.axis != (0 if trans_a else 1):
        walk.block(
            lay,
            BlockReason(
                OTHER_AXIS, f"Gemm {node.name} contracts an axis other than the channel axis", node.name
            ),
        )
        lay = None
    space = walk.new_space(n, node.name)
    walk.add_member(space, w, out_axis, AVERAGE, node, kind="weight")
    if c is not None:
        if not isinstance(c, gs.Constant):
            walk.block_space(
                space, BlockReason(COMPUTED_WEIGHT, f"Gemm {node.name} adds a computed C", node.name, c.name)
            )
        elif int(np.prod(c.shape)) > 1:
            if c.shape[-1] == n:
                walk.add_member(space, c, len(c.shape) - 1, AVERAGE, node, kind="bias")
            else:
                walk.block_space(
                    space,
                    BlockReason(
                        UNALIGNED,
                        f"Gemm {node.name}: C of shape {tuple(c.shape)} is not per-channel",
                        node.name,
                        c.name,
                    ),
                )
    if lay is not None:
        walk.add_consumer(lay, w, in_axis, node)
    walk.set_layout(node.outputs[0], Layout(2, 1, (Segment(space, 0, n),)))


@register_rule("MatMul")
def matmul(walk: Analysis, node: gs.Node) -> None:
    """x·W with a constant 2-D W = [in, out]: a producer on W's axis 1; two activations: see
    :func:`batched_matmul`."""
    a, w = node.inputs[0], node.inputs[1]
    lay = walk.layout(a)
    if not isinstance(w, gs.Constant) and not isinstance(a, gs.Constant):
        batched_matmul(walk, node)
        return
    if not isinstance(w, gs.Constant) or len(w.shape) != 2 or isinstance(a, gs.Constant):
        walk.block(
            lay, BlockReason(COMPUTED_WEIGHT, f"MatMul {node.name} has no constant 2-D weight", node.name)
        )
        walk.block(
            walk.layout(w),
            BlockReason(
                MIXES_CHANNELS, f"MatMul {node.name} contracts this tensor with a non-constant", node.name
            ),
        )
        return
    rank = walk.rank_of(a)
    if rank is None or rank < 2:
        reason = BlockReason(UNKNOWN_SHAPE, f"MatMul {node.name}: input rank unknown or < 2", node.name)
        walk.block(lay, reason)
        # its output channels are still a group, listed blocked (an MLP behind an op without shape
        # inference made `analyze` print no group at all)
        walk.block_space(walk.new_space(w.shape[1], node.name), reason)
        return
    if lay is not None and lay.axis != rank - 1:
        walk.block(
            lay,
            BlockReason(
                OTHER_AXIS, f"MatMul {node.name} contracts an axis other than the channel axis", node.name
            ),
        )
        lay = None
    n = w.shape[1]
    space = walk.new_space(n, node.name)
    walk.add_member(space, w, 1, AVERAGE, node, kind="weight")
    if lay is not None:
        walk.add_consumer(lay, w, 0, node)
    walk.set_layout(node.outputs[0], Layout(rank, rank - 1, (Segment(space, 0, n),)))


def batched_matmul(walk: Analysis, node: gs.Node) -> None:
    """MatMul of two activations (attention: q·kᵀ, probs·v): channels on a *batch* axis (heads)
    pass through, and both operands' units must share one assignment (head h meets head h). So do
    the columns of b alone, (a·b)[.., i, j] = Σ_k a[.., i, k]·b[.., k, j], and the rows of a alone:
    single-head attention's probs·v keeps v's channels (:func:`kept_rows_or_columns`)."""
    a, b = node.inputs[0], node.inputs[1]
    ranks = [walk.rank_of(a), walk.rank_of(b)]
    tracked = [
        (t, walk.layouts[t.name], r) for t, r in zip((a, b), ranks, strict=True) if t.name in walk.layouts
    ]
    if not tracked or kept_rows_or_columns(walk, node, tracked, ranks):
        return
    if None in ranks or min(ranks) < 3:
        for _, lay, _ in tracked:
            walk.block(
                lay,
                BlockReason(
                    MIXES_CHANNELS,
                    f"MatMul {node.name} contracts channels with another activation",
                    node.name,
                ),
            )
        return
    out_rank = max(ranks)
    axes = {lay.axis + out_rank - r for _, lay, r in tracked}
    if len(tracked) == 2 and len(axes) == 1:
        tracked = align_units(walk, node, tracked)
    ref = tracked[0][1]
    aligned = len(axes) == 1 and all(
        [(sg.start, sg.n, sg.block) for sg in lay.segments]
        == [(sg.start, sg.n, sg.block) for sg in ref.segments]
        for _, lay, _ in tracked
    )
    out_axis = axes.pop() if aligned else -1
    if not aligned or out_axis >= out_rank - 2:
        reason = BlockReason(
            MIXES_CHANNELS,
            f"MatMul {node.name} contracts or mixes the channel axis of an activation",
            node.name,
        )
        for _, lay, _ in tracked:
            walk.block(lay, reason)
        return
    for t, r in zip((a, b), ranks, strict=True):
        if t.name in walk.layouts:
            continue
        shape = tensor_shape(t)
        ax = out_axis - (out_rank - r)
        if ax >= 0 and (shape is None or shape[ax] != 1):
            message = f"MatMul {node.name} pairs channels with untracked tensor {t.name}"
            walk.block(ref, BlockReason(UNTRACKED_TENSOR, message, node.name, t.name))
            return
    for _, lay, _ in tracked[1:]:
        walk.unite(ref, lay)
    walk.set_layout(node.outputs[0], Layout(out_rank, out_axis, ref.segments))


def kept_rows_or_columns(walk: Analysis, node: gs.Node, tracked: list, ranks: list) -> bool:
    """Whether MatMul ``node`` of two activations of rank ≥ 2 passes one operand's channels through
    (done here): b's on its last axis, a's on its second-to-last, the other operand untracked. A
    Paddle2ONNX single-head attention block kept v's 16 channels blocked ("contracts or mixes the
    channel axis"), though probs·v mixes only its positions."""
    if len(tracked) != 1 or None in ranks or min(ranks) < 2:
        return False
    t, lay, rank = tracked[0]
    side = -1 if t is node.inputs[1] else -2  # x·x tracks both operands: never here
    if lay.axis != rank + side:
        return False
    out_rank = max(ranks)
    walk.passthrough(node, lay.with_axis(out_rank, out_rank + side))
    return True


@register_rule("Gather")
def embedding(walk: Analysis, node: gs.Node) -> None:
    """y[..., e] = table[ids[...], e] with a constant 2-D float table gathered on axis 0: a producer
    whose channels are the table's columns (``average`` members; no input channels, no bias). The ids
    carry no channels. A Gather of an activation on an axis other than its channels' (a CRNN's
    ``x[t]`` per time step) passes them through; on the channel axis it keeps them from folding; an
    integer table (shape arithmetic) opens no group."""
    table, ids = node.inputs[0], node.inputs[1]
    axis = int(node.attrs.get("axis", 0))
    rank = walk.rank_of(ids)
    lay = walk.layout(table)
    if lay is not None and rank is not None and walk.layout(ids) is None:
        at = axis + lay.rank if axis < 0 else axis
        if at != lay.axis:  # picks time steps or positions: every channel goes through as it was
            walk.passthrough(
                node, lay.with_axis(lay.rank - 1 + rank, lay.axis if lay.axis < at else lay.axis - 1 + rank)
            )
            return
    floats = isinstance(table, gs.Constant) and np.dtype(table.dtype).kind == "f"
    if floats and len(table.shape) == 2 and axis in (0, -2) and rank is not None:
        if not isinstance(ids, gs.Constant):
            n = table.shape[1]
            space = walk.new_space(n, node.name)
            walk.add_member(space, table, 1, AVERAGE, node, kind="weight")
            walk.set_layout(node.outputs[0], Layout(rank + 1, rank, (Segment(space, 0, n),)))
        return
    walk.block_inputs(
        node, BlockReason(UNSUPPORTED_OP, f"reaches unsupported op {node.op} ({node.name})", node.name)
    )


# --------------------------------------------------------------------------- weight layouts


def conv_axes(node: gs.Node) -> tuple[int, int] | None:
    """Conv weight [C_out, C_in/group, k…]: output channels on axis 0, input channels on axis 1."""
    return (0, 1)


def conv_transpose_axes(node: gs.Node) -> tuple[int, int] | None:
    """ConvTranspose weight [C_in, C_out/group, k…]: output channels on axis 1, input channels on axis 0."""
    return (1, 0)


def gemm_axes(node: gs.Node) -> tuple[int, int]:
    """Gemm B is [K, N], or [N, K] with ``transB``: (output axis, input axis)."""
    return (0, 1) if int(node.attrs.get("transB", 0)) else (1, 0)


def matmul_axes(node: gs.Node) -> tuple[int, int] | None:
    """MatMul's constant 2-D weight is [in, out]: output channels on axis 1."""
    return (1, 0)


# --------------------------------------------------------------------------- MACs


def _attr_int(node: onnx.NodeProto, name: str, default: int) -> int:
    for attr in node.attribute:
        if attr.name == name:
            return int(attr.i)
    return default


def conv_macs(node: onnx.NodeProto, shape: ShapeFn, dim: DimFn) -> int | None:
    w = shape(3 if node.op_type == "QLinearConv" else 1)
    if w is None or len(w) < 2:
        return None
    kernel = _prod(w[2:], dim)
    if node.op_type == "ConvTranspose":
        x = shape(0)
        if x is None or len(x) < 2:
            return None
        return _prod(x, dim) * dim(w[1]) * kernel  # w = [C_in, C_out/group, k...]
    y = shape(0, outputs=True)
    if y is None or len(y) < 2:
        return None
    return _prod(y, dim) * dim(w[1]) * kernel  # w = [C_out, C_in/group, k...]


def gemm_macs(node: onnx.NodeProto, shape: ShapeFn, dim: DimFn) -> int | None:
    a, b = shape(0), shape(1)
    if a is None or b is None or len(a) != 2 or len(b) != 2:
        return None
    m_dim, k_dim = (a[1], a[0]) if _attr_int(node, "transA", 0) else (a[0], a[1])
    n_dim = b[0] if _attr_int(node, "transB", 0) else b[1]
    return dim(m_dim) * dim(k_dim) * dim(n_dim)


def matmul_macs(node: onnx.NodeProto, shape: ShapeFn, dim: DimFn) -> int | None:
    a, y = shape(0), shape(0, outputs=True)
    if a is None or y is None or not a:
        return None
    return _prod(y, dim) * dim(a[-1])


def _prod(dims, dim: DimFn) -> int:
    out = 1
    for d in dims:
        out *= dim(d)
    return out


# --------------------------------------------------------------------------- attribute fixes


def conv_fix_attrs(node: gs.Node, folds: list[tuple[ChannelGroup, int]], tensors: dict) -> None:
    """A depthwise Conv's or ConvTranspose's ``group``, its input channels, loses n − k units (of a
    segment's block of entries each) for every segment of a folded group it reads (:func:`depthwise_conv`)."""
    shrink_unit_attrs(node, folds, tensors)  # "group" is the one unit count a Conv registers


register_op("Conv", weight_axes=conv_axes, fix_attrs=conv_fix_attrs)
register_op("ConvTranspose", weight_axes=conv_transpose_axes, fix_attrs=conv_fix_attrs)
register_op("Gemm", weight_axes=gemm_axes)
register_op("MatMul", weight_axes=matmul_axes)
MACS = {
    "Conv": conv_macs,
    "ConvInteger": conv_macs,
    "QLinearConv": conv_macs,
    "ConvTranspose": conv_macs,
    "Gemm": gemm_macs,
    "MatMul": matmul_macs,
    "MatMulInteger": matmul_macs,
    "QLinearMatMul": matmul_macs,
}
for _domain in ("", "com.microsoft"):  # contrib ops of the same names count alike
    for _op, _fn in MACS.items():
        register_op(_op, _domain, macs=_fn)
