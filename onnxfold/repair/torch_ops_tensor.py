"""Torch implementations of the ONNX tensor ops (elementwise arithmetic, comparisons, reductions,
shape computations, indexing and layout) for :class:`onnxfold.repair.torch_graph.TorchGraph`.

Same contract as :mod:`onnxfold.repair.torch_ops_nn`: ``fn(g, node, args, at)``, ONNX semantics
as onnxruntime computes them, :class:`UnsupportedGraph` for attribute values not implemented.
Integer tensors (shape computations) stay int64; floating ones are float32.
"""

from __future__ import annotations

import functools

import numpy as np
from onnx import helper, numpy_helper

from onnxfold.repair.torch_table import UnsupportedGraph, torch_op


def _ints(t) -> list[int]:
    return [int(v) for v in t.reshape(-1).tolist()]


def _axes(at: dict, args: list, index: int) -> list[int] | None:
    """``axes`` as attribute (older opsets) or as input ``index`` (newer); None when absent."""
    if "axes" in at:
        return list(at["axes"])
    if len(args) > index and args[index] is not None:
        return _ints(args[index])
    return None


# ------------------------------------------------------------------ elementwise
_BINARY = {
    "Add": lambda t, a, b: a + b,
    "Sub": lambda t, a, b: a - b,
    "Mul": lambda t, a, b: a * b,
    "Pow": lambda t, a, b: t.pow(a, b),
    "Equal": lambda t, a, b: a == b,
    "Less": lambda t, a, b: a < b,
    "LessOrEqual": lambda t, a, b: a <= b,
    "Greater": lambda t, a, b: a > b,
    "GreaterOrEqual": lambda t, a, b: a >= b,
    "And": lambda t, a, b: t.logical_and(a, b),
    "Or": lambda t, a, b: t.logical_or(a, b),
    "Xor": lambda t, a, b: t.logical_xor(a, b),
}


@torch_op(*_BINARY)
def binary(g, node, args, at):
    """Broadcasting binary arithmetic (Add, Sub, Mul, Pow) and comparisons / logic (bool result)."""
    return _BINARY[node.op_type](g.torch, args[0], args[1])


@torch_op("Div")
def div(g, node, args, at):
    """a / b; integer tensors divide truncating toward zero, as ONNX does."""
    a, b = args
    if a.is_floating_point() or b.is_floating_point():
        return a / b
    return g.torch.div(a, b, rounding_mode="trunc")


_UNARY = {
    "Sqrt": lambda t, x: t.sqrt(x),
    "Reciprocal": lambda t, x: 1.0 / x,
    "Neg": lambda t, x: -x,
    "Exp": lambda t, x: t.exp(x),
    "Log": lambda t, x: t.log(x),
    "Abs": lambda t, x: x.abs(),
    "Floor": lambda t, x: t.floor(x),
    "Ceil": lambda t, x: t.ceil(x),
    "Round": lambda t, x: t.round(x),
    "Sign": lambda t, x: t.sign(x),
    "Not": lambda t, x: t.logical_not(x),
    "Sin": lambda t, x: t.sin(x),
    "Cos": lambda t, x: t.cos(x),
}


@torch_op(*_UNARY)
def unary(g, node, args, at):
    """Elementwise Sqrt, Reciprocal, Neg, Exp, Log, Abs, Floor, Ceil, Round (half to even), Sign, Not,
    Sin, Cos."""
    return _UNARY[node.op_type](g.torch, args[0])


@torch_op("Max", "Min", "Sum", "Mean")
def variadic(g, node, args, at):
    """Elementwise max / min / sum / mean of any number of broadcast inputs."""
    t = g.torch
    if node.op_type == "Max":
        return functools.reduce(t.maximum, args)
    if node.op_type == "Min":
        return functools.reduce(t.minimum, args)
    total = functools.reduce(lambda a, b: a + b, args)
    return total / len(args) if node.op_type == "Mean" else total


