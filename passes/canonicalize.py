"""canonicalize: one uniform graph form whatever the exporter.

Guarantees afterwards: every node has a unique name; weights held in ``Constant`` nodes are
initializers; ``Identity`` and inference ``Dropout`` nodes are gone (unless they produce a graph
output); data-movement ops on constants (Transpose/Cast/Reshape/Squeeze/Unsqueeze of a weight) are
replaced by their result, unless the weight has other readers too (a tied weight is still stored once)
or it is an integer weight cast to float (stored 4x larger; ``--dequantize`` reads it); any other node
whose inputs are all small constants (pads, Resize scales and shape vectors that exporters compute from
constants) is replaced by its value, computed by onnxruntime (:mod:`onnxfold.ir.constant_fold`);
vectors (rank ≤ 1) shared by several nodes are copied per node; a computed shape tensor shared by
several Reshape/Expand/Tile/ConstantOfShape nodes is computed once per node (an exact copy); nodes
nothing uses are removed; integer shape arithmetic whose value the inferred shapes fix (a channel count
read through ``Shape``) is replaced by its value; a last-two-axes transpose through a merged leading axis (torch's SDPA kᵀ) is one Transpose; a packed q/k/v projection
indexed part by part is one Slice per part (:mod:`onnxfold.ir.packed`), heads merged with the batch
axis get an axis of their own (:mod:`onnxfold.ir.heads`); an ``If`` whose condition the shapes decide is
replaced by the branch it takes (:mod:`onnxfold.ir.branches`); ``Split(num_outputs=n)`` gets explicit sizes;
nodes are topologically sorted; shapes are inferred where ONNX can infer them; a recurrent op's zero
initial state is left out (:mod:`onnxfold.ir.recurrent_states`). Values are never changed. onnxruntime
may fuse the attention rewrites differently (PP-OCRv4's recogniser: 7e-7 apart), so the graph before
them is kept (``Model.unrewritten``) and a fold that uses neither writes that one.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx_graphsurgeon as gs
from onnx import helper

from onnxfold.analysis.quantized import CAST_WEIGHT_VALUES
from onnxfold.analysis.shape_trace import DIM_VALUE_OPS, dim_values
from onnxfold.ir.branches import inline_decided_ifs
from onnxfold.ir.constant_fold import (
    Computed,
    chained,
    fold_small_constants,
    forget_reshaped_reads,
    recorded,
    weight_shapes,
)
from onnxfold.ir.edit import Names, remove_identities
from onnxfold.ir.heads import lift_merged_heads
from onnxfold.ir.model import Model
from onnxfold.ir.packed import unpack_packed_axes
from onnxfold.ir.recurrent_states import drop_zero_states
from onnxfold.ir.shape_chains import isolate_shape_computations
from onnxfold.ir.shapes import infer_shapes
from onnxfold.ir.transposes import direct_key_transposes
from onnxfold.ir.unfuse import fused_ops, unfuse_runtime_ops
from onnxfold.pipeline.manager import Pass, PassContext, PassResult

_CONSTANT_ATTRS = {
    "value_float": np.float32,
    "value_floats": np.float32,
    "value_int": np.int64,
    "value_ints": np.int64,
}


def name_nodes(graph: gs.Graph) -> int:
    """Give every unnamed or duplicate-named node a unique name ``<op>_<index>``."""
    seen: set[str] = set()
    renamed = 0
    for i, node in enumerate(graph.nodes):
        if not node.name or node.name in seen:
            base = f"{node.op}_{i}"
            name = base
            while name in seen:
                name += "_"
            node.name = name
            renamed += 1
        seen.add(node.name)
    return renamed


def lift_constants(graph: gs.Graph) -> int:
    """Turn ``Constant`` nodes into initializers (graph outputs excepted)."""
    outputs = {t.name for t in graph.outputs}
    lifted = 0
    for node in list(graph.nodes):
        if (
            node.op != "Constant"
            or (node.domain or "") not in ("", "ai.onnx")
            or node.outputs[0].name in outputs
        ):
            continue
        values = None
        if isinstance(node.attrs.get("value"), gs.Constant):
            values = node.attrs["value"].values
        for attr, dtype in _CONSTANT_ATTRS.items():
            if attr in node.attrs:
                values = np.array(node.attrs[attr], dtype=dtype)
        if values is None:
            continue  # sparse or string constants are left as they are
        out = node.outputs[0]
        node.outputs.clear()
        out.to_constant(np.asarray(values))
        lifted += 1
    return lifted


def _fold_layout_op(node: gs.Node) -> np.ndarray | None:
    """numpy value of a data-movement op on constants (exact: no arithmetic), or None."""
    x = np.asarray(node.inputs[0].values)
    if node.op == "Transpose":
        return np.transpose(x, node.attrs.get("perm"))
    if node.op == "Cast":
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(int(node.attrs.get("to"))))
        except (KeyError, TypeError, ValueError):
            return None
        weight = dtype.kind == "f" and x.dtype.kind in "iu" and x.size >= CAST_WEIGHT_VALUES  # (docstring)
        return x.astype(dtype) if dtype.kind in "fiub" and x.dtype.kind in "fiub" and not weight else None
    if node.op in ("Squeeze", "Unsqueeze"):
        if len(node.inputs) > 1:
            axes = [int(a) for a in np.asarray(node.inputs[1].values).reshape(-1)]
        else:
            axes = list(node.attrs.get("axes", []))
        if node.op == "Squeeze":
            return np.squeeze(x, axis=tuple(axes)) if axes else np.squeeze(x)
        out = x
        rank = x.ndim + len(axes)
        for a in sorted(a + rank if a < 0 else a for a in axes):
            out = np.expand_dims(out, a)
        return out
    if node.op == "Reshape" and not node.attrs.get("allowzero", 0):
        target = [int(v) for v in np.asarray(node.inputs[1].values).reshape(-1)]
        target = [x.shape[i] if v == 0 else v for i, v in enumerate(target)]
        return x.reshape(target)
    return None


def shared_weight(tensor: gs.Tensor, node: gs.Node, outputs: set[str]) -> bool:
    """Whether ``tensor`` is a weight (rank ≥ 2 constant) that something besides ``node`` reads too."""
    if not isinstance(tensor, gs.Constant) or tensor.shape is None or len(tensor.shape) < 2:
        return False
    return tensor.name in outputs or any(reader is not node for reader in tensor.outputs)


def fold_constant_layout_ops(graph: gs.Graph, computed: dict[str, Computed] | None = None) -> int:
    """Replace Transpose/Cast/Reshape/Squeeze/Unsqueeze of constants by their (bit-exact) result,
    so that weights stored behind such nodes (e.g. ``MatMul(x, Transpose(W))``) are plain initializers.

    A weight that other nodes read as well (a tied embedding and LM head: a Gather reads the table,
    the head reads it through a Transpose) keeps its node: replacing it would store the weight twice.
    The analysis sees through such a node (:mod:`onnxfold.analysis.views`). A node that reads a
    value an earlier round computed (a key of ``computed``) adds its own output's computation there:
    a Cast of a head size read through Shape, which the attention's scale is computed from."""
    outputs = {t.name for t in graph.outputs}
    folded = 0
    for node in list(graph.nodes):
        if (
            node.op not in ("Transpose", "Cast", "Reshape", "Squeeze", "Unsqueeze")
            or (node.domain or "") not in ("", "ai.onnx")
            or len(node.outputs) != 1
        ):
            continue
        if not node.inputs or not all(isinstance(t, gs.Constant) for t in node.inputs if t.name):
            continue
        if node.outputs[0].name in outputs or shared_weight(node.inputs[0], node, outputs):
            continue
        try:
            value = _fold_layout_op(node)
        except (ValueError, TypeError, IndexError):
            value = None
        if value is None:
            continue
        out = node.outputs[0]
        if computed is not None and any(t.name in computed for t in node.inputs):
            computed[out.name] = _layout_recipe(node, value, computed)
        node.outputs.clear()
        out.to_constant(np.ascontiguousarray(value).reshape(np.shape(value)))  # keeps a 0-d scalar 0-d
        folded += 1
    return folded


