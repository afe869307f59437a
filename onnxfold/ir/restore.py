"""Restoring on export the computations canonicalize folded away (:mod:`onnxfold.ir.constant_fold`).

A tensor canonicalize made constant keeps how it was computed (:class:`~onnxfold.ir.constant_fold.Computed`).
On export a tensor whose value no fold changed gets that computation back: with its values known,
onnxruntime's layout optimizations fuse differently (csmask's residual Adds went into its convolutions),
which reorders float sums, and a model folded at sparsity 0 must stay bit-identical.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper

from onnxfold.ir.constant_fold import MAX_ELEMENTS, Computed
from onnxfold.ir.proto_graph import node_reads, topological_order

logger = logging.getLogger(__name__)


def _unchanged(name: str, recipe: Computed, inits: dict, nodes: dict, producers: dict) -> list | None:
    """What restoring ``recipe`` for ``name`` removes (the initializer, or the Concat canonicalize made
    and its Slices of the dims), or None when a fold changed the value or the graph lost what it read."""
    if recipe.made:
        concat = nodes.get(recipe.made)
        if concat is None or list(concat.output) != [name] or len(concat.input) != len(recipe.pieces):
            return None
        removed: list = [concat]
        for i, piece in zip(concat.input, recipe.pieces, strict=True):
            if piece is None:
                slice_ = producers.get(i)
                if slice_ is None or slice_.op_type != "Slice":
                    return None
                removed.append(slice_)
            elif i not in inits or not _equal(numpy_helper.to_array(inits[i]), piece):
                return None
        return removed
    tensor = inits.get(name)
    if tensor is None or tensor.data_location == onnx.TensorProto.EXTERNAL:
        return None
    return [tensor] if _equal(numpy_helper.to_array(tensor), recipe.value) else None


def _equal(a: np.ndarray, b: np.ndarray | None) -> bool:
    return b is not None and a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


def _reads_shapes(recipe: Computed) -> bool:
    own = {c.name for c in recipe.constants}
    return any(n.op_type == "Shape" and n.input and n.input[0] not in own for n in recipe.nodes)


def restored_constants(
    graph: gs.Graph, computed: dict[str, Computed], weights: dict[str, tuple[int, ...]] | None = None
) -> tuple[list[onnx.TensorProto], list[str]]:
    """(the constants :func:`restore_computations` brings back, the computed tensors it drops), told
    on the graph without exporting it: to count a model's weights as it is written."""
    tensors, back, dropped = graph.tensors(), {}, []
    consts = {n: t for n, t in tensors.items() if isinstance(t, gs.Constant)}
    same = weights is not None and all(tuple(consts[n].shape) == s for n, s in weights.items() if n in consts)
    for name, recipe in computed.items():
        recipe = recipe.restorable(same)
        inner = {c.name for c in recipe.constants} | {o for n in recipe.nodes for o in n.output}
        reads = {i for n in recipe.nodes for i in n.input if i and i not in inner}
        if recipe.made or (not same and _reads_shapes(recipe)) or not reads <= set(tensors):
            continue  # a Concat of dims holds no weights; the others as restore_computations decides
        if name not in consts or not _equal(np.asarray(consts[name].values), recipe.value):
            continue
        dropped.append(name)
        back.update({c.name: c for c in recipe.constants if c.name not in tensors})
    return list(back.values()), dropped


def restore_computations(
    graph: onnx.GraphProto, computed: dict[str, Computed], weights: dict[str, tuple[int, ...]] | None = None
) -> int:
    """Give every tensor of ``graph`` that canonicalize computed, and whose value no fold changed, its
    computation back, and sort the graph again; the count of nodes restored. A node that several
    computations share is restored once; a name the graph still uses for something else is renamed.

    A computation that reads the shape of a tensor between nodes is restored only while every weight
    of ``weights`` (their shapes at canonicalize) that ``graph`` still holds keeps its shape: after a
    fold a value can stand unchanged where its computation would now give another (a Slice's end
    clamped past a chunk, shared by cleanup with a chunk whose producer was folded: YOLO's C2f)."""
    if not computed:
        return 0
    dims = {t.name: tuple(t.dims) for t in graph.initializer}
    same = weights is not None and all(dims.get(n, shape) == shape for n, shape in weights.items())
    inits = {t.name: t for t in graph.initializer}
    nodes_by_name = {n.name: n for n in graph.node}
    producers = {o: n for n in graph.node for o in n.output}
    names = {t.name for t in graph.input} | set(inits) | set(producers)
    chosen = []  # (name, recipe, what restoring it replaces)
    for name, recipe in computed.items():
        recipe = recipe.restorable(same)
        if not same and _reads_shapes(recipe):
            continue
        inner = {c.name for c in recipe.constants} | {o for n in recipe.nodes for o in n.output}
        if any(i and i not in inner and i not in names for n in recipe.nodes for i in n.input):
            continue  # it read a tensor the graph no longer has
        removed = _unchanged(name, recipe, inits, nodes_by_name, producers)
        if removed is not None:
            chosen.append((name, recipe, removed))
    count = _restore(graph, chosen, producers)
    if count is None:  # a cycle: leave out the computations whose value is read before what they read
        chosen = [c for c in chosen if not _cyclic(c[0], c[1], graph, producers)]
        count = _restore(graph, chosen, producers)
    return count or 0


