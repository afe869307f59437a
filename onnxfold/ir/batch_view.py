"""A batch axis for a model exported without one.

Some exporters write a model that reads one example and has no batch axis: madmom's key CNN reads
[frames, 105 bands] and writes 24 key scores [24]. Everything that measures (the search, the
activation statistics, validation) cuts samples along the leading axis and joins the runs' outputs
along it; on that model it cut 8-frame windows across clips and joined the runs' [24] scores into
one vector, whose single argmax then agreed at 1.0 while 27% of the keys changed.

:func:`unbatched` recognises such a model: every input's leading dim is free, yet shape inference
(with those dims left symbolic) makes every output fully static, and no output of rank 2 or more
leads with 1 (that is a batch-1 export, which :func:`~onnxfold.folding.samples.fixed_batch` runs
sample by sample already). The pipeline then works on a view with a batch axis of 1
(:func:`add_batch_axis`: each input x is read as [1, *x] through a Squeeze, each output written as
[1, *y] through an Unsqueeze), so each sample is one whole input and the outputs of the samples
stack; :func:`remove_batch_axis` takes the view off before the model is saved, leaving the graph as
it was but for the rewritten weights.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

#: names of the view's nodes and tensors
PREFIX = "onnxfold_batch_view/"
#: models above this many bytes of weights are not inferred (batched is assumed, as before)
INFER_LIMIT = 512 << 20


def _proto(model: Any) -> onnx.ModelProto | None:
    if isinstance(model, (str, os.PathLike)):
        return onnx.load(str(model), load_external_data=False)
    if isinstance(model, onnx.ModelProto):
        return model
    if hasattr(model, "to_onnx"):  # a Model
        from onnxfold.folding.verify import model_weight_bytes

        return model.to_onnx() if model_weight_bytes(model) <= INFER_LIMIT else None
    return None  # a session: its graph cannot be inferred


def unbatched(model: Any) -> bool:
    """Whether ``model`` (a path, a ModelProto or a Model; a session reads as batched) reads one
    example without a batch axis (module docstring). The declared shapes decide first (a batched
    export names its batch on an output too); shape inference runs only where they cannot."""
    from onnxfold.runtime.inputs import input_specs, output_specs

    try:
        header = (
            onnx.load(str(model), load_external_data=False)
            if isinstance(model, (str, os.PathLike))
            else model
        )
        inputs, outputs = input_specs(header), output_specs(header)
    except Exception:  # an unreadable file is reported where it is loaded
        return False
    if not inputs or not outputs or {s.name for s in inputs} & {s.name for s in outputs}:
        return False
    if any(not s.shape or isinstance(s.shape[0], (int, np.integer)) for s in inputs):
        return False  # a scalar, or a fixed leading dim (a batch the model fixes)
    leading = {s.shape[0] for s in inputs} - {None}
    if any(d in leading for s in outputs for d in s.shape if isinstance(d, str)):
        return False
    try:
        proto = _proto(header)
    except Exception:
        return False
    if proto is None or any(n.op_type in ("Loop", "Scan", "If") for n in proto.graph.node):
        return False
    weights = {t.name for t in proto.graph.initializer}
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    del probe.graph.value_info[:]
    for vi in probe.graph.output:
        vi.type.tensor_type.ClearField("shape")
    for i, vi in enumerate(vi for vi in probe.graph.input if vi.name not in weights):
        vi.type.tensor_type.shape.dim[0].dim_param = f"{PREFIX}leading{i}"
    try:
        inferred = onnx.shape_inference.infer_shapes(probe, data_prop=True)
    except Exception:
        return False
    shapes = [
        vi.type.tensor_type.shape if vi.type.tensor_type.HasField("shape") else None
        for vi in inferred.graph.output
    ]
    if any(s is not None and len(s.dim) >= 2 and s.dim[0].dim_value == 1 for s in shapes):
        return False  # a batch-1 export
    if _leading_in_conv_space(inferred):
        return True
    return all(s is not None and all(d.HasField("dim_value") for d in s.dim) for s in shapes)


def _leading_in_conv_space(inferred: onnx.ModelProto) -> bool:
    """Whether a convolution reads an input's leading dim as one of its spatial axes, with a batch
    of 1: the model reads one example whose leading axis is time (madmom's notes CNN: [frames, 144]
    made [1, 1, frames, 144] for its Conv; its outputs, [frames − 10, 88], depend on the frames, so
    the test that every output is static misses it, and its clips were cut into 8-frame windows too
    short for its convolutions)."""
    dims = {
        vi.name: [
            d.dim_param if d.HasField("dim_param") else d.dim_value if d.HasField("dim_value") else None
            for d in vi.type.tensor_type.shape.dim
        ]
        for vi in inferred.graph.value_info
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape")
    }
    for node in inferred.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose") or not node.input:
            continue
        x = dims.get(node.input[0])
        if (
            x
            and len(x) >= 3
            and x[0] == 1
            and any(isinstance(d, str) and d.startswith(PREFIX) for d in x[2:])
        ):
            return True
    return False


def with_batch_axis(shapes: dict | None, model) -> dict:
    """``--input-shape`` values given for ``model`` (a Model) as it is, of rank r, for its view (rank
    r + 1); a value already of rank r + 1 is kept."""
    ranks = {t.name: len(t.shape or ()) for t in model.graph.inputs}
    return {k: ((1, *v) if len(v) == ranks.get(k, -1) else tuple(v)) for k, v in (shapes or {}).items()}


def _swap(items, old: gs.Tensor, new: gs.Tensor) -> None:
    """Replace ``old`` by ``new`` (by identity) in a node's inputs or outputs."""
    for i, x in enumerate(items):
        if x is old:
            items[i] = new


