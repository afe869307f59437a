"""Element types of the tensors that ONNX's type inference cannot tell, read from one run.

onnxruntime's quantizer quantizes only the tensors whose type it knows. Behind an op that ONNX's
inference has no rule for (skl2onnx's ``ai.onnx.ml`` Scaler in front of an MLP regressor), every
tensor after it is untyped once the quantizer's pre-processing has dropped a float-to-float Cast, so
static quantization left all 9 of that MLP's activations float and quantized none of its products.
One run of the model gives every node output's element type; written back as value_info (type
only, no shape) they let the quantizer reach them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

log = logging.getLogger(__name__)


def untyped_tensors(proto: onnx.ModelProto) -> list[str]:
    """The outputs of the main graph's nodes whose element type ONNX's inference leaves unknown
    (every one, where the inference fails)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # noqa: BLE001 - inference raises many kinds; then nothing is known beyond the file
        inferred = proto
    graph = inferred.graph
    known = {v.name for v in [*graph.value_info, *graph.input, *graph.output] if v.type.tensor_type.elem_type}
    known |= {t.name for t in graph.initializer}
    return [name for node in proto.graph.node for name in node.output if name and name not in known]


def fill_types(path: Path, feed: dict[str, np.ndarray]) -> list[str]:
    """Give the untyped tensors (:func:`untyped_tensors`) of the model at ``path`` their element types,
    read from one run on ``feed``, as value_info; the file is rewritten in place (its external data
    left where it is). Returns the tensors typed: none where the run fails or every type is known."""
    from onnxfold.folding.judge import with_outputs
    from onnxfold.runtime.session import CPU, make_session

    proto = onnx.load(str(path), load_external_data=False)
    missing = untyped_tensors(proto)
    if not missing:
        return []
    probe = with_outputs(onnx.ModelProto.FromString(proto.SerializeToString()), missing)  # a copy
    probe_path = path.with_name(path.stem + ".types.onnx")  # beside it: its external data's paths hold
    try:
        onnx.save(probe, str(probe_path))
        session = make_session(str(probe_path), providers=[CPU])
        values = session.run(missing, feed)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises many kinds; the quantizer then skips them
        log.info("types of %d untyped tensors not read: %s", len(missing), exc)
        return []
    finally:
        probe_path.unlink(missing_ok=True)
    types = {
        name: helper.np_dtype_to_tensor_dtype(value.dtype)
        for name, value in zip(missing, values, strict=True)
        if getattr(value, "dtype", None) is not None and value.dtype.kind in "fiub"
    }
    for entry in [v for v in proto.graph.value_info if v.name in types]:  # entries without a type
        proto.graph.value_info.remove(entry)
    proto.graph.value_info.extend(helper.make_tensor_value_info(n, t, None) for n, t in types.items())
    if types:
        onnx.save(proto, str(path))
    return list(types)
