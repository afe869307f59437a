"""Why a search writes nothing: the one-line errors of a target it cannot meet or a pick it must not
write (a budget out of reach, a budget met by a model that lost its task), and the words on a
candidate that misses by more than its value says."""

from __future__ import annotations

import numpy as np

from onnxfold.ir.model import Model
from onnxfold.pipeline.manager import PipelineError


def misses_text(candidate, target: float) -> str:
    """Why a candidate at or above the target value still misses it
    (:func:`~onnxfold.search.misses.shortfall`), after "; "; '' when nothing more is to say."""
    from onnxfold.search.misses import shortfall

    why = shortfall(candidate, target)
    return f"; {why}" if why else ""


def budget_missed(mode: str, target: float, got: float, cut_short: str) -> str:
    """The one-line error of a budget (``--target-params`` / ``--target-macs``) the search did not
    reach: the closest candidate's reduction ``got`` (of the input's), and why (the time limit, or
    no group left to fold)."""
    from onnxfold.search.result_text import goal

    why = (
        f"{cut_short}, so a longer --time-limit may reach it"
        if cut_short
        else "the groups that may fold, within --max-sparsity and the overrides, do not hold that much"
    )
    return (
        f"search: {goal(mode, target)} not reached: the closest candidate removes {got:.1%} "
        f"({why}); nothing written (--force writes the closest)"
    )


def check_task_kept(mode: str, asked: float, chosen) -> None:
    """Refuse a budget's pick (``--target-params`` / ``--target-macs``) whose fidelity on the given
    samples fell under :data:`~onnxfold.runtime.compare.TASK_WARNING_BELOW`: the budget is met, but
    the model likely no longer does its task (a table classifier's 30% answered one class to every
    image, fidelity 0.0000, written with exit 0 and a warning), or on the held-out half alone
    (:func:`_surely_under`); ``--force`` writes it."""
    from onnxfold.runtime.compare import TASK_WARNING_BELOW
    from onnxfold.search.result_text import goal

    low = [o for o in chosen.outputs or () if o.value < TASK_WARNING_BELOW]
    where = "on the given samples"
    if not low:  # the held-out half: a speech-embedding CNN's r2 0.914 on all, 0.875 held out, broke
        low = [o for o in getattr(chosen, "unseen", None) or () if _surely_under(o, TASK_WARNING_BELOW)]
        where = "on the held-out half of the given samples (no merge fitted, no method chosen on them)"
    if not chosen.measured or not low:
        return
    worst = min(low, key=lambda o: o.value)
    flag = "--target-params" if mode == "target_params" else "--target-macs"
    got = getattr(chosen, "reduction" if mode == "target_params" else "macs_reduction", asked)
    # MTCNN's PNet asked 20% and its rounded widths stepped to 36.7%, which the error did not say
    past = f" ({got:.1%}: the nearest candidate at or past it)" if got - asked >= 0.005 else ""
    # the same output's decisions beside it: silabs' keyword spotter read "r2 0.8370" alone, its top1 31/32
    beside = [o for o in (chosen.outputs or ()) if o.name == worst.name and o.metric != worst.metric]
    if beside and where == "on the given samples":
        where += " (" + ", ".join(f"{o.metric} {o.value:.4f}" for o in beside) + " there)"
    raise PipelineError(
        f"search: {goal(mode, asked)} reached{past}, but the candidate keeps {worst.name} {worst.metric} "
        f"{worst.value:.4f} {where}, under {TASK_WARNING_BELOW:g}: it may no longer do the "
        f"model's task as {worst.metric} reads it; nothing written (a smaller {flag} keeps more; "
        "--min-fidelity F finds the smallest model that keeps F; --metric reads the decision your pipeline "
        "takes, e.g. top1@T or classK@T; --force writes it)"
    )


class SearchRefused(PipelineError):
    """A search that writes nothing. ``allocation``: the per-group sparsities of the candidate
    ``--force`` would write ({} where it folds nothing), which ``--recipe`` folds without a search
    (aisfx's refused budget, then ``--force``: 201 s and 162 s more for the same search);
    ``exact``: whether its widths are exact (``--round-to 1``) where the default rounds them."""

    def __init__(self, message: str, allocation: dict | None = None, exact: bool = False):
        super().__init__(message)
        self.allocation, self.exact = dict(allocation or {}), exact


