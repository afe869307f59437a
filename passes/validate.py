"""validate: run the original and the current model with onnxruntime and measure fidelity.

Inputs are random (right dtypes and shapes; symbolic dims get defaults or ``--input-shape``) or
the user's ``.npy`` inputs from the pipeline context. Reports max abs/relative error, cosine
similarity and top-1 agreement per output. The graph is never changed. ``min_cosine`` turns the
report into a post-condition: the pipeline stops when any output's cosine falls below it. After a
``min_fidelity`` search on given samples that met its target, the result is measured again on them
under the search's metrics, and the pipeline stops when a later pass (quantize, float16) lost it.
A model a search kept whole, written back as the file given, is not run (the pass says so).
``speed_check`` also times both models on the same inputs (about a second of interleaved runs,
:mod:`onnxfold.runtime.latency`); the report warns when the result is slower than the original.
Models above 2 GB of weights are not run (both models would have to be in memory at once): the
pass reports that it skipped them.
"""

from __future__ import annotations

import logging
from functools import partial

import numpy as np

from onnxfold.folding.apply import model_weight_bytes
from onnxfold.folding.samples import token_draws
from onnxfold.folding.signal_dims import guess
from onnxfold.ir.model import PROTO_LIMIT, Model, as_loaded, to_model_proto
from onnxfold.passes.dequantize import given_kept
from onnxfold.pipeline.as_given import only_looked, written_as_given
from onnxfold.pipeline.manager import Option, Pass, PassContext, PassError, PassResult
from onnxfold.runtime.compare import validate
from onnxfold.runtime.fidelity import parse_metric
from onnxfold.runtime.latency import DEFAULT_BUDGET_S
from onnxfold.runtime.runnable import runnable_dims
from onnxfold.runtime.session import make_session
from onnxfold.search.provenance import KEEPS_TARGET, chained_note, recorded

log = logging.getLogger(__name__)

#: why a model a search kept whole is not run: the file written is the one given
AS_GIVEN = "the search kept the model whole: it is written back as given, so there is nothing to compare"