@torch_op("Where")
def where(g, node, args, at):
    """cond ? a : b, broadcast."""
    return g.torch.where(args[0].bool(), args[1], args[2])


@torch_op("Identity", "Dropout")
def identity(g, node, args, at):
    """x (Dropout at inference is the identity; its mask output is all true)."""
    if node.op_type == "Dropout" and len(node.output) > 1 and node.output[1]:
        return [args[0], g.torch.ones_like(args[0], dtype=g.torch.bool)]
    return args[0]


@torch_op("Cast")
def cast(g, node, args, at):
    """Floating targets compute as float32, bool as bool, integer ones as int64."""
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(at["to"]))
    x = args[0]
    if dtype.kind == "f":
        return x.float()
    if dtype.kind == "b":
        return x.bool()
    return x.to(g.torch.int64)


# ------------------------------------------------------------------ reductions
_REDUCE = {
    "ReduceMean": lambda x, d, k: x.mean(dim=d, keepdim=k),
    "ReduceSum": lambda x, d, k: x.sum(dim=d, keepdim=k),
    "ReduceMax": lambda x, d, k: x.amax(dim=d, keepdim=k),
    "ReduceMin": lambda x, d, k: x.amin(dim=d, keepdim=k),
    "ReduceProd": lambda x, d, k: _prod(x, d, k),
    "ReduceL2": lambda x, d, k: x.pow(2).sum(dim=d, keepdim=k).sqrt(),
    "ReduceL1": lambda x, d, k: x.abs().sum(dim=d, keepdim=k),
    "ReduceSumSquare": lambda x, d, k: x.pow(2).sum(dim=d, keepdim=k),
}


def _prod(x, dims, keep):
    for d in sorted(dims, reverse=True):
        x = x.prod(dim=d, keepdim=keep)
    return x


@torch_op(*_REDUCE)
def reduce(g, node, args, at):
    """Reduce over ``axes`` (attribute or input; all axes when absent, none with
    noop_with_empty_axes), keeping them as size 1 unless keepdims=0."""
    x = args[0]
    axes = _axes(at, args, 1)
    if not axes:
        if at.get("noop_with_empty_axes", 0):
            return x
        axes = list(range(x.dim()))
    dims = tuple(a + x.dim() if a < 0 else a for a in axes)
    return _REDUCE[node.op_type](x, dims, bool(at.get("keepdims", 1)))


@torch_op("ArgMax", "ArgMin")
def arg_reduce(g, node, args, at):
    """Index of the first max / min along ``axis``."""
    if at.get("select_last_index", 0):
        raise UnsupportedGraph(f"{node.op_type} {node.name}: select_last_index")
    fn = g.torch.argmax if node.op_type == "ArgMax" else g.torch.argmin
    return fn(args[0], dim=at.get("axis", 0), keepdim=bool(at.get("keepdims", 1)))


# ------------------------------------------------------------------ shapes and layout
@torch_op("Shape")
def shape(g, node, args, at):
    """The input's shape as int64, sliced by start/end."""
    dims = list(args[0].shape)[at.get("start", 0) : at.get("end")]
    return g.torch.tensor(dims, dtype=g.torch.int64, device=g.device)


@torch_op("Size")
def size(g, node, args, at):
    """Number of elements, int64 scalar."""
    return g.torch.tensor(args[0].numel(), dtype=g.torch.int64, device=g.device)


@torch_op("ConstantOfShape")
def constant_of_shape(g, node, args, at):
    """A tensor of the given shape filled with ``value`` (default float 0)."""
    value = at.get("value")
    fill = numpy_helper.to_array(value).reshape(-1) if value is not None else np.zeros(1, np.float32)
    return g._tensor(np.full(_ints(args[0]), fill[0], dtype=fill.dtype))


@torch_op("Range")
def range_(g, node, args, at):
    """start, start + delta, … up to (excluding) limit."""
    start, limit, delta = (a.item() for a in args)
    dtype = args[0].dtype
    return g.torch.arange(start, limit, delta, dtype=dtype, device=g.device)


