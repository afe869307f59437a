"""Dims of a graph input that its first readers fix, though the input declares them free.

pyannote's segmentation model declares its audio ``input [B, C, T]`` with every dim free, and its
first node is an InstanceNormalization with one scale: it runs only at C = 1. Random inputs sized C
as any other free dim (16, then 64 …) and the default fold stopped: "size of scale != input channel
count 1 vs. 128". A reader's constant weight says what such a dim must be:

* Conv: dim 1 = the weight's input channels × ``group``; ConvTranspose: dim 1 = the weight's dim 0;
* BatchNormalization, InstanceNormalization: dim 1 = the scale's length;
* LayerNormalization (``axis`` a): dims a … = the scale's dims, where its rank says which;
* MatMul by a constant matrix: the last dim = its rows; Gemm: dim 1 = B's rows (``transB``: columns).

Readers are followed through ops that keep the shape (Cast, Identity, Relu …: :data:`SAME_SHAPE`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

#: ops whose output has their (first) input's shape, followed to the readers behind them
SAME_SHAPE = {"Cast", "Identity", "Relu", "Abs", "Neg", "Sigmoid", "Tanh", "Dropout", "Clip", "LeakyRelu"}


def _attr(attrs: Mapping, name: str, default: int) -> int:
    value = attrs.get(name, default)
    return int(value) if value is not None else default


def _fixed(op: str, inputs: list[str], attrs: Mapping, consts: Mapping[str, tuple], rank: int | None):
    """{axis (negative: from the end): size} the node fixes on its first input."""
    shape = lambda i: consts.get(inputs[i]) if len(inputs) > i and inputs[i] else None  # noqa: E731
    w = shape(1)
    if op == "Conv" and w is not None and len(w) >= 3:
        return {1: int(w[1]) * _attr(attrs, "group", 1)}
    if op == "ConvTranspose" and w is not None and len(w) >= 3:
        return {1: int(w[0])}
    if op in ("BatchNormalization", "InstanceNormalization") and w is not None and len(w) == 1:
        return {1: int(w[0])}
    if op == "LayerNormalization" and w is not None and rank is not None:
        axis = _attr(attrs, "axis", -1)
        axis = axis + rank if axis < 0 else axis
        if len(w) == rank - axis:
            return {axis + i: int(d) for i, d in enumerate(w)}
    if op == "MatMul" and w is not None and len(w) == 2:
        return {-1: int(w[0])}
    if op == "Gemm" and w is not None and len(w) == 2 and not _attr(attrs, "transA", 0):
        return {1: int(w[1] if _attr(attrs, "transB", 0) else w[0])}
    return {}


def reader_dims(
    nodes: Iterable[tuple[str, list[str], Mapping, list[str]]],
    consts: Mapping[str, tuple],
    inputs: Mapping[str, tuple],
) -> dict[str, dict[int, int]]:
    """{input: {axis: size}} for the free dims of ``inputs`` (name → declared dims, a free one a str or
    None) that their readers fix; ``nodes``: (op, input names, attributes, output names) in order;
    ``consts``: constant name → shape. A dim two readers fix differently is left free."""
    readers = defaultdict(list)
    for op, ins, attrs, outs in nodes:
        if ins and ins[0]:
            readers[ins[0]].append((op, ins, attrs, outs))
    out: dict[str, dict[int, int]] = {}
    for name, dims in inputs.items():
        rank = len(dims)
        found: dict[int, set[int]] = defaultdict(set)
        todo, seen = [name], set()
        while todo:
            tensor = todo.pop()
            if tensor in seen:
                continue
            seen.add(tensor)
            for op, ins, attrs, outs in readers.get(tensor, ()):
                if op in SAME_SHAPE:
                    todo += [o for o in outs[:1] if o]
                    continue
                for axis, size in _fixed(op, ins, attrs, consts, rank).items():
                    axis = axis + rank if axis < 0 else axis
                    if 0 < axis < rank and size > 0:
                        found[axis].add(size)
        fixed = {
            axis: sizes.pop()
            for axis, sizes in found.items()
            if len(sizes) == 1 and not isinstance(dims[axis], int)
        }
        if fixed:
            out[name] = fixed
    return out


def proto_reader_dims(proto) -> dict[str, dict[int, int]]:
    """:func:`reader_dims` of an ``onnx.ModelProto``'s main graph."""
    from onnxfold.ir.proto_graph import node_attrs

    g = proto.graph
    consts = {t.name: tuple(t.dims) for t in g.initializer}
    for node in g.node:
        if node.op_type == "Constant" and node.output:
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                consts[node.output[0]] = tuple(value.dims)
    nodes = [
        (
            n.op_type if n.domain in ("", "ai.onnx") else "",
            list(n.input),
            node_attrs(n),
            list(n.output),
        )
        for n in g.node
    ]
    inputs = {
        vi.name: tuple(
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in vi.type.tensor_type.shape.dim
        )
        for vi in g.input
        if vi.name not in consts and vi.type.HasField("tensor_type")
    }
    return reader_dims(nodes, consts, inputs)


def graph_reader_dims(graph) -> dict[str, dict[int, int]]:
    """:func:`reader_dims` of an onnx-graphsurgeon graph."""
    import onnx_graphsurgeon as gs

    consts = {
        t.name: tuple(t.shape)
        for node in graph.nodes
        for t in node.inputs
        if isinstance(t, gs.Constant) and t.shape is not None
    }
    nodes = [
        (
            n.op if (n.domain or "") in ("", "ai.onnx") else "",
            [t.name for t in n.inputs],
            {k: v for k, v in n.attrs.items() if isinstance(v, int)},
            [t.name for t in n.outputs],
        )
        for n in graph.nodes
    ]
    inputs = {t.name: tuple(t.shape) for t in graph.inputs if t.shape is not None}
    return reader_dims(nodes, consts, inputs)


def with_fixed(shape: tuple, fixed: Mapping[int, int] | None) -> tuple:
    """``shape`` with its free dims that ``fixed`` ({axis: size}) gives."""
    return tuple(fixed.get(i, d) if fixed and not isinstance(d, int) else d for i, d in enumerate(shape))
