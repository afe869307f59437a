"""Tracing shape vectors: which entry of a Reshape/Expand target counts the channels, and where it lives.

A target is rarely a plain constant in exported transformers: it is built by ``Concat`` of
``Unsqueeze``-d constants and ``Gather(Shape(x), i)`` copies of input dims. :func:`target_entries`
follows those ops back to a :class:`ShapeEntry` per entry, so a rule can rewrite the constant that
holds the channel count (and account for every tensor computed from it). :func:`known_dim` recovers
a dim that shape inference left symbolic but the graph fixes. Nothing here changes the graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import onnx_graphsurgeon as gs

RankFn = Callable[[gs.Tensor], "int | None"]

# elementwise ops whose output dims are the broadcast of their inputs' (Analysis.known_dim)
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
}


@dataclass(frozen=True)
class ShapeEntry:
    """One entry of a shape tensor: a known ``value`` held at ``const[index]``, or (``value`` None)
    a copy of input dim ``dim_of`` computed at run time."""

    value: int | None
    const: gs.Constant | None
    index: int
    dim_of: int | None = None
    path: tuple[gs.Tensor, ...] = ()  # tensors computed from ``const`` on the way to the Reshape


def const_values(t: gs.Tensor) -> np.ndarray | None:
    return np.asarray(t.values) if isinstance(t, gs.Constant) else None


def tensor_shape(t: gs.Tensor) -> tuple | None:
    shape = t.shape
    return tuple(shape) if shape is not None else None


def fill_value(t: gs.Tensor, depth: int = 0) -> float | None:
    """The one value every entry of ``t`` holds, when that is evident: a constant of equal entries,
    ``ConstantOfShape`` (value 0 by default), or a Cast/Mul of such. None otherwise."""
    if isinstance(t, gs.Constant):
        values = np.asarray(t.values).reshape(-1)
        return float(values[0]) if values.size and (values == values[0]).all() else None
    if depth > 4 or len(t.inputs) != 1:
        return None
    node = t.inputs[0]
    if node.op == "ConstantOfShape":
        value = node.attrs.get("value")
        return float(np.asarray(value.values).reshape(-1)[0]) if isinstance(value, gs.Constant) else 0.0
    if node.op == "Cast":
        return fill_value(node.inputs[0], depth + 1)
    if node.op == "Mul" and len(node.inputs) == 2:
        a, b = (fill_value(i, depth + 1) for i in node.inputs)
        return a * b if a is not None and b is not None else None
    return None


def harmless_shape_use(node: gs.Node, chain: set[str]) -> bool:
    """A use of a traced shape vector that cannot see its rewritten channel entry: ``Shape`` reads only
    its length; ``Equal`` against −1 feeding a ``Where`` of the chain is torch's expand(−1 → keep)
    test, and a channel count is never −1."""
    if node.op == "Shape":
        return True
    if node.op == "Equal" and any(fill_value(i) == -1 for i in node.inputs):
        return all(u.op == "Where" and u.outputs[0].name in chain for u in node.outputs[0].outputs)
    return False


def static_dims(dims) -> bool:
    return dims is not None and all(isinstance(d, (int, np.integer)) and d >= 0 for d in dims)


def known_dim(t: gs.Tensor, axis: int, rank_of: RankFn, channel_axis: RankFn, depth: int = 0) -> int | None:
    """Dim ``axis`` of ``t`` where shape inference left it unknown but the graph fixes it: through
    Expand (an entry 1 keeps the input's dim; the attention masks of transformers) and through
    broadcasting elementwise ops (every input that has the axis must be known). None if unknown.
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
        src = known_dim(node.inputs[0], src_axis, rank_of, channel_axis, depth + 1) if src_axis >= 0 else 1
        if src is None:
            return None
        return src if e.value == 1 else (e.value if src in (1, e.value) else None)
    if node.op in KNOWN_DIM_OPS:
        dims = []
        for i in node.inputs:
            if not i.name:
                continue
            rank = rank_of(i)
            if rank is None:
                return None
            a = axis - (len(shape) - rank)
            if a < 0:
                continue
            d = known_dim(i, a, rank_of, channel_axis, depth + 1)
            if d is None:
                return None
            dims.append(d)
        wide = {d for d in dims if d != 1}
        return (wide.pop() if len(wide) == 1 else 1 if not wide else None) if dims else None
    return None


def target_entries(t: gs.Tensor, rank_of: RankFn) -> list[ShapeEntry] | None:
    """The entries of a shape tensor: constants (with where they live and the tensors computed
    from them on the way here) or copies of an input dim (``Gather(Shape(x), i)``), traced
    through Concat/Unsqueeze/Squeeze/Cast. None if untraceable. ``rank_of`` gives a tensor's rank."""
    if isinstance(t, gs.Constant):
        values = np.asarray(t.values).reshape(-1)
        return [ShapeEntry(int(v), t, i) for i, v in enumerate(values)]
    if len(t.inputs) != 1:
        return None
    node = t.inputs[0]
    if node.op in ("Unsqueeze", "Squeeze", "Cast", "Identity"):
        inner = target_entries(node.inputs[0], rank_of)
        return None if inner is None else [replace(e, path=e.path + (t,)) for e in inner]
    if node.op == "Concat" and int(node.attrs.get("axis", 0)) == 0:
        entries: list[ShapeEntry] = []
        for part in node.inputs:
            inner = target_entries(part, rank_of)
            if inner is None:
                return None
            entries += [replace(e, path=e.path + (t,)) for e in inner]
        return entries
    if (
        node.op == "Reshape"
        and isinstance(node.inputs[1], gs.Constant)
        and np.asarray(node.inputs[1].values).reshape(-1).tolist() == [-1]
    ):
        inner = target_entries(node.inputs[0], rank_of)  # flattening a 1-D shape vector: unchanged
        return None if inner is None else [replace(e, path=e.path + (t,)) for e in inner]
    if node.op == "Where" and len(node.inputs) == 3:
        # torch's expand(-1 → keep): Where(Equal(X, -1), ones, X) is X with its -1 entries made 1
        # (the -1 may be a constant or computed as ConstantOfShape(Shape(X)) * -1)
        cond = node.inputs[0]
        x = node.inputs[2]
        if (
            len(cond.inputs) == 1
            and cond.inputs[0].op == "Equal"
            and cond.inputs[0].inputs[0] is x
            and fill_value(cond.inputs[0].inputs[1]) == -1
        ):
            inner = target_entries(x, rank_of)
            if inner is None or (any(e.value == -1 for e in inner) and fill_value(node.inputs[1]) != 1):
                return None
            return [
                ShapeEntry(1, None, 0) if e.value == -1 else replace(e, path=e.path + (t,)) for e in inner
            ]
        return None
    if node.op == "Shape":
        rank = rank_of(node.inputs[0])
        if rank is None:
            return None
        start = int(node.attrs.get("start", 0))
        end = node.attrs.get("end")
        start = start + rank if start < 0 else start
        end = rank if end is None else (int(end) + rank if int(end) < 0 else int(end))
        return [ShapeEntry(None, None, 0, i) for i in range(start, min(end, rank))]
    if (
        node.op == "Gather"
        and int(node.attrs.get("axis", 0)) == 0
        and isinstance(node.inputs[1], gs.Constant)
    ):
        src = node.inputs[0]
        idx = np.asarray(node.inputs[1].values).reshape(-1)
        if len(src.inputs) == 1 and src.inputs[0].op == "Shape" and len(idx) == 1:
            shape_node = src.inputs[0]
            start = int(shape_node.attrs.get("start", 0))
            rank = rank_of(shape_node.inputs[0])
            if rank is None:
                return None
            start = start + rank if start < 0 else start
            return [ShapeEntry(None, None, 0, int(idx[0]) + (rank if idx[0] < 0 else 0) + start)]
    return None


def node_axes(node: gs.Node, rank: int) -> list[int] | None:
    """The ``axes`` of Squeeze/Unsqueeze/Reduce*, from input 1 (opset ≥ 13/18) or the attribute,
    made non-negative for ``rank``: [] when absent, None when computed."""
    if len(node.inputs) > 1 and node.inputs[1].name:
        v = const_values(node.inputs[1])
        if v is None:
            return None
        axes = v.reshape(-1).tolist()
    else:
        axes = node.attrs.get("axes")
        if axes is None:
            return []
    return [int(a) + rank if a < 0 else int(a) for a in axes]
