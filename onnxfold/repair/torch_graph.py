"""Execute an ONNX graph with torch ops, differentiably: what DeepInversion needs gradients from.

The ops covered are those of exported CNN/MLP classifiers and detectors (:data:`TORCH_OPS`, merged from
the per-family tables :mod:`onnxfold.repair.torch_ops_nn` and :mod:`onnxfold.repair.torch_ops_tensor`;
``Constant`` nodes are folded in directly); anything else raises :class:`UnsupportedGraph` naming the op,
so callers can say the feature does not apply. :func:`check_executable` says so before any work.
BatchNormalization can run in *calibration* mode: it normalises with the batch's own statistics
(as PyTorch does in train mode) and records them, which is how BN statistics are re-estimated.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxfold.ir.proto_graph import node_attrs
from onnxfold.repair import torch_ops_nn, torch_ops_tensor  # noqa: F401  (they fill TORCH_OPS)
from onnxfold.repair.torch_table import TORCH_OPS, UnsupportedGraph

#: op type (default ONNX domain) -> ``fn(graph, node, args, attrs)``: the one table of what the torch
#: executor supports, read by the up-front check in ``TorchGraph.__init__`` and by ``TorchGraph.run``


def first_unsupported(proto: onnx.ModelProto) -> onnx.NodeProto | None:
    """The first node (in graph order) whose op the executor lacks, or None."""
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            continue
        if node.domain not in ("", "ai.onnx") or node.op_type not in TORCH_OPS:
            return node
    return None


def _default_opset(proto: onnx.ModelProto) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 13)


class TorchGraph:
    """A callable over an ONNX graph: ``run({input: tensor}) -> {name: tensor}`` with torch autograd."""

    def __init__(self, proto: onnx.ModelProto, device: str = "cpu"):
        import torch

        self.torch = torch
        self.device = device
        self.graph = proto.graph
        self.opset = _default_opset(proto)
        bad = first_unsupported(proto)
        if bad is not None:
            domain = f" (domain {bad.domain})" if bad.domain not in ("", "ai.onnx") else ""
            raise UnsupportedGraph(
                f"op {bad.op_type}{domain} ({bad.name}) is not supported by the torch executor"
            )
        self.consts: dict[str, torch.Tensor] = {}
        for init in self.graph.initializer:
            self.consts[init.name] = self._tensor(numpy_helper.to_array(init))
        self.nodes = list(self.graph.node)
        #: called as hook(node, x_pre_bn) for every BatchNormalization when set
        self.bn_hook: Callable | None = None
        self.calibrate_bn = False
        self.bn_stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _tensor(self, array: np.ndarray):
        """A torch tensor on the device: floating types as float32, integers as int64, bool as bool."""
        array = np.asarray(array)
        if array.dtype.kind in "iu":
            array = array.astype(np.int64)
        t = self.torch.from_numpy(np.array(array, copy=True))
        return (t.float() if t.is_floating_point() else t).to(self.device)

    def _constant(self, node: onnx.NodeProto):
        a = node.attribute[0]
        if a.name == "value":
            return self._tensor(numpy_helper.to_array(a.t))
        value = helper.get_attribute_value(a)
        if a.name.startswith("value_string"):
            raise UnsupportedGraph(f"Constant {node.name}: string values")
        dtype = np.float32 if a.name.startswith("value_float") else np.int64
        return self._tensor(np.array(value, dtype=dtype))

    def run(self, feeds: dict, outputs: list[str] | None = None) -> dict:
        env = dict(self.consts)
        env.update(feeds)
        env[""] = None
        for node in self.nodes:
            if node.op_type == "Constant":
                env[node.output[0]] = self._constant(node)
                continue
            args = [env[name] for name in node.input]
            result = TORCH_OPS[node.op_type](self, node, args, node_attrs(node))
            if not isinstance(result, (list, tuple)):
                result = [result]
            for name, value in zip(node.output, result, strict=False):
                env[name] = value
        names = outputs or [o.name for o in self.graph.output]
        return {n: env[n] for n in names}


def check_executable(proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    """Raise :class:`UnsupportedGraph` unless every op is in :data:`TORCH_OPS` and one forward pass on
    ``feeds`` (e.g. a batch of one) runs: attribute values the executor lacks show up there."""
    import torch

    graph = TorchGraph(proto)
    with torch.no_grad():
        graph.run({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feeds.items()})


__all__ = ["TORCH_OPS", "TorchGraph", "UnsupportedGraph", "check_executable", "first_unsupported"]
