"""The producers of a channel group and the BatchNormalization that directly normalises each one.

Repairs work per *producer*: a Conv, Gemm or MatMul whose weight rows are ``average`` ``weight``
members of a group (a grouped Conv's row o is output channel o's filter, as with group 1; a
depthwise Conv's filters are ``depthwise`` members of the channels passing through it). Its
pre-activation is z = W·x + b, with the weight's output-channel axis ``axis`` and the activation's
channel axis ``out_axis``. When z feeds exactly one inference BatchNormalization (and nothing
else), the pair can be rewritten in normalised form

    z' = (W/σ)·x + (b − μ)/σ,   BN(μ = 0, var = 1 − eps)   with σ = sqrt(var + eps),

which computes the same function. Which weight axis holds a producer's output
channels comes from the ``weight_axes`` hook its op registered (:mod:`onnxfold.analysis.rules.producers`).
The functions up to :func:`scale_along` only read the graph; :func:`write_input` and :func:`write_bias`
change constants of the graph (in place, or as a new constant for one node).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from onnxfold.analysis.groups import AVERAGE, ChannelGroup
from onnxfold.analysis.registry import hook
from onnxfold.ir.model import set_values

PRODUCER_OPS = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class BatchNorm:
    """An inference BatchNormalization: its node and the names of its four per-channel constants."""

    node: str
    scale: str
    bias: str
    mean: str
    var: str
    eps: float


@dataclass(frozen=True)
class Producer:
    """One producer of a group: z = W·x (+ b) with output channels on ``axis`` of W."""

    node: str
    op: str
    weight: str
    axis: int
    bias: str | None
    bias_axis: int
    output: str
    out_axis: int
    bn: BatchNorm | None


def batchnorm_of(node: gs.Node) -> BatchNorm | None:
    """The :class:`BatchNorm` of an inference BN node with constant parameters, else None."""
    if node.op != "BatchNormalization" or (node.domain or "") not in ("", "ai.onnx"):
        return None
    params = node.inputs[1:5]
    if len(params) != 4 or not all(isinstance(p, gs.Constant) for p in params):
        return None
    if node.attrs.get("training_mode", 0) or any(o.outputs for o in node.outputs[1:]):
        return None
    return BatchNorm(
        node.name,
        params[0].name,
        params[1].name,
        params[2].name,
        params[3].name,
        float(node.attrs.get("epsilon", 1e-5)),
    )


def _following_bn(out: gs.Tensor, out_axis: int, graph_outputs: set[str]) -> BatchNorm | None:
    users = list(out.outputs)
    if out.name in graph_outputs or len(users) != 1 or out_axis != 1:
        return None
    return batchnorm_of(users[0])


def producer_of(node: gs.Node, weight: str, graph_outputs: set[str]) -> Producer | None:
    """Describe ``node`` as a producer whose weight is the constant named ``weight``, or None."""
    if node.op not in PRODUCER_OPS or (node.domain or "") not in ("", "ai.onnx") or len(node.outputs) != 1:
        return None
    if len(node.inputs) < 2 or node.inputs[1].name != weight or not isinstance(node.inputs[1], gs.Constant):
        return None
    out = node.outputs[0]
    w = node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
    if bias is not None and not isinstance(bias, gs.Constant):
        return None
    axis = hook("weight_axes", node.op)(node)[0]
    if node.op == "Conv":
        out_axis, bias_axis = 1, 0
    elif node.op == "Gemm":
        out_axis = 1
        n = w.shape[axis]
        if bias is not None and (int(np.prod(bias.shape)) <= 1 or bias.shape[-1] != n):
            return None  # a scalar or non-per-channel C: leave the node alone
        bias_axis = len(bias.shape) - 1 if bias is not None else 0
    else:
        if len(w.shape) != 2 or out.shape is None:
            return None
        out_axis, bias_axis = len(out.shape) - 1, 0
    bn = _following_bn(out, out_axis, graph_outputs)
    return Producer(
        node.name,
        node.op,
        weight,
        axis,
        bias.name if bias is not None else None,
        bias_axis,
        out.name,
        out_axis,
        bn,
    )


def group_producers(group: ChannelGroup, graph: gs.Graph) -> list[Producer]:
    """Every producer of ``group`` (one per weight slice), each with its directly following BN if that
    BN's vectors belong to the group too. A weight read by several producers (a shared or tied weight)
    gives one of them: the first that reads it directly."""
    nodes = {n.name: n for n in graph.nodes}
    tensors = graph.tensors()
    graph_outputs = {t.name for t in graph.outputs}
    member_tensors = {m.tensor for m in group.members if m.role == AVERAGE}
    found: list[Producer] = []
    seen: set[str] = set()
    for m in group.members:
        if m.role != AVERAGE or m.kind != "weight" or m.offset or m.block != 1 or m.node in seen:
            continue
        candidates = [nodes[m.node]] if m.node in nodes else []
        weight = tensors.get(m.tensor)
        candidates += list(weight.outputs) if weight is not None else []
        p = None
        for node in candidates:
            p = producer_of(node, m.tensor, graph_outputs)
            if p is not None and p.axis == m.axis and p.node not in seen:
                break
            p = None
        if p is None:
            continue
        seen.update((m.node, p.node))
        if p.bn is not None and not {p.bn.scale, p.bn.mean, p.bn.var} <= member_tensors:
            p = Producer(p.node, p.op, p.weight, p.axis, p.bias, p.bias_axis, p.output, p.out_axis, None)
        found.append(p)
    return found


def is_shared(tensor: gs.Tensor) -> bool:
    """Whether more than one node reads ``tensor`` (a shared or tied weight)."""
    return len({id(n) for n in tensor.outputs}) > 1


def rows(values: np.ndarray, axis: int) -> np.ndarray:
    """The (n, d) float64 matrix whose row c holds every entry of output channel c."""
    moved = np.moveaxis(np.asarray(values, dtype=np.float64), axis, 0)
    return moved.reshape(moved.shape[0], -1)


def scale_along(values: np.ndarray, axis: int, factors: np.ndarray) -> np.ndarray:
    """``values`` with slice c along ``axis`` multiplied by factors[c] (float64)."""
    shape = [1] * np.ndim(values)
    shape[axis] = -1
    return np.asarray(values, dtype=np.float64) * np.asarray(factors, dtype=np.float64).reshape(shape)


# --------------------------------------------------------------------------- writing


def _fresh_name(graph: gs.Graph, base: str) -> str:
    names = graph.tensors()
    name, i = f"{base}_repaired", 1
    while name in names:
        i += 1
        name = f"{base}_repaired{i}"
    return name


def write_input(
    graph: gs.Graph, node: gs.Node, index: int, values: np.ndarray, base: str = ""
) -> gs.Constant:
    """Give input ``index`` of ``node`` new constant values: in place when only ``node`` reads the
    constant, else as a new constant for this node alone (a shared tensor is never changed for
    its other users). ``index == len(node.inputs)`` appends a new input."""
    current = node.inputs[index] if index < len(node.inputs) else None
    if isinstance(current, gs.Constant) and len(current.outputs) == 1 and current.outputs[0] is node:
        set_values(current, values)
        return current
    const = gs.Constant(
        _fresh_name(
            graph,
            current.name if current is not None and current.name else base or f"{node.name}_input{index}",
        ),
        np.ascontiguousarray(values),
    )
    if current is None:
        while len(node.inputs) < index:
            node.inputs.append(gs.Variable.empty())
        node.inputs.append(const)
    else:
        node.inputs[index] = const
    return const


def effective_bias(node: gs.Node, p: Producer) -> np.ndarray | None:
    """The per-channel constant the producer adds to its output (Gemm: beta·C), or None."""
    if p.bias is None:
        return None
    b = np.asarray(node.inputs[2].values, dtype=np.float64).reshape(-1)
    return b * float(node.attrs.get("beta", 1.0)) if p.op == "Gemm" else b


def write_bias(graph: gs.Graph, node: gs.Node, p: Producer, bias: np.ndarray, dtype: np.dtype) -> None:
    """Make the producer add ``bias`` (n,) to its output, adding a bias input if it had none."""
    bias = np.asarray(bias, dtype=np.float64)
    if p.op == "Gemm":
        beta = float(node.attrs.get("beta", 1.0))
        if beta == 0.0 or p.bias is None:  # a new C, or one that was multiplied by 0
            beta = 1.0
            node.attrs["beta"] = beta
        shape = node.inputs[2].shape if p.bias is not None else (len(bias),)
        write_input(graph, node, 2, (bias / beta).reshape(shape).astype(dtype), f"{node.name}_C")
        return
    if p.op != "Conv":
        raise ValueError(f"cannot add a bias to {p.op} {node.name}")
    write_input(graph, node, 2, bias.astype(dtype), f"{node.name}_bias")
