"""Shape vectors computed at pinned input sizes, so that shape inference reaches what reads them.

At the given input sizes (``--inputs``' samples, ``--input-shape``, the proxy's), every ``Shape`` (or
``Size``) of a tensor whose dims inference knows is a value, and so is everything an exporter computes from it:
``Gather``, ``Unsqueeze``, ``Concat``, arithmetic, a ``Slice`` of a constant table by the sequence
length. ONNX's data propagation follows such chains only for some ops at some opsets (an opset-11
``Unsqueeze`` stops it), so a transformer's reshapes lost their dims and its MACs were counted with
the sequence length as 1 (all-MiniLM-L6-v2 at 14 tokens read 16.4M MACs). Here the chains are
computed by onnxruntime, round by round: each value found becomes an initializer of the light copy
(its node dropped), an ``If`` whose condition is known is replaced by the branch it takes, and
inference runs again, until no new value appears.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxfold.ir.constant_fold import NEVER_FOLDED
from onnxfold.ir.proto_graph import has_subgraph, node_attrs, walk_graphs

logger = logging.getLogger(__name__)

#: the largest computed value kept (shape vectors, index ranges, small masks)
MOST_ELEMENTS = 4096
#: rounds of inference and computation at most (each layer of a transformer takes one or two)
ROUNDS = 64


def _dims(vi: onnx.ValueInfoProto) -> list[int] | None:
    t = vi.type.tensor_type
    if not vi.type.HasField("tensor_type") or not t.HasField("shape"):
        return None
    dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    return None if any(d is None for d in dims) else dims


def _shape_value(node: onnx.NodeProto, dims: list[int]) -> np.ndarray:
    attrs = node_attrs(node)
    rank = len(dims)
    start, end = int(attrs.get("start", 0)), int(attrs.get("end", rank))
    start, end = (start + rank if start < 0 else start), (end + rank if end < 0 else end)
    return np.asarray(dims[max(0, start) : min(rank, end)], dtype=np.int64)


def _evaluate(nodes: list[onnx.NodeProto], values: dict[str, np.ndarray], opsets) -> dict[str, np.ndarray]:
    """The outputs of ``nodes`` (each reading only ``values`` or earlier ones' outputs), by onnxruntime."""
    from onnxfold.runtime.session import CPU, make_session

    made = {o for n in nodes for o in n.output if o}
    read = {i for n in nodes for i in n.input if i and i not in made}
    graph = helper.make_graph(
        nodes,
        "shape_values",
        [],
        [helper.make_empty_tensor_value_info(o) for o in sorted(made)],
        [numpy_helper.from_array(values[name], name) for name in sorted(read)],
    )
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = min(model.ir_version, 10)
    session = make_session(model.SerializeToString(), providers=[CPU], optimize=False, threads=1)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {}), strict=True))


def _taken_branch(
    node: onnx.NodeProto, cond: bool
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]] | None:
    """The nodes (and initializers) of the branch an If takes on ``cond``, its outputs renamed to the
    If's by Identity nodes: pyannote's SincNet convolves inside ``If(Shape(x)[1] == 1)``, and nothing
    after the If had a shape."""
    branch = next((a.g for a in node.attribute if a.name == ("then_branch" if cond else "else_branch")), None)
    if branch is None or len(branch.output) != len(node.output):
        return None
    nodes = list(branch.node) + [
        helper.make_node("Identity", [inner.name], [outer], name=f"{node.name}/taken/{outer}")
        for inner, outer in zip(branch.output, node.output, strict=True)
        if outer
    ]
    return nodes, list(branch.initializer)


