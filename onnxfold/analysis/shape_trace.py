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

from onnxfold.ir.shapes import made_up_dim

RankFn = Callable[[gs.Tensor], "int | None"]


@dataclass(frozen=True)
class ShapeEntry:
    """One entry of a shape tensor: a known ``value`` held at ``const[index]``, or (``value`` None)
    a copy of input dim ``dim_of`` computed at run time."""

    value: int | None
    const: gs.Constant | None
    index: int
    dim_of: int | None = None
    path: tuple[gs.Tensor, ...] = ()  # tensors computed from ``const`` on the way to the Reshape
    #: for a copied dim, the tensor whose shape it was read from
    source: gs.Tensor | None = None
    #: an entry computed at run time by arithmetic the trace does not follow (a sequence length
    #: after strided convs, ``(T − 5) // 8 …``): the one-element tensor it comes from, else None
    computed: gs.Tensor | None = None


def copied_dim(e: ShapeEntry):
    """The dim a run-time entry copies, as its source's inferred dim (a value or a symbol); None when
    it copies none, or inference left that dim unknown or made its symbol up."""
    if e.dim_of is None:
        return None
    src = tensor_shape(e.source) if e.source is not None else None
    theirs = src[e.dim_of] if src is not None and e.dim_of < len(src) else None
    return None if made_up_dim(theirs) else theirs


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


def target_entries(t: gs.Tensor, rank_of: RankFn) -> list[ShapeEntry] | None:
    """The entries of a shape tensor: constants (with where they live and the tensors computed
    from them on the way here) or copies of an input dim (``Gather(Shape(x), i)``), traced
    through Concat/Unsqueeze/Squeeze/Cast and Gather/Slice with constant indices. None if untraceable. ``rank_of`` gives a tensor's rank."""
    if isinstance(t, gs.Constant):
        values = np.asarray(t.values).reshape(-1)
        return [ShapeEntry(int(v), t, i) for i, v in enumerate(values)]
    if len(t.inputs) != 1:
        return None
    node = t.inputs[0]
    if node.op in ("Unsqueeze", "Squeeze", "Cast", "Identity"):
        inner = target_entries(node.inputs[0], rank_of)
        return None if inner is None else [replace(e, path=e.path + (t,)) for e in inner]
    if node.op == "Concat" and int(node.attrs.get("axis", 0)) in (0, -1):  # 1-D: -1 is 0
        entries: list[ShapeEntry] = []
        for part in node.inputs:
            inner = target_entries(part, rank_of)
            if inner is None and tensor_shape(part) == (1,):  # one entry, computed: its place is known
                inner = [ShapeEntry(None, None, 0, computed=part)]
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
        return [ShapeEntry(None, None, 0, i, source=node.inputs[0]) for i in range(start, min(end, rank))]
    if node.op in ("Gather", "Slice"):
        # entries picked from a traced vector (Gather(Shape(x), i), Paddle's Slice(Cast(Shape(x)), 0, 1))
        inner = target_entries(node.inputs[0], rank_of)
        picked = picked_entries(node, len(inner)) if inner is not None else None
        if picked is None or any(not 0 <= i < len(inner) for i in picked):
            return None
        return [replace(inner[i], path=inner[i].path + (t,)) for i in picked]
    return None


def picked_entries(node: gs.Node, length: int) -> list[int] | None:
    """The entries of a ``length``-entry vector that Gather (axis 0) or Slice (axis 0) with constant
    indices pick; None for another reader."""
    if node.op == "Gather" and int(node.attrs.get("axis", 0)) == 0:
        idx = const_values(node.inputs[1])
        if idx is None:
            return None
        return [int(i) + length if i < 0 else int(i) for i in idx.reshape(-1)]
    if node.op == "Slice" and len(node.inputs) >= 3:
        bounds = [
            const_values(i) if i.name else np.array([0 if k == 2 else 1])
            for k, i in enumerate(node.inputs[1:5])
        ]
        if any(b is None or b.size != 1 for b in bounds) or (
            len(bounds) > 2 and int(bounds[2][0]) not in (0, -1)
        ):
            return None
        step = int(bounds[3][0]) if len(bounds) > 3 else 1
        if step == 0:
            return None
        return list(range(length))[slice(int(bounds[0][0]), int(bounds[1][0]), step)]
    return None