def check_writable(result, mode: str, asked: float, limit, prepared_s: float) -> None:
    """Raise :class:`SearchRefused` where the search's pick must not be written without ``--force``:
    a fidelity target missed, a budget not reached or met by a model that lost its task, a time limit
    that passed before a candidate meeting the target was measured."""
    chosen = result.chosen
    try:
        _check_writable(result, mode, asked, limit, prepared_s)
    except PipelineError as exc:
        if isinstance(exc, SearchRefused):
            raise
        kept = result.allocation if chosen.steps else {}
        raise SearchRefused(str(exc), kept, bool(result.unrounded)) from None


def _check_writable(result, mode: str, asked: float, limit, prepared_s: float) -> None:
    chosen = result.chosen
    if mode == "min_fidelity" and not result.met:
        raise PipelineError(
            f"search: no candidate reaches fidelity {asked:g}: the best reached "
            f"{chosen.fidelity:.4f} at {result.param_reduction():.1%} fewer parameters ({result.inputs}"
            f"{misses_text(chosen, asked)}); "
            "nothing written (lower --min-fidelity, or --force to write the best one)"
        )
    if mode != "min_fidelity" and not result.met:
        raise PipelineError(budget_missed(mode, asked, result.reduction(), result.cut_short))
    if mode != "min_fidelity" and not result.proxy:
        check_task_kept(mode, asked, chosen)
    measured = [c for c in result.candidates if c.measured and c.steps]
    if (
        mode == "min_fidelity"
        and result.cut_short
        and (not measured or (not chosen.steps and not result.kept_whole))
    ):
        # a PP-OCRv5 detector's --time-limit 240 measured nothing and wrote its input back, exit 0;
        # a PP-OCRv6 one's 480 s read "passed" at 210 s, where no candidate fitted in what was left;
        # all-MiniLM-L6-v2's measured one, which missed, and wrote its input back, exit 0
        closest = max(measured, key=lambda c: c.fidelity) if measured else None
        # Piper's voice read "passed" at 442 s of 600: the next candidate would not have fitted
        ended = (
            "passed"
            if limit.left() <= 0
            else f"left {limit.left():.0f} s, too little for another candidate by the times measured,"
        )
        when = (
            f"the time limit ({limit.told()}) {ended} after {len(measured)} candidate"
            f"{'s' if len(measured) > 1 else ''}, none meeting the target (the closest, "
            f"{closest.reduction:.1%} fewer parameters, measured {closest.fidelity:.4f}"
            f"{_unexercised_worst(closest, result.unexercised)}), before a smaller one was measured"
            if closest is not None
            else f"the time limit ({limit.told()}) passed before any candidate was measured"
            if limit.left() <= 0
            else f"no candidate was measured: the {limit.left():.0f} s left of the search's "
            f"{limit.budget:.0f} s (the time limit less {limit.reserve:.0f} s kept for validation) "
            "could not afford one"
        )
        # no --inputs: "fewer --inputs samples" misled; SVTRv2's free dims were guessed at 224x224, 20
        # times the compute of the 32x128 its package reads (trial 208)
        fewer = (
            "--input-shape NAME:D0,D1,... at the size the model is used, where free dims were guessed"
            if result.proxy
            else "fewer --inputs samples"
        )
        raise PipelineError(
            f"search: {when} (preparing the measurements took {prepared_s:.0f} s of it): nothing "
            f"written (a longer --time-limit or {fewer}; --force writes the model unfolded)"
        )


def _unexercised_worst(cand, unexercised: dict[str, str]) -> str:
    """``; on these inputs OUT WHY ...`` where the output that set ``cand``'s fidelity is one the inputs
    leave unexercised (:func:`~onnxfold.runtime.exercised.unexercised`), else '': a YOLOX barcode
    detector's data-free search was refused at "measured 0.0000", on noise it detected nothing
    (trial 198)."""
    worst = min(cand.outputs, key=lambda o: o.value, default=None)
    why = unexercised.get(worst.name) if worst is not None else None
    if not why:
        return ""
    return f"; on these inputs {worst.name} {why}, so that figure says little of the task"


