"""Per-channel activation statistics measured with onnxruntime (calibration samples are read by
:func:`onnxfold.runtime.sample_files.load_inputs`).

``channel_moments`` exposes intermediate tensors as graph outputs, runs the model in chunks and
returns, per tensor, the mean and the (biased) variance of every channel over all other axes.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from onnxfold.ir.model import Model, to_model_proto
from onnxfold.ir.proto_graph import has_subgraph, needed_nodes

Feeds = dict[str, np.ndarray]


def _with_outputs(model: Model, tensors: Mapping[str, int], only: bool = False) -> onnx.ModelProto:
    """``model`` with ``tensors`` as extra graph outputs. ``only``: they are its only outputs, and
    the nodes they do not depend on are left out: onnxruntime runs every node of a graph whatever
    outputs a run asks for (on OpenNSFW a tensor three convolutions in took 0.59 s of 16 samples
    through the whole graph, 0.12 s through its 5 nodes)."""
    proto = to_model_proto(model)
    del proto.graph.value_info[:]  # shapes may be stale after a rewrite; runtime infers them
    existing = {o.name for o in proto.graph.output}
    known = model.graph.tensors()
    for name in tensors:
        if name in existing:
            continue
        dtype = getattr(known.get(name), "dtype", None)
        elem = (
            onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
            if dtype is not None
            else onnx.TensorProto.FLOAT
        )
        proto.graph.output.append(onnx.helper.make_tensor_value_info(name, elem, None))
    if only:
        _keep_only(proto, list(tensors))
    return proto


def _keep_only(proto: onnx.ModelProto, names: list[str]) -> None:
    """Outputs ``names`` and the nodes and initializers they depend on (in place); a graph whose
    nodes carry subgraphs keeps every node (a branch may read outer tensors no input lists)."""
    graph = proto.graph
    wanted = set(names)
    outputs = [o for o in graph.output if o.name in wanted]
    del graph.output[:]
    graph.output.extend(outputs)
    if any(has_subgraph(n) for n in graph.node):
        return
    nodes = needed_nodes(graph, names)
    used = {x for n in nodes for x in n.input}
    inits = [t for t in graph.initializer if t.name in used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(inits)


def channel_moments(
    model: Model, tensors: Mapping[str, int], feeds: Feeds, batch_size: int = 64
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per tensor name → (mean, biased variance) of each channel on axis ``tensors[name]`` over the
    calibration samples and every other axis (float64); samples run ``batch_size`` at a time, or
    batch by batch on a model exported at a fixed batch (a handwriting reader's batch of 1)."""
    if not tensors:
        return {}
    from onnxfold.folding.samples import fixed_batch
    from onnxfold.runtime.batch_runs import batch_runs
    from onnxfold.runtime.session import make_session

    # graph optimisations may fuse away an exposed intermediate (seen with Conv+Add), so run them off
    session = make_session(
        _with_outputs(model, tensors, only=True).SerializeToString(), optimize=False, arena=False
    )
    names = list(tensors)
    count: dict[str, float] = dict.fromkeys(names, 0.0)
    shift: dict[str, np.ndarray] = {}  # the first chunk's means: sums of shifted values stay well conditioned
    sums: dict[str, np.ndarray] = {}
    squares: dict[str, np.ndarray] = {}
    for chunk in batch_runs(feeds, fixed_batch(session), max(1, batch_size)):
        for name, value in zip(names, session.run(names, chunk), strict=True):
            axis = tensors[name] % value.ndim
            flat = np.moveaxis(value.astype(np.float64), axis, 0).reshape(value.shape[axis], -1)
            if name not in sums:
                shift[name] = flat.mean(axis=1) if flat.shape[1] else np.zeros(flat.shape[0])
                sums[name] = np.zeros(flat.shape[0])
                squares[name] = np.zeros(flat.shape[0])
            flat = flat - shift[name][:, None]
            sums[name] += flat.sum(axis=1)
            squares[name] += np.einsum("cd,cd->c", flat, flat)
            count[name] += flat.shape[1]
    out = {}
    for name in names:
        mean = sums[name] / count[name]
        out[name] = (shift[name] + mean, np.maximum(squares[name] / count[name] - mean * mean, 0.0))
    return out