def untraced_node(t: gs.Tensor, rank_of: RankFn, depth: int = 0) -> gs.Node | None:
    """The node that makes shape tensor ``t`` untraceable for :func:`target_entries`, or computes one of
    its entries (e.g. a ``Mul`` of a channel count and a batch known only at run time), for a block
    reason; None if none is found."""
    if isinstance(t, gs.Constant) or len(t.inputs) != 1 or depth > 16:
        return None
    node = t.inputs[0]
    if node.op in ("Concat", "Unsqueeze", "Squeeze", "Cast", "Identity", "Gather", "Slice", "Reshape"):
        for part in node.inputs[:1] if node.op != "Concat" else node.inputs:
            entries = target_entries(part, rank_of)
            if entries is None or any(e.computed is not None for e in entries):
                return untraced_node(part, rank_of, depth + 1) or node
        return node
    return node


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


# ops whose integer result :func:`dim_values` computes from its inputs' values
DIM_VALUE_OPS = {
    "Shape",
    "Cast",
    "Gather",
    "Slice",
    "Concat",
    "Unsqueeze",
    "Squeeze",
    "Reshape",
    "Add",
    "Sub",
    "Mul",
    "Div",
}
MAX_DIM_VALUES = 64  # larger integer tensors are data, not shape vectors


@dataclass(frozen=True)
class DimValues:
    """A small integer tensor (a scalar or a vector) as far as the graph fixes it: ``values`` per entry
    (None where only the run time knows it, e.g. a dynamic batch), ``origins`` per entry ((t, i):
    a plain copy of entry i of dims vector ``t``, a ``Shape`` output or a Cast of one; else None)."""

    values: tuple[int | None, ...]
    scalar: bool
    dtype: np.dtype
    origins: tuple[tuple[gs.Tensor, int] | None, ...]

    @property
    def known(self) -> bool:
        return all(v is not None for v in self.values)

    def array(self) -> np.ndarray:
        out = np.array(self.values, dtype=self.dtype)
        return out.reshape(()) if self.scalar else out


def _int_dtype(dtype) -> np.dtype | None:
    try:
        d = np.dtype(dtype)
    except TypeError:
        return None
    return d if d.kind in "iu" else None


def _const_ints(t: gs.Tensor) -> list[int] | None:
    v = const_values(t)
    return None if v is None or v.dtype.kind not in "iu" else [int(x) for x in v.reshape(-1)]


def _binary(op: str, a: int | None, b: int | None) -> int | None:
    """Integer Add/Sub/Mul/Div as ONNX computes them; Div only of non-negative operands (where
    truncation and floor agree) and a non-zero divisor."""
    if a is None or b is None:
        return None
    if op == "Add":
        return a + b
    if op == "Sub":
        return a - b
    if op == "Mul":
        return a * b
    return a // b if a >= 0 and b > 0 else None


def dim_values(
    t: gs.Tensor, memo: dict[str, DimValues | None] | None = None, depth: int = 0
) -> DimValues | None:
    """The values of integer shape arithmetic ``t`` where inferred shapes fix them: ``Shape`` gives
    its input's dims (static ones known), and Cast/Gather/Slice/Concat/Unsqueeze/Squeeze/Add/Sub/
    Mul/Div compute on them as ONNX does (an unknown operand makes the result entry unknown).
    This is how ``x.chunk(2, 1)``'s bound ``(Shape(x)[1] + 1) / 2`` or a Paddle head's
    ``Slice(Shape(x), 0, 2)`` is recognised as a channel count. None if ``t`` is not such a tensor."""
    memo = {} if memo is None else memo
    if t.name in memo:
        return memo[t.name]
    memo[t.name] = None  # guards cycles
    result = _dim_values(t, memo, depth)
    memo[t.name] = result
    return result


