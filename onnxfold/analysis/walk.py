"""The walk: one pass over a graph in topological order that applies each node's registered rule.

The walk holds the state the rules build:

* *spaces*: the n output channels of one producer (Conv, Gemm, MatMul …), united by union-find
  when two activations must share one assignment (a residual Add);
* *layouts*: where the channels sit in each tracked activation (:class:`~onnxfold.analysis.groups.Layout`);
* *members*: the tensor slices tied to a space (weights, biases, shape entries), and the reasons
  (:class:`~onnxfold.analysis.groups.BlockReason`) that keep a space from folding.

A rule ``rule(walk, node)`` (see :mod:`onnxfold.analysis.registry`) reads the layouts of the node's
inputs and either sets its outputs' layouts (channels pass), adds members (weights read them) or
blocks the layouts it cannot follow. The helpers rules use:

* ``walk.layout(t)`` / ``walk.set_layout(t, layout)``: the channel layout of a tensor (None: untracked);
* ``walk.passthrough(node, layout=None)``: the output keeps the input's layout (element-wise ops);
* ``walk.block(layout, reason)``, ``walk.block_inputs(node, reason)``, ``walk.block_space(space, reason)``;
* ``walk.new_space(n, origin)``: a producer's n output channels; ``walk.unite(a, b)``: one assignment;
* ``walk.add_member(space, tensor, axis, role, node, ...)``, ``walk.add_consumer(layout, weight, axis,
  node)``, ``walk.add_average(layout, tensor, axis, node, kind)``, ``walk.add_shape_member(...)``;
* ``walk.rank_of(t)``, ``walk.target_entries(t)``, ``walk.known_dim(t, axis)``: shapes;
* ``walk.partition(...)``, ``walk.coarsen(...)``: regroup a space (cuts, attention heads);
* ``walk.require_parts(space, parts, reason)``: units merge only within equal parts (grouped Conv).

The rules of the built-in ops live in :mod:`onnxfold.analysis.rules`. Nodes without a rule block their
inputs (``unsupported-op``); after the walk, :mod:`onnxfold.analysis.finish` turns spaces into groups.

The walk writes nothing to the graph except its topological order (``graph.toposort()``); while it
runs, the readers of a view of a weight (:mod:`onnxfold.analysis.views`) read a stand-in constant.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace

import onnx_graphsurgeon as gs

from onnxfold.analysis.finish import finish
from onnxfold.analysis.groups import (
    AVERAGE,
    GRAPH_INPUT,
    GRAPH_OUTPUT,
    SECONDARY_OUTPUT,
    SHAPE,
    SPLITS_UNITS,
    SUBGRAPH_USE,
    SUM,
    TRACKED_PARAMETER,
    UNSUPPORTED_OP,
    UNTRACKED_TENSOR,
    BlockReason,
    ChannelGroup,
    Layout,
    Member,
    Segment,
    Space,
    UnionFind,
)
from onnxfold.analysis.known_dims import known_dim
from onnxfold.analysis.registry import rule_for
from onnxfold.analysis.shape_trace import ShapeEntry, target_entries, tensor_shape
from onnxfold.analysis.views import View, exposed, find_views

#: ops that normalise over the channels they read: a tensor they wrote has channels no fold may merge
NORMALISING_OPS = frozenset(
    "LayerNormalization RMSNormalization SimplifiedLayerNormalization SkipLayerNormalization "
    "SkipSimplifiedLayerNormalization GroupNormalization LpNormalization".split()
)


class Analysis:
    """The state of one walk over ``graph``: spaces, layouts, members and block reasons."""

    def __init__(self, graph: gs.Graph):
        self.graph = graph
        self.uf = UnionFind()
        self.spaces: list[Space] = []
        self.layouts: dict[str, Layout] = {}
        self.members: dict[int, list[Member]] = defaultdict(list)
        self.blocks: dict[int, list[BlockReason]] = defaultdict(list)
        self.producers: dict[int, list[str]] = defaultdict(list)
        self.consumers: dict[int, list[str]] = defaultdict(list)
        # (tensor, axis) -> ids of the nodes that registered that axis of the tensor
        self.member_uses: dict[tuple[str, int], set[int]] = defaultdict(set)
        self.shape_chains: dict[str, set[str]] = defaultdict(set)  # shape const -> tensors computed from it
        # space -> (node, attribute, heads per unit) counting its units (num_heads of fused attention ops)
        self.unit_attrs: dict[int, list[tuple[str, str, int]]] = defaultdict(list)
        # space -> (parts, reason): its units may only merge within that many equal contiguous parts
        # (a grouped Conv's groups); the reason blocks the group when no two units could merge
        self.parts: dict[int, list[tuple[int, BlockReason]]] = defaultdict(list)
        # tensors that are a stored weight read through Transpose/Cast/… (onnxfold.analysis.views)
        self.views: dict[str, View] = {}

    # ----------------------------------------------------------------- spaces and layouts
    def new_space(self, n: int, origin: str, producer: bool = True) -> int:
        """Open a space of ``n`` channels named after node ``origin``; returns its id. A space that
        is not a ``producer`` (e.g. an untracked Concat input) never forms a group on its own."""
        sid = self.uf.add()
        self.spaces.append(Space(n, origin, producer))
        if producer:
            self.producers[sid].append(origin)
        return sid

    def layout(self, t: gs.Tensor | None) -> Layout | None:
        """Where the channels sit in ``t``, or None when ``t`` carries no tracked channels."""
        return self.layouts.get(t.name) if t is not None else None

    def set_layout(self, t: gs.Tensor | None, layout: Layout | None) -> None:
        """Record that ``t`` carries ``layout`` (no-op for None or an unnamed tensor)."""
        if layout is not None and t is not None and t.name:
            self.layouts[t.name] = layout

    def rank_of(self, t: gs.Tensor) -> int | None:
        """The rank of ``t``: its layout's, else its inferred shape's, else None."""
        lay = self.layout(t)
        if lay is not None:
            return lay.rank
        shape = tensor_shape(t)
        return len(shape) if shape is not None else None

    def channel_axis(self, t: gs.Tensor) -> int | None:
        lay = self.layouts.get(t.name)
        return lay.axis if lay is not None else None

    def unite(self, ref: Layout, other: Layout) -> None:
        """Force one assignment on the segments of two aligned layouts (pairwise union)."""
        for s_ref, sg in zip(ref.segments, other.segments, strict=True):
            self.uf.union(s_ref.space, sg.space)

    # ----------------------------------------------------------------- blocking
    def block(self, layout: Layout | None, reason: BlockReason) -> None:
        """Keep every space on ``layout`` from folding, with ``reason`` (once per space)."""
        if layout is None:
            return
        for seg in layout.segments:
            if reason not in self.blocks[seg.space]:
                self.blocks[seg.space].append(reason)

    def block_space(self, space: int, reason: BlockReason) -> None:
        """Keep ``space`` from folding, with ``reason``."""
        self.blocks[space].append(reason)

    def block_inputs(self, node: gs.Node, reason: BlockReason) -> None:
        """Block every tracked input of ``node`` with ``reason``."""
        for t in node.inputs:
            self.block(self.layouts.get(t.name), reason)

    # ----------------------------------------------------------------- members
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
        split: int = 1,
        split_axis: int = 0,
    ) -> None:
        """Tie ``axis`` of constant ``tensor`` to ``space``: channel c is entries
        [offset + c·block, offset + (c+1)·block); ``role`` is ``average`` or ``sum`` (see groups).
        With ``split`` > 1 the tensor is cut into ``split`` slabs along ``split_axis``, slab s holding
        only the space's s-th ``split``-th of the channels (a grouped Conv's weight); the space is then
        cut into at least ``split`` parts, which the caller states with :meth:`require_parts`."""
        member = Member(
            tensor.name,
            axis,
            role,
            offset,
            block,
            node.name,
            kind,
            feature,
            split=split,
            split_axis=split_axis,
        )
        self.members[space].append(member)
        self.member_uses[(tensor.name, axis)].add(id(node))

    def require_parts(self, space: int, parts: int, reason: BlockReason) -> None:
        """The units of ``space`` may only merge within ``parts`` equal contiguous parts, each keeping the
        same number (a grouped Conv's groups). ``reason`` blocks the group if that leaves one unit per
        part (the group's parts are the least common multiple of every requirement on it)."""
        if parts > 1:
            self.parts[space].append((parts, reason))

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
        """``node`` reads the channels of ``layout`` through ``axis`` of ``weight`` (``sum`` members)."""
        for seg in layout.segments:
            self.add_member(seg.space, weight, axis, SUM, node, seg.start, seg.block, "weight")
            self.consumers[seg.space].append(node.name)

    def add_average(
        self, layout: Layout, tensor: gs.Constant, axis: int, node: gs.Node, kind: str, feature: bool = True
    ) -> None:
        """A per-channel vector (BN/norm parameters, a constant operand): ``average`` members for every
        segment of ``layout``."""
        for seg in layout.segments:
            self.add_member(seg.space, tensor, axis, AVERAGE, node, seg.start, seg.block, kind, feature)

    # ----------------------------------------------------------------- common rule steps
    def passthrough(self, node: gs.Node, lay: Layout | None = None) -> None:
        """The output keeps the channel layout ``lay`` (default: the first input's), as element-wise
        unary ops do. A secondary output that is used blocks the channels."""
        lay = lay if lay is not None else self.layout(node.inputs[0])
        if lay is None:
            return
        self.set_layout(node.outputs[0], lay)
        for extra in node.outputs[1:]:
            if extra.outputs:
                self.block(
                    lay,
                    BlockReason(
                        SECONDARY_OUTPUT, f"{node.op} {node.name} has a used secondary output", node.name
                    ),
                )

    def only_first_input_tracked(self, node: gs.Node) -> bool:
        """True if no input but the first carries channels; otherwise blocks the inputs."""
        for t in node.inputs[1:]:
            if t.name and t.name in self.layouts:
                self.block_inputs(
                    node,
                    BlockReason(
                        TRACKED_PARAMETER,
                        f"{node.op} {node.name} takes a tracked tensor as a parameter",
                        node.name,
                    ),
                )
                return False
        return True

    def untracked_reason(self, node: gs.Node, t: gs.Tensor, prefix: str) -> BlockReason:
        """A reason for combining channels with untracked ``t``: ``prefix`` then :meth:`describe_untracked`;
        code ``graph-input`` when ``t`` is (copied from) a graph input, else ``untracked-tensor``."""
        text = self.describe_untracked(t)
        code = GRAPH_INPUT if "graph input" in text else UNTRACKED_TENSOR
        return BlockReason(code, prefix + text, node.name, t.name)

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
        lost = self._lost_at(t)
        if lost is None:
            return f"untracked tensor {t.name}"
        if rule_for(lost.op, lost.domain) is None:
            return f"untracked tensor {t.name} (after {lost.op} {lost.name}, which onnxfold has no rule for)"
        if lost.op in NORMALISING_OPS:  # ruaccent's post-norm Transformer: 19 groups read "not followed past"
            stream = (
                "; a post-norm residual stream keeps its width" if t.inputs and t.inputs[0] is lost else ""
            )
            return (
                f"untracked tensor {t.name} ({lost.op} {lost.name} normalises over its channels, so they "
                f"stay whole{stream})"
            )
        return f"untracked tensor {t.name} (its channels are not followed past {lost.op} {lost.name})"

    def _lost_at(self, t: gs.Tensor) -> gs.Node | None:
        """The op where ``t``'s channels stopped being tracked, up its data inputs: one without a rule (a
        U-Net decoder's skip joins read tensors after a DepthToSpace when it had none), or one that reads
        tracked channels and writes none (minimol's LayerNorm before a GELU: the reason had named the
        GELU's output alone); else None."""
        for _ in range(32):
            if t.name in self.layouts or not t.inputs:
                return None
            maker = t.inputs[0]
            if rule_for(maker.op, maker.domain) is None:
                return None if maker.op == "Constant" else maker
            data = [x for x in maker.inputs if x.name and not isinstance(x, gs.Constant)]
            if not data:
                return None
            if any(x.name in self.layouts for x in data):
                return maker
            t = data[0]
        return None

    def graph_consumers(self, t: gs.Tensor) -> list[gs.Node]:
        return list(t.outputs)

    def target_entries(self, t: gs.Tensor) -> list[ShapeEntry] | None:
        """The traced entries of shape tensor ``t`` (:func:`~onnxfold.analysis.shape_trace.target_entries`)."""
        return target_entries(t, self.rank_of)

    def known_dim(self, t: gs.Tensor, axis: int) -> int | None:
        """Dim ``axis`` of ``t`` where the graph fixes it (:func:`~onnxfold.analysis.known_dims.known_dim`)."""
        return known_dim(t, axis, self.rank_of, self.channel_axis)

    # ----------------------------------------------------------------- regrouping spaces
    def component(self, space: int) -> list[int]:
        root = self.uf.find(space)
        return [sp for sp in range(len(self.spaces)) if self.uf.find(sp) == root]

    def partition(self, space: int, cuts: list[int], node: gs.Node) -> bool:
        """Refine ``space``'s group into independent parts at channel ``cuts`` (e.g. a fused QKV
        projection split into q, k, v): every member and layout segment is split alike."""
        comp = self.component(space)
        n = self.spaces[space].n
        if any(self.spaces[sp].n != n for sp in comp) or any(not 0 < c < n for c in cuts):
            return False
        if any(self.parts[sp] for sp in comp):  # parts that must keep equal widths cannot be cut apart
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

    def cut(self, name: str, bounds, node: gs.Node) -> Layout | None:
        """Partition every group that a channel bound falls inside on tensor ``name``'s layout (a
        fused projection cut apart by Split or Slice; an Add's seams); the layout after the cuts, or
        None at the first cut not on a unit boundary, or of a group :meth:`partition` cannot cut."""
        lay = self.layouts[name]
        for b in bounds:
            seg = next((sg for sg in lay.segments if sg.start < b < sg.start + sg.length), None)
            if seg is None:
                continue
            if (b - seg.start) % seg.block or not self.partition(
                seg.space, [(b - seg.start) // seg.block], node
            ):
                return None
            lay = self.layouts[name]
        return lay

    def coarsen_segments(self, lay: Layout, unit: int, node: gs.Node, reason: BlockReason) -> bool:
        """Coarsen every group on ``lay`` to units of ``unit`` channels (attention heads); blocks them with
        ``reason`` when a segment does not hold whole units. A segment already in units of ``unit`` (a
        RotaryEmbedding coarsened q before the attention op) stays. Each group is coarsened once, however
        many segments it has (an NHWC Flatten tiles a head's channels once per pixel). False if anything
        was blocked; then every group on ``lay`` is: its output is not followed."""
        todo = [sg for sg in lay.segments if sg.block != unit]
        if any(sg.start % unit for sg in lay.segments) or any(sg.block != 1 or sg.n % unit for sg in todo):
            self.block(lay, reason)
            return False
        roots = {self.uf.find(sg.space): sg.space for sg in todo}
        if all(self.coarsen(space, unit, node) for space in roots.values()):
            return True
        self.block(lay, reason)  # a group left out would read as having no consumer
        return False

    def coarsen(self, space: int, unit: int, node: gs.Node) -> bool:
        """Make the units of ``space``'s group blocks of ``unit`` channels (e.g. attention heads of
        head_dim channels): n → n/unit, every member's block × unit, every layout likewise, and every
        head count registered on it counts ``unit`` times as many heads per unit."""
        comp = self.component(space)
        if any(self.spaces[s].n % unit for s in comp):
            reason = BlockReason(
                SPLITS_UNITS,
                f"Reshape {node.name} splits {unit}-channel units that do not divide the group",
                node.name,
            )
            for s in comp:
                self.block_space(s, reason)
            return False
        for s in comp:
            self.spaces[s].n //= unit
            self.spaces[s].unit *= unit
            self.unit_attrs[s] = [(n, a, per_unit * unit) for n, a, per_unit in self.unit_attrs[s]]
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

    # ----------------------------------------------------------------- the walk
    def run(self) -> list[ChannelGroup]:
        """Sort the graph topologically, apply every node's rule, block what reaches a graph output,
        and return the groups (:func:`onnxfold.analysis.finish.finish`). The readers of a view of a
        weight see it as a constant during the walk (:mod:`onnxfold.analysis.views`); the node making
        the view has no rule to apply."""
        graph = self.graph
        graph.toposort()
        self.views = find_views(graph)
        with exposed(graph, self.views):
            for node in graph.nodes:
                if len(node.outputs) == 1 and node.outputs[0].name in self.views:
                    continue
                rule = rule_for(node.op, node.domain)
                if node.attrs and any(isinstance(v, gs.Graph) for v in node.attrs.values()):
                    self.block_subgraph_uses(node)
                if rule is None:
                    self.block_inputs(
                        node,
                        BlockReason(
                            UNSUPPORTED_OP, f"reaches unsupported op {node.op} ({node.name})", node.name
                        ),
                    )
                    continue
                rule(self, node)
        for t in graph.outputs:
            self.block(
                self.layouts.get(t.name),
                BlockReason(GRAPH_OUTPUT, f"reaches graph output {t.name}", tensor=t.name),
            )
        return finish(self)

    def block_subgraph_uses(self, node: gs.Node) -> None:
        reason = BlockReason(SUBGRAPH_USE, f"used inside a subgraph of {node.op} ({node.name})", node.name)
        for sub in node.attrs.values():
            if not isinstance(sub, gs.Graph):
                continue
            for inner_graph in [sub, *sub.subgraphs(recursive=True)]:
                for inner in inner_graph.nodes:
                    for t in inner.inputs:
                        self.block(self.layouts.get(t.name), reason)


def analyze_graph(graph: gs.Graph, scopes: dict[str, str] | None = None) -> list[ChannelGroup]:
    """Derive the channel groups of ``graph`` (shapes should be inferred first); the graph is only
    re-sorted topologically.

    ``scopes`` maps node names to their source-module path where the exporter recorded one
    (dynamo's ``pkg.torch.onnx.name_scopes``); groups use it to find their block index."""
    groups = Analysis(graph).run()
    if scopes:
        for g in groups:
            g.scopes = [scopes[p] for p in g.producers if p in scopes]
    return groups
