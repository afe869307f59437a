"""Channel groups: which tensor axes must be clustered with one shared assignment.

Every producer (Conv, ConvTranspose, Gemm, MatMul with a constant weight) opens a *space*: the
n output channels it writes. A space flows forward through channel-wise ops (the op table in
:mod:`onnxfold.analysis.walk`); ops that combine two activations element-wise (residual Add,
gating Mul) force their spaces to share one assignment, so the spaces are united (union-find);
consumers record which weight slices read each channel. A :class:`ChannelGroup` is one union
component: all of its members are rewritten with the same cluster assignment U (n → k):

* ``average`` members (producer rows, biases, BN vectors, per-channel constants) become
  diag(1/|c|)·Uᵀ·P  (cluster means);
* ``sum`` members (consumer input columns) become Uᵀ·Q  (cluster sums);
* ``shape`` members (an entry of a Reshape target) lose (n − k)·block.

By Lemma B.1 of the paper, σ(U z) = U σ(z) for any channel-wise σ, so a group whose channels
are exact duplicates folds without error. Anything the table does not understand blocks the
groups that reach it, with a reason, and those groups are left untouched.

A member maps channel c of its group to the contiguous entries
``[offset + c·block, offset + (c+1)·block)`` of its tensor axis: ``offset`` places a group inside
a Concat, ``block`` is the H·W features per channel after a Flatten.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import onnx_graphsurgeon as gs

AVERAGE, SUM, SHAPE = "average", "sum", "shape"
LAYER_PATTERN = re.compile(r"(?:^|[./_])(?:layers?|blocks?|h|block|encoder[./_]layer)[./_](\d+)(?=[./_]|$)")


@dataclass(frozen=True)
class Member:
    """One tensor slice tied to a group's channels."""

    tensor: str
    axis: int
    role: str
    offset: int = 0
    block: int = 1
    node: str = ""
    kind: str = ""
    feature: bool = True
    #: shape members only: start of the segment this entry shrinks for. One entry (e.g. a Reshape
    #: target shared by q/k/v) is reduced once per distinct segment, not once per registration.
    segment: int = 0

    def describe(self) -> str:
        where = f"axis {self.axis}"
        if self.offset or self.block != 1:
            where += f" [offset {self.offset}, block {self.block}]"
        return f"{self.role:7s} {self.kind or 'tensor':10s} {self.tensor} ({where}) via {self.node}"


@dataclass
class ChannelGroup:
    """A set of tensor axes sharing one channel assignment; ``blocked`` holds why it cannot fold."""

    name: str
    size: int
    members: list[Member] = field(default_factory=list)
    producers: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    #: channels per unit: 1 for plain channels, head_dim when the units are attention heads
    unit: int = 1
    #: source-module paths of the producers, where the exporter recorded them
    scopes: list[str] = field(default_factory=list)
    #: (node, attribute) pairs that count this group's units, e.g. the ``num_heads`` of a fused attention
    #: op: each loses n − k when the group folds
    unit_attrs: list[tuple[str, str]] = field(default_factory=list)

    @property
    def foldable(self) -> bool:
        return not self.blocked

    @property
    def kind(self) -> str:
        """``heads`` when the units are attention heads, else ``channels``."""
        return "heads" if self.unit > 1 else "channels"

    @property
    def layer(self) -> int | None:
        """Block index read from producer or weight names (``layers.11.``, ``blocks/3/``, ``h.7``)."""
        for name in list(self.scopes) + list(self.producers) + [m.tensor for m in self.members]:
            match = LAYER_PATTERN.search(name)
            if match:
                return int(match.group(1))
        return None

    def describe(self) -> str:
        state = "foldable" if self.foldable else "blocked: " + "; ".join(self.blocked)
        units = f"{self.size} heads of {self.unit} channels" if self.unit > 1 else f"{self.size} channels"
        lines = [f"group {self.name}: {units}, {state}"]
        lines += ["  " + m.describe() for m in self.members]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "size": self.size,
            "foldable": self.foldable,
            "blocked": list(self.blocked),
            "producers": list(self.producers),
            "consumers": list(self.consumers),
            "kind": self.kind,
            "unit": self.unit,
            "layer": self.layer,
            "members": [m.__dict__ | {} for m in self.members],
        }


@dataclass(frozen=True)
class Segment:
    """Channels of one space laid along an axis: entries ``start + c·block`` … for c < n."""

    space: int
    start: int
    n: int
    block: int = 1

    @property
    def length(self) -> int:
        return self.n * self.block


@dataclass(frozen=True)
class Layout:
    """Where channels sit in an activation tensor: its rank, the channel axis and the segments on it."""

    rank: int
    axis: int
    segments: tuple[Segment, ...]

    @property
    def length(self) -> int:
        return sum(s.length for s in self.segments)

    def spaces(self) -> list[int]:
        return [s.space for s in self.segments]

    def with_axis(self, rank: int, axis: int) -> Layout:
        return Layout(rank, axis, self.segments)


class UnionFind:
    """Union-find over integer space ids with path halving."""

    def __init__(self) -> None:
        self.parent: list[int] = []

    def add(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        keep, drop = min(ra, rb), max(ra, rb)
        self.parent[drop] = keep
        return keep


@dataclass
class Space:
    n: int
    origin: str
    producer: bool
    unit: int = 1  # channels per unit (head_dim once coarsened to attention heads)


def analyze_graph(graph: gs.Graph, scopes: dict[str, str] | None = None) -> list[ChannelGroup]:
    """Derive the channel groups of ``graph`` (shapes should be inferred first).

    ``scopes`` maps node names to their source-module path where the exporter recorded one
    (dynamo's ``pkg.torch.onnx.name_scopes``); groups use it to find their block index."""
    from onnxfold.analysis.walk import Analysis

    groups = Analysis(graph).run()
    if scopes:
        for g in groups:
            g.scopes = [scopes[p] for p in g.producers if p in scopes]
    return groups