def resolve_shape_values(
    light: onnx.ModelProto,
    infer: Callable[[onnx.ModelProto], onnx.ModelProto],
    untaken: set[str] | None = None,
) -> onnx.ModelProto:
    """``infer(light)`` after every shape computation of ``light`` (a light copy with pinned inputs,
    large weights as typed inputs) whose values the known dims fix was replaced by its value; the
    result of the first inference where no such computation is left to find or onnxruntime cannot
    run one. ``light`` is changed in place; ``untaken`` collects the outputs of the nodes in the
    branches no If takes (they do not run at these sizes)."""
    inferred = infer(light)
    opsets = [o for o in light.opset_import if o.domain in ("", "ai.onnx")]
    values = {  # the small constants, and each value found from here on
        init.name: numpy_helper.to_array(init)
        for init in light.graph.initializer
        if np.prod(init.dims, dtype=np.int64) <= MOST_ELEMENTS
    }
    for _ in range(ROUNDS):
        known = {vi.name: _dims(vi) for vi in (*inferred.graph.input, *inferred.graph.value_info)}
        if all(known.get(o) is not None for n in light.graph.node for o in n.output if o):
            break  # every dim is known: nothing to compute
        direct: dict[str, np.ndarray] = {}
        computed: list[onnx.NodeProto] = []
        pending: set[str] = set()
        for node in light.graph.node:
            if node.op_type == "Shape" and node.domain in ("", "ai.onnx"):
                dims = known.get(node.input[0])
                if dims is not None:
                    direct[node.output[0]] = _shape_value(node, dims)
                continue
            if node.op_type == "Size" and node.domain in ("", "ai.onnx"):  # a frame count's numerator
                if (dims := known.get(node.input[0])) is not None:
                    direct[node.output[0]] = np.asarray(int(np.prod(dims, dtype=np.int64)), np.int64)
                continue
            if node.domain not in ("", "ai.onnx") or node.op_type in NEVER_FOLDED or not node.output:
                continue
            if has_subgraph(node):
                continue
            named = [i for i in node.input if i]
            if node.op_type == "Constant" or (
                named and all(i in values or i in direct or i in pending for i in named)
            ):
                computed.append(node)
                pending.update(o for o in node.output if o)
        found = dict(direct)
        if computed:
            try:
                found.update(_evaluate(computed, values | direct, opsets))
            except Exception as exc:  # noqa: BLE001 - the shapes stay as inference left them
                logger.debug("shape values not computed: %s", exc)
        outputs = {o.name for o in light.graph.output}
        small = {n for n, v in found.items() if isinstance(v, np.ndarray) and v.size <= MOST_ELEMENTS}
        nodes = list(light.graph.node)  # by index: protobuf's wrappers have no stable identity
        dropped = {
            i
            for i, n in enumerate(nodes)
            if n.output and all(not o or (o in small and o not in outputs) for o in n.output)
        }
        taken = {}  # an If whose condition is known: the branch it takes, in its place
        for i, n in enumerate(nodes):
            cond = (found.get(n.input[0], values.get(n.input[0]))) if n.op_type == "If" and n.input else None
            if isinstance(cond, np.ndarray) and cond.size == 1 and (branch := _taken_branch(n, bool(cond))):
                taken[i] = branch
                if untaken is not None:
                    other = next(
                        a.g for a in n.attribute if a.name == ("else_branch" if cond else "then_branch")
                    )
                    untaken.update(
                        o for graph in walk_graphs(other) for m in graph.node for o in m.output if o
                    )
        if not dropped and not taken:
            break
        kept_nodes = []
        for i, n in enumerate(nodes):
            if i in taken:
                kept_nodes += taken[i][0]
                light.graph.initializer.extend(taken[i][1])
            elif i not in dropped:
                kept_nodes.append(n)
        made = {o for i in dropped for o in nodes[i].output if o}
        values.update((name, found[name]) for name in made)
        del light.graph.node[:]
        light.graph.node.extend(kept_nodes)
        light.graph.initializer.extend(numpy_helper.from_array(found[name], name) for name in sorted(made))
        kept_vi = [vi for vi in light.graph.value_info if vi.name not in made]
        del light.graph.value_info[:]
        light.graph.value_info.extend(kept_vi)
        inferred = infer(light)
    return inferred
