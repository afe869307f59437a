"""The Python API: ``fold``, ``analyze`` and ``run_pipeline``. The CLI is a thin shell over these."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from onnxfold.analysis import ChannelGroup, analyze_graph
from onnxfold.folding.apply import FoldPlan, model_weight_bytes
from onnxfold.ir.model import Model, data_dirs, load_model, model_from_proto, save_model, spilling
from onnxfold.passes import REGISTRY, CanonicalizePass, CleanupPass, FoldPass, RepairPass, ValidatePass
from onnxfold.pipeline.manager import Pass, PassContext, PassManager, PassRecord
from onnxfold.report.stats import ModelStats, format_comparison, format_table, human_count, model_stats

ModelLike = str | os.PathLike | Model | onnx.ModelProto


def as_model(model: ModelLike) -> Model:
    """Load a path, wrap a ModelProto, or pass a :class:`Model` through."""
    if isinstance(model, Model):
        return model
    if isinstance(model, onnx.ModelProto):
        return model_from_proto(model)
    return load_model(model)


def stats_of(model: Model, file_size: int | None = None) -> ModelStats:
    return model_stats(model.to_onnx(), file_size=file_size)


def saved_size(path: Path) -> int:
    data = path.with_name(path.name + ".data")
    size = path.stat().st_size
    proto = onnx.load(str(path), load_external_data=False)
    if data.exists() and any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        size += data.stat().st_size
    return size


def source_size(model: Model) -> int | None:
    if model.source_path is None or not model.source_path.exists():
        return None
    try:
        return saved_size(model.source_path)
    except Exception:
        return model.source_path.stat().st_size


@dataclass
class FoldReport:
    """Everything a run did: model stats before/after, per-group plans, pass timings, validation."""

    before: ModelStats
    after: ModelStats
    passes: list[PassRecord]
    plans: list[FoldPlan] = field(default_factory=list)
    validation: Any = None
    source: str | None = None
    output: str | None = None

    @property
    def param_sparsity(self) -> float:
        return 1.0 - self.after.params / self.before.params if self.before.params else 0.0

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "output": self.output,
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "param_sparsity": self.param_sparsity,
            "groups": [p.to_dict() for p in self.plans],
            "passes": [
                {"name": r.name, "seconds": r.seconds, "modified": r.modified, "stats": _jsonable(r.stats)}
                for r in self.passes
            ],
            "validation": self.validation.to_dict() if self.validation is not None else None,
        }

    def write_json(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def format(self, max_groups: int = 40) -> str:
        parts = [format_comparison(self.before, self.after)]
        if self.plans:
            folded = [p for p in self.plans if p.status == "folded"]
            n_before = sum(p.group.size for p in self.plans)
            n_after = sum(p.k for p in self.plans)
            parts.append(
                f"\ngroups: {len(folded)} folded, {sum(p.status == 'blocked' for p in self.plans)} blocked, "
                f"{sum(p.status == 'ignored' for p in self.plans)} ignored, "
                f"{sum(p.status == 'unchanged' for p in self.plans)} unchanged; "
                f"channels {n_before} -> {n_after}; parameter sparsity {self.param_sparsity:.1%}"
            )
            rows = [
                [
                    p.group.name,
                    p.group.kind,
                    p.group.size,
                    p.k,
                    p.status if p.method == "fold" or p.status != "folded" else f"pruned ({p.method})",
                    p.reason,
                ]
                for p in self.plans[:max_groups]
            ]
            parts.append(
                format_table(["group", "units", "before", "after", "status", "reason"], rows, align="llrrll")
            )
            if len(self.plans) > max_groups:
                parts.append(f"... {len(self.plans) - max_groups} more groups (see --report JSON)")
        rows = [[r.name, f"{r.seconds * 1000:.1f} ms", "yes" if r.modified else "no"] for r in self.passes]
        parts.append("\n" + format_table(["pass", "time", "modified"], rows, align="lrl"))
        parts += [f"{r.name}: skipped ({r.stats['skipped']})" for r in self.passes if r.stats.get("skipped")]
        if self.validation is not None:
            parts.append(f"\nvalidation ({self.validation.provider}):\n{self.validation.summary()}")
            if getattr(self.validation, "seed", None) is not None:
                parts.append(
                    "(random inputs: a smoke test of the rewrite, not of accuracy; pass --inputs with "
                    "representative samples for meaningful agreement figures)"
                )
        return "\n".join(parts)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


#: Models with more weight bytes than this are folded with spilling (:func:`onnxfold.ir.model.spilling`).
SPILL_ABOVE = 1 << 30


def run_pipeline(
    model: ModelLike,
    passes: Sequence[Pass],
    output: str | os.PathLike | None = None,
    *,
    check: bool = False,
    input_shapes: dict | None = None,
    inputs: dict | None = None,
    seed: int = 0,
    external_data: bool | None = None,
    overwrite: bool = False,
    on_pass=None,
    spill: bool | None = None,
) -> tuple[Model, FoldReport]:
    """Run ``passes`` on ``model`` and optionally save it to ``output`` (atomically, self-contained).

    ``spill``: rewritten tensors go to a scratch file next to ``output`` (or in the temporary
    folder) instead of memory, so that memory stays bounded for models larger than RAM; None
    spills when the model holds more than :data:`SPILL_ABOVE` bytes of weights. With spilling and
    no ``output``, the returned model's rewritten tensors are in memory again (read back)."""
    model = as_model(model)
    if spill is None:
        spill = model_weight_bytes(model) > SPILL_ABOVE
    if not spill:
        return _run_pipeline(
            model, passes, output, check, input_shapes, inputs, seed, external_data, overwrite, on_pass
        )
    folder = Path(output).parent if output is not None and Path(output).parent.is_dir() else None
    with spilling(folder):
        model, report = _run_pipeline(
            model, passes, output, check, input_shapes, inputs, seed, external_data, overwrite, on_pass
        )
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
    inputs: dict | None,
    seed: int,
    external_data: bool | None,
    overwrite: bool,
    on_pass,
) -> tuple[Model, FoldReport]:
    before = stats_of(model, source_size(model))
    ctx = PassContext(original=model.copy(), seed=seed, input_shapes=dict(input_shapes or {}), inputs=inputs)
    manager = PassManager(passes, check=check, on_pass=on_pass)
    manager.run(model, ctx)
    after_size = None
    if output is not None:
        path = save_model(model, output, external_data=external_data, overwrite_input=overwrite)
        after_size = saved_size(path)
    report = FoldReport(
        before,
        stats_of(model, after_size),
        manager.records,
        ctx.data.get("fold_plans", []),
        ctx.data.get("validation"),
        str(model.source_path) if model.source_path else None,
        str(output) if output is not None else None,
    )
    return model, report


