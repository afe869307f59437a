"""cleanup: dead nodes and unused initializers removed, topological order, shapes re-inferred.

Byte-identical vectors (rank ≤ 1) are shared again and nodes that compute the same thing from the
same inputs are merged (undoing canonicalize's per-node copies of vectors and shape computations, so
a fold that changes nothing leaves the graph no larger than it was).
Values are never changed. Stale intermediate shapes (e.g. after folding narrowed a layer) are
cleared and inferred again, so the saved ``value_info`` always matches the graph.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxfold.ir.edit import replace_input
from onnxfold.ir.model import Model
from onnxfold.ir.shapes import clear_shapes, infer_shapes
from onnxfold.pipeline.manager import Pass, PassContext, PassResult


def share_equal_vectors(graph: gs.Graph) -> int:
    """Make nodes share one initializer where several rank ≤ 1 initializers are byte-identical
    (undoing canonicalize's per-node copies wherever folding left them equal). Exact."""
    keep: dict[tuple, gs.Constant] = {}
    protected = {t.name for t in graph.inputs} | {t.name for t in graph.outputs}
    merged = 0
    for tensor in list(graph.tensors().values()):
        if not isinstance(tensor, gs.Constant) or len(tensor.shape) > 1 or tensor.name in protected:
            continue
        values = np.asarray(tensor.values)
        key = (values.dtype.str, values.shape, values.tobytes())
        first = keep.setdefault(key, tensor)
        if first is tensor:
            continue
        for node in list(tensor.outputs):
            replace_input(node, tensor, first)
        merged += 1
    return merged


#: ops whose output is not a function of their inputs and attributes alone
NONDETERMINISTIC = {
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
}


def _attr_key(value) -> object:
    if isinstance(value, gs.Graph):
        raise TypeError("subgraph")
    if isinstance(value, gs.Constant):
        value = value.values
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (list, tuple)):
        return tuple(_attr_key(v) for v in value)
    return (type(value).__name__, repr(value))


def _node_key(node: gs.Node) -> tuple | None:
    """What determines a node's outputs: op, domain, attributes and the identity of its inputs."""
    if node.op in NONDETERMINISTIC or not node.outputs:
        return None
    try:
        attrs = tuple(sorted((k, _attr_key(v)) for k, v in node.attrs.items()))
    except TypeError:  # a node with a subgraph (If, Loop, Scan) is never merged
        return None
    return (node.domain or "", node.op, tuple(id(t) for t in node.inputs), attrs, len(node.outputs))


def merge_equal_nodes(graph: gs.Graph) -> int:
    """Merge nodes of the main graph with the same op, domain, attributes and inputs into the first
    one (in topological order, so equal chains collapse link by link). Exact: such nodes compute the
    same values. A node whose output is a graph output or is read inside a subgraph is kept."""
    graph.toposort()
    keep_names = {t.name for t in graph.outputs}
    for sub in graph.subgraphs(recursive=True):
        keep_names |= {t.name for node in sub.nodes for t in node.inputs}
    first: dict[tuple, gs.Node] = {}
    merged = 0
    for node in graph.nodes:
        key = _node_key(node)
        if key is None:
            continue
        kept = first.setdefault(key, node)
        if kept is node or any(t.name in keep_names for t in node.outputs):
            continue
        for old, new in zip(node.outputs, kept.outputs, strict=True):
            for consumer in list(old.outputs):
                replace_input(consumer, old, new)
        merged += 1
    return merged


class CleanupPass(Pass):
    name = "cleanup"
    summary = "remove dead nodes and unused initializers, sort topologically, re-infer shapes"
    options = ()

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        graph = model.graph
        nodes_before = len(graph.nodes)
        consts_before = sum(isinstance(t, gs.Constant) for t in graph.tensors().values())
        shared = share_equal_vectors(graph)
        merged = merge_equal_nodes(graph)
        graph.cleanup(remove_unused_graph_inputs=False)
        graph.toposort()
        clear_shapes(graph)
        infer_shapes(model)
        consts_after = sum(isinstance(t, gs.Constant) for t in graph.tensors().values())
        stats = {
            "nodes_removed": nodes_before - len(graph.nodes),
            "initializers_removed": consts_before - consts_after,
            "vectors_shared": shared,
            "nodes_merged": merged,
        }
        return PassResult(bool(stats["nodes_removed"] or stats["initializers_removed"]), stats)
