"""Folding a graph's channel groups: features → clustering (k-means, or Ward where k-means is
expensive) → assignment → rewrite of every member.

Per group (docs/method.md §1.2–1.3): the feature vector of channel c is the concatenation of every
tied tensor slice marked as a feature (producer rows, biases, BN γ/β, per-channel constants and
consumer input columns; BN running statistics are excluded), optionally reweighted per block or
BN-normalised (:mod:`onnxfold.folding.features`). All assignments are computed from the original weights
first; only then is any tensor rewritten, so the order of groups is irrelevant.

``method`` chooses the assignment: ``fold`` clusters (cluster means / sums);
``l1``/``l2`` keep the k channels of largest feature norm and drop the rest (labels −1,
:mod:`onnxfold.folding.prune`), the structured magnitude-pruning baseline. The activation-aware
methods read the second moments of what each consumer reads (``stats``,
:class:`~onnxfold.folding.moments.ActivationStats`; :mod:`onnxfold.folding.compensate`):
``wanda`` keeps the channels of largest ‖W‖²·E[x²]; ``hybrid`` keeps a greedy least-error set and
reads each removed channel as a scaled kept one (Neuron Merging); ``lsq`` keeps the same set and
mixes every removed channel into the kept ones by ridge least squares, its mean into the consumer's
bias; ``auto`` builds both ``fold`` and ``lsq`` for each group and keeps the one of lower output
error: measured by ``judge`` (:class:`~onnxfold.folding.judge.GroupJudge`) when given, else
estimated from the moments (a tie goes to ``fold``, which is exact on duplicate channels). A group whose consumers have
no statistics (a consumer that is not a Conv, Gemm or MatMul) falls back to ``fold`` (``l2`` for
``wanda``) and says so in its ``reason``.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import onnx_graphsurgeon as gs

from onnxfold.analysis.groups import AVERAGE, ROLLBACK, BlockReason, ChannelGroup, reasons_text
from onnxfold.analysis.registry import hook
from onnxfold.errors import one_line
from onnxfold.folding.assign import assign_labels, assign_or_error, cluster_labels, parallel_assign
from onnxfold.folding.cluster import labels_in_parts, part_cluster_count
from onnxfold.folding.features import FEATURE_MODES, group_features, member_matrix
from onnxfold.folding.prune import PRUNE_METHODS, magnitude_labels
from onnxfold.folding.recipe import Recipe
from onnxfold.folding.rewrite import SliceEdit, apply_edits
from onnxfold.folding.verify import (  # noqa: F401  (re-exported: the fold pass and tests import them here)
    VERIFY_MAX_BYTES,
    Verifier,
    model_weight_bytes,
    rewrite_copy,
    rollback_failures,
)
from onnxfold.ir.model import Model, peek_values, set_values
from onnxfold.report.timing import collecting, record, rounded, step

log = logging.getLogger(__name__)
ValueFn = Callable[[str], np.ndarray]
#: Methods that read activation statistics of the consumers (:mod:`onnxfold.folding.moments`).
ACTIVATION_METHODS = ("wanda", "hybrid", "lsq", "auto")
METHODS = ("fold",) + PRUNE_METHODS + ACTIVATION_METHODS
__all__ = [
    "FEATURE_MODES",
    "METHODS",
    "FoldPlan",
    "FoldRecord",
    "apply_plans",
    "fold_edits",
    "group_features",
    "member_matrix",
    "parse_overrides",
    "plan_folds",
    "rollback_failures",
    "Verifier",
]


@dataclass
class FoldPlan:
    """What happens to one group: ``status`` is folded, unchanged, blocked or ignored.

    ``labels`` (n,) map channel i to output channel labels[i] < k, or −1 when it is dropped
    (``method`` l1/l2). A blocked plan lists its :class:`BlockReason` records in ``reasons``;
    ``reason`` is their messages joined by "; " (or why an ignored group is left alone)."""

    group: ChannelGroup
    status: str
    k: int
    sparsity: float
    labels: np.ndarray | None = None
    reason: str = ""
    method: str = "fold"
    reasons: list[BlockReason] = field(default_factory=list)
    #: member index → (T (n, k), c (n,)): a consumer's least-squares mix and the constant its bias absorbs
    mixes: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    #: estimated output error of each method considered (``auto``), by method name
    estimate: dict[str, float] = field(default_factory=dict)
    #: whether a later ``ar`` repair may rescale this group: False where it measurably hurts, "conv"
    #: (:data:`onnxfold.repair.ar.CONV_ONLY`) where its effect was not measured: convolutions only
    repair: bool | str = True
    #: wall seconds of each step of this group's assignment (read, features, reduce, cluster, …)
    seconds: dict[str, float] = field(default_factory=dict)
    #: the same steps' CPU seconds (:mod:`onnxfold.report.timing`)
    cpu_seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "group": self.group.name,
            "status": self.status,
            "method": self.method,
            "kind": self.group.kind,
            "unit": self.group.unit,
            "parts": self.group.parts,
            "layer": self.group.layer,
            "channels_before": int(self.group.size),
            "channels_after": int(self.k),
            "sparsity": float(self.sparsity),
            "reason": self.reason,
            "blocked": [r.to_dict() for r in self.reasons],
            "estimated_error": {k: float(v) for k, v in self.estimate.items()},
            "seconds": rounded(self.seconds, 4),
            "cpu_seconds": rounded(self.cpu_seconds, 4),
        }


def matching_pattern(patterns: Sequence[str], group: ChannelGroup) -> str | None:
    """The first of ``patterns`` (regular expressions) that finds the group's name or a producer's."""
    names = [group.name] + list(group.producers)
    for pat in patterns:
        if any(re.search(pat, name) for name in names):
            return pat
    return None


def check_regex(pattern: str, what: str) -> None:
    """Raise a one-line ValueError naming ``what`` when ``pattern`` is not a valid regular expression."""
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{what}: invalid regular expression {pattern!r} ({exc})") from None


def parse_overrides(items: Sequence[str]) -> list[tuple[str, float]]:
    """``["layer4.*=0.7", "fc=0"]`` → [(regex, sparsity)]; later items win."""
    out = []
    for item in items:
        pat, eq, value = item.rpartition("=")
        if not eq or not pat:
            raise ValueError(f"override {item!r} is not REGEX=SPARSITY")
        check_regex(pat, f"override {item!r}")
        try:
            sparsity = float(value)
        except ValueError:
            raise ValueError(
                f"override {item!r}: sparsity {value!r} is not a number (REGEX=SPARSITY)"
            ) from None
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"override {item!r}: sparsity must be in [0, 1)")
        out.append((pat, sparsity))
    return out


def plan_folds(
    groups: Sequence[ChannelGroup],
    values: ValueFn,
    sparsity: float,
    overrides: Sequence[tuple[str, float]] = (),
    ignore: Sequence[str] = (),
    round_to: int = 1,
    seed: int = 0,
    labeler: Callable[[np.ndarray, int, int], np.ndarray] | None = None,
    progress: Callable | None = None,
    method: str = "fold",
    features: str = "raw",
    n_init: int = 10,
    graph: gs.Graph | None = None,
    recipe: Recipe | None = None,
    cluster: str = "auto",
    stats=None,
    judge=None,
    workers: int = 1,
) -> list[FoldPlan]:
    """Choose k and compute the assignment of every group (nothing is rewritten yet).

    ``method``: fold (clustering with ``cluster``: auto, kmeans with ``n_init`` restarts, kmeans-full or ward;
    :func:`~onnxfold.folding.cluster.kmeans_labels`) or l1/l2 (magnitude pruning);
    ``features``: raw, blocknorm or fused (``fused`` needs ``graph`` to find the BNs).
    A group cut into parts (a grouped Conv's) is clustered part by part; with ``cluster`` auto each
    part by Ward's method (:data:`~onnxfold.folding.cluster.PARTS_ALGORITHM`).

    ``workers`` > 1 (−1: every core) assigns the groups in parallel with joblib (:func:`parallel_assign`;
    the labels do not depend on it). The activation-aware methods, ``fused`` features and a caller's
    ``labeler`` run in this process. Every plan's ``seconds`` holds its steps' wall times
    (:mod:`onnxfold.report.timing`), which are also added to the current collection."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} (expected one of {', '.join(METHODS)})")
    if features not in FEATURE_MODES:
        raise ValueError(f"unknown features {features!r} (expected one of {', '.join(FEATURE_MODES)})")

    jobs: list[tuple[int, ChannelGroup, int]] = []  # (plan index, group, k) still to be clustered
    plans: list[FoldPlan | None] = []
    for group in groups:
        if not group.foldable:
            reasons = list(group.blocked)
            plans.append(
                FoldPlan(group, "blocked", group.size, 0.0, reason=reasons_text(reasons), reasons=reasons)
            )
            continue
        pat = matching_pattern(ignore, group)
        if pat is not None:
            plans.append(
                FoldPlan(group, "ignored", group.size, 0.0, reason=f"matches ignore pattern {pat!r}")
            )
            continue
        r = sparsity
        if recipe is not None:
            from_recipe = recipe.sparsity(group)
            r = r if from_recipe is None else from_recipe
        for pat, value in overrides:
            if matching_pattern([pat], group):
                r = value
        k = part_cluster_count(group.size, r, group.parts, round_to)
        if k >= group.size:
            plans.append(FoldPlan(group, "unchanged", group.size, r))
            continue
        plans.append(FoldPlan(group, "folded", k, r, method=method))
        jobs.append((len(plans) - 1, group, k))

    if method in ACTIVATION_METHODS:  # needs the statistics, the graph and the judge: in this process
        fold_labeler = labeler or partial(cluster_labels, cluster=cluster, n_init=n_init)
        for index, group, k in progress(jobs, desc="clustering") if progress else jobs:
            r = plans[index].sparsity
            with collecting() as seconds:
                try:
                    if group.parts == 1:
                        plan = _activation_plan(
                            group, values, k, r, method, stats, graph, fold_labeler, seed, features, judge
                        )
                    else:
                        labels = assign_labels(
                            group, values, k, "fold", features, graph, seed, n_init, cluster
                        )
                        why = f"{method} not applicable (a group cut into {group.parts} parts): fold used"
                        plan = FoldPlan(group, "folded", int(labels.max()) + 1, r, labels, reason=why)
                except Exception as exc:  # this group stays whole; the others still fold
                    plan = unplannable(plans[index], exc)
            plan.seconds, plan.cpu_seconds = dict(seconds), dict(seconds.cpu)
            plans[index] = plan
        return plans

    def assign(
        group: ChannelGroup, k: int
    ) -> tuple[np.ndarray | Exception, dict[str, float], dict[str, float]]:
        if labeler is not None:  # a caller's own labeler (tests): in this process
            with collecting(propagate=False) as seconds:
                feats = group_features(group, values, features, graph)
                if group.parts == 1:
                    labels = labeler(feats, k, seed)
                else:
                    labels = labels_in_parts(feats, k, group.parts, lambda x, k_p: labeler(x, k_p, seed))
            return labels, dict(seconds), dict(seconds.cpu)
        return assign_or_error(group, values, k, method, features, graph, seed, n_init, cluster)

    if labeler is not None or workers == 1 or features == "fused":
        results = (assign(group, k) for _, group, k in jobs)
    else:
        results = parallel_assign(jobs, values, method, features, graph, seed, n_init, cluster, workers)
    if progress:
        results = progress(results, desc="clustering", total=len(jobs))
    for (index, _, _), (labels, seconds, cpu_seconds) in zip(jobs, results, strict=True):
        record(seconds, cpu_seconds)
        plan = plans[index]
        if isinstance(labels, Exception):  # this group stays whole; the others still fold
            unplannable(plan, labels)
        else:
            plan.labels, plan.k = labels, int(labels.max()) + 1
        plan.seconds, plan.cpu_seconds = seconds, cpu_seconds
    return plans


