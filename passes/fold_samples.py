"""What the fold's activation-aware methods measure on: the given samples, or for ``auto`` without
``--inputs`` the samples it synthesises (:func:`auto_samples`), and the consumer statistics measured
on them (:func:`measure_activations`)."""

from __future__ import annotations

from typing import NamedTuple

from onnxfold.errors import from_runtime, not_run_on_samples, one_line
from onnxfold.folding.apply import ACTIVATION_METHODS
from onnxfold.ir.external import float_elements
from onnxfold.ir.model import Model
from onnxfold.pipeline.manager import PassContext, PipelineError


def measure_activations(
    model: Model, groups, ctx: PassContext, samples=None, source: str = "", judged_only: bool = False
):
    """Consumer-input statistics of ``groups`` on ``samples`` (by default ``ctx.inputs``), else on
    data-free random inputs. ``judged_only``: nothing is fitted to them (``auto`` on random inputs),
    so their moments only say which consumers have statistics, and are measured on the leading runs a
    measurement's MAC budget allows (the judge's; the feeds kept are all): a tf2onnx VGG16 at 17.6
    GMACs a sample spent 49 of its search's 125 s on moments of 32 random samples no choice read."""
    from onnxfold.folding.moments import ActivationStats
    from onnxfold.folding.samples import (
        SYNTHETIC_SAMPLES,
        chunked,
        run_size,
        runs_on,
        sample_count,
        synthetic_feeds,
    )

    samples = samples if samples is not None else ctx.inputs
    try:
        if samples:
            n = sample_count(samples)
            runs = chunked(samples, run_size(model))
            return ActivationStats.measure(model, groups, runs, source or f"{n} given samples")
        feeds = synthetic_feeds(model, ctx.input_shapes)
        source = f"data-free estimate: {SYNTHETIC_SAMPLES} random samples"
        if not judged_only:
            return ActivationStats.measure(model, groups, feeds, source)
        from onnxfold.folding.judge import first_samples
        from onnxfold.folding.samples import measured_limit

        limit = measured_limit(model, feeds[0]) if feeds else None
        stats = ActivationStats.measure(
            model, groups, first_samples(feeds, limit or SYNTHETIC_SAMPLES), source
        )
        stats.feeds = list(feeds)
        return stats
    except Exception as exc:
        if samples and from_runtime(exc) and runs_on(ctx.original, samples):
            raise PipelineError(  # the samples are fine: the graph as canonicalize left it is not
                f"fold: the original model runs on the given samples but onnxfold's rewritten graph does not "
                f"(a bug in onnxfold; please report it with the model): {one_line(exc, 300)}"
            ) from None
        if samples and from_runtime(exc):  # the advice to give --inputs misled a user who had given them
            raise PipelineError(not_run_on_samples("fold", exc, samples)) from None
        raise PipelineError(
            f"fold: cannot measure activations for --method {'/'.join(ACTIVATION_METHODS)} "
            f"({one_line(exc, 300, with_type=True)}); "
            + ("use --method fold" if samples else "give --input-shape or --inputs, or use --method fold")
        ) from None


class AutoSamples(NamedTuple):
    """What ``auto`` without ``--inputs`` measures on: ``samples`` (None: random inputs) from ``source``,
    a ``note`` for the report, and whether to ``measure`` at all."""

    samples: dict | None
    source: str
    note: str
    measure: bool = True


def auto_samples(
    model: Model, ctx: PassContext, judge_limit: int, budget: float | None, counts=None
) -> AutoSamples:
    """The samples of ``auto`` without ``--inputs``, by what the model offers:

    - above ``judge_limit`` parameters: none; it folds unmeasured, ``ar`` only on convolutions;
    - a BN model with torch, within ``budget`` MACs: DeepInversion samples, fitted to (empty note), of
      the first of ``counts`` that the budget pays for (None: the default count);
    - a BN model without them: none, and why as the ``source``; fold + ``ar`` from the BN statistics,
      unmeasured (random inputs rank candidates worse than those statistics do);
    - otherwise random token sequences inside the embedding table (a token model), else None (the
      caller draws random inputs): judged on only, nothing fitted to them (the note says so)."""
    from onnxfold.folding.samples import deepinversion_samples, has_batchnorm, token_samples

    params = float_elements(model.graph)
    if params > judge_limit:
        note = (
            f"auto folded without measuring (the model has {params:,} parameters, above judge_limit "
            f"{judge_limit:,}; give --inputs or raise --judge-limit to measure): ar, whose effect was "
            "not measured, only on convolutions"
        )
        return AutoSamples(None, "", note, measure=False)
    samples, source = deepinversion_samples(
        model, ctx.input_shapes, ctx.seed, budget, *([counts] if counts else [])
    )
    if samples is not None:
        return AutoSamples(samples, source, "")
    if has_batchnorm(model):
        note = (
            f"auto folded without measuring, with ar from the BN statistics: {source}, and "
            "random inputs rank candidates worse than real samples do (--inputs: a few samples as the model "
            "is used let it measure)"
        )
        return AutoSamples(None, source, note, measure=False)  # source: why no DeepInversion samples
    tokens, why = token_samples(model, ctx.input_shapes, ctx.seed)
    drawn = why if tokens is not None else "random inputs"
    note = (
        "auto without --inputs chose among fold, fold+ar and l2 pruning by their error "
        f"on {drawn.removeprefix('data-free: ')}, and fitted no merge to them"
        + (f": {source}; {why}" if tokens is None else "")
    )
    return AutoSamples(tokens, why if tokens is not None else source, note)


#: ``auto`` without ``--inputs`` judges its candidates on models up to this many parameters: judging
#: rebuilds and runs the model a few times per group (seconds per group at 50M parameters on 2 cores).
AUTO_JUDGE_LIMIT = 50_000_000


def proxy_samples(fold) -> tuple[dict | None, str, bool]:
    """Without ``--inputs``: the samples the fold synthesised to measure on (DeepInversion samples
    of a BN model, random token sequences, random inputs), merged into one feed, where they come
    from, and whether they are random draws (not fitted to the model as DeepInversion's are);
    (None, "", True) when it synthesised none, or they cannot be merged. The search then measures
    its fidelity on what the fold judged its candidates on, not on two fresh random inputs."""
    from onnxfold.folding.samples import merged_feeds

    moments = getattr(fold, "moments", None)
    merged = merged_feeds(getattr(moments, "feeds", None) or [])
    if merged is None:
        return None, "", True
    how = moments.source.removeprefix("data-free: ").removeprefix("data-free estimate: ")
    return merged, how, not moments.fitted