def _cyclic(name: str, recipe: Computed, graph: onnx.GraphProto, producer: dict) -> bool:
    """Whether restoring ``name``'s computation would close a cycle: a node that reads ``name`` lies
    upstream of a tensor the computation reads. Cleanup shares equal constants, so a constant 32 that a
    Reshape's target read (a head width) can be one whose computation reads the Shape of the Gemm
    after that Reshape (a sequence-first attention's output width). ``producer``: output -> node."""
    readers = {id(n) for n in graph.node if name in node_reads(n)}
    inner = {o for n in recipe.nodes for o in n.output}
    stack = [producer[i] for n in recipe.nodes for i in n.input if i in producer and i not in inner]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in readers:
            return True
        if id(node) not in seen:
            seen.add(id(node))
            stack.extend(producer[i] for i in node_reads(node) if i in producer)
    return False


def _restore(graph: onnx.GraphProto, chosen: list, producers: dict) -> int | None:
    """Restore ``chosen`` (:func:`restore_computations`) in ``graph``: the count of nodes restored,
    or None (``graph`` unchanged) where they would form a cycle."""
    restoring = [recipe for _, recipe, _ in chosen]
    drop = [x for _, _, removed in chosen for x in removed]
    if not restoring:
        return 0
    inits = {t.name: t for t in graph.initializer}
    drop += _orphaned(graph, drop, producers)
    gone = {id(x) for x in drop}
    kept_nodes = [n for n in graph.node if id(n) not in gone]
    # tensor names and node names are two namespaces: Paddle2ONNX names a node as its output (the
    # Concat_10 that feeds PP-OCRv2's LSTM bias), and renaming that output for its node's name cut it off
    taken = {t.name for t in graph.input} | {t.name for t in graph.initializer if id(t) not in gone}
    taken |= {o for n in kept_nodes for o in n.output}
    taken_nodes = {n.name for n in kept_nodes}
    renamed: dict[str, str] = {}
    made: list[onnx.NodeProto] = []
    constants: list[onnx.TensorProto] = []
    done: set[tuple[str, ...]] = set()

    def fresh(old: str, used: set[str] = taken) -> str:
        new, k = old, 0
        while new in used:
            k += 1
            new = f"{old}__computed{k}"
        used.add(new)
        return new

    for recipe in restoring:
        for c in recipe.constants:
            if c.name in renamed:
                continue
            if (
                c.name in inits
                and id(inits[c.name]) not in gone
                and _equal(numpy_helper.to_array(inits[c.name]), numpy_helper.to_array(c))
            ):
                renamed[c.name] = c.name  # the graph still holds it as it was
                continue
            copy = onnx.TensorProto()
            copy.CopyFrom(c)
            copy.name = renamed[c.name] = fresh(c.name)
            constants.append(copy)
        for node in recipe.nodes:
            key = tuple(node.output)
            if key in done:
                continue
            done.add(key)
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            copy.name = fresh(node.name or f"{node.op_type}_computed", taken_nodes)
            copy.input[:] = [renamed.get(i, i) for i in node.input]
            outs = []
            for o in node.output:
                if o:
                    renamed[o] = fresh(o)
                outs.append(renamed.get(o, o))
            copy.output[:] = outs
            made.append(copy)
    order = topological_order(made + kept_nodes)
    if order is None:
        return None
    read = {r for n in order for r in node_reads(n)} | {o.name for o in graph.output}
    freed = {i for n in drop if isinstance(n, onnx.NodeProto) for i in n.input} - read
    kept = [t for t in graph.initializer if id(t) not in gone and t.name not in freed]
    del graph.initializer[:]
    graph.initializer.extend(kept + constants)
    del graph.node[:]
    graph.node.extend(order)
    return len(made)


def infer_value_info(proto: onnx.ModelProto) -> None:
    """Replace ``proto``'s ``value_info`` by what ONNX shape inference gives on ``proto`` itself (its
    large weights as typed inputs, not copied); none where inference fails. After
    :func:`restore_computations`: the shapes the passes saw through the folded values would let
    onnxruntime fuse as the restored computations do not (csmask at sparsity 0: 3.4e-4)."""
    g = proto.graph
    small = [t for t in g.initializer if int(np.prod(t.dims)) <= MAX_ELEMENTS]
    typed = [
        helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
        for t in g.initializer
        if int(np.prod(t.dims)) > MAX_ELEMENTS
    ]
    light = helper.make_model(
        helper.make_graph(list(g.node), g.name, list(g.input) + typed, list(g.output), small),
        opset_imports=list(proto.opset_import),
    )
    light.ir_version = proto.ir_version
    light.functions.extend(proto.functions)
    made = {o for n in g.node for o in n.output} - {o.name for o in g.output}
    try:
        inferred = onnx.shape_inference.infer_shapes(
            light, check_type=False, strict_mode=False, data_prop=True
        )
        found = [v for v in inferred.graph.value_info if v.name in made]
    except Exception as exc:  # noqa: BLE001 - value_info is optional: runtimes infer shapes
        logger.debug("value_info after restoring: %s", exc)
        found = []
    del g.value_info[:]
    g.value_info.extend(found)


def _orphaned(graph: onnx.GraphProto, drop: list, producers: dict) -> list[onnx.NodeProto]:
    """The nodes that only the dropped nodes read from (a Slice of the dims dropped leaves its Shape
    unread), transitively."""
    gone = {id(x) for x in drop}
    readers: dict[str, int] = {o.name: 1 for o in graph.output}
    for n in graph.node:
        if id(n) not in gone:
            for r in node_reads(n):
                readers[r] = readers.get(r, 0) + 1
    found: list[onnx.NodeProto] = []
    todo = [i for n in drop if isinstance(n, onnx.NodeProto) for i in n.input]
    while todo:
        node = producers.get(todo.pop())
        if node is None or id(node) in gone or any(readers.get(o, 0) for o in node.output):
            continue
        gone.add(id(node))
        found.append(node)
        for r in node_reads(node):
            readers[r] = readers.get(r, 0) - 1
            todo.append(r)
    return found
