"""After the walk: whole-graph checks on the members, then one :class:`ChannelGroup` per union component.

Members registered on a view of a weight (a tied table read through a Transpose,
:mod:`onnxfold.analysis.views`) are first moved to the stored weight, so that a weight has one set of
members whichever way its readers see it. The checks block what no single rule can see: a member tensor
also used by a node no rule accounted for, directly or through a view (``shared-weight``), a tensor slice claimed both as ``average`` and ``sum`` or by overlapping
groups (``claim-conflict``), a shape entry computed once for several groups (``shared-shape``). A
weight slice claimed by two spaces unites them (a shared weight forces one assignment). A group's
``parts`` is the least common multiple of the part counts its spaces and split members require; a
group that this leaves with one unit per part is blocked with the reason its rule gave.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import onnx_graphsurgeon as gs

from onnxfold.analysis.groups import (
    CLAIM_CONFLICT,
    GRAPH_INPUT,
    NO_CONSUMER,
    NONFINITE_WEIGHT,
    SHAPE,
    SHARED_SHAPE,
    SHARED_TENSOR,
    SPLITS_UNITS,
    SUM,
    WIDTH_MISMATCH,
    BlockReason,
    ChannelGroup,
    Member,
)
from onnxfold.analysis.shape_trace import harmless_shape_use
from onnxfold.analysis.views import effective_readers
from onnxfold.ir.external import inline_values

if TYPE_CHECKING:
    from onnxfold.analysis.walk import Analysis


def finish(walk: Analysis) -> list[ChannelGroup]:
    """Run the whole-graph checks on ``walk``'s state and collect its groups (producer spaces only)."""
    members_to_sources(walk)
    unite_shared_slices(walk)
    block_unaccounted_uses(walk)
    block_shared_shape_entries(walk)
    comps: dict[int, list[int]] = defaultdict(list)
    for sid in range(len(walk.spaces)):
        comps[walk.uf.find(sid)].append(sid)
    groups = []
    for root in sorted(comps):
        sids = comps[root]
        sizes = {walk.spaces[s].n for s in sids}
        members: list[Member] = []
        seen = set()
        blocked: list[BlockReason] = []
        producers: list[str] = []
        consumers: list[str] = []
        attrs: list[tuple[str, str, int]] = []
        for s in sids:
            attrs += [a for a in walk.unit_attrs[s] if a not in attrs]
            for m in walk.members[s]:
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
            for r in walk.blocks[s]:
                if r not in blocked:
                    blocked.append(r)
            producers += [p for p in walk.producers[s] if p not in producers]
            consumers += [c for c in walk.consumers[s] if c not in consumers]
        if not any(walk.spaces[s].producer for s in sids):
            continue
        if len(sizes) > 1:
            blocked.append(BlockReason(WIDTH_MISMATCH, f"tied spaces have different widths {sorted(sizes)}"))
        if not any(m.role == SUM for m in members) and not blocked:
            blocked.append(BlockReason(NO_CONSUMER, "no consumer reads these channels"))
        if not blocked:
            blocked += nonfinite_members(walk, members)
        name = producers[0] if producers else walk.spaces[root].origin
        parts = group_parts(walk, sids, members, int(max(sizes)), blocked)
        # spaces may count units of different sizes (GQA: a KV head of head_dim channels is tied
        # to its query group of n_rep·head_dim channels); what must agree is the number of units
        units = {walk.spaces[s].unit for s in sids}
        groups.append(
            ChannelGroup(
                name,
                int(max(sizes)),
                members,
                producers,
                consumers,
                blocked,
                int(max(units)),
                unit_attrs=attrs,
                parts=parts,
            )
        )
    return unique_names(groups)


def nonfinite_members(walk: Analysis, members: list[Member]) -> list[BlockReason]:
    """A reason for the first member weight that holds -inf, inf or NaN (chython's distance table keeps
    -inf in its padding row): merged channels average, sum and compare such values into NaN, and the
    clustering of them failed; none where every member weight is finite (weights still in external
    data are not read for this)."""
    tensors = walk.graph.tensors()
    for name in dict.fromkeys(m.tensor for m in members if m.role != SHAPE):
        t = tensors.get(name)
        values = inline_values(t) if isinstance(t, gs.Constant) else None
        if not isinstance(values, np.ndarray) or values.dtype.kind != "f" or np.isfinite(values).all():
            continue
        which = "NaN" if np.isnan(values).any() else "-inf" if np.isneginf(values).any() else "inf"
        return [
            BlockReason(
                NONFINITE_WEIGHT,
                f"weight {name} holds {which} (a mask's fill?): merged channels would spread it",
                tensor=name,
            )
        ]
    return []


def unique_names(groups: list[ChannelGroup]) -> list[ChannelGroup]:
    """Groups named after the same producer (the parts of a Split partition) get ``#2``, ``#3``, … in
    graph order: a name identifies one group in the report, the search's allocation and the
    activation statistics."""
    seen: dict[str, int] = {}
    for g in groups:
        seen[g.name] = seen.get(g.name, 0) + 1
        if seen[g.name] > 1:
            g.name = f"{g.name}#{seen[g.name]}"
    return groups