def _layout_recipe(node: gs.Node, value: np.ndarray, computed: dict[str, Computed]) -> Computed:
    """How a layout op on constants computed ``value``: the node, from its inputs as they are now
    (constants), each an earlier computation's where ``computed`` has one (:func:`chained`)."""
    from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter

    leaves = tuple(OnnxExporter.export_tensor_proto(t) for t in node.inputs if t.name)
    return chained(Computed(np.asarray(value), (OnnxExporter.export_node(node),), leaves), computed)


def unshare_vectors(graph: gs.Graph) -> int:
    """Give every node its own copy of a shared vector: an initializer with at most one axis longer
    than 1, of any rank ([C], a bias [1, C] or [1, C, 1, 1]).

    Exporters deduplicate equal tensors (e.g. freshly initialised BN γ = 1 shared by every BN, often
    through Identity nodes; Paddle2ONNX's zero conv biases [1, C, 1, 1], which onnxfold's own
    cleanup shares too). Such sharing is an accident of equal values, not a tie: left in place it
    would force unrelated channel groups to share one assignment (three convs folded as one group,
    0.925 relative error where the unshared model folded exactly). Weights with two or more axes
    longer than 1 stay shared (a true tie, e.g. a weight used twice), and the analysis handles those.

    One node reading the same vector in several input slots (a Concat building a shape from one
    constant [2] for the batch, the KV heads and the repeat factor) gets one copy per slot: those
    entries mean different things, and folding rewrites only one of them.
    """
    copies, names = 0, Names(graph)
    for tensor in list(graph.tensors().values()):
        if not isinstance(tensor, gs.Constant) or len(tensor.outputs) < 2:
            continue
        if tensor.shape is None or sum(int(d) > 1 for d in tensor.shape) > 1:
            continue
        if tensor in graph.inputs or tensor in graph.outputs:
            continue
        users = list({id(node): node for node in tensor.outputs}.values())  # each node once, in order
        slots = [(node, i) for node in users for i, t in enumerate(node.inputs) if t is tensor]
        for n, (node, i) in enumerate(slots[1:], start=1):
            node.inputs[i] = gs.Constant(names(f"{tensor.name}__{n}"), np.array(tensor.values, copy=True))
            copies += 1
    return copies