def fold(
    model: ModelLike,
    sparsity: float = 0.5,
    output: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    overrides: Sequence[str] = (),
    ignore: Sequence[str] = (),
    round_to: int = 1,
    validate: bool = True,
    check: bool = False,
    external_data: bool | None = None,
    input_shapes: dict | None = None,
    inputs: dict | None = None,
    overwrite: bool = False,
    method: str = "fold",
    repair: str = "ar",
    calibration: str | os.PathLike | Any | None = None,
    features: str = "raw",
    n_init: int = 10,
    recipe: str | os.PathLike | None = None,
    repair_options: dict[str, Any] | None = None,
    cluster: str = "auto",
) -> tuple[Model, FoldReport]:
    """Fold ``model`` at ``sparsity``: canonicalize → fold (→ repair) → cleanup (→ validate).

    ``method``: fold (k-means) or l1/l2 (structured magnitude pruning through the same groups);
    ``repair``: none (Fold-Naive), ar (data-free Fold-AR) or data (Fold-R, needs ``calibration``:
    a .npy/.npz path, a folder of .npy files, an array of input samples or a dict of them);
    ``features``: raw, blocknorm or fused (what is clustered); ``n_init``: k-means restarts;
    ``cluster``: auto, kmeans or ward (:func:`onnxfold.folding.cluster.kmeans_labels`);
    ``recipe``: YAML/JSON per-layer sparsities (:mod:`onnxfold.folding.recipe`), overriding ``sparsity``;
    ``repair_options``: further options of the repair pass (e.g. ``dir_iterations``).
    Returns (model, report)."""
    passes: list[Pass] = [
        CanonicalizePass(),
        FoldPass(
            sparsity=sparsity,
            seed=seed,
            overrides=list(overrides),
            ignore=list(ignore),
            round_to=round_to,
            method=method,
            features=features,
            n_init=n_init,
            cluster=cluster,
            recipe=os.fspath(recipe) if recipe is not None else "",
        ),
    ]
    if repair != "none" or calibration is not None or repair_options:
        extra = dict(repair_options or {})
        if isinstance(calibration, (str, os.PathLike)):
            passes.append(RepairPass(mode=repair, calibration=os.fspath(calibration), **extra))
        else:
            passes.append(RepairPass(mode=repair, calibration_data=calibration, **extra))
    passes.append(CleanupPass())
    if validate:
        passes.append(ValidatePass(seed=seed))
    return run_pipeline(
        model,
        passes,
        output,
        check=check,
        input_shapes=input_shapes,
        inputs=inputs,
        seed=seed,
        external_data=external_data,
        overwrite=overwrite,
    )


def analyze(model: ModelLike) -> list[ChannelGroup]:
    """The channel groups of ``model`` (after canonicalization), foldable or blocked with reasons."""
    model = as_model(model).copy()
    CanonicalizePass().run(model, PassContext())
    return analyze_graph(model.graph)


def format_groups(groups: Sequence[ChannelGroup], verbose: bool = False) -> str:
    """The table ``onnxfold analyze`` prints."""
    rows = []
    for g in groups:
        producers = ", ".join(g.producers[:3]) + (" …" if len(g.producers) > 3 else "")
        rows.append(
            [
                g.name,
                g.size,
                len(g.members),
                "foldable" if g.foldable else "blocked",
                producers if g.foldable else "; ".join(str(r) for r in g.blocked),
            ]
        )
    foldable = sum(g.foldable for g in groups)
    head = (
        f"{len(groups)} channel groups: {foldable} foldable, {len(groups) - foldable} blocked; "
        f"{human_count(sum(g.size for g in groups if g.foldable))} foldable channels"
    )
    text = (
        head
        + "\n"
        + format_table(["group", "channels", "members", "state", "producers / reason"], rows, align="lrrll")
    )
    if verbose:
        text += "\n\n" + "\n\n".join(g.describe() for g in groups)
    return text


__all__ = ["FoldReport", "analyze", "fold", "format_groups", "run_pipeline", "REGISTRY"]