class ValidatePass(Pass):
    name = "validate"
    summary = "compare the model with the pipeline's input model in onnxruntime (CUDA if present, else CPU)"
    options = (
        Option("batch", int, 2, "batch size used for symbolic batch dims of random inputs"),
        Option("seed", int, 0, "seed of the random inputs"),
        Option("min_cosine", float, -1.0, "fail when an output's cosine similarity falls below this"),
        Option(
            "fail_below",
            float,
            -1.0,
            "fail, writing nothing, when an output's fidelity (by its metric, as the report prints it) falls "
            "below this: a pipeline's validate warned and wrote a face detector that found no face, exit 0",
        ),
        Option(
            "speed_check",
            bool,
            False,
            "also time the original and the result on the validation inputs (about 1 s of "
            "interleaved runs, median) and warn when the result is slower than the original",
        ),
        Option(
            "metric",
            str,
            "auto",
            "the fidelity reported per output (as the search's --metric; OUTPUT=none leaves an output "
            "out of the warnings); a search's own metrics win",
            check=parse_metric,
        ),
    )

    def preflight(self, model: Model, ctx: PassContext) -> None:
        """Run the original once on the inputs validation will use, before any pass works: a model that
        cannot run on them fails now, in one line naming ``--input-shape``, not after the fold. Random
        inputs whose symbolic dims do not run are retried with larger ones (:func:`runnable_dims`)."""
        self.dim, self.batch = 16, self.opts["batch"]
        self.guess, self.guess_why = guess(model)
        given = ctx.inputs is not None
        if model_weight_bytes(model) > PROTO_LIMIT or (given and "boxes" not in self.opts["metric"]):
            return  # given samples need no session unless --metric boxes is to be checked on them
        session = make_session(to_model_proto(model).SerializeToString(), arrays=True)
        if given:
            from onnxfold.folding.samples import chunked, run_size

            self._metric_fits(session, chunked(ctx.inputs, run_size(session))[0])  # a batch-1 export: 1
            return
        try:
            self.dim, feed, _, self.batch = runnable_dims(
                session,
                ctx.input_shapes or None,
                self.opts["batch"],
                self.opts["seed"],
                token_draws(model),
                self.guess,
            )
        except RuntimeError as exc:
            raise PassError(f"validate: {exc}") from None
        if "boxes" in self.opts["metric"]:  # on random inputs too: it failed after the fold (SCRFD)
            self._metric_fits(session, feed)
        self.dim_taken = _took(session, feed, self.dim)
        if self.dim != 16:
            ctx.data["runnable_dim"] = self.dim  # where MACs are counted too (onnxfold.api)
            if self.dim_taken:
                log.info("validate: symbolic input dims set to %d (%s)", self.dim, self._why_dim())
        if self.batch != self.opts["batch"]:
            log.info(
                "validate: %d random samples (the model does not run on %d)", self.batch, self.opts["batch"]
            )

    def _why_dim(self) -> str:
        if self.dim == self.guess:
            return self.guess_why
        return f"the model does not run with {self.guess}"

    def _metric_fits(self, session, feed) -> None:
        """A ``--metric`` that cannot read the original's outputs on one run of the inputs validation
        uses (``boxes`` on what is no detections) fails now, not after the fold (a trial: 30 s)."""
        from onnxfold.runtime.fidelity import output_metrics

        names = [o.name for o in session.get_outputs()]
        try:
            output_metrics(dict(zip(names, session.run(names, feed), strict=True)), self.opts["metric"])
        except ValueError as exc:
            raise PassError(f"validate: {exc}") from None

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        if ctx.original is None:
            raise PassError("validate: the pipeline has no original model to compare with")
        size = model_weight_bytes(ctx.original)
        if size > PROTO_LIMIT:
            reason = f"model holds {size / 1e9:.1f} GB of weights (above 2 GB): not run"
            log.warning("validate: skipped, %s", reason)
            return PassResult(False, {"skipped": reason})
        records, search = ctx.data.get("records", []), ctx.data.get("search")
        int8_given = search is not None and not search.chosen.steps and given_kept(records, ctx)
        if (search is not None and not search.chosen.steps) and (
            int8_given or written_as_given(records, ctx, model) is not None
        ):  # a search kept SCRFD whole: 43 s of runs to find its own outputs exact (-s 0 is still run)
            # the INT8 model given is written, not the requantized copy a later quantize pass made
            kept = None if int8_given else self._target_kept(model, ctx)
            return PassResult(False, {"skipped": AS_GIVEN, **({} if kept is None else {"target_kept": kept})})
        # the model as given, also where a dequantize pass gave the search its float copy to measure
        # against: "-s 0 (exact)" read so beside a YAMNet whose logits dequantizing had moved by 5.3
        given = ctx.data.get("dequantized_from", ctx.original)
        reference = as_loaded(to_model_proto(given), given).SerializeToString()
        candidate = to_model_proto(model).SerializeToString()
        # after a data-free search, the samples it measured on: 2 random ones said r2 0.78 beside the
        # search's 0.98 on 16 (an EEG detector's segmentation logits)
        proxy = ctx.data.get("search_proxy") if ctx.inputs is None else None
        inputs = ctx.inputs if proxy is None else proxy
        # the samples a quantize pass was given as calibration=FILE, where no --inputs were: real
        # inputs (CREPE quantized on 32 frames was validated on 2 random ones, and got a note)
        calibrated = ctx.data.get("calibration_samples") if inputs is None else None
        if calibrated is not None:
            log.info("validate: on the quantize pass's calibration samples")
            inputs = calibrated
        if (
            search is not None and not search.chosen.steps and only_looked(records)
        ):  # kept whole, written simplified (exact rewrites): a smoke test within a measurement's MACs
            inputs = _leading(given, inputs)  # YOLOv8s-seg in FP16 ran 32 random images for 281 s
        compare = partial(  # the inputs, their sizes and the metric every comparison here shares
            validate,
            inputs=inputs,
            shapes=ctx.input_shapes or None,
            seed=self.opts["seed"],
            batch=getattr(self, "batch", self.opts["batch"]),
            dim=getattr(self, "dim", 16),
            id_draws=token_draws(ctx.original),
            given=ctx.inputs is not None or calibrated is not None,
            metric=self.opts["metric"],
        )
        report = compare(
            reference,
            candidate,
            # exact widths a search chose over the default rounding can run slower (search.exact_widths)
            speed_budget=DEFAULT_BUDGET_S
            if self.opts["speed_check"] or getattr(ctx.data.get("search"), "unrounded", "")
            else 0.0,
            metrics=getattr(ctx.data.get("search"), "metrics", None),  # what a search measured
        )
        if given is not ctx.original:  # after a dequantize pass: what dequantizing and the fold each moved
            floated = as_loaded(to_model_proto(ctx.original), ctx.original).SerializeToString()
            metrics = {o.name: o.fidelity_metric for o in report.outputs if o.fidelity_metric}
            for attr, pair in (
                ("dequantized_alone", (reference, floated)),
                ("folded_alone", (floated, candidate)),
            ):
                alone = compare(*pair, metrics=metrics)
                figures = [
                    (o.name, o.fidelity_metric, o.fidelity) for o in alone.outputs if o.fidelity is not None
                ]
                setattr(report, attr, figures)
        if calibrated is not None:
            n = (
                next(iter(calibrated.values())).shape[0]
                if isinstance(calibrated, dict) and calibrated
                else None
            )
            report.source = "the quantize pass's calibration samples" + (f", {n} of them" if n else "")
        ctx.data["validation"] = report
        worst = report.min_cosine
        if worst is not None and worst < self.opts["min_cosine"]:
            raise PassError(
                f"validate: output {report.worst().name!r}: cosine similarity {worst:.6f} is below "
                f"min_cosine={self.opts['min_cosine']}"
            )
        low = [o for o in report.outputs if o.fidelity is not None and o.fidelity < self.opts["fail_below"]]
        if low:
            o = min(low, key=lambda o: o.fidelity)
            raise PassError(
                f"validate: output {o.name!r} keeps {o.fidelity_metric} {o.fidelity:.4f}, below "
                f"fail_below={self.opts['fail_below']:g}; nothing written"
            )
        target = self._target_kept(model, ctx)
        stats = {"exact": report.exact, "min_cosine": worst, "provider": report.provider}
        folded_to = recorded(ctx.original) if ctx.original is not None else None
        changed_by = ctx.data.get("last_modified_by")
        if folded_to and changed_by and changed_by not in KEEPS_TARGET:
            stats["chained"] = chained_note(folded_to, report.outputs, changed_by)  # trial 203's quantize
        if target is not None:
            stats["target_kept"] = target
        if report.latency is not None:
            stats["latency_ratio"] = report.latency.ratio
            stats["slower"] = report.latency.slower
        if getattr(self, "dim", 16) != 16 and getattr(self, "dim_taken", True):
            stats["note"] = f"symbolic input dims set to {self.dim}: {self._why_dim()}"
        if getattr(self, "batch", self.opts["batch"]) != self.opts["batch"]:
            stats["note"] = (
                f"compared on a batch of {self.batch} random samples: the model fails on a batch of "
                f"{self.opts['batch']} (a fixed batch, rows it reads together, or inputs whose sizes must agree, "
                "as a graph network's nodes and edges)"
            )
        return PassResult(False, stats)

    @staticmethod
    def _target_kept(model: Model, ctx: PassContext) -> float | None:
        """After a ``min_fidelity`` search on given samples that met its target, the fidelity the
        model now keeps on them under the search's metrics; a pass after the search (quantize,
        float16) that loses the target fails the pipeline, so nothing below it is written; where no pass
        after the search changed the model, the search's own figure (a second run of a heavy model
        took validation's time for nothing). None when there is no such search."""
        search, remeasure = ctx.data.get("search"), ctx.data.get("search_measure")
        if (
            search is None
            or remeasure is None
            or search.mode != "min_fidelity"
            or not search.met
            or search.proxy
        ):
            return None
        if ctx.data.get("last_modified_by") == "search":  # the model the search measured and kept
            return search.chosen.fidelity
        fidelity, outputs = remeasure(model)  # the search's evaluator: its samples, metrics and threads
        missed = [o for o in outputs if not o.meets(search.target - 1e-6)]  # a GPU's run-to-run noise
        if missed:
            o = missed[0]
            t = search.target
            # a count at or above the target misses it by the rule of succession (ICLabel: 23 of 24
            # labels, "top1 0.9583 ... below --min-fidelity 0.95")
            count = o.samples and o.value >= t and (o.low is None or o.low >= t)
            raise PassError(
                f"validate: the search kept {search.chosen.fidelity:.4f} but the model now keeps "
                f"{o.name} {o.metric} {o.value:.4f} on the given samples"
                + (f" (bootstrap lower value {o.low:.4f})" if o.low is not None else "")
                + (
                    f" ({o.samples - round(o.value * o.samples)} of {o.samples} samples disagree, where "
                    f"{o.allowed_misses(t)} may at {t:g}), which misses"
                    if count
                    else ", below"
                )
                + (
                    f" the search's target {t:g}"
                    if getattr(search, "default", False)
                    else f" --min-fidelity {t:g}"
                )
                + f": {_lost_by(ctx.data.get('last_modified_by'), ctx.data.get('records', []))}"
            )
        return fidelity


