"""search: fold to a target instead of a fixed sparsity (docs: onnxfold.search.target).

``min_fidelity`` F > 0: the largest parameter reduction whose fidelity (min over outputs of the
``metric``, on ``ctx.inputs``, or on validation's random inputs as a data-free proxy) is ≥ F.
``target_params`` / ``target_macs`` R > 0: remove that fraction of parameters / MACs (within one
step's worth: a channel, or ``round_to`` channels of a rounded group) at the least estimated loss.
Per-group sparsities come from a sensitivity analysis at ``levels`` and a greedy allocation capped
at ``max_sparsity``; recipes, overrides and ignore patterns of the fold pass win. Widths follow the
fold pass's ``round_to`` (8 by default, also for a ``search`` pass in a pipeline, whose fold pass
has the defaults): every candidate has exactly the rounded widths the fold writes. Each candidate is folded by the pass's ``fold`` pass, then
repaired by its ``repair`` pass (if any) and cleaned up, and measured; the chosen candidate replaces
the model. If no candidate meets a fidelity target, the pass fails (nothing is written) unless
``force``. Its :class:`~onnxfold.search.target.SearchResult` is left in ``ctx.data["search"]``.
"""

from __future__ import annotations

import logging
import time
from functools import partial

import numpy as np

from onnxfold.ir.model import Model
from onnxfold.pipeline.manager import (
    Option,
    Pass,
    PassContext,
    PassManager,
    PassResult,
    PipelineError,
    passes_after,
)
from onnxfold.runtime.fidelity import parse_metric
from onnxfold.search.provenance import record
from onnxfold.search.refusals import check_reachable, check_samples_exercise, check_writable

DEFAULT_LEVELS_TEXT = "0.1,0.2,0.3,0.5,0.7"
DEFAULT_MAX_SPARSITY = 0.7


def _of_canonical(mode: str, target: float, given: int, base: int) -> float:
    """A ``--target-params`` R counts from the input as the report does (R of its ``given``
    parameters); the search counts from the canonicalized model (``base``), where a weight stored
    twice (a tied embedding's transpose) is already stored once: R there is 1 − (1 − R)·given/base
    (0: canonicalization alone reaches it). unidic-lite-imitator's tagger asked 30% lost 51.8%: 27.3%
    was its decoder's copy of the embedding, and the search took 33.7% of the rest. MACs do not
    change with storage, and a fidelity target is no count."""
    if mode != "target_params" or not base or given <= base:
        return target
    return max(0.0, 1.0 - (1.0 - target) * given / base)


def parse_levels(text: str) -> list[float]:
    """``"0.1,0.2"`` → [0.1, 0.2]; every level in (0, 1)."""
    try:
        levels = sorted({float(v) for v in text.replace("|", ",").split(",") if v.strip()})
    except ValueError:
        raise PipelineError(f"levels {text!r} is not a comma-separated list of numbers") from None
    if not levels or any(not 0.0 < v < 1.0 for v in levels):
        raise PipelineError(f"levels {text!r}: every level must be in (0, 1)")
    return levels


