"""Dims that ONNX's shape inference leaves unknown but the graph fixes (:func:`known_dim`).

Inference names a dim it cannot compute with a made-up symbol (``unk__N``): the head count of a
``Reshape(x, [B, S, −1, D])`` whose other entries copy x's symbolic dims, and everything computed
from it. A rule that must know such a dim (is the axis 1, so that a Reshape only drops it?) asks
here, and the graph is read backwards to where the value is fixed.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxfold.analysis.shape_trace import RankFn, ShapeEntry, copied_dim, target_entries, tensor_shape
from onnxfold.ir.edit import transpose_perm

#: ops whose output dims are the broadcast of their inputs' (elementwise; unary ones keep them)
KNOWN_DIM_OPS = {
    "Cast",
    "Not",
    "Neg",
    "Identity",
    "Where",
    "And",
    "Or",
    "Xor",
    "Equal",
    "Less",
    "LessOrEqual",
    "Greater",
    "GreaterOrEqual",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Softmax",
    "LogSoftmax",
    "Exp",
    "Sqrt",
    "Relu",
    "Sigmoid",
    "Tanh",
}


def known_dim(t: gs.Tensor, axis: int, rank_of: RankFn, channel_axis: RankFn, depth: int = 0) -> int | None:
    """Dim ``axis`` of ``t`` where shape inference left it unknown but the graph fixes it: through
    Expand (an entry 1 keeps the input's dim; the attention masks of transformers), broadcasting
    elementwise ops (every input that has the axis must be known), Transpose, a Slice along other
    axes, MatMul (its batch dims broadcast, its rows A's, its columns B's) and Reshape (a constant
    entry, or the −1 entry by the element count, the entries that copy x's dims cancelling those
    dims). None if unknown.
    ``rank_of`` gives a tensor's rank, ``channel_axis`` its channel axis if tracked (None if not):
    a fold changes that dim, so it is never "known"."""
    shape = tensor_shape(t)
    if shape is None or not 0 <= axis < len(shape):
        return None
    if isinstance(shape[axis], (int, np.integer)):
        return int(shape[axis])
    if depth > 12 or len(t.inputs) != 1 or channel_axis(t) == axis:  # channels change
        return None
    node = t.inputs[0]

    def known(x: gs.Tensor, a: int) -> int | None:
        return known_dim(x, a, rank_of, channel_axis, depth + 1)

    if node.op == "Expand":
        entries = target_entries(node.inputs[1], rank_of)
        if entries is None or len(entries) != len(shape):
            return None
        e = entries[axis]
        if e.value is None or e.value < 1:
            return None
        src_rank = rank_of(node.inputs[0])
        if src_rank is None:
            return None
        src_axis = axis - (len(shape) - src_rank)
        src = known(node.inputs[0], src_axis) if src_axis >= 0 else 1
        if src is None:
            return None
        return src if e.value == 1 else (e.value if src in (1, e.value) else None)
    if node.op == "Transpose":
        perm = transpose_perm(node, len(shape))
        return known(node.inputs[0], perm[axis]) if perm is not None else None
    if node.op == "Reshape":
        return _reshaped(node, axis, len(shape), rank_of, known)
    if node.op == "Resize":
        return _resized(node, axis, len(shape), rank_of, known)
    if node.op == "Slice":  # an axis it does not cut keeps its dim (T5's mask [B, 1, 1, S] cut along S)
        cut = node.inputs[3] if len(node.inputs) > 3 and node.inputs[3].name else None
        if not isinstance(cut, gs.Constant):
            return None
        cut_axes = {int(a) + len(shape) if int(a) < 0 else int(a) for a in np.ravel(cut.values)}
        return None if axis in cut_axes else known(node.inputs[0], axis)
    operands = [i for i in node.inputs if i.name]
    if node.op == "MatMul" and len(operands) == 2 and len(shape) >= 2:
        ranks = [rank_of(i) for i in operands]
        if None in ranks or min(ranks) < 2:
            return None
        if axis >= len(shape) - 2:  # rows of A, columns of B
            return (
                known(operands[0], ranks[0] - 2)
                if axis == len(shape) - 2
                else known(operands[1], ranks[1] - 1)
            )
        operands = [i for i, r in zip(operands, ranks, strict=True) if axis - (len(shape) - r) >= 0]
    elif node.op not in KNOWN_DIM_OPS:
        return None
    dims = []
    for i in operands:
        rank = rank_of(i)
        if rank is None:
            return None
        a = axis - (len(shape) - rank)
        if a < 0:
            continue
        d = known(i, a)
        if d is None:
            return None
        dims.append(d)
    wide = {d for d in dims if d != 1}
    return (wide.pop() if len(wide) == 1 else 1 if not wide else None) if dims else None


def _copied(e: ShapeEntry, x: gs.Tensor, dims: list, left: list[int]) -> int | None:
    """Which of x's dims ``left`` entry ``e`` copies at run time: read from x itself, or from a tensor
    whose dim has the same symbol (never one inference made up); None if none is proven."""
    if e.dim_of is None:
        return None
    if e.source is x and e.dim_of in left:
        return e.dim_of
    theirs = copied_dim(e)
    return next((i for i in left if dims[i] == theirs), None) if isinstance(theirs, str) else None


def _reshaped(node: gs.Node, axis: int, rank: int, rank_of: RankFn, known) -> int | None:
    """Dim ``axis`` of a Reshape's output: a positive constant entry, or the −1 by the element count."""
    entries = target_entries(node.inputs[1], rank_of)
    x = node.inputs[0]
    dims = list(tensor_shape(x) or [])
    if entries is None or len(entries) != rank or not dims:
        return None
    e = entries[axis]
    if e.value is not None and e.value > 0:
        return int(e.value)
    if e.value != -1:
        return None
    left, product = list(range(len(dims))), 1
    copy_zero = not int(node.attrs.get("allowzero", 0))
    for j, other in enumerate(entries):
        if j == axis:
            continue
        if other.value is not None and other.value > 0:
            product *= int(other.value)
            continue
        i = j if other.value == 0 and copy_zero and j in left else _copied(other, x, dims, left)
        if i is None:
            return None
        left.remove(i)
    total = 1
    for i in left:
        d = known(x, i)
        if d is None:
            return None
        total *= d
    return total // product if product and total % product == 0 else None


def _resized(node: gs.Node, axis: int, rank: int, rank_of: RankFn, known) -> int | None:
    """Dim ``axis`` of a Resize's output: its ``sizes`` entry there (a constant, or a copy of the
    resized tensor's own dim: ``F.interpolate(x, size=y.shape[2:])`` as PyTorch 1.x exported it for
    opset 11, whose Resize shape inference leaves unsized), or the input's dim where the constant
    ``scales`` entry is 1. An ENet block's Concat of a Conv and a resized MaxPool of the input read
    as "an input of unknown width" and blocked the Conv (wired-table-rec's line segmenter)."""
    inputs = [t if t.name else None for t in node.inputs] + [None] * 4
    sizes, scales = inputs[3], inputs[2]
    if sizes is not None:
        entries = target_entries(sizes, rank_of)
        if entries is None or len(entries) != rank:
            return None
        e = entries[axis]
        if e.value is not None:
            return int(e.value) if e.value > 0 else None
        return known(node.inputs[0], axis) if e.dim_of == axis and e.source is node.inputs[0] else None
    values = np.ravel(scales.values) if isinstance(scales, gs.Constant) else None
    if values is not None and len(values) == rank and values[axis] == 1:
        return known(node.inputs[0], axis)
    return None