def unplannable(plan: FoldPlan, exc: Exception) -> FoldPlan:
    """``plan`` marked blocked because computing its fold failed (a bug, or a group no rule foresaw):
    the group is left whole and reported with the error, and the rest of the model still folds."""
    reason = f"rollback: computing its fold failed ({type(exc).__name__}: {one_line(exc, 300)})"
    log.warning("fold: left group %s whole: %s", plan.group.name, reason)
    plan.status, plan.k, plan.labels, plan.method = "blocked", plan.group.size, None, "fold"
    plan.reason, plan.reasons = reason, [BlockReason(ROLLBACK, reason)]
    return plan


def keep_labels(n: int, keep: np.ndarray) -> np.ndarray:
    """Labels of a keep set: kept channels 0…k−1 in their order, the others −1."""
    labels = np.full(n, -1, dtype=np.int64)
    labels[np.sort(np.asarray(keep, dtype=np.int64))] = np.arange(len(keep))
    return labels


def _activation_plan(
    group, values, k, r, method, stats, graph, fold_labeler, seed, features, judge=None
) -> FoldPlan:
    """The plan of one group under an activation-aware method (module docstring)."""
    from onnxfold.folding import compensate as comp

    found = stats.for_group(group, values, graph) if stats is not None and graph is not None else None
    if found is None:
        why = stats.why_not(group) if stats is not None else "no activation statistics"
        fallback = "l2" if method == "wanda" else "fold"
        feats = group_features(group, values, features, graph)
        labels = magnitude_labels(feats, k, "l2") if fallback == "l2" else fold_labeler(feats, k, seed)
        return FoldPlan(
            group,
            "folded",
            int(labels.max()) + 1,
            r,
            labels,
            method=fallback,
            reason=f"{method} not applicable ({why}): {fallback} used",
        )
    index, cstats = found
    n = group.size
    if method == "auto" and not getattr(stats, "fitted", True):  # random inputs: judge, fit nothing
        feats = group_features(group, values, features, graph)
        labels = fold_labeler(feats, k, seed)
        if group.kind == "heads" and judge is not None:  # nor a merge of heads, unless it wins by far
            from onnxfold.folding.sequential import clear_win  # (sequential.judged_methods)

            fold = FoldPlan(group, "folded", int(labels.max()) + 1, r, labels)
            pruned = {
                m: FoldPlan(group, "folded", k, r, magnitude_labels(feats, k, m), method=m)
                for m in ("l2", "l1")
            }
            chosen = judge.choose(pruned)  # records its measured error in its estimate
            if clear_win(judge.error(fold), chosen.estimate[f"measured:{chosen.method}"]):
                return fold
            return chosen
        keep = np.flatnonzero(magnitude_labels(feats, k, "l2") >= 0)
        estimate = {
            "fold": sum(comp.fold_error(s, labels) for s in cstats),
            "l2": sum(comp.drop_error(s, keep) for s in cstats),
        }
        fold = FoldPlan(group, "folded", int(labels.max()) + 1, r, labels, estimate=dict(estimate))
        prune = FoldPlan(group, "folded", k, r, keep_labels(n, keep), method="l2", estimate=dict(estimate))
        if judge is not None:
            return judge.choose({"fold": fold, "l2": prune})
        return fold if estimate["fold"] <= estimate["l2"] else prune
    if method == "wanda":
        keep = comp.wanda_keep(cstats, k)
        return FoldPlan(group, "folded", k, r, keep_labels(n, keep), method="wanda")
    keep = stats.keep(group.name, cstats, k)  # comp.greedy_keep, one greedy run serving every width
    mix = comp.merge_mix if method == "hybrid" else comp.ridge_mix
    mixes = {i: mix(s, keep) for i, s in zip(index, cstats, strict=True)}
    mixed = sum(comp.mix_error(s, keep, mixes[i][0]) for i, s in zip(index, cstats, strict=True))
    plan = FoldPlan(group, "folded", k, r, keep_labels(n, keep), method=method, mixes=mixes)
    if method != "auto":
        return plan
    plan.method = "lsq"
    labels = fold_labeler(group_features(group, values, features, graph), k, seed)
    folded = sum(comp.fold_error(s, labels) for s in cstats)
    plan.estimate = {"fold": folded, "lsq": mixed}
    fold = FoldPlan(group, "folded", int(labels.max()) + 1, r, labels, estimate=dict(plan.estimate))
    if judge is not None:
        return judge.choose({"fold": fold, "lsq": plan})
    return fold if folded <= mixed else plan


