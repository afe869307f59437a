"""Constant folding of small computations: a node whose inputs are all constants becomes its value.

Exporters compute pads, Resize scales and shape vectors from constants: torch's same-padding builds a
Pad's pads through ``Sub``, ``ConstantOfShape``, ``Concat``, a reversing ``Slice`` and ``Transpose``,
all of them on constants. Until they are values, the analysis cannot rewrite or even read them (a Pad
with computed pads blocks its channel group) and shape inference stops behind them.

The values are computed by onnxruntime on the CPU, with the kernels it uses to fold such nodes itself
when it loads the model. Only small tensors are folded (:data:`MAX_ELEMENTS`), never random or
quantization ops, and never a node whose output is a graph output.

Each folded tensor keeps the computation it came from (:class:`Computed`). On export a tensor whose
value no fold changed gets that computation back (:func:`restore_computations`): with its values
known, onnxruntime's layout optimizations fuse differently (csmask's residual Adds went into its
convolutions), which reorders float sums, and a model folded at sparsity 0 must stay bit-identical.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper

logger = logging.getLogger(__name__)

MAX_ELEMENTS = 4096  # pads, scales, shape vectors and index ranges are far smaller; weights may not be

# ops whose value is not a function of their inputs' values, or that must stay as they are
_KEPT = {
    "Constant",
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
    "Dropout",
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "If",
    "Loop",
    "Scan",
}


def _size(tensor: gs.Constant) -> int:
    shape = tensor.shape if tensor.shape is not None else np.shape(tensor.values)
    return int(np.prod(shape)) if len(shape) else 1


def _foldable(node: gs.Node, known: set[str], outputs: set[str]) -> bool:
    """Whether every input of ``node`` is a small constant or a tensor that folding computes."""
    if (node.domain or "") not in ("", "ai.onnx") or node.op in _KEPT or not node.outputs:
        return False
    if any(isinstance(v, gs.Graph) for v in node.attrs.values()):
        return False
    if any(t.name in outputs for t in node.outputs):
        return False
    named = [t for t in node.inputs if t.name]
    if not named:
        return False
    for t in named:
        if t.name in known:
            continue
        if not isinstance(t, gs.Constant) or _size(t) > MAX_ELEMENTS:
            return False
        if len(t.shape) >= 2 and any(reader is not node for reader in t.outputs):
            return False  # a weight other nodes read too: folding would store it twice
    return True


def _sub_model(nodes: list[gs.Node], opset_imports: list[tuple[str, int]]) -> onnx.ModelProto:
    """A model that computes the outputs of ``nodes`` from the constants they read."""
    from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter

    made = {t.name for node in nodes for t in node.outputs}
    constants: dict[str, gs.Constant] = {}
    for node in nodes:
        for t in node.inputs:
            if t.name and t.name not in made and isinstance(t, gs.Constant):
                constants[t.name] = t
    graph = helper.make_graph(
        [OnnxExporter.export_node(node) for node in nodes],
        "constants",
        [],
        [helper.make_empty_tensor_value_info(t.name) for node in nodes for t in node.outputs if t.name],
        [OnnxExporter.export_tensor_proto(t) for t in constants.values()],
    )
    opsets = [
        helper.make_opsetid(domain, version) for domain, version in opset_imports if domain in ("", "ai.onnx")
    ]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = min(model.ir_version, 10)
    return model


@dataclass(frozen=True)
class Computed:
    """A folded tensor's value and the nodes (in order) and constants that computed it."""

    value: np.ndarray
    nodes: tuple[onnx.NodeProto, ...]
    constants: tuple[onnx.TensorProto, ...]


