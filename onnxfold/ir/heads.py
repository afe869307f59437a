"""Attention heads merged with the batch axis, given an axis of their own (values unchanged).

torch's ``nn.MultiheadAttention`` splits q, k and v [L, B, H·D] into heads as
``Reshape → [L, B·H, D]``: the batch and head axes become one, so no channel axis survives and the
analysis cannot follow the heads. From there the attention runs on 3-D tensors ([B·H, L, D]
through bmm, ``need_weights`` or torch before 2.0) or is viewed back as [B, H, L, D] (the SDPA
path), and leaves through a Reshape ([L·B, H·D] for the output projection, [B, H, L, S] for the
averaged weights).

Row-major order makes [L, B, H·D], [L, B·H, D] and [L, B, H, D] one sequence of elements, so the
first Reshape may give [L, B, H, D] instead (target ``[0, 0, H, D]``: both leading dims copied, so
a free batch keeps its symbol where −1 made one up), and every tensor computed
from it up to the Reshapes that leave (the *region*) gains an axis: the merged one becomes (B, H).
That changes nothing an op in the region computes when each op is indifferent to the split:
Transpose (its permutation moves the two axes together), MatMul (both operands in the region, the
merged axis a batch axis of both), Softmax over the last axis, elementwise ops whose other operand
is too short to reach the merged axis by broadcasting, Cast; and a Reshape that leaves sees the
same elements in the same order. Any other reader, a graph output, or a subgraph reading the
region leaves the attention as it was. Shapes must be inferred; the region's are inferred again.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxfold.ir.edit import Names, transpose_perm

UNARY = ("Cast", "Exp", "Neg", "Sqrt", "Relu", "Tanh", "Sigmoid", "Erf", "Abs", "Reciprocal")
BINARY = ("Add", "Sub", "Mul", "Div", "Pow")
SOFTMAX = ("Softmax", "LogSoftmax")


def _seed(node: gs.Node, outputs: set[str]) -> int | None:
    """H when ``node`` is ``Reshape(x [L, B, H·D] → [L, B·H, D])`` (static H·D and D, the same L)."""
    if node.op != "Reshape" or len(node.inputs) < 2 or len(node.outputs) != 1:
        return None
    xs, ms = node.inputs[0].shape, node.outputs[0].shape
    if xs is None or ms is None or len(xs) != 3 or len(ms) != 3 or node.outputs[0].name in outputs:
        return None
    width, unit = xs[2], ms[2]
    static = all(isinstance(d, (int, np.integer)) and d > 0 for d in (width, unit))
    if not static or width % unit or width == unit or xs[0] is None or ms[0] != xs[0]:
        return None
    return int(width // unit)


def _rank(t: gs.Tensor) -> int | None:
    return len(t.shape) if t.shape is not None else None


def _moved(node: gs.Node, m: int, rank: int) -> int | None:
    """The merged axis of ``node``'s output when its input's is ``m`` (of ``rank``), or None when the
    op does not allow the lift (operands are checked once the region is known)."""
    if node.op == "Transpose":
        perm = transpose_perm(node, rank)
        return perm.index(m) if perm is not None else None
    if node.op in SOFTMAX:  # the default axis differs before opset 13: only an explicit one is read
        axis = int(node.attrs["axis"]) if "axis" in node.attrs else None
        return m if axis is not None and (axis + rank if axis < 0 else axis) == rank - 1 != m else None
    if node.op in UNARY or node.op in BINARY:
        return m
    return m if node.op == "MatMul" and m < rank - 2 else None


def _fits(x: gs.Tensor, m: int, rank: int, axis: dict[str, int]) -> bool:
    """Whether operand ``x`` is indifferent to the lift: in the region with the same merged axis and
    rank, or (elementwise) too short to reach that axis by broadcasting."""
    if x.name in axis:
        return axis[x.name] == m and _rank(x) == rank
    r = _rank(x)  # a constant's from its shape: its values (perhaps external) are never read here
    return r is not None and r <= rank - m - 1


class _Components:
    """Union-find over tensor names."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, a: str) -> str:
        self.parent.setdefault(a, a)
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: str, b: str) -> None:
        self.parent[self.find(a)] = self.find(b)