def explicit_split_sizes(graph: gs.Graph) -> int:
    """``Split(num_outputs=n)`` (opset 18), or a Split of opset 13–17 with neither sizes nor
    ``num_outputs`` (equal parts, one per output: torch's legacy export of GLU), on a static axis
    becomes ``Split(x, sizes)``: the same computation, but with the sizes in a constant that folding
    can rewrite (YOLO C2f chunks, a Conformer's GLU)."""
    changed = 0
    for node in graph.nodes:
        if node.op != "Split" or (len(node.inputs) > 1 and node.inputs[1].name):
            continue
        implicit = "num_outputs" not in node.attrs and "split" not in node.attrs
        if implicit and not 13 <= (graph.opset or 0) < 18 or "split" in node.attrs:
            continue  # sizes in an attribute (opset < 13), or none at an opset that needs num_outputs
        shape = node.inputs[0].shape
        axis = int(node.attrs.get("axis", 0))
        if shape is None or not -len(shape) <= axis < len(shape):
            continue
        dim = shape[axis]
        count = int(node.attrs.get("num_outputs", len(node.outputs)))
        if not isinstance(dim, (int, np.integer)) or count != len(node.outputs) or count < 1:
            continue
        if implicit and int(dim) % count:
            continue  # not a valid equal split: left as it is
        chunk = -(-int(dim) // count)  # ceil, as the operator defines it
        sizes = [chunk] * (count - 1) + [int(dim) - chunk * (count - 1)]
        if sizes[-1] <= 0:
            continue
        node.attrs.pop("num_outputs", None)
        const = gs.Constant(f"{node.name}_split_sizes", np.array(sizes, dtype=np.int64))
        if len(node.inputs) > 1:
            node.inputs[1] = const
        else:
            node.inputs.append(const)
        changed += 1
    return changed


def materialize_static_dims(graph: gs.Graph, computed: dict[str, Computed] | None = None) -> int:
    """Replace shape arithmetic whose value the inferred shapes fix by its value (shapes must be inferred).

    Exporters compute a channel count at run time: the legacy torch exporter's ``x.chunk(2, 1)`` cuts
    at ``(Shape(x)[1] + 1) / 2``, Paddle2ONNX builds a head's Reshape target from ``Slice(Shape(x),
    0, 2)``. A channel count is static (the weights fix it), so such a tensor becomes a constant
    (:func:`~onnxfold.analysis.shape_trace.dim_values` computes it as ONNX would) that the fold
    rewrites like any other; a vector with some dims known only at run time (a dynamic batch) becomes
    a Concat of constants and Slices of its dims vector. Values are unchanged. ``computed`` gets how
    each tensor made constant was computed (restored on export where its value did not change)."""
    outputs = {t.name for t in graph.outputs}
    memo: dict = {}
    changed = 0
    made: list[gs.Node] = []
    decided = []
    names: Names | None = None  # fresh names: a source may hold ours already (an onnxfold output)
    for node in list(graph.nodes):
        if (
            node.op not in DIM_VALUE_OPS
            or len(node.outputs) != 1
            or (node.domain or "") not in ("", "ai.onnx")
        ):
            continue
        out = node.outputs[0]
        if out.name in outputs or not out.outputs:
            continue
        value = dim_values(out, memo)
        if value is not None and any(v is not None for v in value.values):
            decided.append((node, out, value))
    recipes = {}  # how each was computed, recorded before any of them changes the graph
    for _node, out, value in decided if computed is not None else ():
        recipes[out.name] = recorded(out, value.array() if value.known else None, DIM_VALUE_OPS)
    for node, out, value in decided:
        how = recipes.get(out.name)
        if value.known:
            node.outputs.clear()
            out.to_constant(value.array())
            changed += 1
            if how is not None:
                computed[out.name] = chained(how, computed)
        elif node.op in ("Slice", "Gather") and not value.scalar:
            names = names or Names(graph)
            pieces = _known_runs(out, value, memo, names)
            if pieces is not None:
                node.outputs.clear()
                concat = gs.Node("Concat", names(f"{node.name}_dims"), {"axis": 0}, pieces, [out])
                made.append(concat)
                made.extend(p.inputs[0] for p in pieces if p.inputs)
                changed += 1
                if how is not None:
                    kept = tuple(
                        np.array(p.values, copy=True) if isinstance(p, gs.Constant) else None for p in pieces
                    )
                    computed[out.name] = replace(how, made=concat.name, pieces=kept)
    graph.nodes.extend(made)
    return changed


def _known_runs(out: gs.Variable, value, memo: dict, names: Names) -> list[gs.Tensor] | None:
    """``out``'s entries as runs: a constant per run of known entries, ``Slice(dims, a, b)`` per run of
    entries copied from consecutive entries of one dims vector; None if an unknown entry is no copy."""
    runs: list[list[int]] = []
    for j, v in enumerate(value.values):
        origin = value.origins[j]
        if v is None and origin is None:
            return None
        if v is None:
            vec = dim_values(origin[0], memo)
            if vec is None or vec.dtype != value.dtype:
                return None
        prev = runs[-1][-1] if runs else None
        same = prev is not None and (value.values[prev] is None) == (v is None)
        if same and v is None:
            po = value.origins[prev]
            same = po[0] is origin[0] and po[1] + 1 == origin[1]
        if same:
            runs[-1].append(j)
        else:
            runs.append([j])
    pieces: list[gs.Tensor] = []
    for r, run in enumerate(runs):
        name = names(f"{out.name}_dims{r}")
        if value.values[run[0]] is not None:
            pieces.append(gs.Constant(name, np.array([value.values[j] for j in run], dtype=value.dtype)))
            continue
        vec, lo = value.origins[run[0]]
        bounds = [
            gs.Constant(names(f"{name}_{k}"), np.array([b], dtype=np.int64))
            for k, b in (("start", lo), ("end", lo + len(run)))
        ]
        piece = gs.Variable(name, dtype=value.dtype, shape=[len(run)])
        gs.Node("Slice", names(f"{name}_slice"), {}, [vec, *bounds], [piece])
        pieces.append(piece)
    return pieces


def _finish(model: Model) -> tuple[int, int, int, bool, int]:
    """The last steps, again after a rewrite: shape computations isolated (nodes named first: the copies
    are named after their readers), vectors unshared, dead nodes removed, sorted and named, shapes inferred."""
    graph = model.graph
    renamed = name_nodes(graph)
    isolated, unshared = isolate_shape_computations(graph), unshare_vectors(graph)
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    renamed += name_nodes(graph)
    return isolated, unshared, renamed, infer_shapes(model), explicit_split_sizes(graph)


class CanonicalizePass(Pass):
    name = "canonicalize"
    summary = "lift Constant nodes to initializers, drop Identity/Dropout, fix static shape arithmetic, name nodes, infer shapes"
    options = ()

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        graph = model.graph
        lifted = lift_constants(graph)
        removed, zeros = remove_identities(graph), drop_zero_states(graph)
        folded = fold_constant_layout_ops(graph)
        graph.toposort()
        computed = fold_small_constants(graph, model.opset_imports)
        model.computed_constants.update(computed)
        dims = transposes = unpacked = heads = unfused = ifs = 0
        shaped = any(node.op == "Shape" for node in graph.nodes)
        if shaped:
            graph.cleanup(remove_unused_graph_inputs=False).toposort()
            infer_shapes(model)
            for _ in range(3):  # dims fixed by one round's values let inference fix more (a GQA repeat count)
                step = materialize_static_dims(graph, model.computed_constants)
                if not step:
                    break
                dims += step
                folded += fold_constant_layout_ops(graph, model.computed_constants)
                more = fold_small_constants(graph, model.opset_imports)
                more = {k: chained(r, model.computed_constants) for k, r in more.items()}
                model.computed_constants.update(more)
                computed.update(more)
                graph.cleanup(remove_unused_graph_inputs=False).toposort()
                infer_shapes(model)
            transposes = direct_key_transposes(graph)
        if ifs := inline_decided_ifs(graph):  # conditions the shapes decided (torch's squeeze(dim))
            lifted += lift_constants(graph)
            removed += remove_identities(graph)
            graph.cleanup(remove_unused_graph_inputs=False).toposort()
        if model.computed_constants:
            model.weight_shapes = weight_shapes(graph)
        isolated, unshared, renamed, inferred, splits = _finish(model)
        if any(node.op == "Reshape" for node in graph.nodes) or fused_ops(graph):
            before = model.copy()
            if unfused := unfuse_runtime_ops(graph):
                graph.toposort()
            unpacked = unpack_packed_axes(graph)
            heads = lift_merged_heads(graph)
            if unfused or unpacked or heads:  # a fold that uses none of them writes the graph as it was
                model.unrewritten = before
                more = _finish(model)
                forget_reshaped_reads(model.computed_constants, before.graph, graph)
                isolated, unshared, renamed = isolated + more[0], unshared + more[1], renamed + more[2]
                inferred, splits = more[3], splits + more[4]
        stats = {
            "constants_lifted": lifted,
            "nodes_removed": removed,
            "zero_recurrent_states_dropped": zeros,
            "constant_ops_folded": folded,
            "constant_computations_folded": len(computed),
            "static_dims_materialized": dims,
            "key_transposes_made_direct": transposes,
            "runtime_fused_ops_unfused": unfused,
            "packed_projections_unpacked": unpacked,
            "merged_heads_lifted": heads,
            "decided_ifs_inlined": ifs,
            "shape_computations_isolated": isolated,
            "vectors_unshared": unshared,
            "nodes_named": renamed,
            "splits_made_explicit": splits,
            "shapes_inferred": inferred,
        }
        held = {n for n, t in graph.tensors().items() if isinstance(t, gs.Constant)}
        weights = [n for n in model.weight_inputs if n in held]
        if weights:
            stats["weight_inputs"] = len(weights)
            stats["note"] = (
                f"{len(weights)} weights that the file also lists as graph inputs (an old exporter's "
                "keep_initializers_as_inputs) are plain weights in the result: onnxruntime can fold "
                "and fuse them now (faster; outputs may differ in the last bits, which validation "
                "measures against the file as it was), and a caller can no longer feed them"
            )
        changed = (lifted, removed, zeros, folded, computed, dims, transposes, unpacked, heads, unfused, ifs)
        return PassResult(any(changed) or bool(isolated or unshared or renamed or splits), stats)
