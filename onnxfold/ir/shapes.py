"""Shape inference on the graphsurgeon IR via ONNX's inference (external data never loaded)."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper

from onnxfold.errors import one_line
from onnxfold.ir.model import Model

log = logging.getLogger(__name__)


def value_info_dims(vi: onnx.ValueInfoProto) -> list[int | str | None] | None:
    """Dims of a tensor value_info: ints, symbolic names, or None when unknown; None without a shape."""
    ttype = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
    if ttype is None or not ttype.HasField("shape"):
        return None
    dims: list[int | str | None] = []
    for d in ttype.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return dims


def clear_shapes(graph: gs.Graph) -> None:
    """Forget inferred shapes of intermediate tensors (graph inputs/outputs keep theirs)."""
    keep = {t.name for t in graph.inputs} | {t.name for t in graph.outputs}
    for t in graph.tensors().values():
        if isinstance(t, gs.Variable) and t.name not in keep:
            t.shape = None


def infer_shapes(model: Model, rounds: int = 4) -> bool:
    """Run ONNX shape inference and copy the results onto the graph's tensors. False if it failed.

    ONNX leaves a Reshape output without a shape when the target is computed and the opset is below
    14 (Paddle2ONNX's ``Concat(Slice(Shape(x), 0, 1), [C], [-1])``); such shapes are completed from
    the target's values (:func:`reshape_output_dims`) and inference runs again from them, up to
    ``rounds`` times, so that the ops after the Reshape get shapes too."""
    if not _infer_once(model, keep_hints=False):
        return False
    for _ in range(rounds):
        if not complete_reshape_shapes(model.graph) or not _infer_once(model, keep_hints=True):
            break
    return True


def complete_reshape_shapes(graph: gs.Graph) -> int:
    """Give each Reshape output without an inferred shape the dims its target fixes; the count set."""
    completed = 0
    for node in graph.nodes:
        if node.op != "Reshape" or len(node.inputs) < 2 or node.outputs[0].shape is not None:
            continue
        dims = reshape_output_dims(node)
        if dims is not None:
            node.outputs[0].shape = dims
            if node.outputs[0].dtype is None:  # Reshape keeps the element type
                node.outputs[0].dtype = node.inputs[0].dtype
            completed += 1
    return completed


def reshape_output_dims(node: gs.Node) -> list | None:
    """Output dims of ``Reshape(x, target)`` from the target's values
    (:func:`~onnxfold.analysis.shape_trace.dim_values`): a positive entry is that dim, 0 copies x's dim
    at that position, an entry copied from ``Shape(x)`` (through Cast/Slice/Gather) is x's dim (symbolic
    names kept), −1 is the element count over the other dims when every dim is a number; else None
    (unknown). None when the target's length or x's shape is unknown."""
    from onnxfold.analysis.shape_trace import dim_values  # the evaluator of shape arithmetic

    x = node.inputs[0]
    target = dim_values(node.inputs[1])
    if target is None or target.scalar or x.shape is None:
        return None
    in_dims = list(x.shape)
    copy_zero = not int(node.attrs.get("allowzero", 0))
    dims: list = []
    for j, (v, origin) in enumerate(zip(target.values, target.origins, strict=True)):
        if v is not None and v > 0:
            dims.append(v)
        elif v == 0 and copy_zero and j < len(in_dims):
            dims.append(in_dims[j])
        elif v is None and origin is not None and _dims_source(origin[0]) is x:
            dims.append(in_dims[origin[1]] if origin[1] < len(in_dims) else None)
        elif v == -1:
            dims.append(-1)
        else:
            dims.append(None)
    if -1 in dims:
        i = dims.index(-1)
        others = dims[:i] + dims[i + 1 :]
        numeric = all(isinstance(d, (int, np.integer)) and d >= 0 for d in others + in_dims)
        rest = int(np.prod(others, dtype=np.int64)) if numeric else 0
        dims[i] = int(np.prod(in_dims, dtype=np.int64)) // rest if numeric and rest > 0 else None
    return dims


def _dims_source(t: gs.Tensor) -> gs.Tensor | None:
    """The tensor whose full ``Shape`` dims vector ``t`` is (through Cast); None otherwise."""
    for _ in range(4):
        if len(t.inputs) != 1:
            return None
        node = t.inputs[0]
        if node.op == "Shape" and not node.attrs.get("start") and node.attrs.get("end") is None:
            return node.inputs[0]
        if node.op != "Cast":
            return None
        t = node.inputs[0]
    return None


def _infer_once(model: Model, keep_hints: bool) -> bool:
    """One ONNX inference; ``keep_hints``: the graph's current shapes go in as value_info."""
    proto = model.to_onnx()
    if not keep_hints:
        del proto.graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(
            proto, check_type=False, strict_mode=False, data_prop=True
        )
    except Exception as exc:  # inference is best effort: analysis blocks what it cannot see
        log.warning("shape inference failed: %s", one_line(exc, 200))
        return False
    tensors = model.graph.tensors()
    graph_inputs = {t.name for t in model.graph.inputs}
    graph_outputs = {t.name for t in model.graph.outputs}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        t = tensors.get(vi.name)
        if not isinstance(t, gs.Variable) or t.name in graph_inputs:
            continue
        if t.name in graph_outputs and t.shape is not None:
            continue  # keep the interface exactly as exported (symbolic dim names included)
        dims = value_info_dims(vi)
        if dims is None:
            continue
        ttype = vi.type.tensor_type
        t.shape = dims
        if ttype.elem_type and t.dtype is None:
            try:
                t.dtype = np.dtype(helper.tensor_dtype_to_np_dtype(ttype.elem_type))
            except (KeyError, TypeError, ValueError):
                pass
    return True
