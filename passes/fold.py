"""fold: cluster every foldable channel group and merge its channels (Fold-Naive, docs/method.md §1).

For each group with n channels, k = max(1, round(n·(1 − sparsity))) clusters (the sparsity
replaced by a recipe's or an override's where they match; groups matching ``ignore`` are skipped),
rounded to a multiple of ``round_to`` (8 by default; groups narrower than 2·round_to keep the exact
count; :func:`onnxfold.folding.cluster.cluster_count` gives the rule), are found by seeded clustering
of the concatenated tied weights: ``cluster=auto`` runs k-means on small groups and Ward's
agglomerative clustering where one k-means pass gets expensive (:mod:`onnxfold.folding.cluster`). Producer-side tensors are replaced
by cluster means, consumer-side input slices by cluster sums, and shape constants and attributes
that encode the width are rewritten. Blocked groups are left untouched and reported with their
reason; with ``verify``, groups whose rewrite breaks the model are rolled back. Sparsity 0 leaves
the model bit-identical.

``method=l1|l2`` replaces clustering by structured magnitude pruning through the same groups (the
k channels of largest feature norm are kept, the others removed). ``features`` chooses what is
clustered or ranked (raw, blocknorm, fused; :mod:`onnxfold.folding.features`). The pass leaves a
:class:`~onnxfold.folding.apply.FoldRecord` in ``ctx.data["fold_record"]`` for a ``repair`` pass.
"""

from __future__ import annotations

import logging
from functools import partial

import numpy as np

from onnxfold.analysis import analyze_graph
from onnxfold.analysis.quantized import quantized_hint, quantized_ops
from onnxfold.errors import one_line
from onnxfold.folding.apply import (
    ACTIVATION_METHODS,
    FEATURE_MODES,
    METHODS,
    FoldRecord,
    Verifier,
    apply_plans,
    check_regex,
    fold_edits,
    parse_overrides,
    plan_folds,
    rollback_failures,
)
from onnxfold.folding.cluster import ALGORITHMS, DEFAULT_ROUND_TO
from onnxfold.folding.recipe import load_recipe
from onnxfold.folding.samples import AUTO_DIR_SAMPLES
from onnxfold.ir.model import Model, peek_values
from onnxfold.ir.shapes import clear_shapes, infer_shapes
from onnxfold.passes.fold_samples import AUTO_JUDGE_LIMIT, auto_samples, measure_activations
from onnxfold.pipeline.manager import Option, Pass, PassContext, PassResult, PipelineError, passes_after
from onnxfold.report.progress import progress_bar
from onnxfold.report.timing import StepTimes, collecting, rounded, step
from onnxfold.report.unfolded import nothing_folded_reason

log = logging.getLogger(__name__)


def rewrite_model(model: Model, plans, shapes: bool = True) -> list[str]:
    """Apply every folded plan to ``model`` in place and re-infer shapes; the rewritten tensor names.
    ``shapes=False``: only forget the stale intermediate shapes (a copy that is only run, as the
    judge's and the sensitivity's are: ONNX inference took half of a search's time on MiniLM)."""
    rewritten = apply_plans(plans, model.graph)
    if rewritten:
        with step("shapes"):
            clear_shapes(model.graph)
            if shapes:
                infer_shapes(model)
    return rewritten