def check_samples_exercise(evaluator) -> None:
    """Refuse given samples that make every judged output of the original decide one way (one class on
    every sample): they exercise none of the model's decisions, so no fold's fidelity on them says
    anything of its task. vietcombank-captcha's five digit heads, fed raw 0..255 pixels where the model
    reads 0..1, answered one digit each on all 32 captchas: a fold at 0.9994 kept 18.8% of new codes.
    Checked before any fold is prepared (PP-OCR's direction classifier was refused after 37 s of
    statistics and search, where the original's answers on the samples tell in a second)."""
    judged = list(evaluator.metrics)
    if evaluator.proxy or not judged or any(n not in evaluator.unexercised for n in judged):
        return
    first = judged[0]
    raise PipelineError(
        f"search: the given samples make every output decide one way (on {first} they "
        f"{evaluator.unexercised[first]}{'; and so on' if len(judged) > 1 else ''}): they exercise none of "
        "the model's decisions, so no fidelity measured on them says anything of its task; nothing written "
        "(give samples of every kind, scaled as the model's own code scales them: raw 0..255 pixels where "
        "it reads 0..1 make one class of every image; --force folds on them anyway)"
    )


def _surely_under(output, bar: float) -> bool:
    """Whether a held-out figure falls under ``bar``: a mean's value, a count's Wilson 95% upper bound
    (14 of 16 agreeing, 0.875, bounds the agreement only to 0.96: a few samples say little)."""
    from dataclasses import replace

    if not output.samples:
        return output.value < bar
    return 1.0 - replace(output, value=1.0 - output.value).lower_bound() < bar


def check_reachable(
    model: Model, fold, asked: float, cap: float, params: int, given: int, dequantized: bool = False
) -> None:
    """Refuse, before the sensitivity analysis, a ``--target-params`` (``asked`` of the input's
    ``given`` parameters; the canonicalized model holds ``params``) above what every foldable group
    at ``cap`` could remove (:func:`~onnxfold.search.allocate.params_ceiling`); ``dequantized``: the
    model is an INT8 one's float copy, which ``analyze --dequantize`` reads."""
    from onnxfold.analysis import analyze_graph
    from onnxfold.folding.apply import matching_pattern
    from onnxfold.search.allocate import fixed_groups, params_ceiling

    groups = analyze_graph(model.graph, model.node_scopes())
    groups = [g for g in groups if not matching_pattern(fold.opts["ignore"], g)]
    ceiling = params_ceiling(
        groups, model.graph.tensors(), cap, fixed_groups(groups, fold.overrides, fold.recipe)
    )
    most = 1.0 - (params - ceiling) / given if given else 0.0  # of the input's parameters
    if params and asked > most:
        from onnxfold.analysis.subgraphs import subgraph_note

        note = subgraph_note(model.graph)
        analyze = "`onnxfold analyze --dequantize`" if dequantized else "`onnxfold analyze`"
        blocked = _largest_blocked(groups, model.graph.tensors(), params)
        blocked = blocked and f"{blocked} ({analyze} lists them)"
        where = "; ".join(filter(None, [blocked, note])) or f"weights no group folds: {analyze} lists them"
        if not any(g.foldable for g in groups):  # trial 66: an LSTM speaker embedder, all blocked
            raise PipelineError(
                f"search: --target-params {asked:g} cannot be reached: no channel group can fold, so "
                f"folding removes nothing ({note or analyze + ' gives each group its reason'}); "
                "nothing written"
            )
        raise PipelineError(
            f"search: --target-params {asked:g} cannot be reached: folding can remove at most "
            f"{most:.1%} of the parameters at sparsity {cap:g} (--max-sparsity, --levels; the rest: "
            f"{where}); nothing written (--force writes the closest)"
        )


def _largest_blocked(groups, tensors, params: int) -> str:
    """The parameters that blocked groups hold, and the reason of the largest: pyannote's refusal named
    only the 1% its If bodies read, where four LSTMs' hidden units held 93% (trial 120). '' when the
    blocked groups hold under a tenth of ``params``."""
    from onnxfold.report.table import human_count
    from onnxfold.search.sensitivity import weight_members

    def held(group) -> set[str]:
        return {m.tensor for m, _ in weight_members(group, tensors)}

    def size(names) -> int:
        return sum(int(np.prod(tensors[n].shape)) for n in names)

    blocked = [g for g in groups if not g.foldable and g.blocked]
    total = size(set().union(*(held(g) for g in blocked))) if blocked else 0
    if not params or total < 0.1 * params:
        return ""
    largest = max(blocked, key=lambda g: size(held(g)))
    return (
        f"{human_count(total)} of the {human_count(params)} parameters ({total / params:.0%}) are in groups "
        f"that cannot fold, the largest ({human_count(size(held(largest)))}): {largest.blocked[0].message}"
    )
