"""cleanup: dead nodes and unused initializers removed, topological order, shapes re-inferred.

Byte-identical vectors (rank ≤ 1) are shared again (undoing canonicalize's per-node copies).
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


class CleanupPass(Pass):
    name = "cleanup"
    summary = "remove dead nodes and unused initializers, sort topologically, re-infer shapes"
    options = ()

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        graph = model.graph
        nodes_before = len(graph.nodes)
        consts_before = sum(isinstance(t, gs.Constant) for t in graph.tensors().values())
        shared = share_equal_vectors(graph)
        graph.cleanup(remove_unused_graph_inputs=False)
        graph.toposort()
        clear_shapes(graph)
        infer_shapes(model)
        consts_after = sum(isinstance(t, gs.Constant) for t in graph.tensors().values())
        stats = {
            "nodes_removed": nodes_before - len(graph.nodes),
            "initializers_removed": consts_before - consts_after,
            "vectors_shared": shared,
        }
        return PassResult(bool(stats["nodes_removed"] or stats["initializers_removed"]), stats)
