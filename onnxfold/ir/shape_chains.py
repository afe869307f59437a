"""Computed shape tensors that several Reshape/Expand nodes share, given one copy per reader."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxfold.ir.edit import Names, replace_input

#: op → the index of its shape input
_SHAPE_CONSUMERS = {"Reshape": 1, "Expand": 1, "Tile": 1, "ConstantOfShape": 0}


def _clone_shape_chain(
    tensor: gs.Tensor,
    suffix: str,
    made: list[gs.Node],
    memo: dict[int, gs.Tensor],
    names: Names,
    depth: int = 0,
) -> gs.Tensor | None:
    """A private copy of the computation producing a 1-D shape tensor (constants copied, ``Shape``
    outputs and graph inputs shared); None when it is not a small pure shape computation. ``memo``
    makes a tensor reached twice (a diamond) one copy."""
    if id(tensor) in memo:
        return memo[id(tensor)]
    if isinstance(tensor, gs.Constant):
        copy: gs.Tensor | None = gs.Constant(
            names(f"{tensor.name}{suffix}"), np.array(tensor.values, copy=True)
        )
    elif not tensor.inputs or tensor.inputs[0].op == "Shape":
        copy = tensor
    elif depth > 8:
        copy = None
    else:
        node = tensor.inputs[0]
        if (
            node.op
            not in (
                "Concat",
                "Unsqueeze",
                "Squeeze",
                "Gather",
                "Cast",
                "Reshape",
                "Where",
                "Equal",
                "Mul",
                "Add",
                "ConstantOfShape",
                "Slice",
            )
            or len(node.outputs) != 1
        ):
            return None
        inputs = []
        for t in node.inputs:
            inner = _clone_shape_chain(t, suffix, made, memo, names, depth + 1) if t.name else t
            if inner is None:
                return None
            inputs.append(inner)
        copy = gs.Variable(names(f"{tensor.name}{suffix}"), dtype=tensor.dtype, shape=tensor.shape)
        made.append(
            gs.Node(
                node.op, names(f"{node.name}{suffix}"), dict(node.attrs), inputs, [copy], domain=node.domain
            )
        )
    if copy is not None:
        memo[id(tensor)] = copy
    return copy


def isolate_shape_computations(graph: gs.Graph) -> int:
    """Give every Reshape/Expand its own copy of a computed shape tensor it shares with others.

    Exporters compute e.g. repeat_kv's Expand shape once for every layer; a width rewritten for one
    layer's group would change all of them, so the analysis blocks such groups. Copies are exact."""
    copies = 0
    made: list[gs.Node] = []
    names: Names | None = None  # fresh names, as in materialize_static_dims
    for node in list(graph.nodes):
        index = _SHAPE_CONSUMERS.get(node.op)
        if index is None or len(node.inputs) <= index:
            continue
        shape = node.inputs[index]
        if isinstance(shape, gs.Constant) or not shape.inputs or len(shape.outputs) < 2:
            continue
        if node is shape.outputs[0]:
            continue  # the first consumer keeps the original
        created: list[gs.Node] = []
        names = names or Names(graph)
        copy = _clone_shape_chain(shape, f"__{node.name}", created, {}, names)
        if copy is not None and copy is not shape:
            replace_input(node, shape, copy)
            made += created
            copies += 1
    graph.nodes.extend(made)
    return copies


__all__ = ["isolate_shape_computations"]
