"""The Python API: ``fold``, ``analyze`` and ``run_pipeline``. The CLI is a thin shell over these."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx

from onnxfold.analysis import ChannelGroup, analyze_graph
from onnxfold.folding.apply import model_weight_bytes
from onnxfold.folding.cluster import DEFAULT_ROUND_TO
from onnxfold.ir.model import Model, data_dirs, load_model, model_from_proto, save_model, spilling
from onnxfold.passes import (
    REGISTRY,
    CanonicalizePass,
    CleanupPass,
    FoldPass,
    RepairPass,
    SearchPass,
    ValidatePass,
)
from onnxfold.passes.dequantize import given_kept
from onnxfold.passes.fold import AUTO_JUDGE_LIMIT
from onnxfold.passes.search import (
    DATA_FREE_MIN_FIDELITY,
    DATA_FREE_MIN_GAIN,
    DEFAULT_MIN_FIDELITY,
    DEFAULT_TIME_LIMIT,
    FIXED_SPARSITY,
    GIVEN_MIN_GAIN,
)
from onnxfold.pipeline.as_given import GIVEN_COUNTS, written_as_given
from onnxfold.pipeline.manager import Pass, PassContext, PassManager, PipelineError
from onnxfold.pipeline.requantize import default_requantize, requantize_pass
from onnxfold.report.counted import canonical_stats, counted_stats, sample_shapes, with_counted_macs
from onnxfold.report.fold_report import FoldReport, saved_ops, saved_size, source_size, stats_of
from onnxfold.report.group_table import format_groups
from onnxfold.report.timing import collecting, rounded, step
from onnxfold.runtime.batch_axes import batch_only_shapes, declared_layout
from onnxfold.runtime.inputs import default_shapes, input_specs
from onnxfold.runtime.random_values import set_input_values
from onnxfold.runtime.runnable import shapes_that_run

log = logging.getLogger(__name__)
#: above this many MACs a random sample at guessed sizes, the user is told early that measuring is slow
#: (waifu2x's CUNet at a guessed 224×224: 30.4 GMACs, 9 minutes to keep the model whole)
GUESSED_HEAVY_MACS = 1 << 31

ModelLike = str | os.PathLike | Model | onnx.ModelProto


def as_model(model: ModelLike) -> Model:
    """Load a path, wrap a ModelProto, or pass a :class:`Model` through."""
    if isinstance(model, Model):
        return model
    if isinstance(model, onnx.ModelProto):
        return model_from_proto(model)
    return load_model(model)


#: Models with more weight bytes than this are folded with spilling (:func:`onnxfold.ir.model.spilling`).
SPILL_ABOVE = 1 << 30


def run_pipeline(
    model: ModelLike,
    passes: Sequence[Pass],
    output: str | os.PathLike | None = None,
    *,
    check: bool = False,
    input_shapes: dict | None = None,
    inputs: Any = None,
    seed: int = 0,
    external_data: bool | None = None,
    overwrite: bool = False,
    on_pass=None,
    spill: bool | None = None,
    input_values: dict[str, float] | None = None,
) -> tuple[Model, FoldReport]:
    """Run ``passes`` on ``model`` and optionally save it to ``output`` (atomically, self-contained).

    ``spill``: rewritten tensors go to a scratch file next to ``output`` (or in the temporary
    folder) instead of memory, so that memory stays bounded for models larger than RAM; None
    spills when the model holds more than :data:`SPILL_ABOVE` bytes of weights. With spilling and
    no ``output``, the returned model's rewritten tensors are in memory again (read back).
    ``inputs``: the user's samples as ``--inputs`` takes them (a path, an array or a dict of arrays:
    :func:`onnxfold.runtime.sample_files.load_inputs`). ``input_values``: input -> the value its
    random samples hold everywhere (``--input-value``)."""
    model = as_model(model)
    set_input_values(model, input_values)
    if spill is None:
        spill = model_weight_bytes(model) > SPILL_ABOVE
    args = (model, passes, output, check, input_shapes, inputs, seed, external_data, overwrite, on_pass)
    if not spill:
        with declared_layout(model):  # a time-major model's samples (onnxfold.runtime.batch_axes)
            return _run_pipeline(*args)
    folder = Path(output).parent if output is not None and Path(output).parent.is_dir() else None
    with spilling(folder), declared_layout(model):
        model, report = _run_pipeline(*args)
        if output is None:  # the scratch file goes away with the block: read spilled tensors back
            tensors = model.graph.tensors()
            for name, folder_of in data_dirs(model.graph).items():
                if folder_of != model.base_dir and name in tensors:
                    tensors[name].values  # noqa: B018 (loads and keeps the values)
    return model, report


def _run_pipeline(
    model: Model,
    passes: Sequence[Pass],
    output: str | os.PathLike | None,
    check: bool,
    input_shapes: dict | None,
    inputs: Any,
    seed: int,
    external_data: bool | None,
    overwrite: bool,
    on_pass,
) -> tuple[Model, FoldReport]:
    from onnxfold.ir.batch_view import add_batch_axis, remove_batch_axis, unbatched, with_batch_axis
    from onnxfold.passes import CanonicalizePass
    from onnxfold.runtime.metadata_sizes import metadata_shapes

    view = unbatched(model)
    if not input_shapes and inputs is None and (stated := metadata_shapes(model)):
        log.info("input sizes from the model's metadata: %s", stated)  # Ultralytics' imgsz
        input_shapes = stated
    if inputs is not None:  # a path, an array or a dict, checked against the model as --inputs is
        from onnxfold.runtime.sample_files import load_inputs

        inputs = load_inputs(inputs, model, shapes=input_shapes, batch_view=view)
    # MACs at the shapes given, else a sample's (free dims as 1: RetinaFace at 320x320 read 447K for 265M)
    given = dict(input_shapes or {}) or sample_shapes(inputs, view)
    defaulted = {} if given or view else default_shapes(model)  # where random inputs run
    given = given or defaulted or ({} if view else batch_only_shapes(input_specs(model)))
    before = stats_of(model, source_size(model), given, batched=not view)
    if defaulted and inputs is None and (before.macs or 0) > GUESSED_HEAVY_MACS:
        if (runs := shapes_that_run(model, seed)) != defaulted:  # not at the guess: where it runs
            defaulted = given = runs
            before = stats_of(model, source_size(model), given, batched=not view)
    if defaulted and inputs is None and (before.macs or 0) > GUESSED_HEAVY_MACS:
        log.warning(
            "the inputs' free dims are guessed (%s): %.1f GMACs a random sample, so what is measured on "
            "them (a search, method auto, validation) takes long; --input-shape NAME:D0,D1,... sets the "
            "size the model runs at",
            ", ".join(f"{k} {list(v)}" for k, v in defaulted.items()),
            before.macs / 1e9,
        )
    counting = with_batch_axis(given, model) if view else given
    if view:  # every sample one whole input (onnxfold.ir.batch_view)
        input_shapes = with_batch_axis(input_shapes, model)
        add_batch_axis(model)
    # MACs before: on the input canonicalized, by the pipeline's own canonicalize when first, else a copy
    canonical_first = bool(passes) and isinstance(passes[0], CanonicalizePass)
    counted = [] if canonical_first else [canonical_stats(model, counting)]

    def record(rec) -> None:
        if canonical_first and not counted:
            counted.append(stats_of(model, shapes=counting))
        if on_pass is not None:
            on_pass(rec)

    ctx = PassContext(original=model.copy(), seed=seed, input_shapes=dict(input_shapes or {}), inputs=inputs)
    ctx.data["mac_shapes"] = counting  # the search counts its candidates' MACs there too
    ctx.data["input_params"] = before.params  # and reports its reductions from the input, as the table
    if output is not None and not view:  # a model kept whole is written back as given, unvalidated
        ctx.data[GIVEN_COUNTS] = (before.node_count, before.params)
    for p in passes:  # checks that can fail before any work (e.g. repair mode dir's applicability)
        if hasattr(p, "preflight"):
            p.preflight(model, ctx)
    manager = PassManager(passes, check=check, on_pass=record)
    with collecting() as steps:
        manager.run(model, ctx)
        kept_given = given_kept(manager.records, ctx)
        if kept_given:  # the search folded nothing of an INT8 model: its float copy is no answer
            model, ctx.data["validation"] = ctx.data["dequantized_from"].copy(), None
        if view:
            remove_batch_axis(model)
            timed = getattr(ctx.data.get("validation"), "latency", None)
            if timed is not None:  # the shapes the user's model reads, not the view's [1, ...]
                timed.inputs = {k: tuple(v)[1:] for k, v in timed.inputs.items()}
        if defaulted and ctx.data.get("runnable_dim"):  # the model runs at larger free dims than 16
            defaulted = default_shapes(ctx.original, ctx.data["runnable_dim"])
            given = defaulted
            counted = [canonical_stats(ctx.original, defaulted)]
        before = with_counted_macs(before, counted[0] if counted else None)
        after_size = None
        kept = model.source_path if kept_given else None  # an INT8 model kept: its bytes (USE's differed)
        verbatim = None if view else kept or written_as_given(manager.records, ctx, model)
        if output is not None:
            with step("save"):
                path = save_model(
                    model, output, external_data=external_data, overwrite_input=overwrite, verbatim=verbatim
                )
            after_size = saved_size(path)
    if output is not None:
        log.info("save: %.1f s (CPU %.1f s)", steps.get("save", 0.0), steps.cpu.get("save", 0.0))
    if verbatim is not None:  # the input's bytes: its own statistics, as the table's "before" counts them
        after = dataclasses.replace(before, file_size=after_size)
    else:
        after = counted_stats(model, given, after_size, batched=not view)
    if output is not None and verbatim is None:
        after.op_counts = saved_ops(path)  # as written (MACs as the passes see it)
    report = FoldReport(
        before,
        after,
        manager.records,
        ctx.data.get("fold_plans", []),
        ctx.data.get("validation"),
        str(model.source_path) if model.source_path else None,
        str(output) if output is not None else None,
        search=ctx.data.get("search"),
        round_to=ctx.data.get("round_to"),
        steps=rounded(steps),
        steps_cpu=rounded(steps.cpu),
        unbatched=view,
        default_shapes=defaulted,
        kept_given=kept_given,
        as_given=verbatim is not None,
    )
    return model, report


def default_plan(
    sparsity: float | None,
    min_fidelity: float,
    target_params: float,
    target_macs: float,
    recipe: str | os.PathLike | None,
    time_limit: float | None,
    given: bool = False,
) -> tuple[float, float, float, bool]:
    """(sparsity, min_fidelity, time_limit, searched by default) for :func:`fold`'s arguments.

    Uniform sparsity breaks real pretrained models long before it saves much (every one of 11
    wheels' models lost its task at 0.3), so a fold asked for nothing in particular (no sparsity,
    no target, no recipe) is the search for the smallest model at fidelity
    :data:`DEFAULT_MIN_FIDELITY` on ``given`` samples (``--inputs``), else
    :data:`DATA_FREE_MIN_FIDELITY` on the data-free proxy, cut at :data:`DEFAULT_TIME_LIMIT` seconds
    unless a time limit is given. Otherwise a missing sparsity is :data:`FIXED_SPARSITY` and a
    missing limit none."""
    if sparsity is not None and (min_fidelity or target_params or target_macs):
        # a search allocates every group it may fold: one sparsity would be silently ignored
        raise ValueError(
            "--sparsity folds every group at one sparsity and a target (--min-fidelity, --target-params, "
            "--target-macs) chooses each group's: give one of them (--override fixes a group within a search)"
        )
    searched = (
        sparsity is None
        and not min_fidelity
        and not target_params
        and not target_macs
        and not (recipe is not None and os.fspath(recipe))
    )
    if searched:
        return (
            FIXED_SPARSITY,
            DEFAULT_MIN_FIDELITY if given else DATA_FREE_MIN_FIDELITY,
            DEFAULT_TIME_LIMIT if time_limit is None else time_limit,
            True,
        )
    return (
        FIXED_SPARSITY if sparsity is None else sparsity,
        min_fidelity,
        0.0 if time_limit is None else time_limit,
        False,
    )


def fold(
    model: ModelLike,
    sparsity: float | None = None,
    output: str | os.PathLike | None = None,
    *,
    # fold pass
    seed: int = 0,
    overrides: Sequence[str] = (),
    ignore: Sequence[str] = (),
    round_to: int | None = None,
    method: str = "auto",
    judge_limit: int = AUTO_JUDGE_LIMIT,
    features: str = "raw",
    n_init: int = 10,
    jobs: int = 1,
    threads: int = 0,
    cluster: str = "auto",
    recipe: str | os.PathLike | None = "",
    verify: bool = True,
    # search pass
    min_fidelity: float = 0.0,
    target_params: float = 0.0,
    target_macs: float = 0.0,
    metric: str = "auto",
    levels: str = "0.1,0.2,0.3,0.5,0.7",
    max_sparsity: float = 0.7,
    force: bool = False,
    time_limit: float | None = None,
    min_gain: float | None = None,
    # repair pass
    repair: str = "ar",
    calibration: str | os.PathLike | Any | None = "",
    batch_size: int = 64,
    goal: str = "members",
    sequential: bool = True,
    dir_samples: int = 128,
    dir_iterations: int = 200,
    dir_seed: int = 0,
    repair_options: dict[str, Any] | None = None,
    # validate pass
    validate: bool = True,
    validate_batch: int = 2,
    min_cosine: float = -1.0,
    speed_check: bool = False,
    # pipeline and output
    check: bool = False,
    external_data: bool | None = None,
    input_shapes: dict | None = None,
    inputs: Any = None,
    overwrite: bool = False,
    dequantize: bool = False,
    requantize: str = "",
    input_values: dict[str, float] | None = None,
) -> tuple[Model, FoldReport]:
    """Fold ``model`` at ``sparsity``: canonicalize → fold (→ repair) → cleanup (→ validate); with
    ``dequantize``, an INT8 model's weights are made float32 first (the ``dequantize`` pass), and
    with ``requantize`` ("auto": the model's own mode, "static" or "dynamic"; "default": as
    :func:`~onnxfold.pipeline.requantize.default_requantize` decides) the result is quantized again
    before validation (the ``quantize`` pass, calibrated on ``inputs`` where given).

    Without ``sparsity``, a target or a recipe this is the search for the smallest model at fidelity
    :data:`DEFAULT_MIN_FIDELITY` on ``inputs``, else :data:`DATA_FREE_MIN_FIDELITY`, within
    :data:`DEFAULT_TIME_LIMIT` s (:func:`default_plan`), which without ``inputs`` keeps the model
    whole where it would remove under :data:`DATA_FREE_MIN_GAIN` of the parameters, with ``inputs``
    under :data:`GIVEN_MIN_GAIN` (``min_gain`` None; a number sets it for any fidelity search); ``report.search.default`` is then True.

    The keywords are the options of the fold, repair and validate passes (``onnxfold passes``
    lists their meaning; the ``onnxfold fold`` flags have the same names and defaults), except:
    ``repair`` is repair's ``mode``, ``dir_seed`` its ``seed``, ``validate_batch`` validate's
    ``batch``, ``seed`` also seeds validate's random inputs, and ``round_to`` None is 8 where a search at
    8 folds something, else exact widths (:mod:`~onnxfold.search.exact_widths`). ``calibration`` and ``inputs``
    may be a path (:func:`onnxfold.runtime.sample_files.load_inputs`), an array of samples or a dict
    of them;
    ``repair_options``: repair options by their pass names (they win over the keywords).
    The repair pass runs unless ``repair="none"`` and no repair keyword is set.
    With ``min_fidelity``, ``target_params`` or ``target_macs`` the search pass replaces the fixed
    sparsity: every candidate it measures is folded, repaired and cleaned up as configured here, on
    ``inputs`` (or validation's random inputs: a data-free proxy); ``report.search`` holds its
    result. A missed ``min_fidelity`` raises :class:`~onnxfold.errors.PipelineError` and writes
    nothing unless ``force``. Returns (model, report)."""
    sparsity, min_fidelity, time_limit, searched = default_plan(
        sparsity, min_fidelity, target_params, target_macs, recipe, time_limit, given=inputs is not None
    )
    fold_pass = FoldPass(
        sparsity=sparsity,
        seed=seed,
        overrides=list(overrides),
        ignore=list(ignore),
        round_to=DEFAULT_ROUND_TO if round_to is None else round_to,
        method=method,
        judge_limit=judge_limit,
        features=features,
        n_init=n_init,
        jobs=jobs,
        threads=threads,
        cluster=cluster,
        recipe=os.fspath(recipe) if recipe is not None else "",
        verify=verify,
    )
    search = SearchPass(
        min_fidelity=min_fidelity,
        target_params=target_params,
        target_macs=target_macs,
        metric=metric,
        levels=levels,
        max_sparsity=max_sparsity,
        force=force,
        time_limit=time_limit,
        min_gain=(0.0 if not searched else DATA_FREE_MIN_GAIN if inputs is None else GIVEN_MIN_GAIN)
        if min_gain is None
        else min_gain,
    )
    search.default_target = searched and inputs is not None
    fold_pass.round_given = round_to is not None  # a default gives way to exact widths (search.exact_widths)
    passes: list[Pass] = [CanonicalizePass(), fold_pass]
    repair_opts = {
        "batch_size": batch_size,
        "goal": goal,
        "sequential": sequential,
        "dir_samples": dir_samples,
        "dir_iterations": dir_iterations,
        "seed": dir_seed,
        **(repair_options or {}),
    }
    defaults = {o.name: o.default for o in RepairPass.options}
    has_data = calibration is not None and not (
        isinstance(calibration, (str, os.PathLike)) and not os.fspath(calibration)
    )
    if repair != "none" or has_data or any(v != defaults.get(k) for k, v in repair_opts.items()):
        if not has_data:
            passes.append(RepairPass(mode=repair, **repair_opts))
        elif isinstance(calibration, (str, os.PathLike)):
            passes.append(RepairPass(mode=repair, calibration=os.fspath(calibration), **repair_opts))
        else:
            passes.append(RepairPass(mode=repair, calibration_data=calibration, **repair_opts))
    if search.mode is not None:  # the search runs fold (and repair) on every candidate itself
        search.fold, search.repair = fold_pass, passes[2] if len(passes) > 2 else None
        passes = [passes[0], search]
    passes.append(CleanupPass())
    if dequantize:
        from onnxfold.passes import DequantizePass

        passes.insert(0, DequantizePass())
    if requantize == "default":  # --dequantize alone: an INT8 model given gets an INT8 fold back
        model = as_model(model)
        requantize = default_requantize(model, inputs)
        passes[0].by_default = bool(requantize)
    if requantize:  # loaded once, here, where its mode is read
        model = as_model(model)
        passes.append(requantize_pass(model, requantize, dequantize))
    if validate:
        passes.append(
            ValidatePass(
                seed=seed, batch=validate_batch, min_cosine=min_cosine, speed_check=speed_check, metric=metric
            )
        )
    elif speed_check:
        raise PipelineError("speed_check times the model during validation: it cannot run without it")
    result = run_pipeline(
        model,
        passes,
        output,
        check=check,
        input_shapes=input_shapes,
        inputs=inputs,
        seed=seed,
        external_data=external_data,
        overwrite=overwrite,
        input_values=input_values,
    )
    if searched and result[1].search is not None:
        result[1].search.default = True
    return result


def analyze(model: ModelLike) -> list[ChannelGroup]:
    """The channel groups of ``model`` (after canonicalization), foldable or blocked with reasons."""
    model = as_model(model).copy()
    CanonicalizePass().run(model, PassContext())
    return analyze_graph(model.graph)


def analyze_share(model: ModelLike, cap: float = 0.7) -> tuple[list[ChannelGroup], int, int]:
    """(the groups of :func:`analyze`, the parameters removed with every foldable group at the search's
    cap, ⌊cap·n⌋ of its n channels: :func:`~onnxfold.search.allocate.params_ceiling`, the bound a
    ``--target-params`` search refuses a budget above; all the parameters of the model as given, as a
    fold's report counts them: counted after canonicalization, an ALBERT tagger's read 826K where its fold
    read 820K). Counted at ``fold -s cap``'s rounded widths, a diacritizer's read 19.7% where its search
    said "at most 19.2%"; copies of a weight once, in ``cleaned`` (fracast's read 105.9%)."""
    from onnxfold.passes.cleanup import repeated_weights
    from onnxfold.search.allocate import params_ceiling

    model = as_model(model)
    given = stats_of(model).params
    model = model.copy()
    CanonicalizePass().run(model, PassContext())
    groups = analyze_graph(model.graph)
    cleaned = model.copy()  # what the search counts from: weights held twice stored once
    PassManager([CleanupPass()]).run(cleaned, PassContext(original=model))
    copies = frozenset(repeated_weights(model.graph))
    ceiling = params_ceiling(groups, model.graph.tensors(), cap, set(), copies)
    return groups, given - stats_of(cleaned).params + ceiling, given


__all__ = [
    "FoldReport",
    "REGISTRY",
    "analyze",
    "analyze_share",
    "as_model",
    "fold",
    "format_groups",
    "run_pipeline",
    "saved_size",
    "stats_of",
]
