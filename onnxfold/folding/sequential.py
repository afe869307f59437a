"""``method=auto`` on samples: groups chosen one after another, each given the choices before it.

Compressing one group changes what every later consumer reads, and errors compound. So the groups
are visited in graph order; for group g the model is rebuilt with every earlier choice applied
(and ``ar`` on the folds that it measurably helped, as the repair pass will do), and then:

1. **Refit.** The least-squares mix of every consumer of g is solved against what that consumer
   reads *now*: with x the consumer's input in the original model and x′ in the rebuilt one, on
   the same samples and positions,

       T = E[x x′_Kᵀ] (E[x′_K x′_Kᵀ] + λI)⁻¹,   c = E[x] − T E[x′_K]   (c only where a bias absorbs it),

   every row of T, kept channels included, so the drift of earlier groups is corrected too.
2. **Choice.** The fold, the fold followed by ``ar`` (when the pipeline repairs with ``ar``), the
   refitted merge (when the samples are informative enough to fit one) and each pruning given
   (``wanda``, ``l2``) are applied on top of the rebuilt model and scored by the relative output
   error on the samples (:class:`~onnxfold.folding.judge.GroupJudge`); the lowest wins, a tie goes
   to the fold (exact on duplicate channels).

Cost: a handful of onnxruntime sessions per group, so this runs for a fixed sparsity; the target
search judges each group alone (:meth:`~onnxfold.folding.judge.GroupJudge.choose`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from onnxfold.folding.compensate import RIDGE
from onnxfold.folding.moments import ActivationStats, Feeds, Site, has_bias_slot, site_runs
from onnxfold.ir.model import Model

log = logging.getLogger(__name__)

#: Relative squared output errors below this are float rounding: they tie, and a tie goes to the fold
#: (a fold of exact duplicates is exact on every input; a pruning whose dropped channels happen to be
#: silent on the samples is exact only on them).
TIE = 1e-9

#: Where the samples cannot judge a group's fold (:func:`judged_methods`), the fold still wins when it
#: is this many times closer than the best pruning: a fold of duplicate heads is exact up to rounding
#: (in float16 too), while pruning one of two duplicates loses half of its contribution.
CLEAR_WIN = 100.0


def clear_win(fold_error: float, best_other: float) -> bool:
    """Whether a fold the samples cannot judge still wins: exact, or :data:`CLEAR_WIN` times closer."""
    return fold_error < TIE or fold_error * CLEAR_WIN < best_other


#: Observations kept per site for the refit (a deterministic stride subsamples beyond this).
MAX_OBSERVATIONS = 20000


class Thinned:
    """Every ``stride``-th observation of a stream, in arrival order: when more than
    2 · :data:`MAX_OBSERVATIONS` are kept, every other one goes and the stride doubles, so memory
    stays bounded by the cap however many samples and positions arrive (an EEG model's 32 windows of
    7,500 steps held 11 GB of observations before the stride was applied at the end)."""

    def __init__(self, cap: int = MAX_OBSERVATIONS):
        self.cap, self.stride, self.seen, self.parts = cap, 1, 0, []
        self.kept = 0

    def add(self, x: np.ndarray) -> None:
        start = (-self.seen) % self.stride  # the next global index that is a multiple of the stride
        self.seen += len(x)
        part = x[start :: self.stride]
        self.parts.append(part)
        self.kept += len(part)
        while self.kept > 2 * self.cap:
            rows = np.concatenate(self.parts)[::2]
            self.parts, self.kept, self.stride = [rows], len(rows), self.stride * 2

    def values(self) -> np.ndarray:
        """The kept observations, at most :data:`MAX_OBSERVATIONS`, evenly spaced over the stream."""
        rows = np.concatenate(self.parts)
        return rows[:: max(1, -(-len(rows) // self.cap))]


def capture(model: Model, sites: Sequence[Site], feeds: Sequence[Feeds]) -> dict[Site, np.ndarray]:
    """(observations, n) float64 values of every site over every run of ``feeds``: at most
    :data:`MAX_OBSERVATIONS` per site, every k-th of the stream (:class:`Thinned`)."""
    parts = {s: Thinned() for s in dict.fromkeys(sites)}
    for run in site_runs(model, list(parts), feeds):
        for s, x in run:
            parts[s].add(x)
    return {s: kept.values() for s, kept in parts.items()}


def refit(plan, sites: dict[int, Site], original: dict[Site, np.ndarray], now: dict[Site, np.ndarray], bias):
    """A copy of the merge ``plan`` whose mixes are solved against the rebuilt model (module docstring)."""
    keep = np.flatnonzero(plan.labels >= 0)
    new = copy.copy(plan)
    new.mixes = {}
    for i in plan.mixes:
        site = sites[i]
        x, xp = original[site], now[site][:, keep]
        if not len(xp):
            raise ValueError(f"no observations of {site.tensor}")
        if bias(i):
            mx, mk = x.mean(axis=0), xp.mean(axis=0)
            x, xp = x - mx, xp - mk
        gram = xp.T @ xp / len(xp)
        lam = (RIDGE + (len(keep) / len(xp)) ** 2) * max(float(np.mean(np.diag(gram))), 1e-300)
        t = np.linalg.solve(gram + lam * np.eye(len(keep)), (xp.T @ x) / len(xp)).T
        c = mx - t @ mk if bias(i) else np.zeros(len(t))
        new.mixes[i] = (t, c)
    return new


def judged_methods(blind: bool) -> tuple[str, ...]:
    """The pruning candidates of a group: L2 (and the activation-aware ones the samples allow), and
    also L1 where the fold is not a candidate (``blind``). Random tokens leave attention diffuse, so
    they cannot tell how merging heads (averaging their queries and keys) changes sharp attention:
    on all-MiniLM-L6-v2 at 6 of 12 heads per layer, the fold of any one layer's heads kept the sentence
    embeddings least close of fold, L1, L2 and hybrid, while the random tokens ranked it first at 4 of
    6 layers. L1 and L2 rank heads differently (L1 0.909 against L2 0.894 at 9 of 12 heads), so both
    are judged there."""
    return ("l2", "wanda", "l1") if blind else ("l2", "wanda")


def plan_sequential(
    source: Model,
    folds: Sequence,
    merges: Sequence | None,
    stats: ActivationStats,
    repair: str = "none",
    prunes: dict[str, Sequence] | None = None,
    unjudged: Callable[[Any], bool] | None = None,
    stop: Callable[[], bool] | None = None,
    progress: Callable[..., Any] | None = None,
) -> list:
    """The chosen plan of every group: ``folds[i]`` is group i's fold, ``merges[i]`` its lsq merge
    (None: no merge is a candidate, as on samples too uninformative to fit a mix to) and
    ``prunes[name][i]`` its plan by each pruning method ``name`` (wanda, l2, ...). ``unjudged(group)``
    true: the samples cannot judge the group's fold, which then wins only by far (:func:`clear_win`:
    duplicate heads fold back exactly), and the pruning ``l1`` is a candidate only there
    (:func:`judged_methods`). ``stop()`` true (a search's time limit has passed): the groups left
    keep their fold, unjudged (the search keeps the refit only if it measures no worse).
    ``progress(iterable, desc=...)``: a progress bar over the groups judged (U2-Net's 101 groups took
    13 minutes at ``-s 0.3`` with no line in a log)."""
    from onnxfold.folding.apply import FoldRecord, fold_edits
    from onnxfold.folding.judge import GroupJudge
    from onnxfold.passes.fold import rewrite_model

    feeds = stats.feeds
    original = None
    if merges is not None:
        wanted = [s for sites in stats.sites.values() for s in sites.values() if isinstance(s, Site)]
        original = getattr(stats, "captured", None)
        if original is None:  # the original model's sites: the same for every candidate of a search
            original = stats.captured = capture(source, wanted, feeds)
    graph_outputs = {t.name for t in source.graph.outputs}
    nodes = {n.name: n for n in source.graph.nodes}
    chosen: list = []
    unscorable: set[str] = set()

    def rebuilt(plans: list) -> Model:
        model = source.copy()
        rewrite_model(model, plans, shapes=False)  # only run
        if repair == "ar" and any(p.repair for p in plans):
            from onnxfold.repair.ar import apply_ar

            apply_ar(model.graph, FoldRecord(plans, fold_edits(plans), source))
        return model

    judge = GroupJudge(source, feeds, "none")
    base, based = source, []  # the model with the choices so far, and those plans (their ids)

    def score(plan, ar: bool) -> float:
        plan.repair = ar
        try:
            err = judge.error_of(rebuilt(done + [plan]))
        except Exception as exc:  # a rewrite that fails scores worst; the fold pass rolls it back
            log.info("auto: %s of %s failed (%s)", plan.method, plan.group.name, exc)
            return float("inf")
        return 0.0 if err < TIE else err

    merges = list(merges) if merges is not None else [None] * len(folds)
    prunes = {name: list(plans) for name, plans in (prunes or {}).items()}
    pairs = list(zip(folds, merges, strict=True))
    # counted over the groups that fold (SCRFD's read "1/40 groups" with 31 foldable)
    bar = (
        progress(None, desc="auto: judging", total=sum(f.status == "folded" for f in folds))
        if progress
        else None
    )

    def judged(pairs: list) -> Iterator:  # a folding group counts once its turn is done
        for pair in pairs:
            yield pair
            if bar is not None and pair[0].status == "folded":
                bar.update(1)

    for i, (fold, merge) in enumerate(judged(pairs)):
        blind = unjudged is not None and unjudged(fold.group)
        alternatives = {
            name: plans[i]
            for name, plans in prunes.items()
            if plans[i].status == "folded" and name in judged_methods(blind)
        }
        if merge is not None and (merge.status != "folded" or not merge.mixes):
            merge = None
        if fold.status != "folded" or (merge is None and not alternatives):
            chosen.append(merge if fold.status != "folded" and merge is not None else fold)
            continue
        if stop is not None and stop():
            log.info("auto: time limit reached, %s keeps its fold unjudged", fold.group.name)
            chosen.append(fold)
            continue
        done = [p for p in chosen if p.status == "folded" and p.group.name not in unscorable]
        if [id(p) for p in done] != based:  # candidates differ from rebuilt(done) in this group only
            base = rebuilt(done) if done else source
            judge.rebase(base)
            based = [id(p) for p in done]
        fold = copy.copy(fold)
        errors = {"measured:fold": score(fold, False)}
        best, best_err = fold, float("inf")
        if not blind:
            best_err = errors["measured:fold"]
            if repair == "ar":
                errors["measured:fold+ar"] = score(fold, True)
                best_err = min(best_err, errors["measured:fold+ar"])
            fold.repair = repair == "ar" and errors["measured:fold+ar"] < errors["measured:fold"]
        if merge is not None:
            sites = {j: stats.sites[merge.group.name][j] for j in merge.mixes}

            def bias(j: int, group=merge.group) -> bool:
                m = group.members[j]
                return m.node in nodes and has_bias_slot(nodes[m.node], m.tensor, graph_outputs)

            try:
                now = capture(base, list(sites.values()), feeds)
                merge = refit(merge, sites, original, now, bias)
            except Exception as exc:  # keep the merge solved on the original statistics
                log.info("auto: refit of %s failed (%s)", merge.group.name, exc)
            errors["measured:lsq"] = score(merge, False)
            if errors["measured:lsq"] < best_err:
                best, best_err = merge, errors["measured:lsq"]
        for name, prune in alternatives.items():
            prune = copy.copy(prune)
            errors[f"measured:{name}"] = score(prune, False)
            if errors[f"measured:{name}"] < best_err:
                best, best_err = prune, errors[f"measured:{name}"]
        if blind and clear_win(errors["measured:fold"], best_err):  # duplicate heads fold back exactly
            best, best_err = fold, errors["measured:fold"]
        best.estimate = {**best.estimate, **errors}
        if not np.isfinite(best_err):  # no candidate rewrote: later groups are judged without it
            unscorable.add(best.group.name)
        chosen.append(best)
    if bar is not None:
        bar.close()
    return chosen
