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


def infer_shapes(model: Model) -> bool:
    """Run ONNX shape inference and copy the results onto the graph's tensors. False if it failed."""
    proto = model.to_onnx()
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
