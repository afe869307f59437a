"""Folding a graph's channel groups: features → clustering (k-means, or Ward where k-means is
expensive) → assignment → rewrite of every member.

Per group (docs/method.md §1.2–1.3): the feature vector of channel c is the concatenation of every
tied tensor slice marked as a feature (producer rows, biases, BN γ/β, per-channel constants and
consumer input columns; BN running statistics are excluded), optionally reweighted per block or
BN-normalised (:mod:`onnxfold.folding.features`). All assignments are computed from the original weights
first; only then is any tensor rewritten, so the order of groups is irrelevant.

``method`` chooses the assignment: ``fold`` clusters (cluster means / sums);
``l1``/``l2`` keep the k channels of largest feature norm and drop the rest (labels −1,
:mod:`onnxfold.folding.prune`), the structured magnitude-pruning baseline.
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

from onnxfold.analysis.groups import ROLLBACK, BlockReason, ChannelGroup
from onnxfold.analysis.registry import hook
from onnxfold.errors import one_line
from onnxfold.folding.cluster import (
    PARTS_ALGORITHM,
    kmeans_labels,
    labels_in_parts,
    part_cluster_count,
)
from onnxfold.folding.features import FEATURE_MODES, group_features, member_matrix
from onnxfold.folding.prune import PRUNE_METHODS, magnitude_labels
from onnxfold.folding.recipe import Recipe
from onnxfold.folding.rewrite import SliceEdit, apply_edits
from onnxfold.ir.external import weight_bytes
from onnxfold.ir.model import PROTO_LIMIT, Model, peek_values, set_values

log = logging.getLogger(__name__)
ValueFn = Callable[[str], np.ndarray]
METHODS = ("fold",) + PRUNE_METHODS
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
        }


def _match(patterns: Sequence[str], group: ChannelGroup) -> str | None:
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
) -> list[FoldPlan]:
    """Choose k and compute the assignment of every group (nothing is rewritten yet).

    ``method``: fold (clustering with ``cluster``: auto, kmeans with ``n_init`` restarts, kmeans-full or ward;
    :func:`~onnxfold.folding.cluster.kmeans_labels`) or l1/l2 (magnitude pruning);
    ``features``: raw, blocknorm or fused (``fused`` needs ``graph`` to find the BNs).
    A group cut into parts (a grouped Conv's) is clustered part by part; with ``cluster`` auto each
    part by Ward's method (:data:`~onnxfold.folding.cluster.PARTS_ALGORITHM`)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} (expected one of {', '.join(METHODS)})")
    if features not in FEATURE_MODES:
        raise ValueError(f"unknown features {features!r} (expected one of {', '.join(FEATURE_MODES)})")
    if labeler is None:
        if method == "fold":

            def labeler(feats: np.ndarray, k: int, s: int, algorithm: str = cluster) -> np.ndarray:
                return kmeans_labels(feats, k, seed=s, n_init=n_init, algorithm=algorithm)

            part_labeler = partial(labeler, algorithm=PARTS_ALGORITHM) if cluster == "auto" else labeler
        else:

            def labeler(feats: np.ndarray, k: int, s: int) -> np.ndarray:
                return magnitude_labels(feats, k, method)

            part_labeler = labeler
    else:
        part_labeler = labeler

    plans: list[FoldPlan] = []
    iterator = progress(groups, desc="clustering") if progress else groups
    for group in iterator:
        if not group.foldable:
            reasons = list(group.blocked)
            plans.append(
                FoldPlan(
                    group, "blocked", group.size, 0.0, reason="; ".join(map(str, reasons)), reasons=reasons
                )
            )
            continue
        pat = _match(ignore, group)
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
            if _match([pat], group):
                r = value
        parts = group.parts
        k = part_cluster_count(group.size, r, parts, round_to)
        if k >= group.size:
            plans.append(FoldPlan(group, "unchanged", group.size, r))
            continue
        feats = group_features(group, values, features, graph)
        if parts == 1:
            labels = labeler(feats, k, seed)
        else:  # each part on its own, k/parts clusters each (a grouped Conv's groups)
            labels = labels_in_parts(feats, k, parts, lambda x, k_part: part_labeler(x, k_part, seed))
        k_eff = int(labels.max()) + 1
        plans.append(FoldPlan(group, "folded", k_eff, r, labels, method=method))
    return plans


@dataclass
class FoldRecord:
    """What a fold pass did, for a repair pass after it: the plans, every member tensor's edits and
    ``source``, a copy of the model taken before anything was loaded or rewritten (its tensor
    values are shared with, or lazily read like, the input's)."""

    plans: list[FoldPlan]
    edits: dict[str, list[SliceEdit]]
    source: Model
    _tensors: dict | None = field(default=None, init=False, repr=False)

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
        for m in plan.group.members:
            edits[m.tensor].append(
                SliceEdit(m.axis, m.offset, m.block, m.role, plan.labels, plan.k, m.split, m.split_axis)
            )
    return dict(edits)


def apply_plans(plans: Sequence[FoldPlan], graph: gs.Graph) -> list[str]:
    """Rewrite every member tensor of every folded group; returns the names of rewritten tensors."""
    edits = fold_edits(plans)
    tensors = graph.tensors()
    for name, tensor_edits in edits.items():
        const = tensors[name]
        if not isinstance(const, gs.Constant):
            raise ValueError(f"member {name} is not a constant")
        set_values(const, apply_edits(peek_values(const), tensor_edits))
    fix_attributes(plans, graph, tensors)
    return sorted(edits)


def fix_attributes(plans: Sequence[FoldPlan], graph: gs.Graph, tensors: dict) -> None:
    """Call the ``fix_attrs`` hook of every node a folded group names (through a member or a counted
    attribute) with the (group, k) of those groups, after every tensor is rewritten: a depthwise
    Conv's ``group``, a fused attention's head counts (:mod:`onnxfold.analysis.registry`)."""
    folds: dict[str, list[tuple[ChannelGroup, int]]] = defaultdict(list)
    for plan in plans:
        if plan.status != "folded":
            continue
        names = {m.node for m in plan.group.members} | {n for n, _ in plan.group.unit_attrs}
        for name in names:
            folds[name].append((plan.group, plan.k))
    for node in graph.nodes:
        fix = hook("fix_attrs", node.op, node.domain) if node.name in folds else None
        if fix is not None:
            fix(node, folds[node.name], tensors)


#: Above this many weight bytes, verification skips the in-memory checker and the onnxruntime run.
VERIFY_MAX_BYTES = PROTO_LIMIT


def model_weight_bytes(model: Model) -> int:
    """Bytes of every constant of the model (:func:`onnxfold.ir.external.weight_bytes`): no value is read."""
    return weight_bytes(model.graph)


class Verifier:
    """Checks a folded model against its source: full ``onnx.checker``, onnxruntime loads it and one
    run on small random inputs gives the source's output shapes. Each check is used only where the
    source itself passes it (so a failure is the fold's), and both are skipped above 2 GB."""

    def __init__(self, source: Model, input_shapes: dict | None = None):
        from onnxfold.ir.model import to_model_proto

        self.checker = self.ort = False
        self.inputs: dict | None = None
        self.shapes: dict[str, tuple] = {}
        if model_weight_bytes(source) > VERIFY_MAX_BYTES:
            log.info("fold verify: model above 2 GB, skipping the checker and the onnxruntime run")
            return
        proto = to_model_proto(source)
        try:
            import onnx

            onnx.checker.check_model(proto, full_check=True)
            self.checker = True
        except Exception as exc:
            log.info("fold verify: the input fails onnx.checker (%s); not used to verify", one_line(exc, 300))
        try:
            from onnxfold.runtime.inputs import make_inputs
            from onnxfold.runtime.session import make_session

            sess = make_session(
                proto.SerializeToString(), providers=["CPUExecutionProvider"], optimize=False, threads=1
            )
            self.inputs = make_inputs(sess, shapes=input_shapes or None, batch=1)
            self.shapes = {
                o.name: v.shape for o, v in zip(sess.get_outputs(), sess.run(None, self.inputs), strict=True)
            }
            self.ort = True
        except Exception as exc:
            log.info(
                "fold verify: the input does not run in onnxruntime (%s); not used to verify",
                one_line(exc, 300),
            )

    def error(self, model: Model) -> str | None:
        """None if ``model`` passes every check this verifier uses, else a one-line reason."""
        if not (self.checker or self.ort):
            return None
        from onnxfold.ir.model import to_model_proto

        try:
            proto = to_model_proto(model)
            if self.checker:
                import onnx

                onnx.checker.check_model(proto, full_check=True)
            if self.ort:
                from onnxfold.runtime.session import make_session

                sess = make_session(
                    proto.SerializeToString(), providers=["CPUExecutionProvider"], optimize=False, threads=1
                )
                got = {
                    o.name: v.shape
                    for o, v in zip(sess.get_outputs(), sess.run(None, self.inputs), strict=True)
                }
                if got != self.shapes:
                    return f"output shapes changed: {got} != {self.shapes}"
        except Exception as exc:
            return f"{type(exc).__name__}: {one_line(exc, 300)}"
        return None


def rewrite_copy(
    source: Model, plans: Sequence[FoldPlan], rewrite: Callable[[Model, Sequence[FoldPlan]], list[str]]
) -> tuple[Model, list[str]]:
    """A fresh copy of ``source`` with ``plans`` applied by ``rewrite``."""
    model = source.copy()
    return model, rewrite(model, plans)


def rollback_failures(
    source: Model,
    plans: list[FoldPlan],
    verifier: Verifier,
    rewrite: Callable[[Model, Sequence[FoldPlan]], list[str]],
    error: str,
) -> tuple[Model, list[str]]:
    """Find the folded groups whose rewrite breaks the model and block them (``reason`` "rollback: …").

    Bisects the folded plans (a subset is tried on a fresh copy of ``source``); if the groups left still
    fail together, adds them back one at a time, keeping those that verify. Returns the model with every
    surviving plan applied and the rewritten tensor names."""

    def attempt(subset: Sequence[FoldPlan]) -> tuple[str | None, Model | None, list[str]]:
        try:
            model, names = rewrite_copy(source, subset, rewrite)
        except Exception as exc:
            return f"{type(exc).__name__}: {one_line(exc, 300)}", None, []
        return verifier.error(model), model, names

    folded = [p for p in plans if p.status == "folded"]
    bad: dict[int, str] = {}

    def search(cands: list[FoldPlan], err: str | None = None) -> None:
        if not cands:
            return
        if err is None:
            err = attempt(cands)[0]
            if err is None:
                return
        if len(cands) == 1:
            bad[id(cands[0])] = err
            return
        half = len(cands) // 2
        search(cands[:half])
        search(cands[half:])

    search(folded, error)
    keep = [p for p in folded if id(p) not in bad]
    err, model, names = attempt(keep)
    if err is not None:  # groups that only fail together: add them back one at a time
        keep = []
        for p in folded:
            trial_err = attempt(keep + [p])[0]
            if trial_err is None:
                keep.append(p)
            else:
                bad.setdefault(id(p), trial_err)
        err, model, names = attempt(keep)
    kept = {id(p) for p in keep}
    for p in folded:
        if id(p) not in kept:
            reason = bad.get(id(p), "breaks the model together with other groups")
            log.warning("fold: rolled back group %s: %s", p.group.name, reason)
            p.status, p.k, p.labels = "blocked", p.group.size, None
            p.reason = f"rollback: {reason}"
            p.reasons = [BlockReason(ROLLBACK, p.reason)]
    if err is not None or model is None:  # nothing verifies: return the source untouched
        return source.copy(), []
    return model, names