def lift_merged_heads(graph: gs.Graph) -> int:
    """Give merged batch·head axes their own head axis (see the module docstring); returns how many
    head splits were lifted."""
    outputs = {t.name for t in graph.outputs}
    outputs |= {t.name for sub in graph.subgraphs(recursive=True) for n in sub.nodes for t in n.inputs}
    seeds = {n.name: (n, h) for n in graph.nodes if (h := _seed(n, outputs)) is not None}
    axis: dict[str, int] = {}
    tensors: dict[str, gs.Tensor] = {}
    nodes: dict[str, gs.Node] = {}
    bad: set[str] = set()
    queue = []
    split: dict[str, tuple] = {}  # tensor -> (B, H): the merged axis's two factors
    for node, heads in seeds.values():
        out = node.outputs[0]
        axis[out.name], tensors[out.name], split[out.name] = 1, out, (node.inputs[0].shape[1], heads)
        queue.append(out)
    while queue:
        t = queue.pop()
        m, rank = axis[t.name], _rank(t)
        if t.name in outputs or rank is None:
            bad.add(t.name)
            continue
        for node in t.outputs:
            if node.name in nodes or (node.op == "Reshape" and node.inputs[0] is t):
                continue  # a Reshape reading the region leaves it
            one = len(node.outputs) == 1 and (node.domain or "") in ("", "ai.onnx")
            at = _moved(node, m, rank) if one else None
            if at is None:
                bad.add(t.name)
                continue
            nodes[node.name], out = node, node.outputs[0]
            if out.name in axis:
                bad |= {out.name} if axis[out.name] != at or split[out.name] != split[t.name] else set()
            else:
                axis[out.name], tensors[out.name], split[out.name] = at, out, split[t.name]
                queue.append(out)
    parts = _Components()
    for node in nodes.values():
        out = node.outputs[0]
        for x in node.inputs:
            if x.name in axis:
                parts.union(x.name, out.name)
        rank, m = _rank(out) or 0, axis[out.name]
        if node.op == "MatMul" and not all(
            x.name in axis and _fits(x, m, rank, axis) for x in node.inputs[:2]
        ):
            bad.add(out.name)
        if node.op in BINARY and not all(_fits(x, m, rank, axis) for x in node.inputs):
            bad.add(out.name)
    for name, t in tensors.items():
        for reader in t.outputs:
            if reader.op == "Reshape" and reader.inputs[0] is t and not int(reader.attrs.get("allowzero", 0)):
                target = reader.inputs[1]
                if isinstance(target, gs.Constant) and 0 in np.asarray(target.values).reshape(-1).tolist():
                    bad.add(name)  # a 0 copies the input dim at its index, which the lift moves
    for node, _ in seeds.values():  # a split of heads already lifted is only read, never lifted again
        if node.inputs[0].name in axis:
            bad.add(node.outputs[0].name)
    spoiled = {parts.find(name) for name in bad}
    fresh = Names(graph)
    lifted = 0
    for node, heads in seeds.values():
        if parts.find(node.outputs[0].name) in spoiled:
            continue
        unit = int(node.outputs[0].shape[2])
        node.inputs[1] = gs.Constant(fresh(f"{node.name}_heads"), np.asarray([0, 0, heads, unit], np.int64))
        node.attrs.pop("allowzero", None)
        lifted += 1
    for node in nodes.values():
        if parts.find(node.outputs[0].name) in spoiled:
            continue
        m = axis.get(node.inputs[0].name)
        if node.op == "Transpose" and m is not None:
            perm = transpose_perm(node, _rank(node.inputs[0]) or 0) or []
            node.attrs["perm"] = [a for p in perm for a in ((p, p + 1) if p == m else (p + (p > m),))]
        elif node.op in SOFTMAX:
            node.attrs["axis"] = -1
    for name, t in tensors.items():  # the shapes with the merged axis split (inferred again later)
        if parts.find(name) not in spoiled:
            m, dims = axis[name], list(t.shape) if t.shape is not None else None
            t.shape = None if dims is None else [*dims[:m], *split[name], *dims[m + 1 :]]
    return lifted
