"""Fidelity of candidate models on fixed inputs: the original runs once, each candidate once."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

import numpy as np
import onnx

from onnxfold.errors import one_line
from onnxfold.folding.samples import (
    NO_BN,
    fixed_batch,
    leading_measured,
    measured_limit,
    sample_count,
    samples_in,
    splittable,
    take,
)
from onnxfold.ir.model import Model
from onnxfold.runtime.anchors import softmax_heads
from onnxfold.runtime.batch_runs import batch_runs, joined_runs
from onnxfold.runtime.classes_reached import (
    PROXY_CLASS_SHARE,
    class_support,
    classes_reached,
    proxy_guarded,
)
from onnxfold.runtime.compare import run_feed
from onnxfold.runtime.exercised import bounded_by, holes_note, judged_one_way, unexercised
from onnxfold.runtime.fidelity import (
    OutputFidelity,
    metric_parts,
    model_fidelity,
    output_metrics,
)
from onnxfold.runtime.input_scales import vocabularies
from onnxfold.runtime.metric_spec import LEFT_OUT, STATE_METRICS, given_metric_notes, parse_metric
from onnxfold.runtime.padding import padded_tags, padding_mask
from onnxfold.runtime.producers import as_scores, free_last_axes, producers_of, quantized_outputs
from onnxfold.runtime.sequences import sample_axis
from onnxfold.runtime.session import measurement_session
from onnxfold.search.label_scores import SCORES_METRIC, exposed, saturated, scores_behind, softmax_logits
from onnxfold.search.proxy_shapes import proxy_shapes

log = logging.getLogger(__name__)


def _session(model: Model | onnx.ModelProto):
    return measurement_session(model, providers=["CPUExecutionProvider"])


def _id_draws(model: Model | onnx.ModelProto) -> dict[str, object]:
    from onnxfold.api import as_model
    from onnxfold.folding.samples import token_draws

    return token_draws(model if isinstance(model, Model) else as_model(model))


def moved(reference: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray], names) -> float:
    """The largest relative change ‖got − ref‖ / ‖ref‖ over the float outputs ``names`` (inf where
    a shape changed or an output went from all zeros to anything else; 0 with no float output)."""
    most = 0.0
    for name in names:
        ref, out = np.asarray(reference[name]), np.asarray(got.get(name))
        if ref.dtype.kind != "f":
            continue
        if out.shape != ref.shape:
            return float("inf")
        ref64, out64 = ref.astype(np.float64), out.astype(np.float64)
        held = np.isfinite(ref64) & np.isfinite(out64)
        change, size = float(np.linalg.norm((out64 - ref64)[held])), float(np.linalg.norm(ref64[held]))
        most = max(most, change / size if size else (float("inf") if change else 0.0))
    return most


def take_samples(x: np.ndarray, index: np.ndarray, samples: int) -> np.ndarray | None:
    """The samples ``index`` of an output over ``samples`` samples, in the output's own layout
    (:func:`~onnxfold.runtime.sequences.sample_axis`); None when no axis holds them."""
    x = np.asarray(x)
    where = sample_axis(x.shape, samples)
    if where == "leading":
        return x[index]
    if where == "second":
        return x[:, index]
    if where == "blocks":
        blocks = x.reshape(samples, x.shape[0] // samples, *x.shape[1:])
        return blocks[index].reshape(-1, *x.shape[1:])
    return None


def _random_runs(
    original: Model | onnx.ModelProto,
    shapes: Mapping[str, Sequence[int]] | None,
    seed: int,
    samples: int | None = None,
) -> tuple[dict, list[dict]]:
    """The data-free proxy's samples: as many random samples as ``auto`` draws
    (:data:`~onnxfold.folding.samples.SYNTHETIC_SAMPLES`, fewer on a heavy model: the MAC budget), as
    one feed, or as a first run and the others when they cannot be joined (a recurrent state shaped
    [layers, batch, ...]). A model exported at batch 1 used to be measured on one random sample, so
    that a classifier's fidelity was 0 or 1 by the luck of one argmax. ``samples``: input rows to draw
    (a model that reads several rows per output row needs more), none cut by the MAC budget."""
    from onnxfold.api import as_model
    from onnxfold.folding.samples import SYNTHETIC_SAMPLES, merged_feeds, synthetic_feeds

    model = original if isinstance(original, Model) else as_model(original)
    runs = synthetic_feeds(model, dict(shapes) if shapes else None, samples or SYNTHETIC_SAMPLES, seed=seed)
    joined = merged_feeds(runs)
    if samples is not None and joined is not None:
        return joined, []
    if joined is None:
        limit = measured_limit(original, runs[0]) if runs else None
        per_run = sample_count(runs[0]) if runs else 1
        keep = max(1, -(-limit // per_run)) if limit else len(runs)
        return runs[0], runs[1:keep]
    limit = leading_measured(original, joined)
    return (joined if limit is None else take(joined, slice(0, limit))), []


#: Most input rows per output row for which the data-free proxy draws more rows (ICLabel reads 4).
MAX_ROWS_PER_OUTPUT = 16


def _rows_per_output_row(outputs: Mapping[str, np.ndarray], samples: int | None) -> int:
    """How many input rows each output row reads: n / m when every output holds m < n rows on its
    leading axis for ``samples`` = n input rows, m divides n, and no output has an axis of n (a
    time-major [T, n, C] output holds the samples on its second); else 1."""
    shapes = [np.shape(v) for v in outputs.values() if np.ndim(v)]
    rows = {int(s[0]) for s in shapes}
    if not samples or len(rows) != 1 or any(samples in s for s in shapes):
        return 1
    (m,) = rows
    return samples // m if 0 < m < samples and samples % m == 0 else 1


class Evaluator:
    """Runs ``original`` on ``inputs`` once (when None, the random samples of :func:`_random_runs`:
    then ``proxy`` is True) and scores candidates by :func:`onnxfold.runtime.fidelity.model_fidelity`.
    ``synthetic``: ``inputs`` were synthesised (e.g. DeepInversion samples), not given; it says how,
    and the fidelity is still a data-free proxy; ``redrawable``: they are random draws (inputs or
    tokens) that may be drawn again in more rows, not fitted to the model (DeepInversion). ``unseen``: indices of the samples that nothing
    was fitted or judged on (the search's held-out half); each candidate is also scored on them
    alone (:attr:`last_unseen`), since the samples a merge was fitted on flatter it."""

    def __init__(
        self,
        original: Model | onnx.ModelProto,
        inputs: Mapping[str, np.ndarray] | None = None,
        metric: str = "auto",
        shapes: Mapping[str, Sequence[int]] | None = None,
        seed: int = 0,
        synthetic: str = "",
        unseen: np.ndarray | None = None,
        redrawable: bool = True,
        scores: Mapping[str, str] | None = None,
    ):
        began = time.perf_counter()
        self.original = original
        id_draws = _id_draws(original)
        self.proxy = inputs is None or bool(synthetic)
        # label output -> the scores behind it, judged too where the proxy leaves the labels one class
        # (:mod:`onnxfold.search.label_scores`; ``scores`` given: exactly these)
        wanted = (scores_behind(original) if self.proxy else {}) if scores is None else dict(scores)
        #: a Softmax output -> its logits, judged too where its probabilities saturate (label_scores.saturated)
        self.logits = softmax_logits(original) if scores is None else {}
        wanted.update(self.logits)
        sess = _session(exposed(original, wanted.values()) if wanted else original)
        self.synthetic = synthetic
        self.unsynthesised = ""  #: why the proxy is random, not DeepInversion's (set by the search)
        self.shapes = dict(shapes or {})
        self.extra_runs: list[dict] = []  # random runs that cannot be joined into self.feed
        if inputs is None:
            self.feed, self.extra_runs = _random_runs(original, shapes, seed)
        else:
            self.feed = dict(inputs)
        self.names = [o.name for o in sess.get_outputs()]
        self.samples = samples_in(self.feed)
        self._batch = fixed_batch(original)
        #: samples per onnxruntime run of a heavy model on a free batch (None: the feed whole), and
        #: why the feed's rows cannot be run apart ('' when they can; :mod:`onnxfold.runtime.coupled`):
        #: then it runs whole, and its outputs' rows are the samples counted; given samples are cut
        #: into held-out halves, so their rows are tested even where no MAC limit cuts them
        self._most, self.coupled = None, ""
        if not self._batch:
            from onnxfold.runtime.coupled import feed_runs

            self._most, self.coupled = feed_runs(original, sess, self.names, self.feed, cut=not self.proxy)
            if self.coupled:
                self.samples = None
        self.chains: list[list[int]] = []  # streams of consecutive samples, rolled out (none yet: _run)
        batched = self._run(sess)
        #: seconds of a session of the original and its run on every sample: what validation pays
        #: twice after a search (:mod:`onnxfold.search.time_limit`)
        self.whole_seconds = time.perf_counter() - began
        fewer = _rows_per_output_row(batched, self.samples) if self.proxy and not self.extra_runs else 1
        if fewer > 1:  # ICLabel: 4 rows per component; 32 random rows measured 8 components
            from onnxfold.folding.samples import SYNTHETIC_SAMPLES

            self.coupled = f"every output row reads {fewer} input rows"
            self._most, self.samples = None, None
            rows = SYNTHETIC_SAMPLES * fewer
            limit = measured_limit(original, self.feed)  # the MAC budget of a measurement, run whole
            if (
                (redrawable or not synthetic)
                and fewer <= MAX_ROWS_PER_OUTPUT
                and (not limit or limit >= rows)
            ):
                # random inputs or tokens: as many more, drawn alike
                self.feed, _ = _random_runs(original, shapes, seed, rows)
                self.synthetic = ""
                batched = self._run(sess)
        self.recurrent, self.chains, self._axes = self._streams(batched)
        self.reference = self._run(sess) if self.chains else batched
        self._quantized = quantized_outputs(original, self.names)  # uint8 scores: numbers, not labels
        self.reference = as_scores(self.reference, self._quantized)
        producers = producers_of(original)
        bounds = bounded_by(original)
        vocab = vocabularies(id_draws)
        states = frozenset(o for _, o in self.recurrent)
        # the outputs, as both the metric given and auto read them
        args = (
            producers,
            bool(vocab),
            self.samples,
            not self.proxy,
            bounds,
            vocab,
            states,
            free_last_axes(original),
        )
        self.metrics = output_metrics(self.reference, metric, *args)
        given, named = parse_metric(metric)
        if not self.proxy and not self.extra_runs and given == "auto":  # a tagger fed a padding mask
            self.metrics.update(padded_tags(self.reference, self.metrics, padding_mask(self.feed), named))
        if given != "auto" or set(named.values()) - {"auto", LEFT_OUT}:  # a metric given: fit for the task?
            automatic = output_metrics(self.reference, "auto", *args)
            for note in given_metric_notes(self.metrics, automatic):
                log.warning("%s", note)
        #: recurrent states that a decision metric given for every output leaves to auto
        self.states_left = [] if given in STATE_METRICS else sorted(states & set(self.metrics) - set(named))
        if not self.metrics:
            raise ValueError(f"--metric {metric!r} leaves every output out: keep at least one")
        #: output -> how the data-free proxy leaves its decisions unexercised (:func:`unexercised`); on
        #: given samples, which are the user's own, only an output judged by its decisions alone whose
        #: samples all decide one way (malvizv1's malware classifier, 32 benign files judged by top1:
        #: a fold answering "Benign" to everything measured 1.0000 at 90% fewer parameters)
        drawn = self.feed if self.proxy else None  # random inputs: NaN gets a hint at --input-value
        for name in self.metrics:
            if note := holes_note(name, self.reference.get(name), self.samples, drawn):
                log.warning("%s", note)
        from onnxfold.runtime.producers import shape_only_outputs

        fixed = shape_only_outputs(original)  # a frame count: no fold moves it, no sample exercises it
        ref, n, ids = self.reference, self.samples, bool(vocab)
        anchor_scores = {} if self.proxy else softmax_heads(ref, n)  # an SSD's, read once
        self.unexercised = {
            name: why
            for name, values in ref.items()
            if name in self.metrics
            and name not in fixed
            and (
                why := unexercised(name, values, producers.get(name), ids, n, bounds.get(name))
                if self.proxy
                else judged_one_way(
                    name, self.metrics[name], values, producers.get(name), ids, n, anchor_scores
                )
            )
        }
        #: output -> (classes the given samples' argmaxes reach, classes it has), where some are left out
        # (on the proxy, where they reach under PROXY_CLASS_SHARE: tempocnn's 256 tempi, 3 on noise)
        self.classes_reached = classes_reached(
            self.reference, self.metrics, PROXY_CLASS_SHARE if self.proxy else 1.0
        )
        #: the classes the given samples leave out (output -> classes), and those one or two show
        self.classes_missing, self.classes_thin = (
            ({}, {}) if self.proxy else class_support(self.reference, self.classes_reached, self.metrics)
        )
        if self.proxy:  # argmaxes that reach a few classes on noise: their values guard them
            asked = {n for n, m in named.items() if m != "auto"} if given == "auto" else set(self.metrics)
            for name in proxy_guarded(self.classes_reached, self.metrics, self.reference, asked):
                self.metrics[name] = "top1+r2"
        self.scores = self._judged_scores(wanted, scores is not None)
        self.suffix = None  # a candidate runs from the nodes it changes on (not along streams)
        if not self.chains and not self.extra_runs:
            from onnxfold.runtime.suffix import suffix_runs

            runs = batch_runs(self.feed, self._batch, self._most)  # as run_feed runs them
            self.suffix = suffix_runs(original, runs, self.names, ["CPUExecutionProvider"])
        self.unseen = None if unseen is None or self.samples is None else np.asarray(unseen, dtype=np.int64)
        #: the given samples' attention mask: padded positions are not measured (:mod:`onnxfold.runtime.padding`;
        #: random masks are all ones, or a random prefix under either convention)
        self.mask = None if self.proxy or self.extra_runs else padding_mask(self.feed)
        self.last_unseen: list[OutputFidelity] = []
        self.runs = 0
        #: how far the last candidate moved the outputs at all (:func:`moved`): the blind test's
        #: second look, since a fidelity can stay within 1e-4 of 1 while the outputs do move
        self.last_moved = 0.0
        #: why the first candidate that failed to run failed (onnxruntime's message), else None
        self.failure: str | None = None

    def __call__(
        self, candidate: Model | onnx.ModelProto, bounds: bool = True
    ) -> tuple[float, list[OutputFidelity]]:
        """(fidelity, per-output fidelities) of ``candidate``; a candidate that fails to run scores 0.
        ``bounds``: also the bootstrap lower values that decide whether a candidate meets a target
        (:func:`~onnxfold.runtime.fidelity.model_fidelity`; a sensitivity curve needs only values)."""
        self.runs += 1
        self.last_unseen, self.last_moved = [], float("inf")
        try:
            if self.scores:
                candidate = exposed(candidate, self.scores.values())
            if self.suffix is not None and isinstance(candidate, Model):
                from onnxfold.ir.model import to_model_proto

                candidate = to_model_proto(candidate)  # once, for the suffix and a whole run alike
            got = self._suffix_run(candidate)
            got = as_scores(got if got is not None else self._run(_session(candidate)), self._quantized)
        except Exception as exc:
            self.failure = self.failure or one_line(exc, 300)
            failed = [OutputFidelity(n, m, 0.0) for n in self.metrics for m in metric_parts(self.metrics[n])]
            self.last_unseen = failed if self.unseen is not None else []
            return 0.0, failed
        if self.unseen is not None:
            self.last_unseen = self._on_unseen(got)
        self.last_moved = moved(self.reference, got, self.metrics)
        return model_fidelity(self.reference, got, self.metrics, self.samples, bounds, self.mask)

    def _judged_scores(self, wanted: Mapping[str, str], given: bool) -> dict[str, str]:
        """Of the scores behind label outputs that the reference was run with (``wanted``), those
        judged by :data:`SCORES_METRIC` (all where ``given``, else those whose labels the proxy left
        unexercised); the rest are dropped from the names, reference and metrics."""
        judged = {
            lab: sc
            for lab, sc in wanted.items()
            if lab in self.metrics
            and (
                saturated(self.reference[lab], self.reference.get(sc))
                if lab in self.logits
                else given or lab in self.unexercised
            )
            and not (self.chains or self.extra_runs)
        }
        #: the Softmax outputs whose logits are judged, for :meth:`describe`
        self.saturated = [lab for lab in judged if lab in self.logits]
        for sc in set(wanted.values()) - set(judged.values()):
            self.names = [n for n in self.names if n != sc]
            for table in (self.reference, self.metrics, self.unexercised):
                table.pop(sc, None)
        for lab, sc in judged.items():
            self.metrics[sc] = SCORES_METRIC
            self.unexercised.pop(sc, None)
            if lab in self.unexercised:
                self.unexercised[lab] += f" (the scores it is decided from, {sc}, are judged by r2 too)"
        return judged

    def _suffix_run(self, candidate: Model | onnx.ModelProto) -> dict[str, np.ndarray] | None:
        """The candidate's outputs from the part it changes (:mod:`onnxfold.runtime.suffix`), or None."""
        if self.suffix is None or not isinstance(candidate, onnx.ModelProto):
            return None
        out = self.suffix.outputs(candidate)
        joined = None if out is None else joined_runs(out, self._batch or self._most)
        return None if joined is None else dict(zip(self.names, joined, strict=True))

    def _on_unseen(self, got: Mapping[str, np.ndarray]) -> list[OutputFidelity]:
        """Per-output fidelity on the :attr:`unseen` samples alone (outputs whose sample axis is not
        found are left out)."""
        assert self.unseen is not None and self.samples is not None
        ref, cand = {}, {}
        for name in self.names:
            picked = [take_samples(x, self.unseen, self.samples) for x in (self.reference[name], got[name])]
            if picked[0] is not None and picked[1] is not None:
                ref[name], cand[name] = picked
        metrics = {n: self.metrics[n] for n in ref if n in self.metrics}
        mask = None if self.mask is None else self.mask[self.unseen]
        # r2 judged against each output's spread over every sample: a held-out half of one class
        # nearly lacks one (ocrspine's orientation classifier: r2 0.84 there, every label kept)
        spread = {n: self.reference[n] for n in ref}  # r2 takes it where the shapes allow
        n = len(self.unseen)  # values alone, which gate it (a bootstrap here took 41% of RetinaFace's search)
        return model_fidelity(ref, cand, metrics, n, bounds=False, mask=mask, spread=spread)[1] if ref else []

    def _streams(
        self, batched: Mapping[str, np.ndarray]
    ) -> tuple[list[tuple[str, str]], list[list[int]], dict[str, int]]:
        """(the state pairs of a model that feeds a state back, the chains of consecutive samples to
        roll out, each output's sample axis to join a rollout's steps on: :mod:`onnxfold.search.stream`)
        from ``batched``, the outputs of one run on the feed; no chains when no two given samples are
        consecutive steps, or the model takes more than one sample per run."""
        from onnxfold.api import as_model
        from onnxfold.search.stream import output_axes, recurrent_state, stream_chains

        model = self.original if isinstance(self.original, Model) else as_model(self.original)
        pairs = recurrent_state(model)
        if not pairs or self.extra_runs or not self.samples or (fixed_batch(model) or 1) != 1:
            return pairs, [], {}
        chains = stream_chains(self.feed, batched, pairs)
        streams = chains if any(len(c) > 1 for c in chains) else []
        return pairs, streams, output_axes(batched, self.samples)

    def _run(self, sess) -> dict[str, np.ndarray]:
        """Every output on the whole feed (batch by batch for a model exported at a fixed batch; along
        the streams of :attr:`chains`, the model's own state carried), and on the :attr:`extra_runs`
        (joined along the leading axis)."""
        if self.chains:
            from onnxfold.search.stream import rollout

            return rollout(sess, self.names, self.feed, self.recurrent, self.chains, self._axes)
        runs = [run_feed(sess, "original", self.names, f, self._most) for f in [self.feed, *self.extra_runs]]
        if any(
            np.shape(r[i])[1:] != np.shape(runs[0][i])[1:] for r in runs[1:] for i in range(len(self.names))
        ):
            # outputs whose length follows the inputs (a TTS voice's audio, trial 197): not joinable
            if getattr(self, "reference", None) is not None:
                raise ValueError(
                    "the candidate's outputs on the random runs differ in length from run to run"
                )
            log.warning(
                "the random runs' outputs differ in length from run to run (their length follows the "
                "inputs): the proxy measures the first run alone; --inputs measures your samples"
            )
            self.extra_runs, runs = [], runs[:1]
        return {
            n: np.concatenate([r[i] for r in runs]) if len(runs) > 1 else runs[0][i]
            for i, n in enumerate(self.names)
        }

    def within(self, budget: int | None = None) -> Evaluator:
        """This evaluator, or one on the leading samples whose measurement fits ``budget`` MACs (default
        ``MEASURE_MACS``; at least ``MIN_MEASURED``, whole runs of a fixed batch), the same metric per output:
        a heavy model's sensitivity (ukis-csmask's 32 random tiles measured 56 of 400 group levels)."""
        if self.coupled or self.extra_runs or self.chains or not splittable(self.feed):
            return self
        limit = leading_measured(self.original, self.feed, budget)
        if limit is None:
            return self
        synthetic = self.synthetic or ("random samples" if self.proxy else "")
        sub = Evaluator(
            self.original,
            take(self.feed, slice(0, limit)),
            synthetic=synthetic,
            redrawable=False,
            scores=self.scores,
        )
        sub.metrics = dict(self.metrics)
        return sub

    def kind(self) -> str:
        """The inputs in a few words, where :meth:`describe` lists every input's shape (caustic-nmr's 19)."""
        if self.synthetic:
            return f"the data-free proxy's {self.synthetic}"
        return "the data-free proxy's random inputs" if self.proxy else "the given samples"

    def describe(self) -> str:
        """e.g. ``32 given samples`` or ``data-free proxy: 32 random samples``."""
        n = sum(sample_count(f) for f in [self.feed, *self.extra_runs])
        shapes = proxy_shapes(self.original, self.feed, self.shapes)
        shapes = f", {shapes}" if shapes else ""
        # a fused-BN MobileNetV2's read "32 random samples", where the docs promise DeepInversion's (trial
        # 181); a model without BN is not called "a BN model's" (trial 188)
        why = f" ({NO_BN})" if self.unsynthesised == NO_BN else ""
        if self.synthetic:
            text = f"data-free proxy: {self.synthetic}{shapes}{why}"
        elif self.proxy:  # a BN CRNN's read "13 random samples" without a word on why (trial 177)
            if self.unsynthesised and not why:
                why = f" (a BN model's, not DeepInversion's: {self.unsynthesised})"
            text = f"data-free proxy: {n} random samples{shapes}{why}"
        else:
            text = f"{n} given samples"
        for name in getattr(self, "saturated", []):  # MEGnet's 0s and 1s measured top1 1.0000 (trial 204)
            text += (
                f"; {name}'s probabilities saturate (exact 0s), so its logits {self.scores[name]} are "
                "judged by r2 too"
            )
        if self.coupled:
            text += f", run whole: the model's batch rows are not independent samples ({self.coupled})"
        streams = [c for c in self.chains if len(c) > 1]
        if streams:
            text += (
                f", {sum(map(len, streams))} of them rolled out as {len(streams)} stream"
                f"{'s' if len(streams) > 1 else ''} on the model's own state"
            )
        return text
