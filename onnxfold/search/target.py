"""Target search: the largest compression whose fidelity meets a target, or a budget at least loss.

1. Sensitivity curves of the searchable groups (:mod:`onnxfold.search.sensitivity`); groups a
   recipe or an override fixes, and ignored or blocked ones, are not searched.
2. The greedy allocation path (:mod:`onnxfold.search.allocate`) orders channel removals by
   estimated loss per parameter (or MAC) saved, in the widths the fold writes (``round_to``).
3. ``min_fidelity``: bisection on the number of path steps. Every candidate is really built (fold with the
   allocated per-group sparsities, then the configured repair and cleanup) and measured; the estimate only
   proposes. The kept candidate is the one of largest measured parameter reduction whose measured fidelity
   meets the target (:meth:`Candidate.meets`: the rule of succession for a count, a bootstrap lower value
   for a mean). Fidelity need not fall monotonically along the path, so three points beyond the first
   failure are probed, and the bisection resumes above any that passes. It starts short of the first step
   that takes a group to a width the sensitivity saw miss alone (every later one holds it there), not at
   the far end. Past the pick, where its next step missed, a detour holds that step's group at its
   width and goes on in the others (:func:`~onnxfold.search.bisect.detour_candidate`). ``budget``: the
   path prefix whose estimated saving reaches the budget, corrected against the measured reduction,
   within one step (a channel, or ``round_to`` channels). Where the sensitivity
   shows the measurement blind (no fold moves the fidelity: :mod:`onnxfold.search.blind`),
   ``min_fidelity`` keeps the unchanged model and the budget warns.
4. Uniform rivals (:mod:`onnxfold.search.uniform`): with time left, a few candidates with every
   searched group at one sparsity; one that meets the target and removes more, or reaches the budget
   and measures higher, replaces the path's pick.

``limit`` (a :class:`~onnxfold.search.time_limit.TimeLimit`, ``--time-limit``): checked between
measurements. The sensitivity stops at half of it (levels left are taken last on the path, as misses are,
and measured only within candidates, the far end first, where no group alone measured a miss:
:meth:`~onnxfold.search.allocate.AllocationPath.short_of_misses`); after all of it the bisection measures
the far end of the path, takes the unchanged model (exact) unmeasured when that misses, else the best
candidate so far; the budget keeps its closest; ``refine`` is skipped once it has passed, and stops
judging its groups when it passes during the refit. The report says what the limit cut.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from onnxfold.analysis import analyze_graph
from onnxfold.folding import samples as budgets
from onnxfold.ir.model import Model
from onnxfold.report.fold_report import stats_of
from onnxfold.report.progress import progress_bar
from onnxfold.report.table import percent
from onnxfold.runtime.fidelity import OutputFidelity
from onnxfold.search.allocate import AllocationPath, fixed_groups, greedy_path, mostly_unmeasured, with_prior
from onnxfold.search.bisect import (
    GainFloor,
    below_gain,
    bisect_candidate,
    detour_candidate,
    gallop_candidate,
)
from onnxfold.search.blind import blind_advice, blind_reason
from onnxfold.search.budget import budget_candidate, budget_note, compute_note, params_saved
from onnxfold.search.candidates import Candidate, measured, next_key
from onnxfold.search.candidates import refined as _refined
from onnxfold.search.evaluate import Evaluator
from onnxfold.search.exercise_notes import coverage_notes, exercise_notes, unexercised_low
from onnxfold.search.held_out import held_out_lines
from onnxfold.search.misses import next_missed_lines
from onnxfold.search.regression import default_note
from onnxfold.search.result_text import bound_text, goal, per_outputs
from onnxfold.search.sensitivity import GroupCurve, sensitivity
from onnxfold.search.time_limit import FASTER, STARVED, PacedLimit, TimeLimit, sensitivity_cut_notes
from onnxfold.search.uniform import uniform_rival

log = logging.getLogger(__name__)


@dataclass
class SearchResult:
    """What the search chose, and how: the chosen candidate, every candidate tried, timing."""

    mode: str  # min_fidelity, target_params or target_macs
    target: float
    chosen: Candidate
    met: bool
    candidates: list[Candidate]
    curves: list[GroupCurve]
    allocation: dict[str, float]
    inputs: str
    proxy: bool
    metrics: dict[str, str]
    seconds: float
    recurrent: list[tuple[str, str]] = field(default_factory=list)  # (state input, state output)
    rolled_out: bool = False  # measured along streams, the candidate's own state carried
    #: what the time limit cut short ("" when it was not reached or there was none)
    cut_short: str = ""
    #: output -> how the data-free proxy left its decisions unexercised
    unexercised: dict[str, str] = field(default_factory=dict)
    #: output -> (classes the given samples' argmaxes reach, classes it has), where some are not shown
    classes_reached: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: output -> the classes no given sample shows; output -> {class: samples} shown by one or two
    classes_missing: dict[str, list[int]] = field(default_factory=dict)
    classes_thin: dict[str, dict[int, int]] = field(default_factory=dict)
    #: the search ran because the fold was asked for no sparsity, target or recipe (:func:`onnxfold.api.default_plan`)
    default: bool = False
    #: why the measurement cannot see the folded channels ('' when it can: :mod:`onnxfold.search.blind`)
    blind: str = ""
    #: the share of the sensitivity's planned measurements made before the time limit stopped it
    sensitivity_share: float = 1.0
    #: why the search kept the model whole although a candidate met the target (``min_gain``)
    kept_whole: str = ""
    #: parameters of the model as given: reductions are reported from it, as the report's table counts
    #: them (0: from the canonicalized model the search counts from)
    input_params: int = 0
    #: how many of the given samples were held out (no merge fitted, no method chosen on them)
    held_out: int = 0
    #: recurrent states judged as auto picks, not by the decision metric given for every output
    states_left: list[str] = field(default_factory=list)
    unrounded: str = ""  # why the widths are exact where a default rounding kept the model whole
    exact_missed: str = ""  # what the search at exact widths measured, where it kept the model whole too
    requantized: str = ""  # where quantizing after the search lost its pick (search.requantized)
    values: list[str] = field(default_factory=list)  # outputs whose values raised a default target

    def param_reduction(self) -> float:
        """The chosen candidate's fewer parameters, of the input's when :attr:`input_params` is known."""
        return 1.0 - self.chosen.params / self.input_params if self.input_params else self.chosen.reduction

    def stored_once(self) -> float:
        """The share of the input's parameters that it holds more than once and the search counts once
        (ALBERT's shared layers): the canonicalized model's count, params / (1 − reduction), against it."""
        base = self.chosen.params / (1.0 - self.chosen.reduction) if self.chosen.reduction < 1 else 0.0
        return max(0.0, 1.0 - base / self.input_params) if base and self.input_params else 0.0

    def reduction(self) -> float:
        """The chosen candidate's reduction of the budget's count: MACs (``target_macs``) or parameters."""
        return self.chosen.macs_reduction if self.mode == "target_macs" else self.param_reduction()

    def to_dict(self) -> dict:
        return {
            "mode": self.mode,
            "default": self.default,
            **({"default_target": default_note(self.values, self.target)} if self.values else {}),
            "recurrent_state": [list(p) for p in self.recurrent],
            "rolled_out": self.rolled_out,
            "target": self.target,
            "met": self.met,
            "fidelity": self.chosen.fidelity,
            "param_reduction": self.param_reduction(),
            "mac_reduction": self.chosen.macs_reduction,
            "outputs": [o.to_dict() for o in self.chosen.outputs],
            **({"unseen": [o.to_dict() for o in self.chosen.unseen]} if self.chosen.unseen else {}),
            "metrics": dict(self.metrics),
            "inputs": self.inputs,
            "data_free_proxy": self.proxy,
            "cut_short": self.cut_short,
            "sensitivity_share": self.sensitivity_share,
            **({"kept_whole": self.kept_whole} if self.kept_whole else {}),
            **({"unrounded": self.unrounded} if self.unrounded else {}),
            "unexercised": dict(self.unexercised),
            "classes_reached": {k: list(v) for k, v in self.classes_reached.items()},
            "classes_missing": dict(self.classes_missing),
            "classes_thin": {k: {str(c): n for c, n in v.items()} for k, v in self.classes_thin.items()},
            "blind": self.blind,
            "seconds": self.seconds,
            "allocation": dict(self.allocation),
            "candidates": [c.to_dict() for c in self.candidates],
            "sensitivity": [c.to_dict() for c in self.curves],
        }

    def summary(self, before: Any = None, after: Any = None) -> str:
        """The search's lines of a report; reductions from the report's ``before`` and ``after`` where
        given, as its table counts them (madmom's key CNN read 14.7% here and 14.8% in the table)."""
        params, macs = self.chosen.reduction, self.chosen.macs_reduction
        measured = sum(c.measured for c in self.candidates)
        if before is not None and after is not None and before.params:
            params = 1.0 - after.params / before.params
            macs = 1.0 - after.macs / before.macs if before.macs else macs
        # a budget folded on a blind measurement: its 1.0000 measured nothing (caustic-nmr: r 0.70 on the task)
        blind = bool(self.blind) and self.mode != "min_fidelity" and self.chosen.steps > 0
        shown = "fidelity unmeasurable (blind: below)" if blind else f"fidelity {self.chosen.fidelity:.4f}"
        if not self.chosen.measured:  # a VGG16's read "fidelity 1.0000" beside "not measured"
            shown = "fidelity not measured (the model unchanged)"
        elif not blind:
            shown += unexercised_low(self.chosen.outputs, self.unexercised)
            if (first := self.chosen.data.get("refined_from")) is not None:  # trial 127 read two figures
                lower = (
                    ", one sample more agreeing there, every other figure lower"
                    if first > self.chosen.fidelity
                    else ""
                )
                shown += f" (its widths refitted group by group: {first:.4f} at the first fit{lower})"
        once = self.stored_once()  # sudachi's ALBERT read "29.6% fewer parameters", all of them that
        stored = "all" if not self.chosen.steps else f"{once:.1%}"
        once_text = f", {stored} weights stored once" if once >= 0.001 else ""
        missed = f" ({'it' if measured == 1 else 'they'} missed)" if measured else ""  # "1 measured" alone
        lines = [
            f"search ({self.mode} {self.target:g}): {shown} at "
            f"{percent(params)} fewer parameters ({percent(macs)} fewer MACs{once_text}); "
            f"{measured} candidate{'' if measured == 1 else 's'} measured, {self.seconds:.1f} s in all"
            + (f"{missed}, the unchanged model taken unmeasured" if measured < len(self.candidates) else ""),
            "fidelity per output: " + per_outputs(self.chosen.outputs)
            if self.chosen.measured and not blind
            else "fidelity per output: none the measurement can see"
            if blind
            else "fidelity per output: not measured ("
            + (
                "the time limit, less what it keeps for validation, had passed"
                if self.cut_short
                else "no group had a measured step to take"
            )
            + "): the model is unchanged, exact by construction",
            f"measured on {self.inputs}",
        ]
        if not self.met:
            lines.append(
                f"warning: target not met ({goal(self.mode, self.target)}): --force wrote the closest candidate"
            )
        if self.mode != "min_fidelity" and self.met:
            lines += budget_note(
                params if self.mode == "target_params" else macs, self.target, self.chosen.steps
            )
        if self.default:
            lines.append(
                f"(the default without --sparsity or a target: the smallest model at fidelity >= {self.target:g}; "
                "--min-fidelity F asks for another, -s R folds every group at a fixed sparsity)"
            )
            lines += [f"note: {default_note(self.values, self.target)}"] if self.values else []
        lines += held_out_lines(self.chosen, self.held_out) + compute_note(
            self.mode, self.chosen.reduction, macs
        )
        lines += [] if self.kept_whole else next_missed_lines(self)  # the kept_whole note names it
        lines += [f"note: {m}" for m in (self.exact_missed, self.requantized) if m]
        loose = [o for o in self.chosen.outputs if o.samples and o.lower_bound() < self.target]
        if self.mode == "min_fidelity" and loose and not self.proxy:
            need = OutputFidelity.samples_to_bound(self.target)
            lines.append(
                f"note: {loose[0].samples} samples bound the agreement on new inputs only to >= "
                f"{bound_text(min(o.lower_bound() for o in loose))} (95%); more samples tighten it"
                + (f" (n of n agreeing bound it to {self.target:g} from n = {need})" if need else "")
            )
        if self.cut_short:  # a heavy segmenter's search cut at 0.0% read as a success beside a note
            bare = self.chosen.reduction < 0.01
            # most groups never measured: the allocation rests on a few (a ViT's 11 of 135)
            sparse = self.sensitivity_share < 0.5
            better = "a model closer to the original at that size"
            better = "a smaller model" if self.mode == "min_fidelity" else better
            lines.append(
                f"{'warning' if bare or sparse else 'note'}: {self.cut_short}; a longer --time-limit may find {better}"
                + (  # "fewer --inputs samples" read oddly where none were given (trial 206)
                    f" (it found next to nothing; --target-params R or {FASTER[self.proxy]} are faster)"
                    if bare
                    else ""
                )
            )
        if self.blind:
            lines.append(blind_advice(self.blind, self.mode, self.proxy))
        if self.kept_whole:
            lines.append(f"note: {self.kept_whole}")
        measured = any(c.measured for c in self.candidates)  # notes on a measurement not made read
        # as if one had been (crema's chord CNN, nothing foldable: "reach only a few classes", trial 199)
        if self.proxy and measured:
            drawn = (
                "inputs synthesised from its BN statistics"
                if "DeepInversion samples from" in self.inputs  # not "not DeepInversion's" (trial 186)
                else "random inputs"
            )
            lines.append(  # DeepInversion's read "on random inputs" beside their own line (trial 175)
                f"note: no --inputs given, so this fidelity is a data-free proxy on {drawn}, "
                "not a measure of the model's task"
            )
        if measured:
            lines += exercise_notes(self.unexercised, self.metrics, self.proxy)
            lines += coverage_notes(self.classes_reached, self.proxy, self.classes_missing, self.classes_thin)
        lines += [
            f"note: the recurrent state {o} is judged by {self.metrics[o]}, as auto picks for it, not by the "
            f"metric given for every output: a state's argmax decides nothing (--metric {o}=METRIC judges it so)"
            for o in self.states_left
        ]
        if self.recurrent and self.mode == "min_fidelity":
            pairs = ", ".join(f"{o} -> {i}" for i, o in self.recurrent)
            where = "along the given streams" if self.rolled_out else "one step from the given states"
            advice = "; consecutive samples of a stream, each with the state the original carried into it, "
            advice += "let the search roll candidates out along them"
            lines.append(
                f"note: the model feeds a state back ({pairs}): this fidelity is per step, {where}; what "
                "a stream or a decoded sequence keeps can be less (silero-vad at r2 0.99 a step kept 93% "
                "of its decisions over 2 s; a romanizer's decoder at 0.98 a step changed 9% of names), so "
                "judge it on your task, and aim higher where it falls short"
                + ("" if self.rolled_out else advice)
            )
        return "\n".join(lines)


def search(
    model: Model,
    build: Callable[[dict[str, float]], tuple[Model, dict]],
    evaluator: Evaluator,
    *,
    mode: str,
    target: float,
    levels: Sequence[float],
    cap: float,
    fold_opts: dict[str, Any],
    overrides: Sequence[tuple[str, float]] = (),
    recipe: Any = None,
    stats: Any = None,
    judge: Any = None,
    refine: Callable[[dict[str, float]], tuple[Model, dict]] | None = None,
    limit: TimeLimit | None = None,
    base: Any = None,
    shapes: dict | None = None,
    min_gain: float = 0.0,
    input_params: int = 0,
    prepared_s: float = 0.0,
    unjudged: Callable[[dict[str, float]], tuple[Model, dict]] | None = None,
) -> SearchResult:
    """Run the search on the canonicalized ``model``. ``build(allocation)`` returns a new folded (repaired,
    cleaned) copy and the pass data it left. See the module docstring. ``refine``: a costlier build of the
    same widths (``auto``'s sequential choice), tried once on the chosen allocation and kept when its
    measured fidelity is at least the chosen one's. ``limit``: see the module docstring. ``base``: the
    statistics reductions are counted from (default ``model``'s; the search pass gives those of ``model``
    cleaned up as every candidate is, since canonicalization unshares initializers that cleanup shares
    again). ``shapes``: the input shapes MACs are counted at (``--input-shape``). ``min_gain``: a met
    ``min_fidelity`` pick that removes less of the parameters gives way to the unchanged model (measured
    once by the bisection already). ``input_params``: the input's parameters, which the notes count
    reductions from as the report does. ``prepared_s``: what the evaluator's preparation took of ``limit``.
    ``unjudged``: ``build`` without ``auto``'s measured choice of each group's method (its estimate
    chooses), which a time-starved fidelity search builds with: judging a group took three of the four
    runs of a sensitivity level on a YOLOX, and its path's unmeasured groups would each be judged."""
    start = time.perf_counter()
    limit = limit if limit is not None else TimeLimit()
    base = base if base is not None else stats_of(model, shapes=shapes)
    groups = analyze_graph(model.graph, model.node_scopes())
    fixed = fixed_groups(groups, overrides, recipe)
    estimator = evaluator.within(budgets.SENSITIVITY_MACS)  # a heavy model's sensitivity on fewer samples
    curves = sensitivity(
        model,
        estimator,
        levels,
        ignore=fold_opts["ignore"],
        round_to=fold_opts["round_to"],
        seed=fold_opts["seed"],
        method=fold_opts["method"],
        features=fold_opts["features"],
        n_init=fold_opts["n_init"],
        cluster=fold_opts["cluster"],
        skip=lambda name: name in fixed,
        stats=stats,
        judge=judge,
        stop_below=target if mode == "min_fidelity" else None,
        limit=limit,
        shapes=shapes,
    )
    sensitivity_cut, level_s = limit.skipped, (time.perf_counter() - start) / max(1, limit.measured)
    blind = blind_reason(curves, evaluator.kind())  # the inputs' shapes stand in the report's 'measured on'
    round_to = fold_opts["round_to"]
    by = "macs" if mode == "target_macs" else "params"
    fidelity = target if mode == "min_fidelity" else None  # its path goes short of the misses first
    # time-starved on given samples: the groups never measured take a prior, and candidates measure them
    starved = fidelity is not None and sensitivity_cut and not evaluator.proxy and mostly_unmeasured(curves)
    path = greedy_path(
        with_prior(curves, target) if starved else curves,
        cap,
        by,
        round_to,
        unmeasured_whole=fidelity is not None and not starved,
        target=fidelity,
    )
    if starved and unjudged is not None:
        build = unjudged
    log.info("search: %d groups searched, path of %d channel steps", len(path.curves), len(path))
    tried: dict[int, Candidate] = {}
    paced = PacedLimit(  # see PacedLimit; a starved search's candidates are not judged
        limit, lambda steps: level_s * (2 if starved else 1 + path.unjudged_at(steps))
    )

    def measure(steps: int, route: AllocationPath | None = None) -> Candidate:
        """The candidate ``steps`` along the path, or along a detour ``route`` (keyed past the path)."""
        if route is None and steps in tried:
            return tried[steps]
        allocation = (route or path).sparsities_at(steps)
        key = steps if route is None else next_key(len(path), tried)
        cand = paced.timed(lambda: measured(key, build(allocation), evaluator, base, shapes))
        if route is not None:
            cand.allocation, cand.detour = allocation, True
        log.info(
            "search: %d steps%s -> fidelity %.4f%s, %.1f%% fewer params",
            steps,
            " on a detour" if route is not None else "",
            cand.fidelity,
            f" (held out {min(u.value for u in cand.unseen):.4f})" if cand.unseen else "",
            100 * cand.reduction,
        )
        tried[key] = cand
        bar.update(1)
        kept = [c.reduction for c in tried.values() if c.meets(target)] if mode == "min_fidelity" else []
        best = f", best meeting it {max(kept):.1%}" if kept else ""
        share = cand.macs_reduction if by == "macs" else cand.reduction  # a MAC target's own figure
        what = f"{share:.1%} fewer {'MACs' if by == 'macs' else 'params'}"
        bar.set_postfix_str(f"tried {what}: {cand.fidelity:.4f}{best}", refresh=False)
        return cand

    def unchanged() -> Candidate:
        cand = measured(0, build(path.sparsities_at(0)), None, base, shapes)
        log.info("search: the unchanged model, not measured (no step to take, or the time limit passed)")
        tried[0] = cand
        return cand

    kept_whole = ""  # each candidate is a fold and a measurement: minutes apiece on a heavy model
    with progress_bar(desc="candidates", unit="candidate") as bar:
        if blind and mode == "min_fidelity":  # nothing measured can tell a fold from the original
            chosen, met = measure(0), True
        elif mode == "min_fidelity":
            floor = GainFloor(path.saved, min_gain if evaluator.proxy else 0.0, base.params)  # see bisect
            reach = path.short_of_misses(target)
            if (step := floor()) > reach:  # no candidate worth the gain short of a miss: the far end tells
                reach = None
            if sensitivity_cut and len(path):  # time-starved: first where the losses say it holds
                reach = min(reach or len(path), max(1, step, path.estimated_reach(target)))
            chosen, met = bisect_candidate(path, measure, tried, target, paced, unchanged, step, reach)
            beyond = [s for s in tried if chosen.steps < s <= len(path)]  # measured past the pick
            if starved and met and chosen.steps < len(path) and not beyond:  # past the estimate
                chosen = gallop_candidate(path, chosen, measure, target, paced)
            if met and chosen.steps < len(path) and not chosen.allocation:  # past a step that missed
                chosen = detour_candidate(path, chosen, tried, lambda r, s: measure(s, r), target, paced)
            kept_whole = (
                floor.missed(tried, target, evaluator.proxy, input_params) if met and not chosen.steps else ""
            )
        else:
            total = base.params if mode == "target_params" else base.macs
            tensors, by_name = model.graph.tensors(), {g.name: g for g in groups}

            def saved(steps: int) -> float:  # the weights' parameters a prefix removes, counted
                removed = dict(zip([c.name for c in path.curves], path.removed_at(steps), strict=True))
                return params_saved([by_name[n] for n in removed if n in by_name], tensors, removed)

            chosen, met = budget_candidate(path, measure, total, target, mode, round_to, paced, saved)
    if len(path) and not paced.expired() and not (blind and mode == "min_fidelity"):
        rival = uniform_rival(
            path, cap, build, evaluator, (base, shapes), chosen, met, mode, target, paced, tried
        )
        if rival is not None:
            chosen, met, kept_whole = rival, True, ""
    cut = sensitivity_cut_notes(limit, sensitivity_cut, prepared_s) + [STARVED] * bool(starved)
    if len(path) and limit.seconds and not any(c.measured for c in tried.values()) and not paced.expired():
        cut.append("the time left could not afford one candidate")  # PP-OCRv6 det: at 210 s of 480
    if paced.expired():  # as the bisection (or the budget's corrections) ended
        n = sum(c.measured for c in tried.values())
        cut.append(f"the search stopped after {n} candidate{'s' if n != 1 else ''} measured")
        if refine is not None and chosen.steps > 0:
            cut.append("the chosen model's merges were not refitted to the samples as a whole")
    elif refine is not None and chosen.steps > 0:
        allocation = chosen.allocation or path.sparsities_at(chosen.steps)
        better = _refined(chosen, refine(allocation), evaluator, base, shapes)
        if better is not None and mode == "min_fidelity" and met and not better.meets(target):
            better = None
        if better is not None:
            log.info("search: refined -> fidelity %.4f (was %.4f)", better.fidelity, chosen.fidelity)
            chosen = better
        if limit.expired():  # the refit stopped judging its groups there (sequential.plan_sequential)
            cut.append(
                "the final refit of the chosen model's merges stopped at the time limit, some groups left as first fitted"
            )
    counted = not (base.symbolic_dims or base.macs_unknown_nodes)  # MACs a gain may count
    if mode == "min_fidelity" and met and (small := below_gain(chosen, min_gain, evaluator.proxy, counted)):
        kept_whole = small  # too little, in parameters and in MACs
        chosen = measure(0)
    ran = limit.clock() - limit.start
    if cut and ran > limit.seconds * 1.05:  # a trial's 240 s search ran 296 s and read as within it
        cut.append(f"it ran {ran:.0f} s in all (a candidate under way, and the first, runs to its end)")
    for c in [*tried.values(), chosen]:
        c.sparsities = c.allocation or path.sparsities_at(c.steps)
        if c is not chosen:
            c.model, c.data = None, {}
    return SearchResult(
        mode,
        target,
        chosen,
        met,
        sorted(tried.values(), key=lambda c: c.steps),
        curves,
        chosen.allocation or path.sparsities_at(chosen.steps),
        evaluator.describe()
        + (
            f" (sensitivity on the first {estimator.samples}, within its compute budget per measurement)"
            if estimator is not evaluator
            else ""
        ),
        evaluator.proxy,
        dict(evaluator.metrics),
        time.perf_counter() - start,
        evaluator.recurrent,
        bool(evaluator.chains),
        unexercised=dict(getattr(evaluator, "unexercised", {})),
        classes_reached=dict(getattr(evaluator, "classes_reached", {})),
        classes_missing=dict(getattr(evaluator, "classes_missing", {})),
        classes_thin=dict(getattr(evaluator, "classes_thin", {})),
        blind=blind,
        sensitivity_share=limit.measured / max(1, limit.measured + sensitivity_cut),
        kept_whole=kept_whole,
        states_left=list(getattr(evaluator, "states_left", [])),
        held_out=0 if (unseen := getattr(evaluator, "unseen", None)) is None else len(unseen),
        cut_short=f"the time limit ({limit.told()}) cut the search short: " + ", ".join(cut) if cut else "",
    )
