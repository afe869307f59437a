"""cleanup: dead nodes and unused initializers removed, topological order, shapes re-inferred.

Values are never changed. Stale intermediate shapes (e.g. after folding narrowed a layer) are
cleared and inferred again, so the saved ``value_info`` always matches the graph.
"""
from __future__ import annotations

from onnxfold.io import Model
from onnxfold.pass_manager import Pass, PassContext, PassResult
from onnxfold.shapes import clear_shapes, infer_shapes


class CleanupPass(Pass):
    name = "cleanup"
    summary = "remove dead nodes and unused initializers, sort topologically, re-infer shapes"
    options = ()

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        graph = model.graph
        nodes_before = len(graph.nodes)
        consts_before = sum(1 for t in graph.tensors().values() if t.__class__.__name__ == "Constant")
        graph.cleanup(remove_unused_graph_inputs=False)
        graph.toposort()
        clear_shapes(graph)
        infer_shapes(model)
        consts_after = sum(1 for t in graph.tensors().values() if t.__class__.__name__ == "Constant")
        stats = {"nodes_removed": nodes_before - len(graph.nodes), "initializers_removed": consts_before - consts_after}
        return PassResult(bool(stats["nodes_removed"] or stats["initializers_removed"]), stats)