def split_samples(inputs: dict | None, seed: int = 0) -> tuple[dict | None, np.ndarray | None]:
    """(fit, held out): a seeded random half of the samples, and the indices of the others. A method
    fitted on samples (lsq, auto) fits and judges on the first half; candidates are measured on all
    samples (the target must hold on every given input) and on the held-out half alone, where the
    target must hold too: a fit that does not generalise scores well on its own half only. The halves
    are drawn, not alternate samples: images of two classes given in turn held out one class; (None,
    None) below 8 samples."""
    from onnxfold.folding.samples import sample_axes, sample_count, splittable, take
    from onnxfold.runtime.padding import carry_padding

    if not inputs or not splittable(inputs) or sample_count(inputs) < 8:
        return None, None
    n = sample_count(inputs)
    order = np.random.default_rng(seed).permutation(n)
    fit, held = np.sort(order[: (n + 1) // 2]), np.sort(order[(n + 1) // 2 :])
    cut, axes = take(inputs, fit), sample_axes(inputs)[1]
    return {k: carry_padding(inputs[k], v, fit) if axes.get(k) == 0 else v for k, v in cut.items()}, held


def prepared(model: Model, ctx: PassContext, fold, passes: list, metric: str, refuse_one_way: bool = False):
    """(evaluator, held-out sample indices) of a search, or of ``analyze --sensitivity``, with ``fold``
    (a :class:`~onnxfold.passes.fold.FoldPass`) bound to ``passes`` and prepared on the canonicalized
    ``model``: a fitted method's statistics from the fitting half (:func:`split_samples`), and
    without ``ctx.inputs`` the samples the fold synthesised as the data-free proxy
    (:func:`~onnxfold.passes.fold_samples.proxy_samples`). Synthesised samples that the fold fits to
    (DeepInversion's) are split alike, fitted on one half and judged on all and on the other half
    alone. Given samples are measured on the original first: with ``refuse_one_way``, samples on which
    every output decides one way are refused before the fold's statistics (:func:`check_samples_exercise`)."""
    from onnxfold.analysis import analyze_graph
    from onnxfold.folding.apply import ACTIVATION_METHODS
    from onnxfold.passes.fold_samples import proxy_samples
    from onnxfold.search.evaluate import Evaluator

    fold.bind(passes)
    fitted = fold.opts["method"] in ACTIVATION_METHODS
    fit, held_out = split_samples(ctx.inputs, ctx.seed) if fitted else (None, None)
    fit_ctx = PassContext(original=ctx.original, seed=ctx.seed, input_shapes=ctx.input_shapes, inputs=fit)

    def measured(synthetic=None, how: str = "", drawn: bool = True, unseen=held_out):
        return Evaluator(
            ctx.original or model,
            ctx.inputs or synthetic,  # all of them: the target holds on every given input
            metric,
            ctx.input_shapes,
            seed=ctx.seed,
            synthetic=how,
            unseen=unseen,
            redrawable=drawn,
        )

    evaluator = measured() if ctx.inputs else None
    if evaluator is not None and refuse_one_way:
        check_samples_exercise(evaluator)
    halves = None if ctx.inputs or not fitted else (lambda samples: split_samples(samples, ctx.seed))
    groups = analyze_graph(model.graph, model.node_scopes())
    fold.prepare(model, groups, fit_ctx if fit else ctx, search=True, hold_out=halves)
    if evaluator is not None:
        return evaluator, held_out
    feed, how, drawn = proxy_samples(fold)
    if fold.proxy_split is not None:  # judged on all, and on the half nothing was fitted to alone
        feed, held_out = fold.proxy_split
    evaluator = measured(feed, how, drawn, held_out)
    evaluator.unsynthesised = fold.unsynthesised
    return evaluator, held_out


#: without a sparsity, a target or a recipe, ``onnxfold fold`` searches for the smallest model
#: whose fidelity on ``--inputs`` stays at least this high ...
DEFAULT_MIN_FIDELITY = 0.95
#: ... or on the data-free proxy, at least this high: its figure is further from the task. On six real
#: models judged on their tasks, 0.95 / 0.99 kept 93.3% / 100% of a GRU romanizer's names, 79% / 100%
#: of a denoiser's clips within 1 dB, face F1 0.988 / 0.993, for 2.1 / 0.0, 16.3 / 8.2 and 10.1 / 7.5%
#: fewer parameters (docs/benchmarks.md)
DATA_FREE_MIN_FIDELITY = 0.99
#: ... and it writes a fold only where it removes at least this fraction of the parameters: smaller
#: gains came with task losses the proxy did not show (a ViT saliency model at 0.3% fewer
#: parameters changed the regions found on 15% of photos; a siamese matcher at 1.1% lost 2.1% of
#: its clicks), and save next to nothing
DATA_FREE_MIN_GAIN = 0.02
#: ... and on given samples, at least this fraction: a nucleus segmenter's default search on 32 tiles
#: wrote a fold 0.0065% smaller that moved 6% of its nucleus pixels on new tiles
GIVEN_MIN_GAIN = 0.01
#: ... within this many seconds, unless a time limit is given (0: none)
DEFAULT_TIME_LIMIT = 600.0
#: the sparsity of every group where a recipe or a target search is asked without one
FIXED_SPARSITY = 0.5


class SearchPass(Pass):
    name = "search"
    summary = (
        "fold to a fidelity target or a parameter/MAC budget, with sensitivity-aware per-group sparsities"
    )
    options = (
        Option(
            "min_fidelity",
            float,
            0.0,
            "find the largest parameter reduction whose fidelity on --inputs (or random inputs: a "
            "data-free proxy) is at least this, in (0, 1]; a count with a margin: k of n agreeing "
            "samples count as (k + 1) / (n + 2); 0 = off",
        ),
        Option(
            "target_params",
            float,
            0.0,
            "remove about this fraction of parameters (within one channel step, above or below) at the "
            "least estimated loss; 0 = off",
        ),
        Option(
            "target_macs",
            float,
            0.0,
            "remove about this fraction of MACs (within one channel step, above or below) at the least "
            "estimated loss; 0 = off",
        ),
        Option(
            "metric",
            str,
            "auto",
            "fidelity per output: top1 agreement (class scores, per position for sequence logits), "
            "sequence (lines whose greedy CTC decoding agrees exactly), margin (lines that decode the "
            "same with the candidate's deviation doubled: each kept half its margin), tags (samples whose "
            "every per-position label agrees: a tagger's, a segmenter's), binary (decisions of one "
            "Sigmoid probability per sample at 0.5), mask (intersection over union of the regions a "
            "Sigmoid map marks above 0.5), expect (r2 of the expected class index: scores over ordered "
            "bins, an age's or a depth's), "
            "cosine, relerr (1 - relative L2 error), r2 (mean per-channel R^2: every channel counts alike, "
            "e.g. a detector's scores next to its box coordinates), distance (how well the cosine "
            "distances between the output's vectors are kept: embeddings compared by a threshold), "
            "or auto (top1 for class scores, "
            "sequence for a recogniser's sequence logits (sequence+margin on given samples), "
            "top1 per position for a token model's (tags on given samples where the classes are not "
            "its vocabulary), "
            "binary+r2 / mask+r2 for Sigmoid probabilities and maps, r2 otherwise); "
            "the model's fidelity is the minimum over outputs; "
            "per output: a comma list such as auto,feature=none (none leaves that output out)",
            check=parse_metric,
        ),
        Option(
            "levels", str, DEFAULT_LEVELS_TEXT, "sparsities of the sensitivity analysis (comma-separated)"
        ),
        Option(
            "max_sparsity",
            float,
            DEFAULT_MAX_SPARSITY,
            "cap on any searched group's sparsity; above the highest level, it is measured as one more level",
        ),
        Option(
            "force", bool, False, "write the best candidate even when it misses --min-fidelity (and say so)"
        ),
        Option(
            "time_limit",
            float,
            0.0,
            "seconds the search may take (from its start, checked between measurements): its "
            "sensitivity stops at half of them, and after all of them it keeps the best candidate so "
            "far (the far end of its path measured, else the unchanged model, exact); the report says "
            "what was cut; 0 = no limit",
        ),
        Option(
            "min_gain",
            float,
            0.0,
            "a min_fidelity search whose best candidate removes less than this fraction of the "
            "parameters and of the MACs keeps the model whole (a change too small to be worth a risk its measurement "
            "cannot rule out); 0 = off",
        ),
    )

    #: The passes each candidate runs after canonicalization (set by api.fold; default: fold alone).
    fold = None
    repair = None
    #: the target is the default on given samples (api.fold): outputs that are all values ask more
    default_target = False

    def validate_options(self) -> None:
        o = self.opts
        modes = [k for k in ("min_fidelity", "target_params", "target_macs") if o[k]]
        if len(modes) > 1:
            raise PipelineError(
                f"search: choose one of {', '.join('--' + m.replace('_', '-') for m in modes)}"
            )
        if not 0.0 <= o["min_fidelity"] <= 1.0:
            raise PipelineError(f"search: min_fidelity must be in (0, 1], got {o['min_fidelity']}")
        for key in ("target_params", "target_macs"):
            if not np.isfinite(o[key]) or not 0.0 <= o[key] < 1.0:
                raise PipelineError(f"search: {key} must be in (0, 1), got {o[key]}")
        if not np.isfinite(o["time_limit"]) or o["time_limit"] < 0:
            raise PipelineError(f"search: time_limit must be a number of seconds >= 0, got {o['time_limit']}")
        if not 0.0 < o["max_sparsity"] < 1.0:
            raise PipelineError(f"search: max_sparsity must be in (0, 1), got {o['max_sparsity']}")
        self.levels = parse_levels(o["levels"])
        if o["max_sparsity"] > self.levels[-1] and o["max_sparsity"] != DEFAULT_MAX_SPARSITY:
            # NSNet2's --max-sparsity 0.9 did nothing: the default levels stop at 0.7
            self.levels.append(o["max_sparsity"])

    @property
    def mode(self) -> str | None:
        """min_fidelity, target_params, target_macs, or None when no target is set."""
        return next((k for k in ("min_fidelity", "target_params", "target_macs") if self.opts[k]), None)

    def preflight(self, model: Model, ctx: PassContext) -> None:
        """The checks of the repair every candidate runs (``dir``'s applicability), before the first
        candidate is built."""
        if self.repair is not None and hasattr(self.repair, "preflight"):
            self.repair.preflight(model, ctx)

    #: whether a validate pass follows the search (:meth:`bind`): the time limit then keeps its time
    validated = False

    def bind(self, passes) -> None:
        """Learn whether a validate pass follows (its runs come out of the search's time limit), and in
        a pipeline, take a ``fold`` right after it (and a ``repair`` right after that) as the fold and
        repair every candidate runs, as ``onnxfold fold`` does: they then do not run again on the
        search's result (``search,fold:method=l2`` had folded the searched model again, at 0.5)."""
        after = passes_after(self, passes)
        self.validated = any(p.name == "validate" for p in after)
        self.requantizer = next((p for p in after if p.name == "quantize"), None)
        if self.fold is None and after and after[0].name == "fold":
            self.fold = after[0]
            after[0].run_by = self.name
            if len(after) > 1 and after[1].name == "repair":
                self.repair = after[1]
                after[1].run_by = self.name

    requantizer = None  #: the quantize pass after the search, if any (:meth:`bind`)

    def _quantized(self, model: Model, ctx: PassContext) -> Model:
        """A copy of ``model`` quantized as the quantize pass after the search will quantize it, on
        the same samples (its notes, said again for every copy, held back)."""
        copy = model.copy()
        sub = PassContext(
            original=ctx.original, seed=ctx.seed, input_shapes=ctx.input_shapes, inputs=ctx.inputs
        )
        sub.data.update({k: ctx.data[k] for k in ("calibration",) if k in ctx.data})
        quiet = logging.getLogger("onnxfold.passes.quantize")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            PassManager([self.requantizer]).run(copy, sub)
        finally:
            quiet.setLevel(level)
        return copy

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        """The search, its measurements on the fold pass's ``--threads`` threads (every core by default)."""
        from onnxfold.runtime.session import measuring_threads

        with measuring_threads(self.fold.opts["threads"] if self.fold is not None else 0):
            return self._search(model, ctx)

    def _search(self, model: Model, ctx: PassContext) -> PassResult:
        from onnxfold.passes.cleanup import CleanupPass
        from onnxfold.passes.fold import FoldPass
        from onnxfold.report.fold_report import stats_of
        from onnxfold.runtime.session import measuring_threads
        from onnxfold.search.exact_widths import better_exact, retry_exact
        from onnxfold.search.regression import REGRESSION_MIN_FIDELITY, value_outputs
        from onnxfold.search.target import search
        from onnxfold.search.time_limit import AFTER_SEARCH_RUNS, TimeLimit

        mode = self.mode
        if mode is None:
            return PassResult(False, {"skipped": "no target (min_fidelity, target_params or target_macs)"})
        began = time.perf_counter()
        limit = TimeLimit(self.opts["time_limit"])
        from onnxfold.folding.samples import sample_count

        fold = self.fold or FoldPass(sparsity=0.0)
        cleaned = model.copy()  # what a candidate that folds nothing would count
        PassManager([CleanupPass()]).run(
            cleaned, PassContext(original=ctx.original, input_shapes=ctx.input_shapes)
        )
        base = stats_of(cleaned, shapes=ctx.data.get("mac_shapes", ctx.input_shapes))
        given = ctx.data.get("input_params") or base.params  # the input's, as the report counts them
        target = _of_canonical(mode, self.opts[mode], given, base.params)
        if mode == "target_params" and not self.opts["force"]:
            cap = min(self.opts["max_sparsity"], self.levels[-1])
            check_reachable(
                model, fold, self.opts[mode], cap, base.params, given, "dequantized_from" in ctx.data
            )
        if not limit.seconds:  # an explicit target without a time limit: DeepInversion may take longer
            from onnxfold.folding.samples import UNTIMED_DIR_BUDGET

            fold.synthesis_budget = UNTIMED_DIR_BUDGET
        evaluator, held_out = prepared(
            model,
            ctx,
            fold,
            [fold] + ([self.repair] if self.repair is not None else []),
            self.opts["metric"],
            refuse_one_way=not self.opts["force"],
        )
        values = []  # a regression's answers raise a default target (search.regression)
        if self.default_target and mode == "min_fidelity" and not evaluator.proxy:
            states = [o for _, o in evaluator.recurrent]
            if values := value_outputs(evaluator.metrics, evaluator.reference, states, evaluator.feed):
                self.opts[mode] = target = REGRESSION_MIN_FIDELITY
        prepared_s = time.perf_counter() - began  # of the limit, before any measurement
        if self.validated:  # validation runs the original and the result after the search
            limit.keep(AFTER_SEARCH_RUNS * evaluator.whole_seconds)
        threads = fold.opts["threads"]

        def remeasure(result: Model) -> tuple[float, list]:
            """The search's own measurement of a later result (validate checks that it kept the target)."""
            with measuring_threads(threads):
                return evaluator(result)

        ctx.data["search_measure"] = remeasure
        if evaluator.proxy and not evaluator.extra_runs and not evaluator.chains:
            ctx.data["search_proxy"] = evaluator.feed  # validation measures on them too

        def build(
            allocation: dict[str, float], sequential: bool = False, widths: int = 0, judged: bool = True
        ) -> tuple[Model, dict]:
            cand = model.copy()
            inner = FoldPass(**{**fold.opts, "sparsity": 0.0, "round_to": widths or fold.opts["round_to"]})
            inner.allocation, inner.sequential = allocation, sequential
            inner.stop = limit.expired if sequential and limit.seconds > 0 else None
            inner.moments, inner.auto_note = fold.moments, fold.auto_note
            inner.judge = fold.judge if judged else None  # a starved search: auto's estimate chooses
            inner.synthesis_budget = fold.synthesis_budget
            passes = [inner] + ([self.repair] if self.repair is not None else []) + [CleanupPass()]
            sub = PassContext(
                original=ctx.original, seed=ctx.seed, input_shapes=ctx.input_shapes, inputs=ctx.inputs
            )
            PassManager(passes).run(cand, sub)
            return cand, sub.data

        def searched(widths: int, limit: TimeLimit):
            return search(
                model,
                partial(build, widths=widths),
                evaluator,
                mode=mode,
                target=target,
                levels=self.levels,
                cap=self.opts["max_sparsity"],
                fold_opts={**fold.opts, "method": fold.method, "round_to": widths},
                overrides=fold.overrides,
                recipe=fold.recipe,
                stats=fold.moments,
                judge=fold.judge,
                refine=partial(build, sequential=True, widths=widths) if fold.method == "auto" else None,
                limit=limit,
                base=base,
                shapes=ctx.data.get("mac_shapes", ctx.input_shapes),
                min_gain=self.opts["min_gain"],
                input_params=given,
                prepared_s=prepared_s,
                unjudged=partial(build, widths=widths, judged=False),
            )

        result = searched(m := fold.opts["round_to"], limit)
        if retry_exact(result, m, fold.round_given, limit.left()):  # onnxfold.search.exact_widths
            # a second sensitivity pass, unannounced, read as the first one repeating (trial 177)
            logging.getLogger("onnxfold").warning(
                "widths rounded to %d keep the model whole at the target: searching again at exact widths "
                "(--round-to 1) in the time left",
                m,
            )
            result = better_exact(result, searched(1, limit.rest()), m, given)
        result.target, result.input_params = self.opts[mode], given  # reported against the input
        result.values = values
        if self.requantizer is not None and mode == "min_fidelity" and result.met and not result.proxy:
            from onnxfold.search.candidates import measured
            from onnxfold.search.requantized import requantized_pick

            rebuild = partial(build, widths=1 if result.unrounded else m)  # the chosen search's widths
            result.requantized = requantized_pick(
                result,
                rebuild,
                lambda cand: remeasure(self._quantized(cand, ctx)),
                lambda: measured(0, rebuild({}), None, base, ctx.data.get("mac_shapes", ctx.input_shapes)),
                limit.expired,
            )
        result.seconds = time.perf_counter() - began  # all of it (U2-Net's read 497.8 s in a 598 s pass)
        ctx.data["search"] = result
        chosen = result.chosen
        if not result.met and chosen.fidelity == 0 and evaluator.failure:  # not even the model unfolded
            raise PipelineError(
                "search: onnxfold's rewritten graph does not run where the original does (a bug in onnxfold; "
                f"please report it with the model): {evaluator.failure}"
            )
        if not self.opts["force"]:  # a refusal carries the widths --recipe folds without a search
            check_writable(result, mode, self.opts[mode], limit, prepared_s)
        model.graph = chosen.model.graph
        ctx.data.update({k: v for k, v in chosen.data.items() if k != "fold_record"})
        stats = {
            "mode": mode,
            "target": self.opts[mode],
            "met": result.met,
            "forced": not result.met,
            "fidelity": chosen.fidelity,
            "param_reduction": result.param_reduction(),
            "stored_once": result.stored_once(),  # weights held more than once (ALBERT's shared layers)
            "candidates": len(result.candidates),
            "seconds": result.seconds,
            "data_free_proxy": result.proxy,
            **({"blind": result.blind} if result.blind else {}),
        }
        if "refined" in chosen.data:
            stats["refined"] = chosen.data["refined"]
        plans, unchanged = chosen.data.get("fold_plans"), False
        if plans is not None and not any(p.status == "folded" for p in plans):
            from onnxfold.report.unfolded import nothing_folded_reason

            why = f"no group folds within the target ({mode} {self.opts[mode]:g})"
            if result.proxy:  # the remedy: a malware scanner's ResNet-18 folded 0.0% here, 19.9% on 32 files
                why += "; on a data-free proxy: --inputs (samples as the model is used) usually lets the search fold more"
            if result.blind:
                why = "the search's measurement cannot see the folds (the warning below)"
            if result.kept_whole:
                # a 1.4% candidate that missed read "gained too little" (trial 114): neither says it all
                why = f"no candidate both meets the target and removes --min-gain {self.opts['min_gain']:g} (the note below)"
            if result.cut_short and not any(c.measured for c in result.candidates):
                why = "the time limit passed before any candidate was measured (the warning below says where it went)"
            if result.requantized:
                why = "quantizing after the search lost the target (the note below)"
            if mode == "target_params" and target <= 0.0:
                why = f"canonicalization alone (weights held twice stored once) removes more than --target-params {self.opts[mode]:g}"
            stats["nothing_folded"] = nothing_folded_reason(plans, why, graph=model.graph)
            model.take_back_rewrites()
            unchanged = True
        else:
            model.unrewritten = None  # the fold lives in the rewritten graph
            record(model, result)  # its target, which a later command's validation reads
        if held_out is not None:
            n = sample_count(ctx.inputs or evaluator.feed)
            stats["held_out"] = (
                f"fitted on {n - len(held_out)} samples, measured on all {n} and on the {len(held_out)} held out"
            )
        if unchanged:  # the pass table read "search ... modified yes" for a model it kept whole
            ctx.data["last_modified_by"] = self.name  # still the model the search measured and kept
        return PassResult(not unchanged, stats)
