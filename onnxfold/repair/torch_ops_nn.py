"""Torch implementations of the ONNX network ops (convolution, normalisation, pooling, resizing,
activations) for :class:`onnxfold.repair.torch_graph.TorchGraph`.

Every function has the signature ``fn(g, node, args, at)``: ``g`` the executor (``g.torch``, its
BN hooks), ``node`` the NodeProto, ``args`` the input tensors (None for an omitted optional input),
``at`` the attributes as Python values. Each reproduces the ONNX semantics (as onnxruntime computes
them) for the attribute values it accepts and raises :class:`UnsupportedGraph` for the others.
"""

from __future__ import annotations

import math

from onnxfold.repair.torch_table import UnsupportedGraph, torch_op


def _str(value, default: str) -> str:
    if value is None:
        return default
    return value.decode() if isinstance(value, bytes) else str(value)


def _same_pads(at: dict, in_sizes: list[int], k: list[int], strides: list[int], dil: list[int]) -> list[int]:
    """ONNX pads [b1.., e1..] from ``auto_pad`` (NOTSET: the ``pads`` attribute)."""
    nd = len(k)
    mode = _str(at.get("auto_pad"), "NOTSET")
    if mode == "NOTSET":
        return list(at.get("pads", [0] * 2 * nd))
    if mode == "VALID":
        return [0] * 2 * nd
    begin, end = [], []
    for n, kk, s, d in zip(in_sizes, k, strides, dil, strict=True):
        out = -(-n // s)
        total = max(0, (out - 1) * s + (kk - 1) * d + 1 - n)
        small, large = total // 2, total - total // 2
        begin.append(small if mode == "SAME_UPPER" else large)
        end.append(large if mode == "SAME_UPPER" else small)
    return begin + end


def _torch_pad(pads: list[int]) -> list[int]:
    """ONNX [b1..bn, e1..en] (first axes first) -> torch F.pad order (last axis first)."""
    nd = len(pads) // 2
    return [p for i in reversed(range(nd)) for p in (pads[i], pads[nd + i])]


def _conv_args(args, at):
    """(x, w, bias or None, spatial rank, strides, dilations) of a Conv or ConvTranspose."""
    x, w = args[0], args[1]
    nd = w.dim() - 2
    return (
        x,
        w,
        args[2] if len(args) > 2 else None,
        nd,
        list(at.get("strides", [1] * nd)),
        list(at.get("dilations", [1] * nd)),
    )


@torch_op("Conv")
def conv(g, node, args, at):
    """y = Σ w ⋆ x + b with strides, dilations, groups and explicit or auto pads."""
    f = g.torch.nn.functional
    x, w, b, nd, strides, dil = _conv_args(args, at)
    pads = _same_pads(at, list(x.shape[2:]), list(w.shape[2:]), strides, dil)
    begin, end = pads[:nd], pads[nd:]
    if begin != end:
        x = f.pad(x, _torch_pad(pads))
        begin = [0] * nd
    fn = (f.conv1d, f.conv2d, f.conv3d)[nd - 1]
    return fn(x, w, b, stride=strides, padding=begin, dilation=dil, groups=at.get("group", 1))


@torch_op("ConvTranspose")
def conv_transpose(g, node, args, at):
    """Transposed convolution: the full (unpadded) result, then pads cropped and output_padding zeros
    appended at the end of each axis, then the bias; ``output_shape`` sets the pads as the spec says."""
    f = g.torch.nn.functional
    x, w, b, nd, strides, dil = _conv_args(args, at)
    out_pad = list(at.get("output_padding", [0] * nd))
    k = list(w.shape[2:])
    fn = (f.conv_transpose1d, f.conv_transpose2d, f.conv_transpose3d)[nd - 1]
    y = fn(x, w, None, stride=strides, padding=0, groups=at.get("group", 1), dilation=dil)
    mode = _str(at.get("auto_pad"), "NOTSET")
    full = [
        s * (n - 1) + op + (kk - 1) * d + 1
        for n, s, op, kk, d in zip(x.shape[2:], strides, out_pad, k, dil, strict=True)
    ]
    if "output_shape" in at or mode in ("SAME_UPPER", "SAME_LOWER"):
        target = (
            list(at["output_shape"])[-nd:]
            if "output_shape" in at
            else [n * s for n, s in zip(x.shape[2:], strides, strict=True)]
        )
        total = [fl - t for fl, t in zip(full, target, strict=True)]
        if mode == "SAME_UPPER":
            pads = [t // 2 for t in total] + [t - t // 2 for t in total]
        else:
            pads = [t - t // 2 for t in total] + [t // 2 for t in total]
    elif mode == "VALID":
        pads = [0] * 2 * nd
    else:
        pads = list(at.get("pads", [0] * 2 * nd))
    crop = [-p for p in pads[:nd]] + [op - p for op, p in zip(out_pad, pads[nd:], strict=True)]
    if any(crop):
        y = f.pad(y, _torch_pad(crop))
    if b is not None:
        y = y + b.reshape((1, -1) + (1,) * nd)
    return y


@torch_op("BatchNormalization")
def batch_norm(g, node, args, at):
    """y = (x − μ)/sqrt(σ² + ε)·γ + β per channel (axis 1) with the running statistics; in
    calibration mode (``g.calibrate_bn``) with the batch's own, which are recorded."""
    x, scale, bias, mean, var = args[:5]
    eps = at.get("epsilon", 1e-5)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    if g.bn_hook is not None:
        g.bn_hook(node, x)
    if g.calibrate_bn:
        dims = [0] + list(range(2, x.dim()))
        mean = x.mean(dim=dims)
        var = x.var(dim=dims, unbiased=False)
        g.bn_stats[node.name] = (mean.detach().cpu().numpy().copy(), var.detach().cpu().numpy().copy())
    inv = scale.reshape(shape) / g.torch.sqrt(var.reshape(shape) + eps)
    return (x - mean.reshape(shape)) * inv + bias.reshape(shape)


@torch_op("InstanceNormalization")
def instance_norm(g, node, args, at):
    """Per sample and channel: (x − mean)/sqrt(var + ε)·γ + β over the spatial axes."""
    x, scale, bias = args[:3]
    dims = tuple(range(2, x.dim()))
    shape = (1, -1) + (1,) * (x.dim() - 2)
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, keepdim=True, unbiased=False)
    return (x - mean) / g.torch.sqrt(var + at.get("epsilon", 1e-5)) * scale.reshape(shape) + bias.reshape(
        shape
    )


@torch_op("LayerNormalization")
def layer_norm(g, node, args, at):
    """(x − mean)/sqrt(var + ε)·γ + β over the axes from ``axis`` on (only the first output)."""
    x, scale = args[0], args[1]
    bias = args[2] if len(args) > 2 else None
    axis = at.get("axis", -1)
    axis = axis + x.dim() if axis < 0 else axis
    dims = tuple(range(axis, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, keepdim=True, unbiased=False)
    y = (x - mean) / g.torch.sqrt(var + at.get("epsilon", 1e-5)) * scale
    return y + bias if bias is not None else y


@torch_op("Gemm")
def gemm(g, node, args, at):
    """y = α·A'B' + β·C with A', B' optionally transposed."""
    a, b = args[0], args[1]
    if at.get("transA", 0):
        a = a.t()
    if at.get("transB", 0):
        b = b.t()
    y = at.get("alpha", 1.0) * (a @ b)
    if len(args) > 2 and args[2] is not None:
        y = y + at.get("beta", 1.0) * args[2]
    return y


@torch_op("MatMul")
def matmul(g, node, args, at):
    """numpy-style matmul."""
    return args[0] @ args[1]


def _pool(g, node, args, at, kind: str):
    f = g.torch.nn.functional
    x = args[0]
    k = list(at["kernel_shape"])
    nd = len(k)
    stride = list(at.get("strides", [1] * nd))
    dil = list(at.get("dilations", [1] * nd))
    pads = _same_pads(at, list(x.shape[2:]), k, stride, dil)
    ceil = bool(at.get("ceil_mode", 0))
    begin = pads[:nd]
    symmetric = pads[:nd] == pads[nd:] and all(p <= kk // 2 for p, kk in zip(begin, k, strict=True))
    if kind == "max":
        if not symmetric:
            x = f.pad(x, _torch_pad(pads), value=-math.inf)
            begin = [0] * nd
        return (f.max_pool1d, f.max_pool2d, f.max_pool3d)[nd - 1](x, k, stride, begin, dil, ceil_mode=ceil)
    if any(d != 1 for d in dil):
        raise UnsupportedGraph(f"AveragePool {node.name}: dilations")
    include = bool(at.get("count_include_pad", 0))
    if not symmetric:
        if not include and any(pads):
            raise UnsupportedGraph(f"AveragePool {node.name}: asymmetric pads without count_include_pad")
        x = f.pad(x, _torch_pad(pads))
        begin = [0] * nd
    return (f.avg_pool1d, f.avg_pool2d, f.avg_pool3d)[nd - 1](
        x, k, stride, begin, ceil_mode=ceil, count_include_pad=include
    )


@torch_op("MaxPool")
def max_pool(g, node, args, at):
    """Max over windows (pads count as −∞; ceil_mode as in PyTorch); only the first output."""
    if len(node.output) > 1 and node.output[1]:
        raise UnsupportedGraph(f"MaxPool {node.name}: the Indices output")
    return _pool(g, node, args, at, "max")


@torch_op("AveragePool")
def average_pool(g, node, args, at):
    """Mean over windows; pads counted in the divisor only with count_include_pad."""
    return _pool(g, node, args, at, "avg")


@torch_op("GlobalAveragePool")
def global_average_pool(g, node, args, at):
    """Mean over all spatial axes, kept as size 1."""
    return args[0].mean(dim=tuple(range(2, args[0].dim())), keepdim=True)


@torch_op("GlobalMaxPool")
def global_max_pool(g, node, args, at):
    """Max over all spatial axes, kept as size 1."""
    return args[0].amax(dim=tuple(range(2, args[0].dim())), keepdim=True)


# ------------------------------------------------------------------ resize
def _source_coords(g, mode: str, n_out: int, n_in: int, scale: float, device):
    """Input coordinate of every output index along one axis (ONNX coordinate_transformation_mode)."""
    i = g.torch.arange(n_out, dtype=g.torch.float64, device=device)
    if mode == "asymmetric":
        return i / scale
    if mode == "half_pixel":
        return (i + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (i + 0.5) / scale - 0.5 if n_out > 1 else i * 0
    if mode == "align_corners":
        return i * (n_in - 1) / (n_out - 1) if n_out > 1 else i * 0
    if mode == "half_pixel_symmetric":
        adj = n_out / (scale * n_in)
        center = n_in / 2
        offset = center * (1 - adj)
        return offset + (i + 0.5) / scale - 0.5
    raise UnsupportedGraph(f"Resize: coordinate_transformation_mode {mode}")


def _resize_axis(g, x, axis: int, n_out: int, scale: float, mode: str, ctm: str, nearest: str):
    torch = g.torch
    n_in = x.shape[axis]
    c = _source_coords(g, ctm, n_out, n_in, scale, x.device)
    if mode == "nearest":
        if nearest == "floor":
            idx = torch.floor(c)
        elif nearest == "ceil":
            idx = torch.ceil(c)
        elif nearest == "round_prefer_ceil":
            idx = torch.floor(c + 0.5)
        elif nearest == "round_prefer_floor":
            idx = torch.ceil(c - 0.5)
        else:
            raise UnsupportedGraph(f"Resize: nearest_mode {nearest}")
        idx = idx.clamp(0, n_in - 1).long()
        return x.index_select(axis, idx)
    c = c.clamp(0, n_in - 1)
    lo = torch.floor(c).long()
    hi = (lo + 1).clamp(max=n_in - 1)
    w = (c - lo).to(x.dtype)
    shape = [1] * x.dim()
    shape[axis] = n_out
    w = w.reshape(shape)
    return x.index_select(axis, lo) * (1 - w) + x.index_select(axis, hi) * w


def _resize(g, node, x, scales, sizes, at, default_ctm: str, default_nearest: str):
    mode = _str(at.get("mode"), "nearest")
    if mode not in ("nearest", "linear", "bilinear"):
        raise UnsupportedGraph(f"{node.op_type} {node.name}: mode {mode}")
    if at.get("antialias", 0):
        raise UnsupportedGraph(f"{node.op_type} {node.name}: antialias")
    if _str(at.get("keep_aspect_ratio_policy"), "stretch") != "stretch":
        raise UnsupportedGraph(f"{node.op_type} {node.name}: keep_aspect_ratio_policy")
    ctm = _str(at.get("coordinate_transformation_mode"), default_ctm)
    nearest = _str(at.get("nearest_mode"), default_nearest)
    axes = list(at.get("axes", range(x.dim())))
    axes = [a + x.dim() if a < 0 else a for a in axes]
    if sizes is not None and sizes.numel():
        outs = [int(v) for v in sizes.tolist()]
        fac = [o / x.shape[a] for o, a in zip(outs, axes, strict=True)]
    else:
        fac = [float(v) for v in scales.tolist()]
        outs = [int(math.floor(x.shape[a] * s)) for a, s in zip(axes, fac, strict=True)]
    mode = "linear" if mode == "bilinear" else mode
    for a, n_out, s in zip(axes, outs, fac, strict=True):
        if n_out != x.shape[a] or s != 1.0:
            x = _resize_axis(g, x, a, n_out, s, mode, ctm, nearest)
    return x


@torch_op("Resize")
def resize(g, node, args, at):
    """Nearest or (multi)linear resizing, separable per axis, with scales or sizes and the
    coordinate modes asymmetric, half_pixel, pytorch_half_pixel, align_corners, half_pixel_symmetric;
    linear coordinates clamp to the input, as onnxruntime does."""
    x = args[0]
    if len(args) == 2:  # opset 10: X, scales
        return _resize(g, node, x, args[1], None, at, "asymmetric", "round_prefer_floor")
    scales = args[2] if len(args) > 2 else None
    sizes = args[3] if len(args) > 3 else None
    return _resize(g, node, x, scales, sizes, at, "half_pixel", "round_prefer_floor")


@torch_op("Upsample")
def upsample(g, node, args, at):
    """Deprecated Upsample: Resize with asymmetric coordinates and the scales input (or attribute);
    nearest picks floor."""
    scales = args[1] if len(args) > 1 else g.torch.tensor(at["scales"])
    return _resize(g, node, args[0], scales, None, at, "asymmetric", "floor")


# ------------------------------------------------------------------ activations
@torch_op("Relu")
def relu(g, node, args, at):
    """max(x, 0)."""
    return g.torch.relu(args[0])


@torch_op("LeakyRelu")
def leaky_relu(g, node, args, at):
    """x if x ≥ 0 else α·x."""
    return g.torch.nn.functional.leaky_relu(args[0], at.get("alpha", 0.01))


@torch_op("PRelu")
def prelu(g, node, args, at):
    """x if x ≥ 0 else slope·x (slope broadcast)."""
    return g.torch.where(args[0] >= 0, args[0], args[0] * args[1])


@torch_op("Elu")
def elu(g, node, args, at):
    """x if x > 0 else α·(eˣ − 1)."""
    return g.torch.nn.functional.elu(args[0], at.get("alpha", 1.0))


@torch_op("Selu")
def selu(g, node, args, at):
    """γ·(x if x > 0 else α·(eˣ − 1))."""
    x = args[0]
    alpha, gamma = at.get("alpha", 1.67326319217681884765625), at.get("gamma", 1.05070102214813232421875)
    return gamma * g.torch.where(x > 0, x, alpha * (g.torch.exp(x) - 1))


@torch_op("Sigmoid")
def sigmoid(g, node, args, at):
    """1/(1 + e⁻ˣ)."""
    return g.torch.sigmoid(args[0])


@torch_op("HardSigmoid")
def hard_sigmoid(g, node, args, at):
    """clip(α·x + β, 0, 1)."""
    return g.torch.clamp(at.get("alpha", 0.2) * args[0] + at.get("beta", 0.5), 0, 1)


@torch_op("HardSwish")
def hard_swish(g, node, args, at):
    """x·clip(x/6 + 1/2, 0, 1)."""
    return g.torch.nn.functional.hardswish(args[0])


@torch_op("Tanh")
def tanh(g, node, args, at):
    """tanh(x)."""
    return g.torch.tanh(args[0])


@torch_op("Softplus")
def softplus(g, node, args, at):
    """log(1 + eˣ)."""
    return g.torch.nn.functional.softplus(args[0])


@torch_op("Softsign")
def softsign(g, node, args, at):
    """x/(1 + |x|)."""
    return args[0] / (1 + args[0].abs())


@torch_op("Mish")
def mish(g, node, args, at):
    """x·tanh(softplus(x))."""
    return g.torch.nn.functional.mish(args[0])


@torch_op("Gelu")
def gelu(g, node, args, at):
    """x·Φ(x) (approximate="tanh": the tanh form)."""
    return g.torch.nn.functional.gelu(args[0], approximate=_str(at.get("approximate"), "none"))


@torch_op("Erf")
def erf(g, node, args, at):
    """The error function."""
    return g.torch.erf(args[0])


@torch_op("Clip")
def clip(g, node, args, at):
    """min(max(x, lo), hi); bounds from inputs (opset ≥ 11) or attributes, each optional."""
    lo = args[1] if len(args) > 1 and args[1] is not None else at.get("min")
    hi = args[2] if len(args) > 2 and args[2] is not None else at.get("max")
    x = args[0]
    if lo is not None:
        x = g.torch.maximum(x, g.torch.as_tensor(lo, dtype=x.dtype, device=x.device))
    if hi is not None:
        x = g.torch.minimum(x, g.torch.as_tensor(hi, dtype=x.dtype, device=x.device))
    return x


@torch_op("Softmax", "LogSoftmax")
def softmax(g, node, args, at):
    """eˣ/Σeˣ along ``axis`` (opset ≥ 13: that axis, default −1; older: over all axes from ``axis``,
    default 1); LogSoftmax its log."""
    x = args[0]
    fn = g.torch.log_softmax if node.op_type == "LogSoftmax" else g.torch.softmax
    if g.opset >= 13:
        return fn(x, dim=at.get("axis", -1))
    axis = at.get("axis", 1)
    axis = axis + x.dim() if axis < 0 else axis
    return fn(x.reshape(int(math.prod(x.shape[:axis])), -1), dim=1).reshape(x.shape)
