"""Queries of an ``onnx.GraphProto`` shared by the passes and the runtime: whether nodes carry
subgraphs, which nodes a set of tensors depends on, a node's attributes and reads, an order of nodes
that follows what they read, and the constants a graph holds."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import onnx
from onnx import helper, numpy_helper


def has_subgraph(node: onnx.NodeProto) -> bool:
    """Whether ``node`` carries a subgraph (If, Loop, Scan): a branch may read outer tensors that no
    input of the node lists."""
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def walk_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every subgraph nested in it (If branches, Loop and Scan bodies), depth first."""
    yield graph
    for node in graph.node:
        for a in node.attribute:
            for sub in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                yield from walk_graphs(sub)


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


def node_attrs(node: onnx.NodeProto) -> dict:
    """``node``'s attributes by name, as Python values."""
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def nested_nodes(node: onnx.NodeProto) -> list[onnx.NodeProto]:
    """The nodes of ``node``'s subgraphs (If branches, Loop and Scan bodies), theirs included."""
    found = []
    for attr in node.attribute:
        for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
            for inner in sub.node:
                found += [inner, *nested_nodes(inner)]
    return found


def node_reads(node: onnx.NodeProto) -> list[str]:
    """The names ``node`` reads, its subgraphs' reads of outer names included."""
    return [*node.input, *(name for inner in nested_nodes(node) for name in inner.input)]


def topological_order(nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto] | None:
    """``nodes`` in an order where each follows what it reads, as close to the given order as that
    allows; None if they form a cycle."""
    import heapq

    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    waits = [
        {producer[r] for r in node_reads(n) if r in producer and producer[r] != i}
        for i, n in enumerate(nodes)
    ]
    readers: list[list[int]] = [[] for _ in nodes]
    for i, deps in enumerate(waits):
        for d in deps:
            readers[d].append(i)
    ready = [i for i, deps in enumerate(waits) if not deps]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(nodes[i])
        for r in readers[i]:
            waits[r].discard(i)
            if not waits[r]:
                heapq.heappush(ready, r)
    return order if len(order) == len(nodes) else None


class GraphConstants:
    """The constants ``graph`` holds, initializers and Constant nodes' ``value`` (or ``value_float``),
    read into numpy only when asked for: a dequantize or a mask-fill walk looks at a few scales and
    fill values, not at every weight of a 65M-parameter model. ``inline_only``: initializers stored in
    external data are left out (a file loaded without them)."""

    def __init__(self, graph: onnx.GraphProto, inline_only: bool = False) -> None:
        self._protos: dict[str, onnx.TensorProto] = {
            t.name: t
            for t in graph.initializer
            if not inline_only or t.data_location != onnx.TensorProto.EXTERNAL
        }
        self._read: dict[str, np.ndarray] = {}
        for n in graph.node:
            if n.op_type == "Constant" and n.output:
                for a in n.attribute:
                    if a.name == "value":
                        self._protos[n.output[0]] = a.t
                    elif a.name == "value_float":
                        self._read[n.output[0]] = np.array(a.f, np.float32)

    def __contains__(self, name: str) -> bool:
        return name in self._protos or name in self._read

    def proto(self, name: str) -> onnx.TensorProto | None:
        """The stored tensor of ``name`` without reading it (its type and dims), or None."""
        return self._protos.get(name)

    def get(self, name: str) -> np.ndarray | None:
        """The value of constant ``name``, or None where ``name`` is no constant here."""
        if name not in self._read:
            if name not in self._protos:
                return None
            self._read[name] = numpy_helper.to_array(self._protos[name])
        return self._read[name]
