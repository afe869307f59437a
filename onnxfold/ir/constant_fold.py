"""Constant folding of small computations: a node whose inputs are all constants becomes its value.

Exporters compute pads, Resize scales and shape vectors from constants: torch's same-padding builds a
Pad's pads through ``Sub``, ``ConstantOfShape``, ``Concat``, a reversing ``Slice`` and ``Transpose``,
all of them on constants. Until they are values, the analysis cannot rewrite or even read them (a Pad
with computed pads blocks its channel group) and shape inference stops behind them.

The values are computed by onnxruntime on the CPU, with the kernels it uses to fold such nodes itself
when it loads the model. Only small tensors are folded (:data:`MAX_ELEMENTS`), never random or
quantization ops, and never a node whose output is a graph output.

Each folded tensor keeps the computation it came from (:class:`Computed`). On export a tensor whose
value no fold changed gets that computation back (:func:`~onnxfold.ir.restore.restore_computations`): with its values
known, onnxruntime's layout optimizations fuse differently (csmask's residual Adds went into its
convolutions), which reorders float sums, and a model folded at sparsity 0 must stay bit-identical.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper

logger = logging.getLogger(__name__)

MAX_ELEMENTS = 4096  # pads, scales, shape vectors and index ranges are far smaller; weights may not be

#: ops that only move a constant's values (cut, join, reorder, reshape), folded whatever the size up to
#: :data:`MAX_MOVED`: Paddle2ONNX builds an LSTM's W, R and B by slicing and concatenating its gate
#: blocks (PP-OCRv2's recogniser: 131K values each), and a weight computed so blocked its channels;
#: torch's dynamo export splits a cross-attention's in_proj_weight into q and kv (lemmaturk's decoder:
#: its q, k and v projections were in no group at all)
MOVE_OPS = {"Slice", "Split", "Concat", "Unsqueeze", "Squeeze", "Reshape", "Transpose", "Identity", "Flatten"}
MAX_MOVED = 1 << 24

#: ops whose output is not a function of their inputs and attributes alone
NONDETERMINISTIC = {
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
}

#: ops never folded: those, Dropout, quantization (its weights stay quantized) and control flow
NEVER_FOLDED = NONDETERMINISTIC | {
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


def _small_constant_node(node: gs.Node) -> bool:
    """A Constant node holding a small dense tensor (canonicalize lifts them first; a model read as
    it was, for its MAC count, still has them)."""
    value = node.attrs.get("value")
    if isinstance(value, gs.Constant):
        return _size(value) <= MAX_ELEMENTS
    return any(key in node.attrs for key in ("value_float", "value_int", "value_floats", "value_ints"))


def _foldable(node: gs.Node, known: set[str], outputs: set[str]) -> bool:
    """Whether every input of ``node`` is a small constant or a tensor that folding computes."""
    if (node.domain or "") not in ("", "ai.onnx") or node.op in NEVER_FOLDED or not node.outputs:
        return False
    if any(isinstance(v, gs.Graph) for v in node.attrs.values()):
        return False
    if any(t.name in outputs for t in node.outputs):
        return False
    named = [t for t in node.inputs if t.name]
    if not named:
        return node.op == "Constant" and _small_constant_node(node)
    for t in named:
        if t.name in known:
            continue
        if not isinstance(t, gs.Constant) or _size(t) > (MAX_MOVED if _moves(node) else MAX_ELEMENTS):
            return False
        if len(t.shape) >= 2 and any(reader is not node and not _moves(reader) for reader in t.outputs):
            return False  # a weight other nodes read too: folding would store it twice
    return True


def _moves(node: gs.Node) -> bool:
    """Whether ``node`` only moves values (:data:`MOVE_OPS`), in the default domain."""
    return node.op in MOVE_OPS and (node.domain or "") in ("", "ai.onnx")


def _sub_model(
    nodes: list[gs.Node], protos: list[onnx.NodeProto], opset_imports: list[tuple[str, int]]
) -> onnx.ModelProto:
    """A model that computes the outputs of ``nodes`` (exported as ``protos``) from the constants
    they read."""
    from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter

    made = {t.name for node in nodes for t in node.outputs}
    constants: dict[str, gs.Constant] = {}
    for node in nodes:
        for t in node.inputs:
            if t.name and t.name not in made and isinstance(t, gs.Constant):
                constants[t.name] = t
    graph = helper.make_graph(
        protos,
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

    value: np.ndarray | None
    nodes: tuple[onnx.NodeProto, ...]
    constants: tuple[onnx.TensorProto, ...]
    #: a value known only in part: the Concat node canonicalize made in its place, and that node's
    #: inputs as they were made (a constant's values; None for a Slice of a dims vector)
    made: str = ""
    pieces: tuple[np.ndarray | None, ...] = ()
    #: the same value computed from further back, through earlier rounds' computations (:func:`chained`):
    #: restored where no weight changed shape, since it may read shapes a fold changes
    chain: Computed | None = None

    def restorable(self, same: bool) -> Computed:
        """The computation to restore: the chain where every weight kept its shape (``same``)."""
        return self.chain if same and self.chain is not None else self


def chained(recipe: Computed, computed: dict[str, Computed]) -> Computed:
    """``recipe`` with every constant it starts from that an earlier round computed (a key of
    ``computed``, not a partly known vector) replaced by that computation, transitively: rounds of
    folding each start from the constants the last one made, and a computation restored from a
    constant computes nothing at run time (a sequence-first attention's scale √(1/√D) came back as
    Sqrt of a constant D, which onnxruntime folded and fused into FusedMatMul: -s 0 1.4e-6 off)."""
    nodes: list[onnx.NodeProto] = []
    constants: dict[str, onnx.TensorProto] = {}
    seen: set[tuple[str, ...]] = set()

    def add(r: Computed, depth: int) -> None:
        r = r.chain or r
        for c in r.constants:
            earlier = computed.get(c.name)
            if earlier is not None and not earlier.made and earlier is not r and depth < 16:
                add(earlier, depth + 1)
            elif c.name not in constants:
                constants[c.name] = c
        for n in r.nodes:
            if tuple(n.output) not in seen:
                seen.add(tuple(n.output))
                nodes.append(n)

    add(recipe, 0)
    if len(nodes) == len(recipe.nodes):
        return recipe  # nothing earlier to chain
    made = {o for n in nodes for o in n.output}
    kept = tuple(c for name, c in constants.items() if name not in made)
    return replace(recipe, chain=Computed(recipe.value, tuple(nodes), kept, recipe.made, recipe.pieces))


def _computations(
    nodes: list[gs.Node], protos: list[onnx.NodeProto], values: dict[str, np.ndarray]
) -> dict[str, Computed]:
    """Per output of ``nodes`` (exported as ``protos``): its value and the part of ``nodes`` that
    computes it."""
    from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter

    producer = {t.name: i for i, node in enumerate(nodes) for t in node.outputs if t.name}
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


def recorded(out: gs.Tensor, value: np.ndarray, ops: set[str], most: int = 64) -> Computed | None:
    """How ``out`` is computed, through nodes of ``ops``, from constants and ``Shape`` reads of other
    tensors (kept by name), as a :class:`Computed` of ``value``; None past ``most`` nodes or another op."""
    from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter

    order: list[gs.Node] = []
    seen: set[int] = set()
    leaves: dict[str, gs.Constant] = {}

    def visit(t: gs.Tensor) -> bool:
        if isinstance(t, gs.Constant):
            leaves[t.name] = t
            return True
        if not t.inputs or id(t.inputs[0]) in seen:
            return True  # a graph input, or reached before
        node = t.inputs[0]
        if (node.domain or "") not in ("", "ai.onnx") or (node.op != "Shape" and node.op not in ops):
            return False
        seen.add(id(node))
        if len(seen) > most:
            return False
        reads = [i for i in node.inputs if i.name]
        if node.op == "Shape":
            reads = [i for i in reads if isinstance(i, gs.Constant)]  # a variable is read by name
        if not all(visit(i) for i in reads):
            return False
        order.append(node)
        return True

    if not visit(out) or not order:
        return None
    return Computed(
        value,
        tuple(OnnxExporter.export_node(n) for n in order),
        tuple(OnnxExporter.export_tensor_proto(c) for c in leaves.values()),
    )


def weight_shapes(graph: gs.Graph) -> dict[str, tuple[int, ...]]:
    """The shape of every weight (a constant of rank 2 or more): a fold that removes channels changes one."""
    return {
        t.name: tuple(t.shape)
        for t in graph.tensors().values()
        if isinstance(t, gs.Constant) and t.shape is not None and len(t.shape) >= 2
    }


def forget_reshaped_reads(computed: dict[str, Computed], before: gs.Graph, after: gs.Graph) -> int:
    """Drop from ``computed`` the computations that read the shape of a tensor whose rank a rewrite
    changed between ``before`` and ``after`` (their value was read before it): restored, they would
    read the new shape. A torch MultiheadAttention's Reshape target read its sequence length as
    Shape(q)[1], q [B·H, L, D]; with the heads lifted q is [B, H, L, D], and the restored Shape read
    H = 4 where L was 563 (trial 188: every --inputs run failed in onnxfold's own graph). Returns how
    many were dropped."""
    old = {n: len(t.shape) for n, t in before.tensors().items() if t.shape is not None}
    changed = {
        n
        for n, t in after.tensors().items()
        if t.shape is not None and old.get(n, len(t.shape)) != len(t.shape)
    }

    def reads_changed(nodes) -> bool:
        return any(n.op_type == "Shape" and n.input and n.input[0] in changed for n in nodes)

    stale = [name for name, recipe in computed.items() if reads_changed(recipe.nodes)]
    for name in stale:
        del computed[name]
    for name, recipe in computed.items():  # a chain through such a read falls back to its last step
        if recipe.chain and reads_changed(recipe.chain.nodes):
            computed[name] = replace(recipe, chain=None)
    return len(stale)


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
    from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter

    from onnxfold.runtime.session import CPU, make_session

    protos = [OnnxExporter.export_node(node) for node in nodes]  # once: the sub-model's and the records'
    try:
        model = _sub_model(nodes, protos, opset_imports)
        session = make_session(model.SerializeToString(), providers=[CPU], optimize=False, threads=1)
        names = [o.name for o in session.get_outputs()]
        values = dict(zip(names, session.run(names, {}), strict=True))
    except Exception as exc:  # noqa: BLE001 - any failure leaves the graph as it was
        logger.debug("constant folding skipped: %s", exc)
        return {}
    computed = _computations(nodes, protos, values)
    folded = {}
    for node in nodes:
        outs = [t for t in node.outputs if t.name]
        results = [values.get(t.name) for t in outs]
        most = MAX_MOVED if _moves(node) else MAX_ELEMENTS
        if any(not isinstance(r, np.ndarray) or r.size > most for r in results):
            continue  # e.g. a large mask from ConstantOfShape: its node stays
        node.outputs.clear()
        for out, value in zip(outs, results, strict=True):
            out.to_constant(value)
            folded[out.name] = computed[out.name]
    return folded
