"""The op table: how channels flow through each ONNX op, and the walk that applies it.

Rules, by kind (method.md §6.1):

* producer  Conv/ConvTranspose (group 1), Gemm, MatMul with a constant 2-D weight: a new space
  on the output channel axis; weight rows and bias join it as ``average`` members; the input's
  channels join the weight's input axis as ``sum`` members.
* pass-through  element-wise unary ops, pooling, Pad/Resize on other axes, Transpose, Squeeze/
  Unsqueeze, reductions/softmax over other axes, BatchNormalization and InstanceNormalization
  (their per-channel vectors are ``average`` members), depthwise Conv (filters averaged).
* join  Add/Sub/Mul/Div/Max/Min/Sum/Mean/PRelu: tracked inputs are united (same assignment);
  a constant with one value per channel joins as an ``average`` member; Concat lays its inputs'
  segments side by side (offsets); Split on the channel axis at segment bounds hands each output its
  segments (the constant split sizes become ``shape`` members); Flatten/Reshape from the channel axis
  onward turns each channel into a block of H·W features.
* barrier  anything else, graph outputs, ops that mix or normalise over the channel axis,
  grouped Conv, weights that are computed or shared with an untracked use.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import onnx_graphsurgeon as gs

from onnxfold.analysis.groups import (
    AVERAGE,
    SHAPE,
    SUM,
    ChannelGroup,
    Layout,
    Member,
    Segment,
    Space,
    UnionFind,
)

UNARY = {
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Erf",
    "Elu",
    "Selu",
    "Celu",
    "Softplus",
    "Softsign",
    "Gelu",
    "Mish",
    "Exp",
    "Log",
    "Sqrt",
    "Neg",
    "Abs",
    "Reciprocal",
    "Sin",
    "Cos",
    "Floor",
    "Ceil",
    "Round",
    "Sign",
    "ThresholdedRelu",
    "Identity",
    "Dropout",
    "Cast",
    "Swish",
}
POOL = {"MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"}
BINARY = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "PRelu", "Pow"}
REDUCE = {
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
}
SOFTMAX = {"Softmax", "LogSoftmax", "Hardmax"}
# elementwise ops whose output dims are the broadcast of their inputs' (Analysis.known_dim)
KNOWN_DIM_OPS = {
    "Cast",
    "Not",
    "Neg",
    "Identity",
    "Where",
    "And",
    "Or",
    "Xor",
    "Equal",
    "Less",
    "LessOrEqual",
    "Greater",
    "GreaterOrEqual",
    "Add",
    "Sub",
    "Mul",
    "Div",
}


@dataclass(frozen=True)
class ShapeEntry:
    """One entry of a shape tensor: a known ``value`` held at ``const[index]``, or (``value`` None)
    a copy of input dim ``dim_of`` computed at run time."""

    value: int | None
    const: gs.Constant | None
    index: int
    dim_of: int | None = None
    path: tuple[gs.Tensor, ...] = ()  # tensors computed from ``const`` on the way to the Reshape


def const_values(t: gs.Tensor) -> np.ndarray | None:
    return np.asarray(t.values) if isinstance(t, gs.Constant) else None


def tensor_shape(t: gs.Tensor) -> tuple | None:
    shape = t.shape
    return tuple(shape) if shape is not None else None


def fill_value(t: gs.Tensor, depth: int = 0) -> float | None:
    """The one value every entry of ``t`` holds, when that is evident: a constant of equal entries,
    ``ConstantOfShape`` (value 0 by default), or a Cast/Mul of such. None otherwise."""
    if isinstance(t, gs.Constant):
        values = np.asarray(t.values).reshape(-1)
        return float(values[0]) if values.size and (values == values[0]).all() else None
    if depth > 4 or len(t.inputs) != 1:
        return None
    node = t.inputs[0]
    if node.op == "ConstantOfShape":
        value = node.attrs.get("value")
        return float(np.asarray(value.values).reshape(-1)[0]) if isinstance(value, gs.Constant) else 0.0
    if node.op == "Cast":
        return fill_value(node.inputs[0], depth + 1)
    if node.op == "Mul" and len(node.inputs) == 2:
        a, b = (fill_value(i, depth + 1) for i in node.inputs)
        return a * b if a is not None and b is not None else None
    return None


def harmless_shape_use(node: gs.Node, chain: set[str]) -> bool:
    """A use of a traced shape vector that cannot see its rewritten channel entry: ``Shape`` reads only
    its length; ``Equal`` against −1 feeding a ``Where`` of the chain is torch's expand(−1 → keep)
    test, and a channel count is never −1."""
    if node.op == "Shape":
        return True
    if node.op == "Equal" and any(fill_value(i) == -1 for i in node.inputs):
        return all(u.op == "Where" and u.outputs[0].name in chain for u in node.outputs[0].outputs)
    return False


def static_dims(dims) -> bool:
    return dims is not None and all(isinstance(d, (int, np.integer)) and d >= 0 for d in dims)


class Analysis:
    """One walk over a graph in topological order, building spaces, layouts and members."""

    def __init__(self, graph: gs.Graph):
        self.graph = graph
        self.uf = UnionFind()
        self.spaces: list[Space] = []
        self.layouts: dict[str, Layout] = {}
        self.members: dict[int, list[Member]] = defaultdict(list)
        self.blocks: dict[int, list[str]] = defaultdict(list)
        self.producers: dict[int, list[str]] = defaultdict(list)
        self.consumers: dict[int, list[str]] = defaultdict(list)
        # (tensor, axis) -> ids of the nodes that registered that axis of the tensor
        self.member_uses: dict[tuple[str, int], set[int]] = defaultdict(set)
        self.shape_chains: dict[str, set[str]] = defaultdict(set)  # shape const -> tensors computed from it
        # space -> (node, attribute) pairs counting its units (num_heads of fused attention ops)
        self.unit_attrs: dict[int, list[tuple[str, str]]] = defaultdict(list)

    # ----------------------------------------------------------------- spaces and layouts
    def new_space(self, n: int, origin: str, producer: bool = True) -> int:
        sid = self.uf.add()
        self.spaces.append(Space(n, origin, producer))
        if producer:
            self.producers[sid].append(origin)
        return sid

    def block(self, layout: Layout | None, reason: str) -> None:
        if layout is None:
            return
        for seg in layout.segments:
            if reason not in self.blocks[seg.space]:
                self.blocks[seg.space].append(reason)

    def block_inputs(self, node: gs.Node, reason: str) -> None:
        for t in node.inputs:
            self.block(self.layouts.get(t.name), reason)

    def layout(self, t: gs.Tensor) -> Layout | None:
        return self.layouts.get(t.name) if t is not None else None

    def set_layout(self, t: gs.Tensor, layout: Layout | None) -> None:
        if layout is not None and t is not None and t.name:
            self.layouts[t.name] = layout

    def rank_of(self, t: gs.Tensor) -> int | None:
        lay = self.layout(t)
        if lay is not None:
            return lay.rank
        shape = tensor_shape(t)
        return len(shape) if shape is not None else None

    def add_member(
        self,
        space: int,
        tensor: gs.Constant,
        axis: int,
        role: str,
        node: gs.Node,
        offset: int = 0,
        block: int = 1,
        kind: str = "",
        feature: bool = True,
    ) -> None:
        self.members[space].append(Member(tensor.name, axis, role, offset, block, node.name, kind, feature))
        self.member_uses[(tensor.name, axis)].add(id(node))

    def add_shape_member(
        self, seg: Segment, const: gs.Constant, index: int, node: gs.Node, chain: Sequence[gs.Tensor] = ()
    ) -> None:
        """Entry ``index`` of shape vector ``const`` counts this segment's channels (in its blocks).
        ``chain``: tensors computed from ``const`` on the way to ``node`` (Unsqueeze, Concat …); all
        their uses must be accounted for too, or the rewrite would reach an untracked node."""
        self.members[seg.space].append(
            Member(const.name, 0, SHAPE, index, seg.block, node.name, "shape", False, seg.start)
        )
        uses = self.member_uses[(const.name, 0)]
        uses.add(id(node))
        for t in chain:
            uses.update(id(n) for n in t.inputs)
            self.shape_chains[const.name].add(t.name)

    def add_consumer(self, layout: Layout, weight: gs.Constant, axis: int, node: gs.Node) -> None:
        for seg in layout.segments:
            self.add_member(seg.space, weight, axis, SUM, node, seg.start, seg.block, "weight")
            self.consumers[seg.space].append(node.name)

    # ----------------------------------------------------------------- the walk
    def run(self) -> list[ChannelGroup]:
        graph = self.graph
        graph.toposort()
        for node in graph.nodes:
            handler = getattr(self, "op_" + node.op, None)
            if (node.domain or "") not in ("", "ai.onnx"):
                handler = (
                    self.fused_attention
                    if (node.domain, node.op) == ("com.microsoft", "MultiHeadAttention")
                    else None
                )
            if handler is None:
                if node.op in UNARY:
                    handler = self.unary
                elif node.op in POOL:
                    handler = self.pool
                elif node.op in BINARY:
                    handler = self.binary
                elif node.op in REDUCE:
                    handler = self.reduce
                elif node.op in SOFTMAX:
                    handler = self.softmax
            if node.attrs and any(isinstance(v, gs.Graph) for v in node.attrs.values()):
                self.block_subgraph_uses(node)
            if handler is None:
                self.block_inputs(node, f"reaches unsupported op {node.op} ({node.name})")
                continue
            handler(node)
        for t in graph.outputs:
            self.block(self.layouts.get(t.name), f"reaches graph output {t.name}")
        return self.finish()

    def block_subgraph_uses(self, node: gs.Node) -> None:
        for sub in node.attrs.values():
            if not isinstance(sub, gs.Graph):
                continue
            for inner in sub.nodes:
                for t in inner.inputs:
                    self.block(self.layouts.get(t.name), f"used inside a subgraph of {node.op} ({node.name})")
            for inner_graph in sub.subgraphs(recursive=True):
                for inner in inner_graph.nodes:
                    for t in inner.inputs:
                        self.block(
                            self.layouts.get(t.name), f"used inside a subgraph of {node.op} ({node.name})"
                        )

    # ----------------------------------------------------------------- producers
    def op_Conv(self, node: gs.Node) -> None:
        x, w = node.inputs[0], node.inputs[1]
        b = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
        lay = self.layout(x)
        if not isinstance(w, gs.Constant) or (b is not None and not isinstance(b, gs.Constant)):
            self.block(lay, f"weight of {node.op} {node.name} is computed, not a constant")
            return
        out_c, in_per_group = w.shape[0], w.shape[1]
        group = int(node.attrs.get("group", 1))
        rank = self.rank_of(x) or len(w.shape)
        if lay is not None and (lay.axis != 1 or any(s.block != 1 for s in lay.segments)):
            self.block(lay, f"{node.op} {node.name} reads channels on an axis other than 1")
            lay = None
        if group == 1:
            space = self.new_space(out_c, node.name)
            self.add_member(space, w, 0, AVERAGE, node, kind="weight")
            if b is not None:
                self.add_member(space, b, 0, AVERAGE, node, kind="bias")
            if lay is not None:
                self.add_consumer(lay, w, 1, node)
            self.set_layout(node.outputs[0], Layout(rank, 1, (Segment(space, 0, out_c),)))
            return
        c_in = in_per_group * group
        if group == c_in == out_c and in_per_group == 1 and lay is not None:
            # depthwise: channel c is filtered on its own; filters and bias follow the channel (averaged)
            for seg in lay.segments:
                self.add_member(seg.space, w, 0, AVERAGE, node, seg.start, 1, "depthwise")
                if b is not None:
                    self.add_member(seg.space, b, 0, AVERAGE, node, seg.start, 1, "bias")
            self.set_layout(node.outputs[0], lay)
            return
        self.block(lay, f"grouped {node.op} {node.name} (group={group}) mixes channels within groups")
        space = self.new_space(out_c, node.name)
        self.blocks[space].append(f"produced by grouped {node.op} {node.name} (group={group})")
        self.set_layout(node.outputs[0], Layout(rank, 1, (Segment(space, 0, out_c),)))

    def op_ConvTranspose(self, node: gs.Node) -> None:
        x, w = node.inputs[0], node.inputs[1]
        b = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
        lay = self.layout(x)
        group = int(node.attrs.get("group", 1))
        if not isinstance(w, gs.Constant) or (b is not None and not isinstance(b, gs.Constant)) or group != 1:
            self.block(lay, f"{node.op} {node.name} has a computed weight or group={group}")
            return
        if lay is not None and (lay.axis != 1 or any(s.block != 1 for s in lay.segments)):
            self.block(lay, f"{node.op} {node.name} reads channels on an axis other than 1")
            lay = None
        out_c = w.shape[1]
        space = self.new_space(out_c, node.name)
        self.add_member(space, w, 1, AVERAGE, node, kind="weight")
        if b is not None:
            self.add_member(space, b, 0, AVERAGE, node, kind="bias")
        if lay is not None:
            self.add_consumer(lay, w, 0, node)
        self.set_layout(
            node.outputs[0], Layout(self.rank_of(x) or len(w.shape), 1, (Segment(space, 0, out_c),))
        )

    def op_Gemm(self, node: gs.Node) -> None:
        a, w = node.inputs[0], node.inputs[1]
        c = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
        lay = self.layout(a)
        trans_a, trans_b = int(node.attrs.get("transA", 0)), int(node.attrs.get("transB", 0))
        if not isinstance(w, gs.Constant) or isinstance(a, gs.Constant):
            self.block(lay, f"Gemm {node.name} has no constant weight B")
            self.block(self.layout(w), f"Gemm {node.name} multiplies two activations")
            return
        out_axis = 0 if trans_b else 1
        n = w.shape[out_axis]
        if lay is not None and lay.axis != (0 if trans_a else 1):
            self.block(lay, f"Gemm {node.name} contracts an axis other than the channel axis")
            lay = None
        space = self.new_space(n, node.name)
        self.add_member(space, w, out_axis, AVERAGE, node, kind="weight")
        if c is not None:
            if not isinstance(c, gs.Constant):
                self.blocks[space].append(f"Gemm {node.name} adds a computed C")
            elif int(np.prod(c.shape)) > 1:
                if c.shape[-1] == n:
                    self.add_member(space, c, len(c.shape) - 1, AVERAGE, node, kind="bias")
                else:
                    self.blocks[space].append(
                        f"Gemm {node.name}: C of shape {tuple(c.shape)} is not per-channel"
                    )
        if lay is not None:
            self.add_consumer(lay, w, 1 - out_axis, node)
        self.set_layout(node.outputs[0], Layout(2, 1, (Segment(space, 0, n),)))

    def op_MatMul(self, node: gs.Node) -> None:
        a, w = node.inputs[0], node.inputs[1]
        lay = self.layout(a)
        if not isinstance(w, gs.Constant) and not isinstance(a, gs.Constant):
            self.batched_matmul(node)
            return
        if not isinstance(w, gs.Constant) or len(w.shape) != 2 or isinstance(a, gs.Constant):
            self.block(lay, f"MatMul {node.name} has no constant 2-D weight")
            self.block(self.layout(w), f"MatMul {node.name} contracts this tensor with a non-constant")
            return
        rank = self.rank_of(a)
        if rank is None or rank < 2:
            self.block(lay, f"MatMul {node.name}: input rank unknown or < 2")
            return
        if lay is not None and lay.axis != rank - 1:
            self.block(lay, f"MatMul {node.name} contracts an axis other than the channel axis")
            lay = None
        n = w.shape[1]
        space = self.new_space(n, node.name)
        self.add_member(space, w, 1, AVERAGE, node, kind="weight")
        if lay is not None:
            self.add_consumer(lay, w, 0, node)
        self.set_layout(node.outputs[0], Layout(rank, rank - 1, (Segment(space, 0, n),)))

    def batched_matmul(self, node: gs.Node) -> None:
        """MatMul of two activations (attention: q·kᵀ, probs·v): channels on a *batch* axis (heads)
        pass through, and both operands' units must share one assignment (head h meets head h)."""
        a, b = node.inputs[0], node.inputs[1]
        ranks = [self.rank_of(a), self.rank_of(b)]
        tracked = [
            (t, self.layouts[t.name], r) for t, r in zip((a, b), ranks, strict=True) if t.name in self.layouts
        ]
        if not tracked:
            return
        if None in ranks or min(ranks) < 3:
            for _, lay, _ in tracked:
                self.block(lay, f"MatMul {node.name} contracts channels with another activation")
            return
        out_rank = max(ranks)
        axes = {lay.axis + out_rank - r for _, lay, r in tracked}
        if len(tracked) == 2 and len(axes) == 1:
            tracked = self.align_units(node, tracked)
        ref = tracked[0][1]
        aligned = len(axes) == 1 and all(
            [(sg.start, sg.n, sg.block) for sg in lay.segments]
            == [(sg.start, sg.n, sg.block) for sg in ref.segments]
            for _, lay, _ in tracked
        )
        out_axis = axes.pop() if aligned else -1
        if not aligned or out_axis >= out_rank - 2:
            for _, lay, _ in tracked:
                self.block(lay, f"MatMul {node.name} contracts or mixes the channel axis of an activation")
            return
        for t, r in zip((a, b), ranks, strict=True):
            if t.name in self.layouts:
                continue
            shape = tensor_shape(t)
            ax = out_axis - (out_rank - r)
            if ax >= 0 and (shape is None or shape[ax] != 1):
                self.block(ref, f"MatMul {node.name} pairs channels with untracked tensor {t.name}")
                return
        for _, lay, _ in tracked[1:]:
            for s_ref, sg in zip(ref.segments, lay.segments, strict=True):
                self.uf.union(s_ref.space, sg.space)
        self.set_layout(node.outputs[0], Layout(out_rank, out_axis, ref.segments))

    def op_Attention(self, node: gs.Node) -> None:
        self.fused_attention(node)

    def fused_attention(self, node: gs.Node) -> None:
        """Attention fused into one op on 3-D [B, S, heads·head_dim] inputs: ONNX ``Attention``
        (opset 23: ``q_num_heads``/``kv_num_heads``) and com.microsoft ``MultiHeadAttention``
        (``num_heads``). q, k and v are coarsened to whole heads and share one assignment (head h
        of q meets head h of k and v); the output carries v's head blocks to the output projection;
        the head-count attributes lose n − k when the group folds. Grouped-query heads, past/present
        key-value tensors, a packed bias and other outputs keep the heads as they are (blocked)."""
        if node.op == "Attention":
            names = ["q_num_heads", "kv_num_heads"]
            extras, outputs = node.inputs[3:4], node.outputs[1:]
            blockers = [t for t in node.inputs[4:] if t.name]
        else:
            names = ["num_heads"]
            extras, outputs = node.inputs[4:6], node.outputs[1:]
            blockers = [t for i, t in enumerate(node.inputs[3:], 3) if t.name and i in (3, 6, 7, 8)]
        counts = [node.attrs.get(a) for a in names]
        q, k, v = (node.inputs[i] if len(node.inputs) > i else None for i in range(3))
        lays = [self.layout(t) for t in (q, k, v)]
        reason = None
        if None in counts or len(set(counts)) != 1:
            reason = f"{node.op} {node.name}: heads without equal query/key-value counts (grouped-query)"
        elif any(lay is None for lay in lays) or any(lay.rank != 3 or lay.axis != 2 for lay in lays):
            reason = f"{node.op} {node.name}: q, k and v are not all tracked [B, S, heads·head_dim] tensors"
        elif blockers:
            reason = f"{node.op} {node.name} takes {blockers[0].name} (bias or past key/value) per head"
        elif any(t.name and (t.outputs or t in self.graph.outputs) for t in outputs):
            reason = f"{node.op} {node.name} returns present key/value (or scores) per head"
        elif any(self.layout(t) is not None for t in extras):
            reason = f"{node.op} {node.name} takes a mask computed from these channels"
        if reason is None:
            heads = int(counts[0])
            units = [lay.length // heads if lay.length % heads == 0 else 0 for lay in lays]
            if 0 in units or any(len(lay.segments) != len(lays[0].segments) for lay in lays):
                reason = f"{node.op} {node.name}: channel counts are not whole heads"
        if reason is not None:
            self.block_inputs(node, reason)
            return
        for lay, unit in zip(lays, units, strict=True):
            reason = f"{node.op} {node.name} splits heads across groups"
            if not self.coarsen_segments(lay, unit, node, reason):
                self.block_inputs(node, reason)
                return
        lays = [self.layout(t) for t in (q, k, v)]
        for lay in lays[1:]:
            for s_ref, sg in zip(lays[0].segments, lay.segments, strict=True):
                self.uf.union(s_ref.space, sg.space)
        for sg in lays[0].segments:
            self.unit_attrs[sg.space] += [(node.name, a) for a in names]
        self.set_layout(node.outputs[0], Layout(3, 2, lays[2].segments))

    def align_units(self, node: gs.Node, tracked: list) -> list:
        """Grouped-query attention: q has H heads (block 1), k/v carry kv heads each repeated for
        a group of H/kv query heads (block H/kv). Coarsen q to whole query groups so both sides
        count the same units: one KV head plus its query group folds as one."""
        (ta, la, ra), (tb, lb, rb) = tracked
        if len(la.segments) != 1 or len(lb.segments) != 1 or la.length != lb.length:
            return tracked
        sa, sb = la.segments[0], lb.segments[0]
        if sa.block == sb.block:
            return tracked
        fine, coarse = (sa, sb) if sa.block < sb.block else (sb, sa)
        if coarse.block % fine.block or not self.coarsen(fine.space, coarse.block // fine.block, node):
            return tracked
        return [(t, self.layouts[t.name], r) for t, _, r in tracked]

    def op_Expand(self, node: gs.Node) -> None:
        """Expand that broadcasts other axes (repeat_kv of grouped-query attention) keeps channels."""
        lay = self.layout(node.inputs[0])
        if lay is None:
            return
        entries = self.target_entries(node.inputs[1])
        shape = tensor_shape(node.inputs[0])
        if entries is None:
            self.block(lay, f"Expand {node.name} has a shape that cannot be traced")
            return
        out_rank = max(lay.rank, len(entries))
        axis = lay.axis + out_rank - lay.rank
        pos = axis - (out_rank - len(entries))
        if pos >= 0:
            e = entries[pos]
            if e.value == lay.length and e.const is not None:
                for seg in lay.segments:
                    self.add_shape_member(seg, e.const, e.index, node, e.path)
            elif not (
                e.value == 1
                or (
                    e.dim_of is not None
                    and e.dim_of == pos
                    and shape is not None
                    and len(shape) == len(entries)
                )
            ):
                self.block(lay, f"Expand {node.name} expands the channel axis")
                return
        self.passthrough(node, Layout(out_rank, axis, lay.segments))

    def op_Slice(self, node: gs.Node) -> None:
        lay = self.layout(node.inputs[0])
        if lay is None:
            return
        if not self.only_first_input_tracked(node):
            return
        axes_t = node.inputs[3] if len(node.inputs) > 3 and node.inputs[3].name else None
        if axes_t is None:
            starts = node.inputs[1] if len(node.inputs) > 1 else None
            n_axes = len(np.asarray(starts.values).reshape(-1)) if isinstance(starts, gs.Constant) else None
            axes = list(range(n_axes)) if n_axes is not None else None
        else:
            v = const_values(axes_t)
            axes = None if v is None else [int(x) + lay.rank if x < 0 else int(x) for x in v.reshape(-1)]
        if axes == [lay.axis] and self.slice_channels(node, lay):
            return
        if axes is None or lay.axis in axes:
            self.block(lay, f"Slice {node.name} slices the channel axis (or its axes are unknown)")
            return
        self.passthrough(node)

    def slice_channels(self, node: gs.Node, lay: Layout) -> bool:
        """A Slice taking channels [lo, hi) with constant bounds (a fused qkv or gate_up projection cut
        apart, Phi-3): a cut inside a group partitions it, as for Split, and the output carries the
        segments inside the range. The bounds are rewritten: ``start`` loses the folded channels of
        every segment before it, ``end`` those of every segment up to it (an end at or past the
        channel count stays, it means "to the end")."""
        starts_t, ends_t = node.inputs[1], node.inputs[2]
        steps_t = node.inputs[4] if len(node.inputs) > 4 and node.inputs[4].name else None
        if not isinstance(starts_t, gs.Constant) or not isinstance(ends_t, gs.Constant):
            return False
        if steps_t is not None and (
            not isinstance(steps_t, gs.Constant) or int(np.asarray(steps_t.values)[0]) != 1
        ):
            return False
        lo, hi, length = int(np.asarray(starts_t.values)[0]), int(np.asarray(ends_t.values)[0]), lay.length
        if lo < 0 or hi <= lo or lo >= length:
            return False
        open_end = hi >= length
        hi = min(hi, length)
        lay = self.cut_at(node, [lo, hi])
        if lay is None:
            return True
        for seg in lay.segments:
            if seg.start + seg.length <= lo:
                self.add_shape_member(seg, starts_t, 0, node)
            if not open_end and seg.start + seg.length <= hi:
                self.add_shape_member(seg, ends_t, 0, node)
        segs = tuple(
            Segment(sg.space, sg.start - lo, sg.n, sg.block) for sg in lay.segments if lo <= sg.start < hi
        )
        self.passthrough(node, Layout(lay.rank, lay.axis, segs))
        return True

    # ----------------------------------------------------------------- pass-through
    def passthrough(self, node: gs.Node, lay: Layout | None = None) -> None:
        lay = lay if lay is not None else self.layout(node.inputs[0])
        if lay is None:
            return
        self.set_layout(node.outputs[0], lay)
        for extra in node.outputs[1:]:
            if extra.outputs:
                self.block(lay, f"{node.op} {node.name} has a used secondary output")

    def only_first_input_tracked(self, node: gs.Node) -> bool:
        for t in node.inputs[1:]:
            if t.name and t.name in self.layouts:
                self.block_inputs(node, f"{node.op} {node.name} takes a tracked tensor as a parameter")
                return False
        return True

    def unary(self, node: gs.Node) -> None:
        if node.op == "Dropout" and len(node.outputs) > 1 and node.outputs[1].outputs:
            self.block_inputs(node, f"Dropout {node.name} mask is used")
            return
        if self.only_first_input_tracked(node):
            self.passthrough(node)

    def op_Clip(self, node: gs.Node) -> None:
        for t in node.inputs[1:]:
            if t.name and not (isinstance(t, gs.Constant) and t.values.size == 1):
                self.block_inputs(node, f"Clip {node.name} has non-scalar bounds")
                return
        self.passthrough(node)

    def pool(self, node: gs.Node) -> None:
        lay = self.layout(node.inputs[0])
        if lay is not None and lay.axis != 1:
            self.block(lay, f"{node.op} {node.name} pools over the channel axis")
            return
        self.passthrough(node)

    def op_BatchNormalization(self, node: gs.Node) -> None:
        lay = self.layout(node.inputs[0])
        if lay is None:
            return
        params = node.inputs[1:5]
        if (
            lay.axis != 1
            or not all(isinstance(p, gs.Constant) for p in params)
            or any(o.outputs for o in node.outputs[1:])
            or node.attrs.get("training_mode", 0)
        ):
            self.block(lay, f"BatchNormalization {node.name} is not an inference BN on axis 1 with constants")
            return
        kinds = ("bn_scale", "bn_bias", "bn_mean", "bn_var")
        for seg in lay.segments:
            for p, kind in zip(params, kinds, strict=True):
                self.add_member(
                    seg.space,
                    p,
                    0,
                    AVERAGE,
                    node,
                    seg.start,
                    seg.block,
                    kind,
                    feature=kind in ("bn_scale", "bn_bias"),
                )
        self.set_layout(node.outputs[0], lay)

    def op_InstanceNormalization(self, node: gs.Node) -> None:
        lay = self.layout(node.inputs[0])
        if lay is None:
            return
        params = node.inputs[1:3]
        if lay.axis != 1 or not all(isinstance(p, gs.Constant) for p in params):
            self.block(lay, f"InstanceNormalization {node.name} is not on axis 1 with constants")
            return
        for seg in lay.segments:
            for p, kind in zip(params, ("norm_scale", "norm_bias"), strict=True):
                self.add_member(seg.space, p, 0, AVERAGE, node, seg.start, seg.block, kind)
        self.set_layout(node.outputs[0], lay)

    def op_LayerNormalization(self, node: gs.Node) -> None:
        lay = self.layout(node.inputs[0])
        if lay is None:
            return
        axis = int(node.attrs.get("axis", -1))
        axis = axis + lay.rank if axis < 0 else axis
        if lay.axis >= axis or not self.only_first_input_tracked(node):
            self.block(lay, f"{node.op} {node.name} normalises over the channel axis")
            return
        if any(o.outputs for o in node.outputs[1:]):
            self.block(lay, f"{node.op} {node.name} has used statistics outputs")
            return
        self.passthrough(node)

    def op_GroupNormalization(self, node: gs.Node) -> None:
        self.block_inputs(node, f"GroupNormalization {node.name} normalises over groups of channels")

    def op_Pad(self, node: gs.Node) -> None:
        lay = self.layout(node.inputs[0])
        if lay is None:
            return
        pads = node.inputs[1] if len(node.inputs) > 1 else None
        pads_v = const_values(pads) if pads is not None else np.asarray(node.attrs.get("pads", []))
        axes_t = node.inputs[3] if len(node.inputs) > 3 and node.inputs[3].name else None
        axes = const_values(axes_t) if axes_t is not None else np.arange(lay.rank)
        if (
            pads_v is None
            or axes is None
            or (len(node.inputs) > 2 and node.inputs[2].name and not isinstance(node.inputs[2], gs.Constant))
        ):
            self.block(lay, f"Pad {node.name} has computed pads")
            return
        axes = [int(a) + lay.rank if a < 0 else int(a) for a in axes]
        half = len(pads_v) // 2
        for i, ax in enumerate(axes):
            if ax == lay.axis and (pads_v[i] != 0 or pads_v[i + half] != 0):
                self.block(lay, f"Pad {node.name} pads the channel axis")
                return
        self.passthrough(node)

    def op_Resize(self, node: gs.Node) -> None:
        lay = self.layout(node.inputs[0])
        if lay is None:
            return
        if node.attrs.get("axes") is not None:
            self.block(lay, f"Resize {node.name} uses axes")
            return
        scales = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
        sizes = node.inputs[3] if len(node.inputs) > 3 and node.inputs[3].name else None
        if scales is not None:
            v = const_values(scales)
            if v is None or (v.size and v[lay.axis] != 1):
                self.block(lay, f"Resize {node.name} scales the channel axis or has computed scales")
                return
        if sizes is not None:
            v = const_values(sizes)
            if v is None or len(self.graph_consumers(sizes)) != 1:
                self.block(lay, f"Resize {node.name} has computed or shared sizes")
                return
            for seg in lay.segments:
                self.add_shape_member(seg, sizes, lay.axis, node)
        self.passthrough(node)

    def op_Upsample(self, node: gs.Node) -> None:
        lay = self.layout(node.inputs[0])
        v = const_values(node.inputs[1]) if len(node.inputs) > 1 else np.asarray(node.attrs.get("scales", []))
        if lay is not None and (v is None or v[lay.axis] != 1):
            self.block(lay, f"Upsample {node.name} scales the channel axis")
            return
        self.passthrough(node)

    def op_Transpose(self, node: gs.Node) -> None:
        lay = self.layout(node.inputs[0])
        if lay is None:
            return
        perm = node.attrs.get("perm") or list(reversed(range(lay.rank)))
        self.passthrough(node, lay.with_axis(lay.rank, list(perm).index(lay.axis)))

    def _axes(self, node: gs.Node, rank: int) -> list[int] | None:
        if len(node.inputs) > 1 and node.inputs[1].name:
            v = const_values(node.inputs[1])
            if v is None:
                return None
            axes = v.reshape(-1).tolist()
        else:
            axes = node.attrs.get("axes")
            if axes is None:
                return []
        return [int(a) + rank if a < 0 else int(a) for a in axes]

    def op_Unsqueeze(self, node: gs.Node) -> None:
        lay = self.layout(node.inputs[0])
        if lay is None:
            return
        out_rank = lay.rank + len(
            node.attrs.get("axes", [])
            or (
                const_values(node.inputs[1]).reshape(-1)
                if len(node.inputs) > 1 and isinstance(node.inputs[1], gs.Constant)
                else []
            )
        )
        axes = self._axes(node, out_rank)
        if axes is None:
            self.block(lay, f"Unsqueeze {node.name} has computed axes")
            return
        kept = [i for i in range(out_rank) if i not in axes]
        self.passthrough(node, lay.with_axis(out_rank, kept[lay.axis]))

    def op_Squeeze(self, node: gs.Node) -> None:
        lay = self.layout(node.inputs[0])
        if lay is None:
            return
        axes = self._axes(node, lay.rank)
        shape = tensor_shape(node.inputs[0])
        if axes is None or (not axes and shape is None):
            self.block(lay, f"Squeeze {node.name} has unknown axes")
            return
        if not axes:
            axes = [i for i, d in enumerate(shape) if d == 1]
        if lay.axis in axes:
            self.block(lay, f"Squeeze {node.name} removes the channel axis")
            return
        new_axis = lay.axis - sum(1 for a in axes if a < lay.axis)
        self.passthrough(node, lay.with_axis(lay.rank - len(axes), new_axis))

    def reduce(self, node: gs.Node) -> None:
        lay = self.layout(node.inputs[0])
        if lay is None:
            return
        if not self.only_first_input_tracked(node):
            return
        axes = self._axes(node, lay.rank)
        if axes is None:
            self.block(lay, f"{node.op} {node.name} has computed axes")
            return
        if not axes:
            if node.attrs.get("noop_with_empty_axes", 0):
                self.passthrough(node)
                return
            axes = list(range(lay.rank))
        if lay.axis in axes:
            self.block(lay, f"{node.op} {node.name} reduces over the channel axis")
            return
        keep = int(node.attrs.get("keepdims", 1))
        if keep:
            self.passthrough(node)
        else:
            new_axis = lay.axis - sum(1 for a in axes if a < lay.axis)
            self.passthrough(node, lay.with_axis(lay.rank - len(axes), new_axis))

    def softmax(self, node: gs.Node) -> None:
        lay = self.layout(node.inputs[0])
        if lay is None:
            return
        axis = int(node.attrs.get("axis", -1 if node.op == "Softmax" else 1))
        axis = axis + lay.rank if axis < 0 else axis
        coerced = (self.graph.opset or 13) < 13  # opset < 13: normalises over all of [axis, rank)
        if axis == lay.axis or (coerced and axis < lay.axis):
            self.block(lay, f"{node.op} {node.name} normalises over the channel axis")
            return
        self.passthrough(node)

    # ----------------------------------------------------------------- joins
    def binary(self, node: gs.Node) -> None:
        inputs = [t for t in node.inputs if t.name]
        tracked = [(t, self.layouts[t.name]) for t in inputs if t.name in self.layouts]
        if not tracked:
            return
        out_rank = max((self.rank_of(t) or 0) for t in inputs)
        ref_t, ref = tracked[0]
        out_axis = ref.axis + out_rank - ref.rank
        reason = None
        aligned = True  # channels of all inputs line up, so the output still carries ref's channels
        for _t, lay in tracked[1:]:
            if lay.axis + out_rank - lay.rank != out_axis or [
                (s.start, s.n, s.block) for s in lay.segments
            ] != [(s.start, s.n, s.block) for s in ref.segments]:
                reason = f"{node.op} {node.name} combines tensors whose channels do not line up"
                aligned = False
        constants: list[tuple[gs.Constant, int]] = []
        if node.op == "Pow" and (inputs[0] is not ref_t or len(tracked) > 1):
            reason = f"Pow {node.name} has a tracked exponent"
        for t in inputs:
            if t.name in self.layouts:
                continue
            shape = tensor_shape(t)
            if shape is None:
                reason = f"{node.op} {node.name} combines channels with {t.name} of unknown shape"
                continue
            ax = out_axis - (out_rank - len(shape))
            if ax < 0 or shape[ax] == 1 or self.known_dim(t, ax) == 1:
                continue
            if not isinstance(t, gs.Constant):
                reason = f"{node.op} {node.name} combines channels with {self.describe_untracked(t)}"
            elif shape[ax] != ref.length:
                reason = f"{node.op} {node.name}: constant {t.name} does not match the channel count"
            else:
                constants.append((t, ax))
        if reason:
            for _, lay in tracked:
                self.block(lay, reason)
            if aligned:  # keep following the (blocked) channels so later barriers add their reasons too
                self.set_layout(node.outputs[0], Layout(out_rank, out_axis, ref.segments))
            return
        for _t, lay in tracked[1:]:
            for s_ref, s in zip(ref.segments, lay.segments, strict=True):
                self.uf.union(s_ref.space, s.space)
        for const, ax in constants:
            for seg in ref.segments:
                self.add_member(seg.space, const, ax, AVERAGE, node, seg.start, seg.block, "constant")
        self.set_layout(node.outputs[0], Layout(out_rank, out_axis, ref.segments))

    def describe_untracked(self, t: gs.Tensor) -> str:
        """``t`` for a block reason, naming the graph input it is (or is copied from through
        single-input ops such as Cast or a one-input Concat): its width is part of the model's
        signature (e.g. a KV-cache input carrying the head axis), so it can never be folded."""
        graph_inputs = {i.name for i in self.graph.inputs}
        origin = t
        for _ in range(16):
            if origin.name in graph_inputs:
                return (
                    f"graph input {t.name}"
                    if origin is t
                    else f"untracked tensor {t.name} (from graph input {origin.name})"
                )
            sources = [x for x in origin.inputs[0].inputs if x.name] if len(origin.inputs) == 1 else []
            if len(sources) != 1:
                break
            origin = sources[0]
        return f"untracked tensor {t.name}"

    def op_Concat(self, node: gs.Node) -> None:
        inputs = [t for t in node.inputs if t.name]
        tracked = [self.layouts[t.name] for t in inputs if t.name in self.layouts]
        if not tracked:
            return
        rank = tracked[0].rank
        axis = int(node.attrs.get("axis", 1))
        axis = axis + rank if axis < 0 else axis
        if any(lay.axis != tracked[0].axis or lay.rank != rank for lay in tracked):
            for lay in tracked:
                self.block(lay, f"Concat {node.name} joins tensors with different channel axes")
            return
        if axis != tracked[0].axis:
            self.binary(node)  # concatenating along another axis: channels must line up, as for Add
            return
        segments: list[Segment] = []
        start = 0
        for t in inputs:
            lay = self.layouts.get(t.name)
            if lay is None:
                shape = tensor_shape(t)
                if shape is None or not static_dims([shape[axis]]):
                    for other in tracked:
                        self.block(other, f"Concat {node.name} has an input of unknown width")
                    return
                frozen = self.new_space(int(shape[axis]), node.name, producer=False)
                self.blocks[frozen].append(f"untracked input {t.name} of Concat {node.name}")
                segments.append(Segment(frozen, start, int(shape[axis])))
                start += int(shape[axis])
                continue
            for seg in lay.segments:
                segments.append(Segment(seg.space, start + seg.start, seg.n, seg.block))
            start += lay.length
        self.set_layout(node.outputs[0], Layout(rank, axis, tuple(segments)))

    def op_Split(self, node: gs.Node) -> None:
        lay = self.layout(node.inputs[0])
        if lay is None:
            return
        axis = int(node.attrs.get("axis", 0))
        axis = axis + lay.rank if axis < 0 else axis
        if axis != lay.axis:
            for out in node.outputs:
                self.set_layout(out, lay)
            return
        sizes = None
        sizes_t = node.inputs[1] if len(node.inputs) > 1 and node.inputs[1].name else None
        if sizes_t is not None:
            sizes = const_values(sizes_t)
        elif node.attrs.get("split") is not None:
            sizes = np.asarray(node.attrs["split"])
        elif "num_outputs" in node.attrs or len(node.outputs) > 0:
            count = int(node.attrs.get("num_outputs", len(node.outputs)))
            if lay.length % count == 0:
                sizes = np.full(count, lay.length // count)
        if sizes is None:
            self.block(lay, f"Split {node.name} has unknown split sizes on the channel axis")
            return
        bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        lay = self.cut_at(node, bounds[1:-1])
        if lay is None:
            return
        if sizes_t is None or len(self.graph_consumers(sizes_t)) != 1:
            # folding changes the widths: only an unshared 'split' input can be rewritten with them
            self.block(lay, f"Split {node.name} has no rewritable split sizes on the channel axis")
            return
        for i, out in enumerate(node.outputs):
            lo, hi = bounds[i], bounds[i + 1]
            segs = tuple(
                Segment(s.space, s.start - lo, s.n, s.block) for s in lay.segments if lo <= s.start < hi
            )
            for s in segs:
                self.add_shape_member(s, sizes_t, i, node)
            self.set_layout(out, Layout(lay.rank, lay.axis, segs))

    def op_Flatten(self, node: gs.Node) -> None:
        lay = self.layout(node.inputs[0])
        if lay is None:
            return
        axis = int(node.attrs.get("axis", 1))
        axis = axis + lay.rank if axis < 0 else axis
        shape = tensor_shape(node.inputs[0])
        self.flatten_from(node, lay, axis, shape)

    def flatten_from(
        self,
        node: gs.Node,
        lay: Layout,
        axis: int,
        shape: tuple | None,
        shape_const: gs.Constant | None = None,
        shape_index: int | None = None,
    ) -> None:
        if axis != lay.axis:
            self.block(lay, f"{node.op} {node.name} merges the channel axis with other axes")
            return
        trailing = shape[axis + 1 :] if shape is not None else None
        if trailing is None or not static_dims(trailing):
            self.block(lay, f"{node.op} {node.name} flattens dims of unknown size after the channels")
            return
        inner = int(np.prod(trailing)) if trailing else 1
        segs = tuple(Segment(s.space, s.start * inner, s.n, s.block * inner) for s in lay.segments)
        if shape_const is not None and shape_index is not None:
            for s in segs:
                self.add_shape_member(s, shape_const, shape_index, node)
        # Flatten always gives [prod(dims before axis), rest]; a Reshape keeps the leading dims
        out = Layout(2, 1, segs) if node.op == "Flatten" else Layout(axis + 1, axis, segs)
        self.set_layout(node.outputs[0], out)

    def op_Reshape(self, node: gs.Node) -> None:
        """Reshapes that keep the channel axis, merge it with the dims after it (Flatten, attention
        output [B,S,H,dh]→[B,S,H·dh]), or split it into (units, unit size) (attention heads
        [B,S,H·dh]→[B,S,H,dh]: the channel space is coarsened to whole heads). The target may be a
        constant or built from Shape/Gather/Concat; the entry that counts channels is rewritten."""
        lay = self.layout(node.inputs[0])
        if lay is None:
            return
        in_shape = tensor_shape(node.inputs[0])
        entries = self.target_entries(node.inputs[1])
        if entries is None or in_shape is None or len(in_shape) != lay.rank:
            self.block(lay, f"Reshape {node.name} has a target shape that cannot be traced")
            return
        copy_zero = not int(node.attrs.get("allowzero", 0))
        c, rank, out_rank, length = lay.axis, lay.rank, len(entries), lay.length

        def copies(e: ShapeEntry, i: int, same_position: bool) -> bool:
            d = in_shape[i]
            return (
                e.dim_of == i
                or (same_position and e.value == 0 and copy_zero)
                or (e.value is not None and e.value > 0 and isinstance(d, (int, np.integer)) and e.value == d)
            )

        if self.regroup_leading(node, lay, entries, in_shape):
            return
        explicit_tail = all(e.value is not None and e.value > 0 for e in entries[c:])
        lead_ok = out_rank > c and all(
            copies(e, i, True) or (e.value == -1 and explicit_tail) for i, e in enumerate(entries[:c])
        )
        if not lead_ok:
            self.block(lay, f"Reshape {node.name} moves the channel axis")
            return
        entry = entries[c]
        shrinkable = entry.const is not None and entry.value is not None and entry.value > 0
        if (copies(entry, c, True) or entry.value == length) and in_shape[c] == length:
            # channel axis kept; the dims after it may be regrouped freely
            if shrinkable:
                for seg in lay.segments:
                    self.add_shape_member(seg, entry.const, entry.index, node, entry.path)
            self.passthrough(node, Layout(out_rank, c, lay.segments))
            return
        if out_rank < rank:  # merge the channel axis with the m dims after it
            m = rank - out_rank
            # dims shape inference left unknown may still be fixed by the graph (repeat_kv's Expand)
            merged = [
                d if isinstance(d, (int, np.integer)) else self.known_dim(node.inputs[0], c + 1 + j)
                for j, d in enumerate(in_shape[c + 1 : c + 1 + m])
            ]
            proven = [copies(e, c + 1 + m + j, False) for j, e in enumerate(entries[c + 1 :])]
            # element count: with the leading dims copied and the channel entry explicit
            # (length·inner), one tail entry not proven a copy must be the one input dim left
            # (repeat_kv's [B, kv, rep, S, dh] → [B, H, S, dh] where S has another symbol)
            by_count = (
                static_dims(merged)
                and proven.count(False) == 1
                and entry.value == length * int(np.prod(merged))
                and all(copies(e, i, True) for i, e in enumerate(entries[:c]))
            )
            tail_ok = all(proven) or by_count
            if not static_dims(merged) or not tail_ok:
                self.block(lay, f"Reshape {node.name} merges the channel axis with dims of unknown size")
                return
            inner = int(np.prod(merged))
            if entry.value not in (-1, length * inner):
                self.block(lay, f"Reshape {node.name} reshapes the channel axis")
                return
            segs = tuple(Segment(sg.space, sg.start * inner, sg.n, sg.block * inner) for sg in lay.segments)
            if entry.value > 0:
                if entry.const is None:
                    self.block(lay, f"Reshape {node.name} takes the channel count from a computed value")
                    return
                for seg in segs:
                    self.add_shape_member(seg, entry.const, entry.index, node, entry.path)
            self.set_layout(node.outputs[0], Layout(out_rank, c, segs))
            return
        if out_rank == rank + 1:  # split the channel axis into (units, unit size): attention heads
            unit_e = entries[c + 1]
            unit = unit_e.value if unit_e.value is not None and unit_e.value > 0 else None
            tail_ok = all(copies(e, c + 1 + j, False) for j, e in enumerate(entries[c + 2 :]))
            if (
                unit is None
                or not tail_ok
                or length % unit
                or entry.value not in (-1, length // unit)
                or (entry.value > 0 and entry.const is None)
            ):
                self.block(
                    lay, f"Reshape {node.name} splits the channel axis in a way that cannot be followed"
                )
                return
            if not self.coarsen_segments(
                lay, unit, node, f"Reshape {node.name} splits channels across groups"
            ):
                return
            segs = tuple(Segment(sg.space, sg.start // unit, sg.n // unit, 1) for sg in lay.segments)
            if entry.value > 0:
                for seg in segs:
                    self.add_shape_member(seg, entry.const, entry.index, node, entry.path)
            self.set_layout(node.outputs[0], Layout(out_rank, c, segs))
            return
        self.block(lay, f"Reshape {node.name} reshapes the channel axis")

    def regroup_leading(self, node: gs.Node, lay: Layout, entries: list[ShapeEntry], in_shape) -> bool:
        """The channel axis and every dim after it become the last output dim; the dims before it are
        regrouped freely ([B·S, C] ↔ [B, S, C] around a 2-D Gemm, [B, S, H, dh] → [B·S, H·dh], a Flatten).
        The last target entry must be an explicit constant counting exactly those elements, C·Π(dims
        after C): in row-major order each output row is then one input block of them, whatever the
        leading entries say. The constant is rewritten with the fold."""
        c, last = lay.axis, entries[-1]
        after = in_shape[c + 1 :]
        if not static_dims(after) or in_shape[c] != lay.length or last.const is None:
            return False
        inner = int(np.prod(after, dtype=np.int64))
        if last.value != lay.length * inner:
            return False
        segs = tuple(Segment(sg.space, sg.start * inner, sg.n, sg.block * inner) for sg in lay.segments)
        for seg in segs:
            self.add_shape_member(seg, last.const, last.index, node, last.path)
        self.passthrough(node, Layout(len(entries), len(entries) - 1, segs))
        return True

    def cut_at(self, node: gs.Node, bounds) -> Layout | None:
        """Partition every group of ``node``'s first input that a channel bound falls inside (a fused
        projection cut apart by Split or Slice); the input's layout after the cuts, or None when a cut
        is not on a unit boundary (then blocked)."""
        lay = self.layouts[node.inputs[0].name]
        for b in bounds:
            seg = next((sg for sg in lay.segments if sg.start < b < sg.start + sg.length), None)
            if seg is None:
                continue
            if (b - seg.start) % seg.block or not self.partition(
                seg.space, [(b - seg.start) // seg.block], node
            ):
                self.block(lay, f"{node.op} {node.name} cuts a group's channels apart on the channel axis")
                return None
            lay = self.layouts[node.inputs[0].name]
        return lay

    def partition(self, space: int, cuts: list[int], node: gs.Node) -> bool:
        """Refine ``space``'s group into independent parts at channel ``cuts`` (e.g. a fused QKV
        projection split into q, k, v): every member and layout segment is split alike."""
        root = self.uf.find(space)
        comp = [sp for sp in range(len(self.spaces)) if self.uf.find(sp) == root]
        n = self.spaces[space].n
        if any(self.spaces[sp].n != n for sp in comp) or any(not 0 < c < n for c in cuts):
            return False
        edges = [0] + sorted(cuts) + [n]
        parts: dict[int, list[int]] = {}
        for sp in comp:
            old = self.spaces[sp]
            ids = []
            for lo, hi in zip(edges, edges[1:], strict=False):
                new = self.new_space(hi - lo, old.origin, producer=False)
                self.spaces[new].producer = old.producer
                self.spaces[new].unit = old.unit
                self.producers[new] = list(self.producers[sp])
                self.consumers[new] = list(self.consumers[sp])
                self.blocks[new] = list(self.blocks[sp])
                self.members[new] = [
                    replace(m, segment=m.segment + lo * m.block)
                    if m.role == SHAPE
                    else replace(m, offset=m.offset + lo * m.block)
                    for m in self.members[sp]
                ]
                ids.append(new)
            parts[sp] = ids
            self.members[sp] = []
            old.producer = False
        for sp in comp[1:]:
            for a, b in zip(parts[comp[0]], parts[sp], strict=True):
                self.uf.union(a, b)
        for name, lay in list(self.layouts.items()):
            if any(sg.space in parts for sg in lay.segments):
                segs: list[Segment] = []
                for sg in lay.segments:
                    if sg.space not in parts:
                        segs.append(sg)
                        continue
                    for new, lo, hi in zip(parts[sg.space], edges, edges[1:], strict=False):
                        segs.append(Segment(new, sg.start + lo * sg.block, hi - lo, sg.block))
                self.layouts[name] = Layout(lay.rank, lay.axis, tuple(segs))
        return True

    def coarsen_segments(self, lay: Layout, unit: int, node: gs.Node, reason: str) -> bool:
        """Coarsen every group on ``lay`` to units of ``unit`` channels (attention heads); blocks them with
        ``reason`` when a segment does not hold whole units. False if anything was blocked."""
        if any(sg.block != 1 or sg.start % unit or sg.n % unit for sg in lay.segments):
            self.block(lay, reason)
            return False
        return all(self.coarsen(sg.space, unit, node) for sg in lay.segments)

    def coarsen(self, space: int, unit: int, node: gs.Node) -> bool:
        """Make the units of ``space``'s group blocks of ``unit`` channels (e.g. attention heads of
        head_dim channels): n → n/unit, every member's block × unit, every layout likewise."""
        root = self.uf.find(space)
        comp = [s for s in range(len(self.spaces)) if self.uf.find(s) == root]
        if any(self.spaces[s].n % unit for s in comp):
            for s in comp:
                self.blocks[s].append(
                    f"Reshape {node.name} splits {unit}-channel units that do not divide the group"
                )
            return False
        for s in comp:
            self.spaces[s].n //= unit
            self.spaces[s].unit *= unit
            self.members[s] = [replace(m, block=m.block * unit) for m in self.members[s]]
        comp_set = set(comp)
        for name, lay in list(self.layouts.items()):
            if any(sg.space in comp_set for sg in lay.segments):
                self.layouts[name] = Layout(
                    lay.rank,
                    lay.axis,
                    tuple(
                        Segment(sg.space, sg.start, sg.n // unit, sg.block * unit)
                        if sg.space in comp_set
                        else sg
                        for sg in lay.segments
                    ),
                )
        return True

    def known_dim(self, t: gs.Tensor, axis: int, depth: int = 0) -> int | None:
        """Dim ``axis`` of ``t`` where shape inference left it unknown but the graph fixes it: through
        Expand (an entry 1 keeps the input's dim; the attention masks of transformers) and through
        broadcasting elementwise ops (every input that has the axis must be known). None if unknown."""
        shape = tensor_shape(t)
        if shape is None or not 0 <= axis < len(shape):
            return None
        if isinstance(shape[axis], (int, np.integer)):
            return int(shape[axis])
        lay = self.layouts.get(t.name)
        if depth > 12 or len(t.inputs) != 1 or (lay is not None and lay.axis == axis):  # channels change
            return None
        node = t.inputs[0]
        if node.op == "Expand":
            entries = self.target_entries(node.inputs[1])
            if entries is None or len(entries) != len(shape):
                return None
            e = entries[axis]
            if e.value is None or e.value < 1:
                return None
            src_rank = self.rank_of(node.inputs[0])
            if src_rank is None:
                return None
            src_axis = axis - (len(shape) - src_rank)
            src = self.known_dim(node.inputs[0], src_axis, depth + 1) if src_axis >= 0 else 1
            if src is None:
                return None
            return src if e.value == 1 else (e.value if src in (1, e.value) else None)
        if node.op in KNOWN_DIM_OPS:
            dims = []
            for i in node.inputs:
                if not i.name:
                    continue
                rank = self.rank_of(i)
                if rank is None:
                    return None
                a = axis - (len(shape) - rank)
                if a < 0:
                    continue
                d = self.known_dim(i, a, depth + 1)
                if d is None:
                    return None
                dims.append(d)
            wide = {d for d in dims if d != 1}
            return (wide.pop() if len(wide) == 1 else 1 if not wide else None) if dims else None
        return None

    def target_entries(self, t: gs.Tensor) -> list[ShapeEntry] | None:
        """The entries of a shape tensor: constants (with where they live and the tensors computed
        from them on the way here) or copies of an input dim (``Gather(Shape(x), i)``), traced
        through Concat/Unsqueeze/Squeeze/Cast. None if untraceable."""
        if isinstance(t, gs.Constant):
            values = np.asarray(t.values).reshape(-1)
            return [ShapeEntry(int(v), t, i) for i, v in enumerate(values)]
        if len(t.inputs) != 1:
            return None
        node = t.inputs[0]
        if node.op in ("Unsqueeze", "Squeeze", "Cast", "Identity"):
            inner = self.target_entries(node.inputs[0])
            return None if inner is None else [replace(e, path=e.path + (t,)) for e in inner]
        if node.op == "Concat" and int(node.attrs.get("axis", 0)) == 0:
            entries: list[ShapeEntry] = []
            for part in node.inputs:
                inner = self.target_entries(part)
                if inner is None:
                    return None
                entries += [replace(e, path=e.path + (t,)) for e in inner]
            return entries
        if (
            node.op == "Reshape"
            and isinstance(node.inputs[1], gs.Constant)
            and np.asarray(node.inputs[1].values).reshape(-1).tolist() == [-1]
        ):
            inner = self.target_entries(node.inputs[0])  # flattening a 1-D shape vector: unchanged
            return None if inner is None else [replace(e, path=e.path + (t,)) for e in inner]
        if node.op == "Where" and len(node.inputs) == 3:
            # torch's expand(-1 → keep): Where(Equal(X, -1), ones, X) is X with its -1 entries made 1
            # (the -1 may be a constant or computed as ConstantOfShape(Shape(X)) * -1)
            cond = node.inputs[0]
            x = node.inputs[2]
            if (
                len(cond.inputs) == 1
                and cond.inputs[0].op == "Equal"
                and cond.inputs[0].inputs[0] is x
                and fill_value(cond.inputs[0].inputs[1]) == -1
            ):
                inner = self.target_entries(x)
                if inner is None or (any(e.value == -1 for e in inner) and fill_value(node.inputs[1]) != 1):
                    return None
                return [
                    ShapeEntry(1, None, 0) if e.value == -1 else replace(e, path=e.path + (t,)) for e in inner
                ]
            return None
        if node.op == "Shape":
            rank = self.rank_of(node.inputs[0])
            if rank is None:
                return None
            start = int(node.attrs.get("start", 0))
            end = node.attrs.get("end")
            start = start + rank if start < 0 else start
            end = rank if end is None else (int(end) + rank if int(end) < 0 else int(end))
            return [ShapeEntry(None, None, 0, i) for i in range(start, min(end, rank))]
        if (
            node.op == "Gather"
            and int(node.attrs.get("axis", 0)) == 0
            and isinstance(node.inputs[1], gs.Constant)
        ):
            src = node.inputs[0]
            idx = np.asarray(node.inputs[1].values).reshape(-1)
            if len(src.inputs) == 1 and src.inputs[0].op == "Shape" and len(idx) == 1:
                shape_node = src.inputs[0]
                start = int(shape_node.attrs.get("start", 0))
                rank = self.rank_of(shape_node.inputs[0])
                if rank is None:
                    return None
                start = start + rank if start < 0 else start
                return [ShapeEntry(None, None, 0, int(idx[0]) + (rank if idx[0] < 0 else 0) + start)]
        return None

    def op_Shape(self, node: gs.Node) -> None:
        lay = self.layout(node.inputs[0])
        if lay is None:
            return
        start = int(node.attrs.get("start", 0))
        end = node.attrs.get("end")
        start = start + lay.rank if start < 0 else start
        end = lay.rank if end is None else (int(end) + lay.rank if int(end) < 0 else int(end))
        if not (start <= lay.axis < end):
            return
        for user in node.outputs[0].outputs:
            if user.op == "Gather" and isinstance(user.inputs[1], gs.Constant):
                idx = np.asarray(user.inputs[1].values).reshape(-1) + start
                if lay.axis not in [int(i) + (lay.rank if i < 0 else 0) for i in idx]:
                    continue
            self.block(lay, f"Shape {node.name} reads the channel count")
            return

    def graph_consumers(self, t: gs.Tensor) -> list[gs.Node]:
        return list(t.outputs)

    # ----------------------------------------------------------------- groups
    def finish(self) -> list[ChannelGroup]:
        self.unite_shared_slices()
        self.block_unaccounted_uses()
        self.block_shared_shape_entries()
        comps: dict[int, list[int]] = defaultdict(list)
        for sid in range(len(self.spaces)):
            comps[self.uf.find(sid)].append(sid)
        groups = []
        for root in sorted(comps):
            sids = comps[root]
            sizes = {self.spaces[s].n for s in sids}
            members: list[Member] = []
            seen = set()
            blocked: list[str] = []
            producers: list[str] = []
            consumers: list[str] = []
            attrs: list[tuple[str, str]] = []
            for s in sids:
                attrs += [a for a in self.unit_attrs[s] if a not in attrs]
                for m in self.members[s]:
                    # a shape entry shrinks once per distinct segment (two Concat inputs of one group both
                    # shrink it; q/k/v Reshapes sharing one target shrink it once)
                    key = (
                        (m.tensor, m.axis, m.offset, m.role)
                        if m.role != SHAPE
                        else (m.tensor, m.offset, m.segment, SHAPE)
                    )
                    if key not in seen:
                        seen.add(key)
                        members.append(m)
                for r in self.blocks[s]:
                    if r not in blocked:
                        blocked.append(r)
                producers += [p for p in self.producers[s] if p not in producers]
                consumers += [c for c in self.consumers[s] if c not in consumers]
            if not any(self.spaces[s].producer for s in sids):
                continue
            if len(sizes) > 1:
                blocked.append(f"tied spaces have different widths {sorted(sizes)}")
            if not any(m.role == SUM for m in members) and not blocked:
                blocked.append("no consumer reads these channels")
            name = producers[0] if producers else self.spaces[root].origin
            # spaces may count units of different sizes (GQA: a KV head of head_dim channels is tied
            # to its query group of n_rep·head_dim channels); what must agree is the number of units
            units = {self.spaces[s].unit for s in sids}
            groups.append(
                ChannelGroup(
                    name, max(sizes), members, producers, consumers, blocked, max(units), unit_attrs=attrs
                )
            )
        return groups

    def block_shared_shape_entries(self) -> None:
        """A shape entry counted by two groups (e.g. one repeat_kv shape feeding every layer) would be
        shrunk by both: block them (the groups are independent, so uniting them would be wrong)."""
        owners: dict[tuple[str, int, int], set[int]] = defaultdict(set)
        for sid, members in self.members.items():
            for m in members:
                if m.role == SHAPE:  # disjoint segments (Concat inputs) each shrink their own share: fine
                    owners[(m.tensor, m.offset, m.segment)].add(sid)
        for (tensor, _, _), sids in owners.items():
            roots = {self.uf.find(sid) for sid in sids}
            if len(roots) > 1:
                for sid in sids:
                    self.blocks[sid].append(f"shape tensor {tensor} is computed once for several groups")

    def unite_shared_slices(self) -> None:
        """A weight slice claimed by two spaces (a shared weight) forces one assignment for both."""
        claims: dict[tuple[str, int, int, int], list[tuple[int, str]]] = defaultdict(list)
        for sid, members in self.members.items():
            for m in members:
                if m.role != SHAPE:
                    claims[(m.tensor, m.axis, m.offset, m.block)].append((sid, m.role))
        by_axis: dict[tuple[str, int], list[tuple[int, int, int]]] = defaultdict(list)
        for (tensor, axis, offset, block), owners in claims.items():
            roles = {r for _, r in owners}
            first = owners[0][0]
            for sid, _ in owners[1:]:
                self.uf.union(first, sid)
            if len(roles) > 1:
                self.blocks[first].append(f"tensor {tensor} axis {axis} is both averaged and summed")
            n = self.spaces[first].n
            by_axis[(tensor, axis)].append((offset, offset + n * block, first))
        for (tensor, axis), ranges in by_axis.items():
            ranges.sort()
            for (_lo1, hi1, s1), (lo2, _hi2, s2) in zip(ranges, ranges[1:], strict=False):
                if lo2 < hi1:
                    reason = f"tensor {tensor} axis {axis} is claimed by overlapping groups"
                    self.blocks[s1].append(reason)
                    self.blocks[s2].append(reason)

    def block_unaccounted_uses(self) -> None:
        """A member tensor also used where no rule accounted for it would be corrupted: block."""
        tensors = self.graph.tensors()
        graph_inputs = {t.name for t in self.graph.inputs}
        graph_outputs = {t.name for t in self.graph.outputs}
        for sid, members in self.members.items():
            for m in members:
                t = tensors.get(m.tensor)
                uses = self.member_uses[(m.tensor, m.axis)]
                extra = [n for n in (t.outputs if t is not None else []) if id(n) not in uses]
                chain = self.shape_chains.get(m.tensor, set())
                for chained in chain:
                    extra += [
                        n
                        for n in tensors[chained].outputs
                        if id(n) not in uses and not harmless_shape_use(n, chain)
                    ]
                if extra:
                    self.blocks[sid].append(
                        f"tensor {m.tensor} is also used by {extra[0].op} {extra[0].name}"
                    )
                if m.tensor in graph_inputs or m.tensor in graph_outputs:
                    self.blocks[sid].append(f"tensor {m.tensor} is a graph input or output")