def group_parts(walk: Analysis, sids: list[int], members: list[Member], size: int, blocked: list) -> int:
    """The parts of a group (least common multiple of what its spaces and split members require); appends
    the requirements' reasons to ``blocked`` when the parts do not divide the group or hold one unit each."""
    required = [(p, r) for s in sids for p, r in walk.parts[s]]
    parts = math.lcm(1, *(p for p, _ in required), *(m.split for m in members))
    if parts > 1 and (size % parts or size == parts):
        reasons = [r for _, r in required] or [
            BlockReason(SPLITS_UNITS, f"{size} units cannot merge within {parts} equal parts")
        ]
        blocked += [r for r in dict.fromkeys(reasons) if r not in blocked]
    return parts


def members_to_sources(walk: Analysis) -> None:
    """Move every member on a view to the stored weight it shows (axis i of the view is axis
    ``view.axes[i]`` of the weight; offsets and blocks along it are the same entries). A member that
    cannot move (a shape entry, an axis the view inserted) blocks its space."""
    if not walk.views:
        return
    for sid, members in walk.members.items():
        moved = []
        for m in members:
            view = walk.views.get(m.tensor)
            axis = view.source_axis(m.axis) if view is not None else None
            if view is None:
                moved.append(m)
            elif axis is None or m.role == SHAPE or m.split > 1:  # split members: not through views yet
                moved.append(m)
                walk.block_space(
                    sid,
                    BlockReason(
                        SHARED_TENSOR,
                        f"tensor {view.source} is read through {view.node} in a way the fold cannot follow",
                        view.node,
                        view.source,
                    ),
                )
            else:
                moved.append(replace(m, tensor=view.source, axis=axis))
        walk.members[sid] = moved
    for (tensor, axis), nodes in list(walk.member_uses.items()):
        view = walk.views.get(tensor)
        source_axis = view.source_axis(axis) if view is not None else None
        if source_axis is not None:
            walk.member_uses[(view.source, source_axis)] |= nodes


def block_shared_shape_entries(walk: Analysis) -> None:
    """A shape entry counted by two groups (e.g. one repeat_kv shape feeding every layer) would be
    shrunk by both: block them (the groups are independent, so uniting them would be wrong)."""
    owners: dict[tuple[str, int, int], set[int]] = defaultdict(set)
    for sid, members in walk.members.items():
        for m in members:
            if m.role == SHAPE:  # disjoint segments (Concat inputs) each shrink their own share: fine
                owners[(m.tensor, m.offset, m.segment)].add(sid)
    for (tensor, _, _), sids in owners.items():
        roots = {walk.uf.find(sid) for sid in sids}
        if len(roots) > 1:
            reason = BlockReason(
                SHARED_SHAPE, f"shape tensor {tensor} is computed once for several groups", tensor=tensor
            )
            for sid in sids:
                walk.block_space(sid, reason)


def unite_shared_slices(walk: Analysis) -> None:
    """A weight slice claimed by two spaces (a shared weight) forces one assignment for both."""
    claims: dict[tuple[str, int, int, int], list[tuple[int, str]]] = defaultdict(list)
    for sid, members in walk.members.items():
        for m in members:
            if m.role != SHAPE:
                claims[(m.tensor, m.axis, m.offset, m.block, m.split)].append((sid, m.role))
    by_axis: dict[tuple[str, int], list[tuple[int, int, int]]] = defaultdict(list)
    for (tensor, axis, offset, block, split), owners in claims.items():
        roles = {r for _, r in owners}
        first = owners[0][0]
        for sid, _ in owners[1:]:
            walk.uf.union(first, sid)
        if len(roles) > 1:
            walk.block_space(
                first,
                BlockReason(
                    CLAIM_CONFLICT, f"tensor {tensor} axis {axis} is both averaged and summed", tensor=tensor
                ),
            )
        n = walk.spaces[first].n // split  # a split member holds n/split channels per slab
        by_axis[(tensor, axis)].append((offset, offset + n * block, first))
    for (tensor, axis), ranges in by_axis.items():
        ranges.sort()
        for (_lo1, hi1, s1), (lo2, _hi2, s2) in zip(ranges, ranges[1:], strict=False):
            if lo2 < hi1:
                reason = BlockReason(
                    CLAIM_CONFLICT,
                    f"tensor {tensor} axis {axis} is claimed by overlapping groups",
                    tensor=tensor,
                )
                walk.block_space(s1, reason)
                walk.block_space(s2, reason)


def block_unaccounted_uses(walk: Analysis) -> None:
    """A member tensor also used where no rule accounted for it would be corrupted: block."""
    tensors = walk.graph.tensors()
    graph_inputs = {t.name for t in walk.graph.inputs}
    graph_outputs = {t.name for t in walk.graph.outputs}
    for sid, members in walk.members.items():
        for m in members:
            t = tensors.get(m.tensor)
            uses = walk.member_uses[(m.tensor, m.axis)]
            readers = effective_readers(t, walk.views) if t is not None else []
            extra = [n for n in readers if id(n) not in uses]
            chain = walk.shape_chains.get(m.tensor, set())
            for chained in chain:
                extra += [
                    n
                    for n in tensors[chained].outputs
                    if id(n) not in uses and not harmless_shape_use(n, chain)
                ]
            if extra:
                walk.block_space(
                    sid,
                    BlockReason(
                        SHARED_TENSOR,
                        f"tensor {m.tensor} is also used by {extra[0].op} {extra[0].name}",
                        extra[0].name,
                        m.tensor,
                    ),
                )
            if m.tensor in graph_inputs or m.tensor in graph_outputs:
                walk.block_space(
                    sid,
                    BlockReason(
                        GRAPH_INPUT, f"tensor {m.tensor} is a graph input or output", tensor=m.tensor
                    ),
                )
