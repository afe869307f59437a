"""Channel groups: which tensor axes must be clustered with one shared assignment.

Every producer (Conv, ConvTranspose, Gemm, MatMul with a constant weight) opens a *space*: the
n output channels it writes. A space flows forward through channel-wise ops (the op table in
:mod:`onnxfold.analysis.rules`, applied by :mod:`onnxfold.analysis.walk`); ops that combine two activations element-wise (residual Add,
gating Mul) force their spaces to share one assignment, so the spaces are united (union-find);
consumers record which weight slices read each channel. A :class:`ChannelGroup` is one union
component: all of its members are rewritten with the same cluster assignment U (n → k):

* ``average`` members (producer rows, biases, BN vectors, per-channel constants) become
  diag(1/|c|)·Uᵀ·P  (cluster means);
* ``sum`` members (consumer input columns) become Uᵀ·Q  (cluster sums);
* ``shape`` members (an entry of a Reshape target) lose (n − k)·block.

By Lemma B.1 of the paper, σ(U z) = U σ(z) for any channel-wise σ, so a group whose channels
are exact duplicates folds without error. Anything the rules do not understand blocks the
groups that reach it with a :class:`BlockReason`, and those groups are left untouched.

A member maps channel c of its group to the contiguous entries
``[offset + c·block, offset + (c+1)·block)`` of its tensor axis: ``offset`` places a group inside
a Concat, ``block`` is the H·W features per channel after a Flatten.

Some ops only allow channels to merge inside fixed parts of a group. A grouped convolution (1 <
``group`` < C) reads its input channel c only in convolution group c // (C/group), and each of its
output channels belongs to one convolution group; so a group feeding or produced by it is cut into
``parts`` equal contiguous parts (``group``, or the least common multiple when several ops ask),
and the fold clusters each part on its own with the same k/parts clusters, part p's labels in
[p·k/parts, (p+1)·k/parts): the convolution keeps ``group`` groups of equal width. A *split*
member (``split`` > 1, a divisor of ``parts``) is tied slab by slab: its tensor is cut along
``split_axis`` into ``split`` equal slabs, and slab s holds on ``axis`` only the channels
[s·n/split, (s+1)·n/split), channel c at ``offset + (c − s·n/split)·block``, as a grouped
convolution's weight [C_out, C_in/group, k…] holds its input channels on axis 1, one convolution
group per slab of axis 0.

This module holds data only; it imports nothing from the walk or the rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from onnxfold.errors import cut_at_word

AVERAGE, SUM, SHAPE = "average", "sum", "shape"
LAYER_PATTERN = re.compile(r"(?:^|[./_])(?:layers?|blocks?|h|block|encoder[./_]layer)[./_](\d+)(?=[./_]|$)")


# Block reason codes: what kind of obstacle keeps a group from folding (the message says where).
GRAPH_OUTPUT = "graph-output"  # the channels reach a graph output (the model's signature)
GRAPH_INPUT = (
    "graph-input"  # channels meet a graph input (or a copy of one); a member is a graph input/output
)
UNSUPPORTED_OP = "unsupported-op"  # no rule is registered for the op
SUBGRAPH_USE = "subgraph-use"  # the channels are read inside a subgraph (If, Loop, Scan)
COMPUTED_WEIGHT = "computed-weight"  # a weight, bias or C that is computed, not a constant
GROUPED_CONV = "grouped-conv"  # a grouped Conv/ConvTranspose whose convolution groups cannot be kept apart
OTHER_AXIS = "other-axis"  # a producer reads or contracts its input on an axis other than the channels
MIXES_CHANNELS = "mixes-channels"  # the op combines channels with each other (matmul, pool, reduce, norm)
RESHAPES_CHANNELS = "reshapes-channels"  # the op moves, pads, resizes, slices or removes the channel axis
UNALIGNED = "unaligned-channels"  # two tensors (or a constant) whose channels do not line up
UNTRACKED_TENSOR = "untracked-tensor"  # channels combined with an activation no rule tracks
UNKNOWN_SHAPE = "unknown-shape"  # a rank, width or dim the rule needs is unknown
UNTRACED_SHAPE = "untraced-shape"  # axes, pads, scales, sizes or split sizes are computed
UNTRACED_RESHAPE = "untraced-reshape"  # a Reshape/Expand target that cannot be traced or followed
SHAPE_READ = "shape-read"  # a Shape node reads the channel count
SHARED_TENSOR = "shared-weight"  # a member tensor is also used where no rule accounted for it
SHARED_SHAPE = "shared-shape"  # a shape entry is computed once for several groups
CLAIM_CONFLICT = "claim-conflict"  # a tensor slice both averaged and summed, or claimed by overlapping groups
TRACKED_PARAMETER = "tracked-parameter"  # an activation used as a parameter (exponent, bounds, mask)
SECONDARY_OUTPUT = "secondary-output"  # a used mask/statistics/present output of the op
UNSUPPORTED_FORM = "unsupported-form"  # the op is supported, but not with these attributes/inputs
SPLITS_UNITS = "splits-units"  # a cut or head split that does not respect the group's units
ATTENTION_HEADS = "attention-heads"  # fused attention whose heads cannot follow (GQA, past k/v, packed bias)
WIDTH_MISMATCH = "width-mismatch"  # tied spaces have different widths
NO_CONSUMER = "no-consumer"  # nothing reads the channels
RECURRENT_STATE = "recurrent-state"  # hidden units of LSTM/GRU/RNN, mixed across time steps by R
NONFINITE_WEIGHT = "nonfinite-weight"  # a member weight holds -inf, inf or NaN (a mask's fill in a table)
ROLLBACK = "rollback"  # the fold was undone: computing it failed, or the folded model failed verification

#: every reason code, in the order above
REASON_CODES = (
    GRAPH_OUTPUT,
    GRAPH_INPUT,
    UNSUPPORTED_OP,
    SUBGRAPH_USE,
    COMPUTED_WEIGHT,
    GROUPED_CONV,
    OTHER_AXIS,
    MIXES_CHANNELS,
    RESHAPES_CHANNELS,
    UNALIGNED,
    UNTRACKED_TENSOR,
    UNKNOWN_SHAPE,
    UNTRACED_SHAPE,
    UNTRACED_RESHAPE,
    SHAPE_READ,
    SHARED_TENSOR,
    SHARED_SHAPE,
    CLAIM_CONFLICT,
    TRACKED_PARAMETER,
    SECONDARY_OUTPUT,
    UNSUPPORTED_FORM,
    SPLITS_UNITS,
    ATTENTION_HEADS,
    WIDTH_MISMATCH,
    NO_CONSUMER,
    RECURRENT_STATE,
    NONFINITE_WEIGHT,
    ROLLBACK,
)


@dataclass(frozen=True)
class BlockReason:
    """Why a group cannot fold: a ``code`` from :data:`REASON_CODES`, the sentence a report shows,
    and the node and tensor it concerns (empty when none applies). ``str()`` is the message."""

    code: str
    message: str
    node: str = ""
    tensor: str = ""

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "node": self.node, "tensor": self.tensor, "message": self.message}


#: a table keeps one readable line per group: reasons are cut there (reports in JSON keep them whole)
REASON_WIDTH = 160


def cut_reason(text: str, width: int = REASON_WIDTH) -> str:
    """``text`` cut at a word to about ``width`` characters, with " …"."""
    return cut_at_word(text, width, " …")


def reasons_text(reasons) -> str:
    """The reasons a group is blocked, one sentence each; those that differ only in the node they
    name (a CRNN's 40 per-step Gathers) as one, with how many more there are, the most repeated
    first: a ViT's residual stream read first of a class token's Concat and a position embedding's
    Add, once each, where its 50 LayerNorm reductions over the channels are what block it."""
    kinds: dict[tuple[str, str], list] = {}
    for r in reasons:
        text = str(r)
        key = (getattr(r, "code", ""), text.replace(r.node, "\0") if getattr(r, "node", "") else text)
        kinds.setdefault(key, []).append(text)
    return "; ".join(
        texts[0] + (f" (and {len(texts) - 1} more like it)" if len(texts) > 1 else "")
        for texts in sorted(kinds.values(), key=len, reverse=True)  # stable: ties in graph order
    )


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
    #: > 1: the tensor is cut along ``split_axis`` into ``split`` equal slabs, slab s tied to the
    #: channels [s·n/split, (s+1)·n/split) of the group only (see the module docstring)
    split: int = 1
    split_axis: int = 0

    def describe(self) -> str:
        where = f"axis {self.axis}"
        if self.offset or self.block != 1:
            where += f" [offset {self.offset}, block {self.block}]"
        if self.split > 1:
            where += f", {self.split} slabs on axis {self.split_axis}"
        return f"{self.role:7s} {self.kind or 'tensor':10s} {self.tensor} ({where}) via {self.node}"


@dataclass
class ChannelGroup:
    """A set of tensor axes sharing one channel assignment; ``blocked`` holds why it cannot fold
    (empty when it can)."""

    name: str
    size: int
    members: list[Member] = field(default_factory=list)
    producers: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)
    blocked: list[BlockReason] = field(default_factory=list)
    #: channels per unit: 1 for plain channels, head_dim when the units are attention heads
    unit: int = 1
    #: source-module paths of the producers, where the exporter recorded them
    scopes: list[str] = field(default_factory=list)
    #: (node, attribute, heads per unit) triples that count this group's units, e.g. the ``num_heads`` of a
    #: fused attention op: each loses (n − k) · heads per unit when the group folds (a unit is several
    #: heads when grouped-query attention ties a KV head to its query group)
    unit_attrs: list[tuple[str, str, int]] = field(default_factory=list)
    #: equal contiguous parts that units may only merge within, each keeping k/parts units (the
    #: convolution groups of a grouped Conv); 1: no constraint
    parts: int = 1

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
        state = "foldable" if self.foldable else "blocked: " + reasons_text(self.blocked)
        units = f"{self.size} heads of {self.unit} channels" if self.unit > 1 else f"{self.size} channels"
        if self.parts > 1:
            units += f" in {self.parts} parts"
        lines = [f"group {self.name}: {units}, {state}"]
        lines += ["  " + m.describe() for m in self.members]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "size": self.size,
            "foldable": self.foldable,
            "blocked": [r.to_dict() for r in self.blocked],
            "producers": list(self.producers),
            "consumers": list(self.consumers),
            "kind": self.kind,
            "unit": self.unit,
            "parts": self.parts,
            "layer": self.layer,
            "members": [{k: _plain(v) for k, v in m.__dict__.items()} for m in self.members],
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


def shrink_unit_attrs(node, folds: list[tuple[ChannelGroup, int]], tensors: dict | None = None) -> None:
    """The ``fix_attrs`` hook of an op whose attributes count a group's units (``unit_attrs``: a fused
    attention's ``num_heads``, a recurrent op's ``hidden_size``, a depthwise Conv's ``group``): each one
    named for ``node`` loses the group's n − k units, times its count per unit; ``attr#i`` names entry i
    of a list attribute (a Split's ``split`` below opset 13)."""
    for group, k in folds:
        for name, attr, per_unit in group.unit_attrs:
            if name != node.name:
                continue
            attr, _, entry = attr.partition("#")  # "split#1": entry 1 of a list (a Split's sizes)
            if entry:
                values = [int(v) for v in node.attrs[attr]]
                values[int(entry)] -= (group.size - k) * per_unit
                node.attrs[attr] = values
            else:
                node.attrs[attr] = int(node.attrs[attr]) - (group.size - k) * per_unit


def _plain(value: object) -> object:
    """A numpy scalar as the Python number it holds (offsets may come from numpy arithmetic)."""
    return value.item() if hasattr(value, "item") else value