@torch_op("Flatten")
def flatten(g, node, args, at):
    """2-D: the axes before ``axis`` times the rest."""
    x = args[0]
    axis = at.get("axis", 1)
    axis = axis + x.dim() if axis < 0 else axis
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


@torch_op("Reshape")
def reshape(g, node, args, at):
    """Reshape; 0 copies the input's dim (unless allowzero), −1 is inferred."""
    x, dims = args[0], _ints(args[1])
    if not at.get("allowzero", 0):
        dims = [x.shape[i] if v == 0 else v for i, v in enumerate(dims)]
    return x.reshape(dims)


@torch_op("Transpose")
def transpose(g, node, args, at):
    """Permute axes (default: reversed)."""
    perm = at.get("perm") or list(reversed(range(args[0].dim())))
    return args[0].permute(*perm)


@torch_op("Squeeze")
def squeeze(g, node, args, at):
    """Drop the given size-1 axes (all size-1 axes when none given)."""
    x = args[0]
    axes = _axes(at, args, 1)
    if axes is None:
        return x.squeeze()
    for a in sorted((a + x.dim() if a < 0 else a for a in axes), reverse=True):
        x = x.squeeze(a)
    return x


@torch_op("Unsqueeze")
def unsqueeze(g, node, args, at):
    """Insert size-1 axes at the given positions of the output."""
    x = args[0]
    axes = _axes(at, args, 1) or []
    rank = x.dim() + len(axes)
    for a in sorted(a + rank if a < 0 else a for a in axes):
        x = x.unsqueeze(a)
    return x


@torch_op("Concat")
def concat(g, node, args, at):
    """Join along ``axis`` (empty inputs included)."""
    return g.torch.cat([a for a in args if a is not None], dim=at["axis"])