class FoldPass(Pass):
    name = "fold"
    #: {group name: base sparsity} chosen by the search pass (None: ``sparsity`` everywhere).
    allocation: dict[str, float] | None = None
    #: Activation statistics of the activation-aware methods, measured once and reused (the search
    #: pass hands them from candidate to candidate).
    moments = None
    #: The :class:`~onnxfold.folding.judge.GroupJudge` of ``method=auto`` (shared like ``moments``).
    judge = None
    #: a search's synthesised samples, all of them, and the indices of the half nothing was fitted to
    #: (:meth:`prepare`'s ``hold_out``), else None
    proxy_split = None
    #: why a BN model got no DeepInversion samples (a search then measures on random inputs), else ''
    unsynthesised = ""
    #: ``auto`` chooses group after group with the earlier choices applied (False: each group judged
    #: alone, once per width, as the search's candidates are; the search refines its pick sequentially).
    sequential = True
    #: a search's time limit (``TimeLimit.expired``): the sequential choice stops judging once it is true
    stop = None
    #: MACs ``auto`` may spend on DeepInversion samples (None: the default; an untimed search raises it)
    synthesis_budget = None
    #: The mode of the repair pass that follows this fold in its pipeline (``bind``).
    repair_mode = "none"
    #: whether ``round_to`` was asked for: a default one gives way to exact widths where a search at
    #: it keeps the model whole (:mod:`onnxfold.search.exact_widths`)
    round_given = True

    def bind(self, passes) -> None:
        """Learn the repair mode of the pipeline (auto judges a fold with the repair it will get)."""
        after = passes_after(self, passes)
        repair = next((p for p in after if p.name == "repair"), None)
        self.repair_mode = repair.opts["mode"] if repair is not None else "none"

    @property
    def method(self) -> str:
        """The method planned with (``auto`` whose statistics could not be measured is ``fold``)."""
        if self.opts["method"] == "auto" and self.moments is None:
            return "fold"
        return self.opts["method"]

    #: What ``auto`` could not use (empty when it had informative samples).
    auto_note = ""

    def may_fold(self) -> bool:
        """Whether any group can be compressed: a sparsity, override, recipe or allocation above 0."""
        return bool(
            self.opts["sparsity"] > 0
            or any(value > 0 for _, value in getattr(self, "overrides", ()))
            or self.recipe is not None
            or self.allocation
        )

    def prepare(self, model: Model, groups, ctx: PassContext, search: bool = False, hold_out=None) -> None:
        """Measure the activation statistics (and build the judge) the method needs, once.

        ``auto`` without ``--inputs`` measures on the samples :func:`auto_samples` synthesises; where it
        synthesises none it plans plain folds (``auto_note`` says why). Nothing is measured when nothing
        can be compressed, unless for a ``search``. ``hold_out``: samples -> (fit half, held-out
        indices), by which a search's synthesised samples (twice as many where the budget allows) are
        split, the fit on the first half (:attr:`proxy_split` keeps all of them and the indices): merges
        fitted to 32 DeepInversion samples and judged on the same read top1 1.0000 for a chess-piece
        LeNet 83.1% smaller that kept 46.6% of its labels."""
        want = self.opts["method"]
        if want not in ACTIVATION_METHODS or self.moments is not None or not any(g.foldable for g in groups):
            return  # no group to choose for: no samples to synthesise
        samples, source = (ctx.inputs, "") if ctx.inputs else (None, "")
        if samples is None and want == "auto":
            if not (search or self.may_fold()):
                return
            counts = (2 * AUTO_DIR_SAMPLES, AUTO_DIR_SAMPLES) if hold_out is not None else None
            samples, source, self.auto_note, measure = auto_samples(
                model, ctx, self.opts["judge_limit"], self.synthesis_budget, counts
            )
            self.unsynthesised = source if samples is None else ""  # why no DeepInversion samples
            if not measure:
                return
            if hold_out is not None and samples is not None and not self.auto_note:
                # synthesised samples fitted to: a half held out for the search (``proxy_split``)
                fit, held = hold_out(samples)
                if fit is not None:
                    self.proxy_split, samples = (samples, held), fit
        try:
            self.moments = measure_activations(model, groups, ctx, samples, source, bool(self.auto_note))
            self.moments.fitted = not self.auto_note
            if want == "auto":
                from onnxfold.folding.judge import GroupJudge

                self.judge = GroupJudge(model.copy(), self.moments.feeds, self.repair_mode)
        except Exception as exc:
            if want != "auto" or ctx.inputs:
                raise
            self.moments = self.judge = None
            self.auto_note = (
                f"auto folded without measuring (ar only on convolutions): the model does not run on "
                f"synthesised samples ({one_line(exc, 160)}); give --inputs or --input-shape"
            )

    summary = (
        "cluster tied channels (k-means, or Ward on large groups) and merge each cluster into one channel"
    )
    options = (
        Option("sparsity", float, 0.5, "fraction of channels removed in every foldable group, in [0, 1)"),
        Option(
            "overrides",
            list,
            [],
            "per-group sparsity, REGEX=SPARSITY matched on group/producer names "
            "(several: repeat the flag, or separate with | in a pipeline)",
        ),
        Option(
            "ignore",
            list,
            [],
            "regex of group/producer names never folded (several: repeat the flag, or separate with | "
            "in a pipeline)",
        ),
        Option(
            "round_to",
            int,
            DEFAULT_ROUND_TO,
            "folded widths are multiples of this (hardware-friendly: odd widths can make the folded "
            "model slower than the original); groups narrower than twice it are not rounded; 1 = off",
        ),
        Option("seed", int, 0, "clustering seed; the same seed and options give byte-identical output"),
        Option(
            "method",
            str,
            "auto",
            "fold (clusters merged), l1/l2 (structured magnitude pruning: keep the channels of "
            "largest feature norm), wanda (keep the largest |W|^2*E[x^2]), hybrid (keep a least-error "
            "set, read each removed channel as a scaled kept one), lsq (same set, removed channels "
            "mixed into the kept ones by ridge least squares, their mean into the consumer's bias) "
            "or auto (per group in graph order: fold, fold+ar, a refitted lsq merge or wanda, whichever "
            "has the lowest measured output error on --inputs; without them, samples synthesised by "
            "DeepInversion on BN models or random tokens on token models, else fold); the others "
            "measure on --inputs, else on random inputs",
            METHODS,
        ),
        Option(
            "judge_limit",
            int,
            AUTO_JUDGE_LIMIT,
            "auto without --inputs measures its candidates on models of at most this many parameters; "
            "above, it plans plain folds and applies ar to convolutions only",
        ),
        Option(
            "features",
            str,
            "raw",
            "what is clustered: raw tied slices, blocknorm (each tensor's block at "
            "unit norm) or fused (producer rows BN-normalised, W/sigma)",
            FEATURE_MODES,
        ),
        Option("n_init", int, 10, "k-means restarts (the best inertia is kept)"),
        Option(
            "jobs",
            int,
            1,
            "groups clustered in parallel (joblib worker processes, or the backend of an active "
            "joblib.parallel_config; -1: every core); each worker's BLAS/OpenMP runs on one thread and "
            "reads only its group's tensors; the output does not depend on it. The activation-aware "
            "methods and fused features run in one process",
        ),
        Option(
            "threads",
            int,
            0,
            "onnxruntime's threads for the runs a fold or search measures on (auto's judge, the "
            "target search, activation statistics), most of a search's time on a heavy model; 0: "
            "every core this process may use. The output does not depend on it",
        ),
        Option(
            "cluster",
            str,
            "auto",
            "clustering: kmeans (scikit-learn, n_init restarts), ward (agglomerative, "
            "greedy merges of least cost; better at the large k of folding), auto "
            "(kmeans for small groups, ward where k-means gets expensive) or "
            "kmeans-full (unreduced reference, slow)",
            ALGORITHMS,
        ),
        Option(
            "recipe",
            str,
            "",
            "YAML/JSON per-layer recipe: sparsity by block range and kind (heads, mlp); "
            "overrides apply on top",
        ),
        Option(
            "verify",
            bool,
            True,
            "check the folded model (full onnx.checker, onnxruntime loads it and one run "
            "on small random inputs keeps the output shapes; the checker and the run "
            "are skipped above 2 GB) and roll back every group whose rewrite breaks "
            "it: it is reported blocked with reason 'rollback: <error>'",
        ),
    )

    def validate_options(self) -> None:
        r = self.opts["sparsity"]
        if not np.isfinite(r) or not 0.0 <= r < 1.0:
            raise PipelineError(f"fold: sparsity must be in [0, 1), got {r}")
        if self.opts["round_to"] < 1:
            raise PipelineError("fold: round_to must be at least 1")
        if self.opts["n_init"] < 1:
            raise PipelineError("fold: n_init must be at least 1")
        if self.opts["threads"] < 0:
            raise PipelineError(
                f"fold: threads must be 0 (every core) or a positive count, got {self.opts['threads']}"
            )
        if self.opts["jobs"] == 0 or self.opts["jobs"] < -1:
            raise PipelineError(
                f"fold: jobs must be a positive count or -1 (every core), got {self.opts['jobs']}"
            )
        try:
            self.overrides = parse_overrides(self.opts["overrides"])
            for pattern in self.opts["ignore"]:
                check_regex(pattern, "ignore")
            self.recipe = load_recipe(self.opts["recipe"]) if self.opts["recipe"] else None
        except ValueError as exc:
            raise PipelineError(f"fold: {exc}") from None

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        from onnxfold.runtime.session import measuring_threads

        with collecting() as seconds, measuring_threads(self.opts["threads"]):
            result = self._run(model, ctx)
        if any(p.status == "folded" for p in ctx.data["fold_plans"]):
            model.unrewritten = None  # the fold is in the rewritten graph now
            if self.allocation is None and isinstance(ctx.original, Model):  # not a search's candidate
                from onnxfold.passes.cleanup import repeated_params

                # copies a fit to samples can make unequal (report.comparison.stored_once_note)
                result.stats["input_repeated_params"] = repeated_params(ctx.original.graph)
        else:
            model.take_back_rewrites()  # the graph as it was, fused by onnxruntime as it was
        result.stats["steps"] = rounded(seconds)
        result.stats["steps_cpu"] = rounded(seconds.cpu)
        for plan in ctx.data["fold_plans"]:
            if plan.seconds:
                log.info("fold %s: %s", plan.group.name, StepTimes(plan.seconds).line())
        log.info("fold steps (summed over groups and workers): %s", seconds.line())
        log.info("fold steps, CPU: %s", StepTimes(seconds.cpu).line())
        return result

    def _run(self, model: Model, ctx: PassContext) -> PassResult:
        graph = model.graph
        with step("analysis"):
            groups = analyze_graph(graph, model.node_scopes())
        tensors = graph.tensors()
        source = model.copy()  # before planning loads any value: lazy external data stays lazy in the copy
        self.prepare(model, groups, ctx)
        if self.method == "auto" and self.sequential:
            plans = self._plan_sequential(groups, tensors, graph, source)
        else:
            plans = self._plan(groups, tensors, graph)
        if self.opts["method"] == "auto" and self.moments is None:  # ar's effect not measured
            from onnxfold.repair.ar import CONV_ONLY

            for plan in plans:
                plan.repair = CONV_ONLY
        rewritten = self._rewrite_verified(model, source, plans, ctx)
        return self._finish(plans, rewritten, source, ctx)

    def _plan(self, groups, tensors, graph, method: str | None = None) -> list:
        """Every group's plan with ``method`` (default: the pass's); with ``allocation`` (set by the
        search pass), each listed group's base sparsity is its allocated one (recipes and overrides
        still apply on top)."""
        opts = self.opts
        common = dict(
            overrides=self.overrides,
            ignore=opts["ignore"],
            round_to=opts["round_to"],
            seed=opts["seed"],
            method=method or self.method,
            features=opts["features"],
            n_init=opts["n_init"],
            graph=graph,
            recipe=self.recipe,
            cluster=opts["cluster"],
            stats=self.moments,
            judge=self.judge,
            workers=self.opts["jobs"],
        )

        def values(name: str):
            return peek_values(tensors[name])

        if self.allocation:
            return [
                plan
                for group in groups
                for plan in plan_folds(
                    [group], values, self.allocation.get(group.name, opts["sparsity"]), **common
                )
            ]
        return plan_folds(
            groups, values, opts["sparsity"], progress=partial(progress_bar, unit="group"), **common
        )

    def _plan_sequential(self, groups, tensors, graph, source: Model) -> list:
        """``auto``: every group's fold and merge (at its allocated sparsity under the search), chosen
        in graph order with the earlier choices applied (:mod:`onnxfold.folding.sequential`)."""
        from onnxfold.folding.sequential import plan_sequential

        folds = self._plan(groups, tensors, graph, method="fold")
        prunes = {"l2": self._plan(groups, tensors, graph, method="l2")}
        merges = None
        if self.moments.fitted:  # random inputs mislead a fitted merge or score (docs/method.md §5b)
            merges = self._plan(groups, tensors, graph, method="lsq")
            prunes["wanda"] = self._plan(groups, tensors, graph, method="wanda")
        elif any(g.kind == "heads" for g in groups):  # nor can they judge a merge of heads
            prunes["l1"] = self._plan(groups, tensors, graph, method="l1")
        blind = not self.moments.fitted  # heads' folds unjudgeable (sequential.judged_methods)
        unjudged = lambda group: blind and group.kind == "heads"  # noqa: E731
        args = (source, folds, merges, self.moments, self.repair_mode, prunes)
        bar = None if self.allocation else partial(progress_bar, unit="group")  # a search has its own
        return plan_sequential(*args, unjudged=unjudged, stop=self.stop, progress=bar)

    def _finish(self, plans, rewritten: list[str], source: Model, ctx: PassContext) -> PassResult:
        edits = fold_edits(plans)
        ctx.data["fold_plans"] = plans
        ctx.data["round_to"] = self.opts["round_to"]
        ctx.data["fold_record"] = FoldRecord(plans, edits, source)
        folded = [p for p in plans if p.status == "folded"]
        if not folded:
            counts = quantized_ops(source.graph)
            if counts and not any(p.status in ("unchanged", "ignored") for p in plans):
                raise PipelineError(f"fold: {quantized_hint(counts)}")
        stats = {
            "method": self.method,
            "features": self.opts["features"],
            "groups": len(plans),
            "folded": len(folded),
            "blocked": sum(p.status == "blocked" for p in plans),
            "ignored": sum(p.status == "ignored" for p in plans),
            "channels_before": sum(p.group.size for p in plans),
            "channels_after": sum(p.k for p in plans),
            "round_to": self.opts["round_to"],
            "tensors_rewritten": len(rewritten),
        }
        if self.auto_note and folded:  # how auto chose says nothing when it folded nothing
            stats["auto"] = self.auto_note
        if self.moments is not None:
            stats["activation_samples"] = self.moments.source
            stats["fitted_on_inputs"] = bool(ctx.inputs)  # prepare measured on them (validation: in-sample)
            stats["methods"] = {
                m: sum(p.method == m for p in folded) for m in sorted({p.method for p in folded})
            }
        if not folded:
            stats["nothing_folded"] = nothing_folded_reason(plans, graph=source.graph)
        return PassResult(bool(rewritten), stats)

    def _rewrite_verified(self, model: Model, source: Model, plans, ctx: PassContext) -> list[str]:
        """Rewrite ``model``; with ``verify``, roll back the groups that leave it broken (never a broken output)."""
        if not self.opts["verify"] or not any(p.status == "folded" for p in plans):
            return rewrite_model(model, plans)
        verifier = Verifier(source, ctx.input_shapes)
        try:
            rewritten = rewrite_model(model, plans)
            with step("verify"):
                error = verifier.error(model)
        except Exception as exc:
            error = (
                f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"
            )
        if error is None:
            return rewritten
        fixed, rewritten = rollback_failures(source, plans, verifier, rewrite_model, error)
        model.graph = fixed.graph
        return rewritten