@dataclass
class FoldRecord:
    """What a fold pass did, for a repair pass after it: the plans, every member tensor's edits and
    ``source``, a copy of the model taken before anything was loaded or rewritten (its tensor
    values are shared with, or lazily read like, the input's)."""

    plans: list[FoldPlan]
    edits: dict[str, list[SliceEdit]]
    source: Model
    _tensors: dict | None = field(default=None, init=False, repr=False)

    def compensated_nodes(self) -> set[str]:
        """Consumers whose bias absorbed a least-squares constant (not derivable from the originals)."""
        return {
            plan.group.members[i].node
            for plan in self.plans
            if plan.status == "folded"
            for i, (_, c) in plan.mixes.items()
            if np.any(c)
        }

    def original(self, name: str) -> np.ndarray:
        """The value tensor ``name`` had before the fold."""
        if self._tensors is None:
            self._tensors = self.source.graph.tensors()
        return peek_values(self._tensors[name])


def fold_edits(plans: Sequence[FoldPlan]) -> dict[str, list[SliceEdit]]:
    """Every folded group's edit of every member tensor, by tensor name."""
    edits: dict[str, list[SliceEdit]] = defaultdict(list)
    for plan in plans:
        if plan.status != "folded":
            continue
        for i, m in enumerate(plan.group.members):
            matrix = plan.mixes[i][0] if i in plan.mixes else None
            edits[m.tensor].append(
                SliceEdit(
                    m.axis, m.offset, m.block, m.role, plan.labels, plan.k, m.split, m.split_axis, matrix
                )
            )
    return dict(edits)


