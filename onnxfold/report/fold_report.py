"""The report of a pipeline run (:class:`FoldReport`): model statistics before and after, the
plan of every channel group, pass timings and the validation, as text (``format``) or JSON."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxfold.analysis.groups import REASON_WIDTH, cut_reason
from onnxfold.folding.apply import FoldPlan
from onnxfold.ir.model import Model
from onnxfold.ir.restore import restored_constants
from onnxfold.pipeline.manager import PassRecord
from onnxfold.report.comparison import (
    float_again_line,
    format_comparison,
    params_growth,
    stored_once_note,
    stored_once_share,
)
from onnxfold.report.in_sample import in_sample_note
from onnxfold.report.names import shortened
from onnxfold.report.stats import ModelStats, format_table, model_stats, op_counts, weight_counts
from onnxfold.report.table import count_change, percent
from onnxfold.report.target_notes import below_target, count_target, image_target
from onnxfold.report.task_warning import task_warning, unexercised_note


def stats_of(
    model: Model, file_size: int | None = None, shapes: dict | None = None, batched: bool = True
) -> ModelStats:
    """Parameter, MAC and size statistics of ``model`` (``file_size``: its saved size in bytes; ``shapes``,
    ``batched`` as :func:`~onnxfold.report.stats.model_stats` takes them). Weights counted as written (a
    constant canonicalize computed away comes back on save: g2p-id's BERT read 45.0% fewer parameters for
    a file 39.7% smaller), MACs as the passes see the graph."""
    proto = model.to_onnx()
    stats = model_stats(proto, file_size=file_size, shapes=shapes, batched=batched)
    back, dropped = restored_constants(model.graph, model.computed_constants, model.weight_shapes)
    gone = [t for t in proto.graph.initializer if t.name in set(dropped)]
    for tensors, sign in ((back, 1), (gone, -1)):
        params, size, by_tensor = weight_counts(
            onnx.helper.make_model(onnx.helper.make_graph([], "w", [], [], tensors))
        )
        stats.params, stats.weight_bytes = stats.params + sign * params, stats.weight_bytes + sign * size
        for name in by_tensor:
            stats.tensor_params[name] = by_tensor[name] if sign > 0 else 0
    stats.tensor_params = {k: v for k, v in stats.tensor_params.items() if v}
    return stats


def saved_size(path: Path) -> int:
    """Bytes of a saved model: the .onnx file plus every external data file its tensors refer to, each
    once, whatever its name (Qualcomm AI Hub's 14.3 MB YAMNet, ``model.data``, read as 63.1 KiB)."""
    size = path.stat().st_size
    proto = onnx.load(str(path), load_external_data=False)
    files = {
        entry.value
        for t in proto.graph.initializer
        if t.data_location == onnx.TensorProto.EXTERNAL
        for entry in t.external_data
        if entry.key == "location"
    }
    for name in files:
        data = path.parent / name
        size += data.stat().st_size if data.is_file() else 0
    return size


def saved_ops(path: Path) -> Counter:
    """The op counts of a saved model as written, with the shape arithmetic that canonicalize made
    constant restored (a Keras VGG16 that folded nothing read "node count 56 -> 57", its file 56)."""
    return op_counts(onnx.load(str(path), load_external_data=False))


def source_size(model: Model) -> int | None:
    """Saved size of the file ``model`` was loaded from (None if it has none)."""
    if model.source_path is None or not model.source_path.exists():
        return None
    try:
        return saved_size(model.source_path)
    except Exception:
        return model.source_path.stat().st_size


def plan_state(plan) -> str:
    """The status column: folded, pruned (l1/l2/wanda: channels removed), merged (hybrid/lsq: removed
    channels mixed into the kept ones), or the plan's status when nothing was rewritten."""
    if plan.status != "folded" or plan.method == "fold":
        return plan.status
    return f"{'merged' if plan.method in ('hybrid', 'lsq') else 'pruned'} ({plan.method})"


def reduced(folded: list) -> str:
    """The groups line's count of the groups reduced, by how where not all were folded: "2 folded" read
    beside two groups pruned by l2 (trial 191), so "2 reduced (2 pruned by l2)"."""
    states = Counter(plan_state(p) for p in folded)
    if set(states) <= {"folded"}:
        return f"{len(folded)} folded"
    how = ", ".join(f"{n} {s.replace(' (', ' by ').rstrip(')')}" for s, n in states.most_common())
    return f"{len(folded)} reduced ({how})"


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
    search: Any = None  # onnxfold.search.target.SearchResult of a target run
    round_to: int | None = None  # the fold's round_to (None: no fold pass ran)
    #: wall seconds by step (:mod:`onnxfold.report.timing`), summed over groups and workers
    steps: dict[str, float] = field(default_factory=dict)
    #: the same steps' CPU seconds (comparable across runs on a machine whose cores are shared)
    steps_cpu: dict[str, float] = field(default_factory=dict)
    #: the model reads one example without a batch axis (:mod:`onnxfold.ir.batch_view`)
    unbatched: bool = False
    #: input -> the shape MACs were counted at when neither --input-shape nor samples gave one
    #: (:func:`~onnxfold.runtime.inputs.default_shapes`); empty otherwise
    default_shapes: dict = field(default_factory=dict)
    kept_given: bool = False  # the INT8 model given written unchanged (--dequantize folded nothing)
    as_given: bool = False  # the file written is the input's bytes (a search kept the model whole)

    def warned_reason(self) -> str:
        """Why ``--fail-if-warned`` stops: validation warns about the task, or a static quantization was
        calibrated on random samples (flashvad's voice detector then found no speech, while validation
        on random inputs read r2 0.92); '' otherwise."""
        if (self.task_line() or "").startswith("warning:"):
            return "validation warned about the task"
        noise = any(p.name == "quantize" and p.stats.get("calibration") == "random" for p in self.passes)
        return "static quantization calibrated on random samples" if noise else ""

    @property
    def param_sparsity(self) -> float:
        return 1.0 - self.after.params / self.before.params if self.before.params else 0.0

    @property
    def any_folded(self) -> bool:
        """Whether some group was folded (else another pass made every change)."""
        return any(p.status == "folded" for p in self.plans)

    @property
    def params_note(self) -> str | None:
        """Why the result holds more parameters than the input, or None when it holds no more."""
        return params_growth(self.before, self.after, folded=self.any_folded, quantized=self.quantized_mode)

    @property
    def quantized_mode(self) -> str:
        """The mode of the quantize pass that changed the model (static, dynamic), '' if none did."""
        return next(
            (r.stats.get("mode", "static") for r in self.passes if r.name == "quantize" and r.modified), ""
        )

    def _validated_on(self) -> str:
        """The given samples validation ran on, where it says no more of them (trial 204 read max_abs
        8.4e-05 on the 32 samples its search had chosen on as a figure for any input)."""
        v = self.validation
        if v.seed is not None or v.source is not None or not v.samples:
            return ""
        searched = self.search is not None and not getattr(self.search, "proxy", True)
        return f", on the {v.samples} given samples" + (
            ", the ones the search measured on" if searched else ""
        )

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "output": self.output,
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "param_sparsity": self.param_sparsity,
            "round_to": self.round_to,
            "params_note": self.params_note,
            "unbatched": self.unbatched,
            "default_shapes": {k: list(v) for k, v in self.default_shapes.items()},
            "kept_given": self.kept_given,
            "as_given": self.as_given,
            "groups": [_jsonable(p.to_dict()) for p in self.plans],
            "passes": [
                {"name": r.name, "seconds": r.seconds, "modified": r.modified, "stats": _jsonable(r.stats)}
                for r in self.passes
            ],
            "validation": self.validation.to_dict() if self.validation is not None else None,
            "search": self.search.to_dict() if self.search is not None else None,
            "steps": dict(self.steps),
            "steps_cpu": dict(self.steps_cpu),
        }

    def rounding_line(self) -> str:
        """How the folded widths were rounded, in one line (:func:`~onnxfold.report.rounding.rounding_line`)."""
        from onnxfold.report.rounding import rounding_line

        return rounding_line(self.plans, self.round_to, getattr(self.search, "unrounded", ""))

    def task_line(self) -> str | None:
        """Validation's line on the task (:func:`task_warning`: a warning, a note, or None)."""
        if self.validation is None:
            return None
        return task_warning(
            self.validation,  # a budget search (--target-params) keeps whatever fidelity it costs
            searched=self.search is not None and self.search.mode == "min_fidelity",
            folded=self.any_folded,
            quantized=self.quantized_mode,
            convs=self.before.op_counts.get("Conv", 0) > 0,
        )

    def write_json(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def format(self, max_groups: int = 40) -> str:
        parts = [format_comparison(self.before, self.after)]
        if self.default_shapes:
            shapes = ", ".join(f"{k} {list(v)}" for k, v in self.default_shapes.items())
            parts.append(
                f"note: MACs per sample at {shapes}, the sizes random inputs take (--input-shape "
                "or --inputs count them at yours)"
            )
        if self.params_note:
            parts.append(f"note: {self.params_note}")
        parts += stored_once_note(self.passes, self.before, self.after)  # beside the table it splits
        if self.unbatched:
            parts.append(
                "note: the model reads one example without a batch axis: each sample (a file, or one "
                "entry of an array with one more axis than the input) was run whole, one at a time"
            )
        if self.plans:
            folded = [p for p in self.plans if p.status == "folded"]
            # as onnxfold analyze counts: a group of one channel has nothing to merge
            foldable = [p for p in self.plans if p.status != "blocked" and p.group.size > 1]
            n_before = sum(p.group.size for p in foldable)
            n_after = sum(p.k for p in foldable)
            # weights held twice and stored once (an ALBERT's shared layers): none of it is folding
            once = stored_once_share(self.passes, self.before.params)
            parts.append(
                f"\ngroups: {reduced(folded)}, {sum(p.status == 'blocked' for p in self.plans)} blocked, "
                f"{sum(p.status == 'ignored' for p in self.plans)} ignored, "
                f"{sum(p.status == 'unchanged' for p in self.plans)} unchanged; "
                f"foldable channels {n_before} -> {n_after}; parameter sparsity {percent(self.param_sparsity)}"
                + (f" ({once:.1%} weights held twice, stored once)" if once >= 0.001 else "")
            )
            if self.round_to is not None and folded:  # no width to round where nothing folded (trial 137)
                parts.append(self.rounding_line())
            rows = [
                [
                    shortened(p.group.name),
                    p.group.kind,
                    p.group.size,
                    p.k,
                    removed_text(p),
                    plan_state(p),
                    cut_reason(p.reason),
                ]
                for p in self.plans[:max_groups]
            ]
            parts.append(
                format_table(
                    ["group", "units", "before", "after", "removed", "status", "reason"],
                    rows,
                    align="llrrrll",
                )
            )
            if len(self.plans) > max_groups:
                parts.append(f"... {len(self.plans) - max_groups} more groups (see --report JSON)")
            if any(len(p.reason) > REASON_WIDTH for p in self.plans[:max_groups]):
                parts.append("(reasons cut at a line's width: --report JSON has them whole)")
        dequantized = any(r.name == "dequantize" and r.modified for r in self.passes)
        simplified = (
            f"; the model is written simplified ({self.before.node_count} -> {self.after.node_count} nodes: "
            "constant computations folded, Identity and Dropout removed), computing the same outputs"
            if self.after.node_count < self.before.node_count
            else ""
        )  # a romanizer's decoder read "nothing folded" and found a file that differed from its own
        if self.kept_given:  # SSCD's copy detector: a 3.5x larger float copy, written with exit 0
            simplified = (
                "; the INT8 model given is written unchanged (its dequantized float32 copy, which the search "
                "measured, is larger and computes not quite the same outputs)"
            )
        elif dequantized:  # text2tashkeel: 4.7 -> 18.4 MiB
            simplified = (
                "; the file written is the INT8 model given made float32 (dequantize), larger and not computing "
                "quite the same outputs (validation below): keep the model given"
            )
        elif self.after.params < self.before.params:  # a tagger's decoder held its embedding's transpose
            simplified += (
                f"; weights it held twice are stored once ({count_change(self.before.params, self.after.params)} "
                "parameters)"
            )
        parts += [
            f"\nnothing folded: {r.stats['nothing_folded']}{simplified}"
            for r in self.passes
            if r.stats.get("nothing_folded")
        ]
        if self.search is not None:
            parts.append("\n" + self.search.summary(self.before, self.after))
        rows = [[r.name, f"{r.seconds * 1000:.1f} ms", "yes" if r.modified else "no"] for r in self.passes]
        parts.append("\n" + format_table(["pass", "time", "modified"], rows, align="lrl"))
        parts += [f"{r.name}: skipped ({r.stats['skipped']})" for r in self.passes if r.stats.get("skipped")]
        parts += [
            f"{r.name}: {r.stats['note']}"
            for r in self.passes
            if r.stats.get("note") and not (self.kept_given and r.name == "dequantize")  # not written
        ]
        parts += [f"{r.name}: method auto: {r.stats['auto']}" for r in self.passes if r.stats.get("auto")]
        if dequantized and not (self.kept_given or self.quantized_mode):  # the float fold written
            parts += filter(None, [float_again_line(self.before, self.after)])
        if self.validation is not None:
            parts.append(
                f"\nvalidation ({self.validation.provider}{self._validated_on()}):\n{self.validation.summary()}"
            )
            latency = getattr(self.validation, "latency", None)
            if latency is not None:
                parts.append(latency.summary())
                warning = latency.warning(self.round_to)
                if warning:
                    parts.append(warning)
            warning = self.task_line()
            if warning:
                parts.append(warning)
            parts += [r.stats["chained"] for r in self.passes if r.stats.get("chained")]  # search.provenance
            parts += [w for o in getattr(self.validation, "outputs", ()) for w in o.warnings()]
            note = None if warning and warning.startswith("note:") else unexercised_note(self.validation)
            if note:  # task_warning's note names the unexercised outputs already
                parts.append(note)
            for note in (
                below_target(self.validation, self.search),
                image_target(self.validation, self.search),
                count_target(self.search),
            ):
                if note:
                    parts.append(note)
            if getattr(self.validation, "seed", None) is not None:
                ran = {} if self.unbatched else self.validation.inputs
                counted = getattr(self.validation, "samples", None)  # a time major [30, N] holds N
                leading = {counted} if counted and ran else {d[0] for d in ran.values() if d}
                count = f", {leading.pop()} of them" if len(leading) == 1 else ""  # a figure on 2 says little
                parts.append(
                    f"(random inputs{count}: a smoke test of the rewrite, not of accuracy; pass --inputs with "
                    "representative samples for meaningful agreement figures)"
                )
            elif source := getattr(self.validation, "source", None):  # a quantize pass's calibration
                parts.append(f"(measured on {source})")
            elif self.search is None and (fitted := in_sample_note(self)):
                parts.append(fitted)
        return "\n".join(parts)


def _jsonable(value: Any) -> Any:
    """``value`` with numpy scalars and arrays as Python numbers and lists, and anything else unknown as text."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def removed_text(plan) -> str:
    """The fraction of a group's channels the fold removed, with the asked sparsity beside it where
    the widths' rounding made them differ: ``0.25 (0.2 asked)`` (a trial read the asked 0.2 beside
    32 -> 24 channels)."""
    size = plan.group.size
    removed = 1.0 - plan.k / size if size else 0.0
    if abs(removed - plan.sparsity) < 0.005:
        return f"{removed:.3g}"
    return f"{removed:.3g} ({plan.sparsity:.3g} asked)"
