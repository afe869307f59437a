"""cleanup: dead nodes and unused initializers removed, topological order, shapes re-inferred.

Byte-identical vectors (rank ≤ 1) are shared again and nodes that compute the same thing from the
same inputs are merged (undoing canonicalize's per-node copies of vectors and shape computations, so
a fold that changes nothing leaves the graph no larger than it was). Weights are stored once: a weight
that is a bit-exact copy of another is replaced by it, and a 2-D weight that is the exact transpose of
another (the legacy torch exporter's tied embedding and LM head) by a Transpose of it.
Values are never changed. Stale intermediate shapes (e.g. after folding narrowed a layer) are
cleared and inferred again, so the saved ``value_info`` always matches the graph.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxfold.ir.constant_fold import NONDETERMINISTIC
from onnxfold.ir.edit import replace_input
from onnxfold.ir.model import Model, peek_values
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


#: a transposed copy smaller than this stays: the Transpose node would cost about as much
MIN_TIED_BYTES = 256
_SAMPLES = 64


def _bits(values: np.ndarray) -> np.ndarray:
    """``values`` reinterpreted as unsigned integers of the same width: equal means bit-identical."""
    return (
        values.view(np.dtype(f"u{values.dtype.itemsize}"))
        if values.dtype.itemsize in (1, 2, 4, 8)
        else values
    )


def _fingerprint(values: np.ndarray, transposed: bool = False) -> tuple:
    """A cheap key of a weight's values (dtype, shape and a few entries), of its transpose when
    ``transposed``; equal weights have equal keys, so only keys that match are compared in full."""
    shape = values.shape[::-1] if transposed else values.shape
    size = int(np.prod(shape, dtype=np.int64))
    flat = np.unique(np.linspace(0, size - 1, min(size, _SAMPLES)).astype(np.int64))
    index = np.unravel_index(flat, shape)
    picked = values[index[::-1]] if transposed else values[index]
    return (values.dtype.str, tuple(shape), _bits(np.ascontiguousarray(picked)).tobytes())


def _numeric(tensor: gs.Constant) -> bool:
    """Whether ``tensor`` holds numbers numpy represents as they are stored. Reading a bfloat16 or
    float8 tensor through graphsurgeon would cast it and change its stored type, so those are left."""
    if isinstance(tensor.dtype, int):
        return False
    try:
        return np.dtype(tensor.dtype).kind in "fiub"
    except TypeError:
        return False


def _weights(graph: gs.Graph) -> list[gs.Constant]:
    """The weights :func:`share_equal_weights` may store once: numeric rank ≥ 2 initializers with
    readers, not graph inputs or outputs."""
    protected = {t.name for t in graph.inputs} | {t.name for t in graph.outputs}
    return [
        t
        for t in graph.tensors().values()
        if isinstance(t, gs.Constant)
        and t.name not in protected
        and t.outputs
        and t.shape is not None
        and len(t.shape) >= 2
        and int(np.prod(t.shape, dtype=np.int64)) > 0
        and _numeric(t)
    ]


def _equal_earlier(
    kept: dict[tuple, list[gs.Constant]], values: np.ndarray, key: tuple
) -> gs.Constant | None:
    """The weight in ``kept`` under ``key`` (``values``' :func:`_fingerprint`) bit-identical to ``values``,
    or None."""
    candidates = kept.get(key, [])
    return next((k for k in candidates if np.array_equal(_bits(peek_values(k)), _bits(values))), None)


def share_equal_weights(graph: gs.Graph) -> tuple[int, int, int]:
    """Store every weight (rank ≥ 2 initializer) once: one bit-identical to an earlier one is replaced by
    it in every reader; a 2-D one equal to the transpose of an earlier one (of at least
    ``MIN_TIED_BYTES``) is replaced by ``Transpose`` of it. Exact. Returns (shared, transposed, the
    parameters no longer stored)."""
    kept: dict[tuple, list[gs.Constant]] = {}
    names = {n.name for n in graph.nodes} | set(graph.tensors())
    shared = transposed = saved = 0
    made: list[gs.Node] = []
    for tensor in _weights(graph):
        values = peek_values(tensor)
        key = _fingerprint(values)
        same = _equal_earlier(kept, values, key)
        if same is not None:
            for node in list(tensor.outputs):
                replace_input(node, tensor, same)
            shared += 1
            saved += int(values.size)
            continue
        if values.ndim == 2 and values.nbytes >= MIN_TIED_BYTES:
            flipped = next(
                (
                    k
                    for k in kept.get(_fingerprint(values, transposed=True), [])
                    if np.array_equal(_bits(peek_values(k)).T, _bits(values))
                ),
                None,
            )
            if flipped is not None:
                base = f"{tensor.name}__tied"
                name = base
                while name in names:
                    name += "_"
                names.add(name)
                out = gs.Variable(name, dtype=values.dtype, shape=list(values.shape))
                made.append(gs.Node("Transpose", name, {"perm": [1, 0]}, [flipped], [out]))
                for node in list(tensor.outputs):
                    replace_input(node, tensor, out)
                transposed += 1
                saved += int(values.size)
                continue
        kept.setdefault(key, []).append(tensor)
    graph.nodes.extend(made)
    return shared, transposed, saved


def repeated_weights(graph: gs.Graph) -> dict[str, int]:
    """name -> parameters of each weight bit-identical to an earlier one: what
    :func:`share_equal_weights` stores once (transposed copies aside), found without changing ``graph``."""
    kept: dict[tuple, list[gs.Constant]] = {}
    repeated = {}
    for tensor in _weights(graph):
        values = peek_values(tensor)
        key = _fingerprint(values)
        if _equal_earlier(kept, values, key) is not None:
            repeated[tensor.name] = int(values.size)
        else:
            kept.setdefault(key, []).append(tensor)
    return repeated


def repeated_params(graph: gs.Graph) -> int:
    """The parameters of :func:`repeated_weights`."""
    return sum(repeated_weights(graph).values())


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
        weights_shared, weights_tied, stored_once = share_equal_weights(graph)
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
            "weights_shared": weights_shared,
            "transposed_copies_tied": weights_tied,
            # parameters of weights held more than once, now stored once (the report's share of them)
            "params_stored_once": stored_once,
            "nodes_merged": merged,
        }
        return PassResult(bool(stats["nodes_removed"] or stats["initializers_removed"]), stats)