def _dim_values(t: gs.Tensor, memo: dict, depth: int) -> DimValues | None:
    if isinstance(t, gs.Constant):
        v = np.asarray(t.values)
        if v.dtype.kind not in "iu" or v.ndim > 1 or v.size > MAX_DIM_VALUES:
            return None
        flat = [int(x) for x in v.reshape(-1)]
        return DimValues(tuple(flat), v.ndim == 0, v.dtype, (None,) * len(flat))
    if depth > 24 or len(t.inputs) != 1:
        return None
    node = t.inputs[0]
    if node.op not in DIM_VALUE_OPS or (node.domain or "") not in ("", "ai.onnx") or len(node.outputs) != 1:
        return None
    if node.op == "Shape":
        dims = tensor_shape(node.inputs[0])
        if dims is None:
            return None
        rank = len(dims)
        start = int(node.attrs.get("start", 0))
        end = node.attrs.get("end")
        start = max(0, start + rank if start < 0 else start)
        end = rank if end is None else min(rank, int(end) + rank if int(end) < 0 else int(end))
        picked = range(start, max(start, end))
        values = tuple(
            int(dims[i]) if isinstance(dims[i], (int, np.integer)) and dims[i] >= 0 else None for i in picked
        )
        return DimValues(values, False, np.dtype(np.int64), tuple((t, j) for j in range(len(values))))
    inputs = [dim_values(i, memo, depth + 1) if i.name else None for i in node.inputs]
    src = inputs[0]
    if src is None:
        return None
    if node.op == "Cast":
        dtype = _int_dtype(helper_dtype(node.attrs.get("to")))
        if dtype is None:
            return None
        whole = (
            all(o is not None and o[1] == j for j, o in enumerate(src.origins))
            and len({id(o[0]) for o in src.origins if o is not None}) <= 1
        )
        origins = tuple((t, j) for j in range(len(src.values))) if whole and not src.scalar else src.origins
        return DimValues(src.values, src.scalar, dtype, origins)
    if node.op in ("Unsqueeze", "Squeeze"):
        if len(src.values) != 1:
            return None
        return DimValues(src.values, node.op == "Squeeze", src.dtype, src.origins)
    if node.op == "Reshape":  # one value to a scalar or a 1-vector (Paddle2ONNX reshapes a dim so)
        target = _const_ints(node.inputs[1]) if len(node.inputs) > 1 else None
        if len(src.values) != 1 or target is None or len(target) > 1 or (target and target[0] not in (1, -1)):
            return None
        return DimValues(src.values, not target, src.dtype, src.origins)
    if node.op == "Gather":
        idx = _const_ints(node.inputs[1])
        if idx is None or int(node.attrs.get("axis", 0)) != 0 or src.scalar:
            return None
        n = len(src.values)
        if any(not -n <= i < n for i in idx):
            return None
        scalar = np.asarray(node.inputs[1].values).ndim == 0
        return DimValues(
            tuple(src.values[i] for i in idx), scalar, src.dtype, tuple(src.origins[i] for i in idx)
        )
    if node.op == "Slice":
        bounds = [_const_ints(i) if i.name else None for i in node.inputs[1:]]
        if (
            src.scalar
            or any(b is None for b in bounds[:2])
            or any(len(b) != 1 for b in bounds if b is not None)
        ):
            return None
        axes = bounds[2] if len(bounds) > 2 else None
        steps = bounds[3] if len(bounds) > 3 else None
        if (len(node.inputs) > 3 and node.inputs[3].name and axes is None) or (
            axes is not None and axes[0] not in (0, -1)
        ):
            return None
        if len(node.inputs) > 4 and node.inputs[4].name and steps is None:
            return None
        step = steps[0] if steps is not None else 1
        if step == 0:
            return None
        picked = list(range(len(src.values)))[slice(bounds[0][0], bounds[1][0], step)]
        return DimValues(
            tuple(src.values[i] for i in picked), False, src.dtype, tuple(src.origins[i] for i in picked)
        )
    if node.op == "Concat":
        if int(node.attrs.get("axis", 0)) not in (0, -1) or any(v is None or v.scalar for v in inputs):
            return None
        return DimValues(
            sum((v.values for v in inputs), ()), False, src.dtype, sum((v.origins for v in inputs), ())
        )
    # Add, Sub, Mul, Div with broadcasting of scalars and one-entry vectors
    if len(inputs) != 2 or inputs[1] is None:
        return None
    a, b = inputs
    n = max(len(a.values), len(b.values))
    if any(len(v.values) not in (1, n) for v in (a, b)):
        return None
    values = tuple(
        _binary(node.op, a.values[j if len(a.values) > 1 else 0], b.values[j if len(b.values) > 1 else 0])
        for j in range(n)
    )
    return DimValues(values, a.scalar and b.scalar, src.dtype, (None,) * n)


def helper_dtype(to) -> np.dtype | None:
    """The numpy dtype of an ONNX ``to`` attribute (None if unknown)."""
    from onnx import helper

    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(int(to)))
    except (KeyError, TypeError, ValueError):
        return None