def apply_plans(plans: Sequence[FoldPlan], graph: gs.Graph) -> list[str]:
    """Rewrite every member tensor of every folded group; returns the names of rewritten tensors."""
    with step("rewrite"):
        return _apply_plans(plans, graph)


def _apply_plans(plans: Sequence[FoldPlan], graph: gs.Graph) -> list[str]:
    edits = fold_edits(plans)
    tensors = graph.tensors()
    shifts = bias_shifts(plans, graph, tensors)
    for name, tensor_edits in edits.items():
        const = tensors[name]
        if not isinstance(const, gs.Constant):
            raise ValueError(f"member {name} is not a constant")
        set_values(const, apply_edits(peek_values(const), tensor_edits))
    rewritten = set(edits) | write_bias_shifts(shifts, edits, graph)
    fix_attributes(plans, graph, tensors)
    return sorted(rewritten)


def bias_shifts(
    plans: Sequence[FoldPlan], graph: gs.Graph, tensors: dict
) -> dict[str, tuple[str, int, np.ndarray]]:
    """Per consumer node, (weight, output axis, Δb): the constant Σ_i c_i·W[:, i] its mixes move
    into its bias, from the weights before any rewrite (each channel's slice, summed over taps)."""
    from onnxfold.analysis.registry import hook

    nodes = {n.name: n for n in graph.nodes}
    out: dict[str, tuple[str, int, np.ndarray]] = {}
    for plan in plans:
        if plan.status != "folded":
            continue
        for i, (_, c) in plan.mixes.items():
            if not np.any(c):
                continue
            m = plan.group.members[i]
            node = nodes[m.node]
            w = np.asarray(peek_values(tensors[m.tensor]), dtype=np.float64)
            out_axis = hook("weight_axes", node.op)(node)[0]
            moved = np.moveaxis(w, (m.axis, out_axis), (0, 1))
            part = moved[m.offset : m.offset + plan.group.size * m.block]
            delta = np.tensordot(np.repeat(c, m.block), part, 1).reshape(part.shape[1], -1).sum(axis=1)
            prev = out[node.name][2] if node.name in out else 0.0
            out[node.name] = (m.tensor, out_axis, prev + delta)
    return out