@torch_op("Split")
def split(g, node, args, at):
    """Split along ``axis`` by ``split`` (input or attribute), else into equal parts (the last
    smaller with num_outputs)."""
    x = args[0]
    axis = at.get("axis", 0)
    n = len(node.output)
    parts = (
        list(at["split"])
        if "split" in at
        else (_ints(args[1]) if len(args) > 1 and args[1] is not None else None)
    )
    if parts is None:
        dim = x.shape[axis]
        chunk = -(-dim // at.get("num_outputs", n))
        parts = [min(chunk, dim - i * chunk) for i in range(n)]
    return list(g.torch.split(x, parts, dim=axis))


@torch_op("Slice")
def slice_(g, node, args, at):
    """x[starts:ends:steps] on ``axes`` with the spec's clamping (negative steps included)."""
    x = args[0]
    if "starts" in at:  # opset 1
        starts, ends, axes, steps = list(at["starts"]), list(at["ends"]), at.get("axes"), None
    else:
        starts, ends = _ints(args[1]), _ints(args[2])
        axes = _ints(args[3]) if len(args) > 3 and args[3] is not None else None
        steps = _ints(args[4]) if len(args) > 4 and args[4] is not None else None
    axes = list(axes) if axes is not None else list(range(len(starts)))
    steps = steps or [1] * len(starts)
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        a = a + x.dim() if a < 0 else a
        dim = x.shape[a]
        s = s + dim if s < 0 else s
        e = e + dim if e < 0 else e
        if st > 0:
            s, e = min(max(s, 0), dim), min(max(e, 0), dim)
            x = x.narrow(a, s, max(0, e - s))[(slice(None),) * a + (slice(None, None, st),)]
        else:
            s, e = min(max(s, 0), dim - 1), min(max(e, -1), dim - 1)
            idx = g.torch.tensor(list(range(s, e, st)), dtype=g.torch.int64, device=x.device)
            x = x.index_select(a, idx)
    return x


@torch_op("Gather")
def gather(g, node, args, at):
    """x.take(indices, axis): the indexed axis replaced by the indices' shape; negative indices count
    from the end."""
    x, idx = args[0], args[1].long()
    axis = at.get("axis", 0)
    axis = axis + x.dim() if axis < 0 else axis
    idx = g.torch.where(idx < 0, idx + x.shape[axis], idx)
    out = x.index_select(axis, idx.reshape(-1))
    return out.reshape(tuple(x.shape[:axis]) + tuple(idx.shape) + tuple(x.shape[axis + 1 :]))


@torch_op("Expand")
def expand(g, node, args, at):
    """Broadcast x against the given shape (bidirectionally)."""
    x = args[0]
    return x.expand(g.torch.broadcast_shapes(tuple(x.shape), tuple(_ints(args[1]))))


@torch_op("Tile")
def tile(g, node, args, at):
    """Repeat x ``repeats[i]`` times along axis i."""
    return args[0].repeat(*_ints(args[1]))


def _pad_index(mode: str, n: int, begin: int, end: int, device, torch):
    i = torch.arange(-begin, n + end, device=device)
    if mode == "edge":
        return i.clamp(0, n - 1)
    if mode == "wrap":
        return i % n
    period = 2 * (n - 1)
    if period == 0:
        return i * 0
    i = i.abs() % period
    return torch.where(i >= n, period - i, i)


@torch_op("Pad")
def pad(g, node, args, at):
    """Pad by [b1.., e1..] (input, or attribute in opset < 11) on ``axes``: constant (value from the
    input or attribute), reflect (mirror without the edge), edge (repeat the edge) or wrap; negative
    pads crop."""
    x = args[0]
    mode = at.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if "pads" in at:
        pads, value, axes = list(at["pads"]), float(at.get("value", 0.0)), None
    else:
        pads = _ints(args[1])
        value = (
            float(args[2].reshape(-1)[0])
            if len(args) > 2 and args[2] is not None and args[2].numel()
            else 0.0
        )
        axes = _ints(args[3]) if len(args) > 3 and args[3] is not None else None
    axes = [a + x.dim() if a < 0 else a for a in (axes if axes is not None else range(x.dim()))]
    k = len(axes)
    full = [0] * 2 * x.dim()
    for j, a in enumerate(axes):
        full[a], full[x.dim() + a] = pads[j], pads[k + j]
    if mode == "constant":
        torch_pads = [p for i in reversed(range(x.dim())) for p in (full[i], full[x.dim() + i])]
        return g.torch.nn.functional.pad(x, torch_pads, value=value)
    if mode not in ("reflect", "edge", "wrap"):
        raise UnsupportedGraph(f"Pad {node.name}: mode {mode}")
    for a in range(x.dim()):
        b, e = full[a], full[x.dim() + a]
        if b or e:
            idx = _pad_index(mode, x.shape[a], b, e, x.device, g.torch)
            x = x.index_select(a, idx)
    return x


@torch_op("DepthToSpace", "SpaceToDepth")
def depth_space(g, node, args, at):
    """Rearrange (N, C, H, W) blocks of ``blocksize`` between channels and space (DCR or CRD order)."""
    x = args[0]
    b = at["blocksize"]
    n, c, h, w = x.shape
    if node.op_type == "SpaceToDepth":
        y = x.reshape(n, c, h // b, b, w // b, b).permute(0, 3, 5, 1, 2, 4)
        return y.reshape(n, c * b * b, h // b, w // b)
    if _str_mode(at) == "CRD":
        y = x.reshape(n, c // (b * b), b, b, h, w).permute(0, 1, 4, 2, 5, 3)
    else:
        y = x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
    return y.reshape(n, c // (b * b), h * b, w * b)


def _str_mode(at: dict) -> str:
    mode = at.get("mode", b"DCR")
    return mode.decode() if isinstance(mode, bytes) else mode


@torch_op("Einsum")
def einsum(g, node, args, at):
    """torch.einsum with the node's equation."""
    eq = at["equation"]
    return g.torch.einsum(eq.decode() if isinstance(eq, bytes) else eq, *args)