def _axes(model) -> tuple[list[gs.Tensor], dict]:
    """The axes operand of Squeeze/Unsqueeze [0]: an input from opset 13, an attribute before."""
    if model.opset >= 13:
        return [gs.Constant(f"{PREFIX}axes", np.array([0], dtype=np.int64))], {}
    return [], {"axes": [0]}


def add_batch_axis(model) -> None:
    """Give ``model`` (a Model, in place) a leading batch axis of 1 on every input and output."""
    graph = model.graph
    extra, attrs = _axes(model)
    first, last = [], []
    for t in graph.inputs:
        inner = gs.Variable(f"{PREFIX}{t.name}", dtype=t.dtype, shape=t.shape)
        for node in list(t.outputs):
            _swap(node.inputs, t, inner)
        first.append(gs.Node("Squeeze", f"{PREFIX}squeeze/{t.name}", attrs, [t, *extra], [inner]))
        t.shape = [1, *(t.shape or [])]
    for t in graph.outputs:
        inner = gs.Variable(f"{PREFIX}{t.name}", dtype=t.dtype, shape=t.shape)
        for node in list(t.inputs):
            _swap(node.outputs, t, inner)
        for node in list(t.outputs):
            _swap(node.inputs, t, inner)
        last.append(gs.Node("Unsqueeze", f"{PREFIX}unsqueeze/{t.name}", attrs, [inner, *extra], [t]))
        t.shape = [1, *(t.shape or [])]
    graph.nodes[:0] = first
    graph.nodes.extend(last)


def remove_batch_axis(model) -> None:
    """Take the view of :func:`add_batch_axis` off ``model`` (in place): every node and tensor the view
    added goes, and the inputs and outputs get their own shapes back."""
    graph = model.graph
    for node in [n for n in graph.nodes if n.name.startswith(PREFIX)]:
        if node.op == "Squeeze":
            outer, inner = node.inputs[0], node.outputs[0]
            for user in list(inner.outputs):
                if user is not node:
                    _swap(user.inputs, inner, outer)
        else:
            inner, outer = node.inputs[0], node.outputs[0]
            for maker in list(inner.inputs):
                _swap(maker.outputs, inner, outer)
            for user in list(inner.outputs):
                if user is not node:
                    _swap(user.inputs, inner, outer)
        outer.shape = list(outer.shape)[1:] if outer.shape is not None else None
        node.inputs.clear()
        node.outputs.clear()
    graph.nodes[:] = [n for n in graph.nodes if not n.name.startswith(PREFIX)]
    # a cleanup may have merged the model's own [0] constants into the view's: keep it, renamed
    names = {t.name for n in graph.nodes for t in (*n.inputs, *n.outputs)}
    for n in graph.nodes:
        for t in n.inputs:
            if isinstance(t, gs.Constant) and t.name.startswith(PREFIX):
                base = t.name[len(PREFIX) :].replace("/", "_")
                t.name = next(f"{base}_{i}" for i in range(len(names) + 1) if f"{base}_{i}" not in names)
                names.add(t.name)
    left = [n.name for n in graph.nodes for t in (*n.inputs, *n.outputs) if t.name.startswith(PREFIX)]
    if left:
        raise RuntimeError(f"the batch view could not be taken off: {left[0]} still reads or writes it")