def _lost_by(last: str | None, records: list = ()) -> str:
    """Which pass after the search lost its target, and what to do: a fold with ``--dequantize
    --requantize`` read "a pass after the search lost it ... (drop that pass)" of a pass the user had
    not named (trial 122: static INT8 of a YOLO classifier); dynamic mode is suggested only after
    static (trial 187 was sent to the dynamic mode that had just lost it)."""
    if last == "quantize":
        mode = next((r.stats.get("mode") for r in records if r.name == "quantize"), None)
        return (
            "quantizing after the search lost it (--requantize, or a quantize pass); nothing written ("
            + ("--requantize dynamic often keeps more than static, or " if mode != "dynamic" else "")
            + "lower the target, or quantize without the fold's target)"
        )
    named = f"the {last} pass" if last else "a pass"
    return f"{named} after the search lost it; nothing written (drop that pass, or lower the target)"


def _took(session, feed, dim: int) -> bool:
    """Whether a symbolic non-batch dim of some input took ``dim`` in ``feed``: an image's free width
    is sized as images are (a line reader's 256 columns beside a recurrent model's 128 steps)."""
    from onnxfold.runtime.inputs import free_axes, input_specs

    return any(
        i < np.ndim(feed[spec.name]) and np.shape(feed[spec.name])[i] == dim
        for spec in input_specs(session)
        if spec.name in feed
        for i in free_axes(spec)
    )


def _leading(model: Model, inputs: dict | None) -> dict | None:
    """The leading samples of ``inputs`` that one measurement's MAC budget allows, in whole runs of a
    batch the model fixes (all where they cannot be cut or counted); None stays None (validation's
    own random inputs, 2 of them)."""
    from onnxfold.folding.samples import leading_measured, splittable, take

    limit = leading_measured(model, inputs) if inputs and splittable(inputs) else None
    return inputs if limit is None else take(inputs, slice(0, limit))