def _computations(nodes: list[gs.Node], values: dict[str, np.ndarray]) -> dict[str, Computed]:
    """Per output of ``nodes``: its value and the part of ``nodes`` that computes it."""
    from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter

    producer = {t.name: i for i, node in enumerate(nodes) for t in node.outputs if t.name}
    protos = [OnnxExporter.export_node(node) for node in nodes]
    needs: list[set[int]] = []
    for i, node in enumerate(nodes):
        mine = {i}
        for t in node.inputs:
            if t.name in producer:
                mine |= needs[producer[t.name]]
        needs.append(mine)
    result = {}
    for name, i in producer.items():
        if name not in values:
            continue
        used = sorted(needs[i])
        leaves = {
            t.name: t
            for j in used
            for t in nodes[j].inputs
            if t.name and t.name not in producer and isinstance(t, gs.Constant)
        }
        result[name] = Computed(
            values[name],
            tuple(protos[j] for j in used),
            tuple(OnnxExporter.export_tensor_proto(t) for t in leaves.values()),
        )
    return result


def restore_computations(graph: onnx.GraphProto, computed: dict[str, Computed]) -> int:
    """Give every initializer of ``graph`` that folding made, and whose value is still the folded one,
    its computation back (nodes and constants renamed apart, first in the graph); the count restored."""
    if not computed:
        return 0
    kept: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    constants: list[onnx.TensorProto] = []
    for tensor in graph.initializer:
        recipe = computed.get(tensor.name)
        if recipe is None or tensor.data_location == onnx.TensorProto.EXTERNAL:
            kept.append(tensor)
            continue
        value = numpy_helper.to_array(tensor)
        same = value.dtype == recipe.value.dtype and value.shape == recipe.value.shape
        if not (same and np.array_equal(value, recipe.value)):
            kept.append(tensor)
            continue
        tag = f"__computed{len(constants)}"
        renamed = {c.name: c.name + tag for c in recipe.constants}
        renamed.update({o: o + tag for n in recipe.nodes for o in n.output if o and o != tensor.name})
        for node in recipe.nodes:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            copy.name = node.name + tag
            copy.input[:] = [renamed.get(i, i) for i in node.input]
            copy.output[:] = [renamed.get(o, o) for o in node.output]
            nodes.append(copy)
        for c in recipe.constants:
            copy = onnx.TensorProto()
            copy.CopyFrom(c)
            copy.name = renamed[c.name]
            constants.append(copy)
    if not nodes:
        return 0
    del graph.initializer[:]
    graph.initializer.extend(kept + constants)
    rest = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + rest)
    return len(nodes)


def fold_small_constants(graph: gs.Graph, opset_imports: list[tuple[str, int]]) -> dict[str, Computed]:
    """Replace every node whose inputs are all small constants (or values this folds) by its value,
    computed by onnxruntime; per tensor made constant, how it was computed. Nothing changes when
    onnxruntime cannot run them."""
    outputs = {t.name for t in graph.outputs}
    known: set[str] = set()
    nodes: list[gs.Node] = []
    for node in graph.nodes:
        if _foldable(node, known, outputs):
            nodes.append(node)
            known.update(t.name for t in node.outputs if t.name)
    if not nodes:
        return {}
    from onnxfold.runtime.session import CPU, make_session

    try:
        model = _sub_model(nodes, opset_imports)
        session = make_session(model.SerializeToString(), providers=[CPU], optimize=False, threads=1)
        names = [o.name for o in session.get_outputs()]
        values = dict(zip(names, session.run(names, {}), strict=True))
    except Exception as exc:  # noqa: BLE001 - any failure leaves the graph as it was
        logger.debug("constant folding skipped: %s", exc)
        return {}
    computed = _computations(nodes, values)
    folded = {}
    for node in nodes:
        outs = [t for t in node.outputs if t.name]
        results = [values.get(t.name) for t in outs]
        if any(not isinstance(r, np.ndarray) or r.size > MAX_ELEMENTS for r in results):
            continue  # e.g. a large mask from ConstantOfShape: its node stays
        node.outputs.clear()
        for out, value in zip(outs, results, strict=True):
            out.to_constant(value)
            folded[out.name] = computed[out.name]
    return folded
