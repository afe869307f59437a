"""Execute an ONNX graph with torch ops, differentiably: what DeepInversion needs gradients from.

Only the op subset of CNN/MLP classifiers is covered (:data:`TORCH_OPS`, one entry per ``op_*`` method;
``Constant`` nodes are folded in directly); anything else raises :class:`UnsupportedGraph` naming the op,
so callers can say the feature does not apply.
BatchNormalization can run in *calibration* mode: it normalises with the batch's own statistics
(as PyTorch does in train mode) and records them, which is how BN statistics are re-estimated.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper


class UnsupportedGraph(ValueError):
    """The graph uses an op (or attribute) the torch executor does not implement."""


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class TorchGraph:
    """A callable over an ONNX graph: ``run({input: tensor}) -> {name: tensor}`` with torch autograd."""

    def __init__(self, proto: onnx.ModelProto, device: str = "cpu"):
        import torch

        self.torch = torch
        self.device = device
        self.graph = proto.graph
        self.consts: dict[str, torch.Tensor] = {}
        for init in self.graph.initializer:
            self.consts[init.name] = self._tensor(numpy_helper.to_array(init))
        self.nodes = list(self.graph.node)
        for node in self.nodes:
            if node.op_type == "Constant":
                continue
            if node.domain not in ("", "ai.onnx") or node.op_type not in TORCH_OPS:
                raise UnsupportedGraph(
                    f"op {node.op_type} ({node.name}) is not supported by the torch executor"
                )
        #: called as hook(node, x_pre_bn) for every BatchNormalization when set
        self.bn_hook: Callable | None = None
        self.calibrate_bn = False
        self.bn_stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _tensor(self, array: np.ndarray):
        t = self.torch.from_numpy(np.array(array, copy=True))
        return (t.float() if t.is_floating_point() else t).to(self.device)

    def run(self, feeds: dict, outputs: list[str] | None = None) -> dict:
        env = dict(self.consts)
        env.update(feeds)
        env[""] = None
        for node in self.nodes:
            if node.op_type == "Constant":
                a = node.attribute[0]
                env[node.output[0]] = (
                    self._tensor(numpy_helper.to_array(a.t))
                    if a.name == "value"
                    else self.torch.tensor(helper.get_attribute_value(a), device=self.device)
                )
                continue
            args = [env[name] for name in node.input]
            result = TORCH_OPS[node.op_type](self, node, args, _attrs(node))
            if not isinstance(result, (list, tuple)):
                result = [result]
            for name, value in zip(node.output, result, strict=False):
                env[name] = value
        names = outputs or [o.name for o in self.graph.output]
        return {n: env[n] for n in names}

    # ------------------------------------------------------------------ ops
    def op_Conv(self, node, args, at):
        f = self.torch.nn.functional
        x, w = args[0], args[1]
        b = args[2] if len(args) > 2 else None
        if at.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise UnsupportedGraph(f"Conv {node.name}: auto_pad")
        nd = w.dim() - 2
        pads = at.get("pads", [0] * 2 * nd)
        begin, end = pads[:nd], pads[nd:]
        if begin != end:
            x = f.pad(x, [p for pair in zip(reversed(begin), reversed(end), strict=True) for p in pair])
            begin = [0] * nd
        conv = (f.conv1d, f.conv2d, f.conv3d)[nd - 1]
        return conv(
            x,
            w,
            b,
            stride=at.get("strides", 1),
            padding=list(begin),
            dilation=at.get("dilations", 1),
            groups=at.get("group", 1),
        )

    def op_BatchNormalization(self, node, args, at):
        x, scale, bias, mean, var = args[:5]
        eps = at.get("epsilon", 1e-5)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        if self.bn_hook is not None:
            self.bn_hook(node, x)
        if self.calibrate_bn:
            dims = [0] + list(range(2, x.dim()))
            mean = x.mean(dim=dims)
            var = x.var(dim=dims, unbiased=False)
            self.bn_stats[node.name] = (mean.detach().cpu().numpy().copy(), var.detach().cpu().numpy().copy())
        return (x - mean.reshape(shape)) / self.torch.sqrt(var.reshape(shape) + eps) * scale.reshape(
            shape
        ) + bias.reshape(shape)

    def op_Gemm(self, node, args, at):
        a, b = args[0], args[1]
        if at.get("transA", 0):
            a = a.t()
        if at.get("transB", 0):
            b = b.t()
        y = at.get("alpha", 1.0) * (a @ b)
        if len(args) > 2 and args[2] is not None:
            y = y + at.get("beta", 1.0) * args[2]
        return y

    def op_MatMul(self, node, args, at):
        return args[0] @ args[1]

    def _pool(self, node, args, at, kind):
        f = self.torch.nn.functional
        x = args[0]
        k = at["kernel_shape"]
        nd = len(k)
        pads = at.get("pads", [0] * 2 * nd)
        if (
            pads[:nd] != pads[nd:]
            or at.get("ceil_mode", 0)
            or at.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")
        ):
            raise UnsupportedGraph(f"{node.op_type} {node.name}: asymmetric pads, ceil_mode or auto_pad")
        stride = at.get("strides", [1] * nd)
        if kind == "max":
            return (f.max_pool1d, f.max_pool2d, f.max_pool3d)[nd - 1](
                x, k, stride, pads[:nd], at.get("dilations", 1)
            )
        return (f.avg_pool1d, f.avg_pool2d, f.avg_pool3d)[nd - 1](
            x, k, stride, pads[:nd], count_include_pad=bool(at.get("count_include_pad", 0))
        )

    def op_MaxPool(self, node, args, at):
        return self._pool(node, args, at, "max")

    def op_AveragePool(self, node, args, at):
        return self._pool(node, args, at, "avg")

    def op_GlobalAveragePool(self, node, args, at):
        return args[0].mean(dim=tuple(range(2, args[0].dim())), keepdim=True)

    def op_GlobalMaxPool(self, node, args, at):
        return args[0].amax(dim=tuple(range(2, args[0].dim())), keepdim=True)

    def op_Relu(self, node, args, at):
        return self.torch.relu(args[0])

    def op_LeakyRelu(self, node, args, at):
        return self.torch.nn.functional.leaky_relu(args[0], at.get("alpha", 0.01))

    def op_PRelu(self, node, args, at):
        return self.torch.where(args[0] >= 0, args[0], args[0] * args[1])

    def op_Sigmoid(self, node, args, at):
        return self.torch.sigmoid(args[0])

    def op_HardSigmoid(self, node, args, at):
        return self.torch.clamp(at.get("alpha", 0.2) * args[0] + at.get("beta", 0.5), 0, 1)

    def op_HardSwish(self, node, args, at):
        return self.torch.nn.functional.hardswish(args[0])

    def op_Tanh(self, node, args, at):
        return self.torch.tanh(args[0])

    def op_Erf(self, node, args, at):
        return self.torch.erf(args[0])

    def op_Clip(self, node, args, at):
        lo = args[1] if len(args) > 1 and args[1] is not None else at.get("min")
        hi = args[2] if len(args) > 2 and args[2] is not None else at.get("max")
        x = args[0]
        if lo is not None:
            x = self.torch.maximum(x, self.torch.as_tensor(lo, dtype=x.dtype))
        if hi is not None:
            x = self.torch.minimum(x, self.torch.as_tensor(hi, dtype=x.dtype))
        return x

    def op_Add(self, node, args, at):
        return args[0] + args[1]

    def op_Sub(self, node, args, at):
        return args[0] - args[1]

    def op_Mul(self, node, args, at):
        return args[0] * args[1]

    def op_Div(self, node, args, at):
        return args[0] / args[1]

    def op_Pow(self, node, args, at):
        return self.torch.pow(args[0], args[1])

    def op_Sqrt(self, node, args, at):
        return self.torch.sqrt(args[0])

    def op_Reciprocal(self, node, args, at):
        return 1.0 / args[0]

    def op_Neg(self, node, args, at):
        return -args[0]

    def op_Exp(self, node, args, at):
        return self.torch.exp(args[0])

    def op_Identity(self, node, args, at):
        return args[0]

    def op_Dropout(self, node, args, at):
        return args[0]

    def op_Cast(self, node, args, at):
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(at["to"]))
        return args[0].float() if dtype.kind == "f" else args[0].to(self.torch.int64)

    def op_Flatten(self, node, args, at):
        axis = at.get("axis", 1)
        x = args[0]
        axis = axis + x.dim() if axis < 0 else axis
        return x.reshape(int(np.prod(x.shape[:axis])), -1)

    def op_Reshape(self, node, args, at):
        x, shape = args[0], [int(v) for v in args[1].tolist()]
        if not at.get("allowzero", 0):
            shape = [x.shape[i] if v == 0 else v for i, v in enumerate(shape)]
        return x.reshape(shape)

    def op_Transpose(self, node, args, at):
        perm = at.get("perm") or list(reversed(range(args[0].dim())))
        return args[0].permute(*perm)

    def op_Concat(self, node, args, at):
        return self.torch.cat(args, dim=at["axis"])

    def op_Squeeze(self, node, args, at):
        axes = at.get("axes") or (args[1].tolist() if len(args) > 1 and args[1] is not None else None)
        x = args[0]
        if axes is None:
            return x.squeeze()
        for a in sorted((a + x.dim() if a < 0 else a for a in axes), reverse=True):
            x = x.squeeze(a)
        return x

    def op_Unsqueeze(self, node, args, at):
        axes = at.get("axes") or args[1].tolist()
        x = args[0]
        rank = x.dim() + len(axes)
        for a in sorted(a + rank if a < 0 else a for a in axes):
            x = x.unsqueeze(a)
        return x

    def op_ReduceMean(self, node, args, at):
        axes = at.get("axes") or (args[1].tolist() if len(args) > 1 and args[1] is not None else None)
        x = args[0]
        dims = tuple(range(x.dim())) if not axes else tuple(axes)
        return x.mean(dim=dims, keepdim=bool(at.get("keepdims", 1)))

    def op_Softmax(self, node, args, at):
        return self.torch.softmax(args[0], dim=at.get("axis", -1))

    def op_Shape(self, node, args, at):
        return self.torch.tensor(list(args[0].shape), dtype=self.torch.int64, device=self.device)[
            at.get("start", 0) : at.get("end")
        ]

    def op_Gather(self, node, args, at):
        return self.torch.index_select(args[0], at.get("axis", 0), args[1].reshape(-1).long()).reshape(
            args[0].shape[: at.get("axis", 0)] + args[1].shape + args[0].shape[at.get("axis", 0) + 1 :]
        )


#: op type (default ONNX domain) -> the TorchGraph method that runs it: the one table of what the torch
#: executor supports, read both by the up-front check in ``TorchGraph.__init__`` and by ``TorchGraph.run``
TORCH_OPS: dict[str, Callable] = {
    name[len("op_") :]: fn for name, fn in vars(TorchGraph).items() if name.startswith("op_")
}
