"""Folding a graph's channel groups: features → k-means → assignment → rewrite of every member.

Per group (method.md §1.2–1.3): the feature vector of channel c is the concatenation of every
tied tensor slice marked as a feature (producer rows, biases, BN γ/β, per-channel constants and
consumer input columns; BN running statistics are excluded). All assignments are computed from
the original weights first; only then is any tensor rewritten, so the order of groups is irrelevant.
"""
from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from onnxfold.cluster import cluster_count, kmeans_labels
from onnxfold.groups import SHAPE, ChannelGroup, Member
from onnxfold.io import set_values
from onnxfold.rewrite import SliceEdit, apply_edits

ValueFn = Callable[[str], np.ndarray]


@dataclass
class FoldPlan:
    """What happens to one group: ``status`` is folded, unchanged, blocked or ignored."""

    group: ChannelGroup
    status: str
    k: int
    sparsity: float
    labels: np.ndarray | None = None
    reason: str = ""

    def to_dict(self) -> dict:
        return {"group": self.group.name, "status": self.status, "channels_before": self.group.size,
                "channels_after": self.k, "sparsity": self.sparsity, "reason": self.reason}


def member_matrix(member: Member, values: np.ndarray, n: int) -> np.ndarray:
    """The (n, d) slice of a member tensor: row c holds every entry tied to channel c."""
    moved = np.moveaxis(np.asarray(values), member.axis, 0)
    rows = moved[member.offset: member.offset + n * member.block]
    return rows.reshape(n, -1).astype(np.float64)


def group_features(group: ChannelGroup, values: ValueFn) -> np.ndarray:
    """Concatenate the feature slices of all members of ``group`` into an (n, d) matrix."""
    blocks = [member_matrix(m, values(m.tensor), group.size) for m in group.members
              if m.feature and m.role != SHAPE]
    return np.hstack(blocks) if blocks else np.zeros((group.size, 0))


def _match(patterns: Sequence[str], group: ChannelGroup) -> str | None:
    names = [group.name] + list(group.producers)
    for pat in patterns:
        if any(re.search(pat, name) for name in names):
            return pat
    return None


def parse_overrides(items: Sequence[str]) -> list[tuple[str, float]]:
    """``["layer4.*=0.7", "fc=0"]`` → [(regex, sparsity)]; later items win."""
    out = []
    for item in items:
        pat, eq, value = item.rpartition("=")
        if not eq or not pat:
            raise ValueError(f"override {item!r} is not REGEX=SPARSITY")
        try:
            re.compile(pat)
            sparsity = float(value)
        except (re.error, ValueError):
            raise ValueError(f"override {item!r} is not REGEX=SPARSITY") from None
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"override {item!r}: sparsity must be in [0, 1)")
        out.append((pat, sparsity))
    return out


def plan_folds(groups: Sequence[ChannelGroup], values: ValueFn, sparsity: float,
               overrides: Sequence[tuple[str, float]] = (), ignore: Sequence[str] = (),
               round_to: int = 1, seed: int = 0,
               labeler: Callable[[np.ndarray, int, int], np.ndarray] | None = None,
               progress: Callable | None = None) -> list[FoldPlan]:
    """Choose k and compute the cluster assignment of every group (nothing is rewritten yet)."""
    labeler = labeler or (lambda feats, k, s: kmeans_labels(feats, k, seed=s))
    plans: list[FoldPlan] = []
    iterator = progress(groups, desc="clustering") if progress else groups
    for group in iterator:
        if not group.foldable:
            plans.append(FoldPlan(group, "blocked", group.size, 0.0, reason="; ".join(group.blocked)))
            continue
        pat = _match(ignore, group)
        if pat is not None:
            plans.append(FoldPlan(group, "ignored", group.size, 0.0, reason=f"matches ignore pattern {pat!r}"))
            continue
        r = sparsity
        for pat, value in overrides:
            if _match([pat], group):
                r = value
        k = cluster_count(group.size, r, round_to)
        if k >= group.size:
            plans.append(FoldPlan(group, "unchanged", group.size, r))
            continue
        labels = labeler(group_features(group, values), k, seed)
        k_eff = int(labels.max()) + 1
        plans.append(FoldPlan(group, "folded", k_eff, r, labels))
    return plans


def apply_plans(plans: Sequence[FoldPlan], graph: gs.Graph) -> list[str]:
    """Rewrite every member tensor of every folded group; returns the names of rewritten tensors."""
    edits: dict[str, list[SliceEdit]] = defaultdict(list)
    for plan in plans:
        if plan.status != "folded":
            continue
        for m in plan.group.members:
            edits[m.tensor].append(SliceEdit(m.axis, m.offset, m.block, m.role, plan.labels, plan.k))
    tensors = graph.tensors()
    for name, tensor_edits in edits.items():
        const = tensors[name]
        if not isinstance(const, gs.Constant):
            raise ValueError(f"member {name} is not a constant")
        set_values(const, apply_edits(np.asarray(const.values), tensor_edits))
    return sorted(edits)
