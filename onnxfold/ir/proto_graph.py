"""Queries of an ``onnx.GraphProto`` shared by the passes and the runtime: whether nodes carry
subgraphs, and which nodes a set of tensors depends on."""

from __future__ import annotations

from collections.abc import Iterable

import onnx


def has_subgraph(node: onnx.NodeProto) -> bool:
    """Whether ``node`` carries a subgraph (If, Loop, Scan): a branch may read outer tensors that no
    input of the node lists."""
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def needed_nodes(graph: onnx.GraphProto, names: Iterable[str]) -> list[onnx.NodeProto]:
    """The nodes of ``graph`` that tensors ``names`` depend on (their producers, and theirs), in graph
    order; outer tensors read inside subgraphs are not followed (:func:`has_subgraph`)."""
    producer = {o: i for i, n in enumerate(graph.node) for o in n.output if o}
    need: set[int] = set()
    stack = [producer[t] for t in names if t in producer]
    while stack:
        i = stack.pop()
        if i not in need:
            need.add(i)
            stack.extend(producer[x] for x in graph.node[i].input if x in producer)
    return [n for i, n in enumerate(graph.node) if i in need]