def write_bias_shifts(
    shifts: dict[str, tuple[str, int, np.ndarray]], edits: dict[str, list[SliceEdit]], graph: gs.Graph
) -> set[str]:
    """After every tensor is rewritten: add each Δb, edited like its consumer's output channels (the
    fold of a consumer's own output group averages or selects Δb as it does the bias), to the
    consumer's bias (created where there is none); the names of the bias tensors written."""
    from onnxfold.analysis.group_producers import effective_bias, producer_of, write_bias

    nodes = {n.name: n for n in graph.nodes}
    outputs = {t.name for t in graph.outputs}
    written = set()
    for name, (weight, out_axis, delta) in shifts.items():
        node = nodes[name]
        own = [
            SliceEdit(0, e.offset, e.block, AVERAGE, e.labels, e.k)
            for e in edits.get(weight, [])
            if e.axis == out_axis
        ]
        delta = apply_edits(np.asarray(delta, dtype=np.float64), own) if own else delta
        p = producer_of(node, weight, outputs)
        if p is None:
            raise ValueError(f"consumer {name} has no bias slot for its compensation")
        bias = effective_bias(node, p)
        write_bias(graph, node, p, (0.0 if bias is None else bias) + delta, node.inputs[1].values.dtype)
        written.add(node.inputs[2].name)
    return written


def fix_attributes(plans: Sequence[FoldPlan], graph: gs.Graph, tensors: dict) -> None:
    """Call the ``fix_attrs`` hook of every node a folded group names (through a member or a counted
    attribute) with the (group, k) of those groups, after every tensor is rewritten: a depthwise
    Conv's ``group``, a fused attention's head counts (:mod:`onnxfold.analysis.registry`)."""
    folds: dict[str, list[tuple[ChannelGroup, int]]] = defaultdict(list)
    for plan in plans:
        if plan.status != "folded":
            continue
        names = {m.node for m in plan.group.members} | {n for n, *_ in plan.group.unit_attrs}
        for name in names:
            folds[name].append((plan.group, plan.k))
    for node in graph.nodes:
        fix = hook("fix_attrs", node.op, node.domain) if node.name in folds else None
        if fix is not None:
            fix(node, folds[node.name], tensors)
