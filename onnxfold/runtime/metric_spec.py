"""What ``--metric`` says: the metric names, how a spec (``top1``, ``auto,feature=none``) reads, and
how a combined metric splits (:mod:`onnxfold.runtime.fidelity` defines each metric)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from onnxfold.runtime.labels import is_labels

METRICS = tuple(
    "auto top1 sequence margin tags binary mask boxes expect peak cosine relerr r2 distance top1+r2 sequence+margin binary+r2 mask+r2 expect+peak".split()
)
#: auto's metric for class scores [B, C]: the decisions, and the scores that make them (:func:`metric_parts`)
GUARDED_TOP1 = "top1+r2"
#: auto's metric for a recogniser's lines on the user's samples: the lines, and their margins
GUARDED_SEQUENCE = "sequence+margin"
#: metrics that count argmaxes over a class axis beside the samples
COUNTS_OF_CLASSES = ("top1", "sequence", "margin", "tags", GUARDED_SEQUENCE)


#: the metrics that read a recurrent state as it is: values, not decisions
STATE_METRICS = ("auto", "cosine", "relerr", "r2")


#: a per-output metric that leaves the output out of the fidelity (an auxiliary output)
LEFT_OUT = "none"


def check_metric_outputs(named: Mapping[str, str], outputs: Sequence[str]) -> None:
    """ValueError when ``--metric`` names an output (``OUTPUT=METRIC``) that is not in ``outputs``."""
    unknown = sorted(set(named) - set(outputs))
    if unknown:
        raise ValueError(
            f"--metric names output{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}, which the "
            f"model does not have (its outputs: {', '.join(outputs)})"
        )


def parse_metric(spec: str) -> tuple[str, dict[str, str]]:
    """``--metric``'s value as (the metric of outputs not named, {output: metric}): one metric
    (``r2``), or a comma list of one and ``OUTPUT=METRIC`` items (``auto,feature=none``), where
    ``none`` leaves that output out of the fidelity. CRAFT writes its score maps ``y`` and, for a
    refiner it may feed, ``feature``: the fidelity, the minimum over outputs, was ``feature``'s, and a
    fold keeping box F1 0.924 was warned about as a lost task for it. ValueError on a bad spec."""
    default, per = "auto", {}
    for item in (part.strip() for part in str(spec).split(",")):
        name, eq, metric = item.rpartition("=") if "=" in item else ("", "", item)
        allowed = (*METRICS, LEFT_OUT) if eq else METRICS
        if (metric not in allowed and not combined(metric)) or (eq and not name):
            raise ValueError(
                f"metric {spec!r}: {item!r} is not one of {', '.join(METRICS)} (or top1@T, classK@T or "
                "binary@T, T in (0, 1), or several joined by +), nor OUTPUT=METRIC "
                f"(METRIC one of those or {LEFT_OUT}, which leaves the output out)"
            )
        if eq:
            per[name] = metric
        else:
            default = metric
    return default, per


def combined(metric: str) -> bool:
    """Whether ``metric`` is one or more measuring metrics (not auto) or thresholded decisions
    (``top1@T``, ``classK@T``, ``binary@T``) joined by ``+``, whose minimum it takes: an ECG quality
    score that its package cuts at 0.1 and 0.625 is ``binary@0.1+binary@0.625``."""
    return all(
        (part in METRICS and part != "auto" and "+" not in part)
        or thresholded(part) is not None
        or class_threshold(part) is not None
        or binary_threshold(part) is not None
        for part in metric.split("+")
    )


def metric_parts(metric: str) -> tuple[str, ...]:
    """The metrics a combined one (``top1+r2``) takes the minimum of; a plain metric alone. A search
    keeps the furthest candidate whose top-1 count still passes: with 32 unlabeled digits, 32 of 32
    agreed at 73.9% fewer parameters where 82.6% of the test images did; the scores' r2 sees the
    decisions drift before they flip (39.1%, 99.4%)."""
    return tuple(metric.split("+"))


def counted(metric: str, ref: np.ndarray, samples: int | None = None) -> int | None:
    """How many independent samples ``metric`` counts on this output: the samples for sequence and for
    top1 on class scores [B, C]; None for the others (top1 over sequence positions counts steps,
    which are not independent). A combined metric counts as its first part."""
    metric = metric_base(metric_parts(metric)[0])
    if is_labels(ref) and metric == "top1":  # one label per sample counts samples; per position, not
        return int(np.shape(ref)[0]) if np.ndim(ref) == 1 else None
    if metric == "binary":
        return int(samples or np.shape(ref)[0]) if np.size(ref) == (samples or np.shape(ref)[0]) else None
    if metric in ("sequence", "margin", "tags"):
        return int(samples or np.shape(ref)[0]) if np.ndim(ref) >= 2 else None
    if metric == "top1" and np.ndim(ref) == 2:
        return int(np.shape(ref)[0])
    return None


def given_metric_notes(chosen: Mapping[str, str], automatic: Mapping[str, str]) -> list[str]:
    """A note for each output where a given ``sequence`` or ``top1`` reads a task that ``auto`` reads
    otherwise: ``sequence`` on scores that are no CTC recogniser's lines (it collapses repeats and
    blanks that an attention decoder or a tagger does not write), ``top1`` on a tagger's labels (it
    counts positions one by one where the task reads a sample's labels together). Both ran without a
    word on an ALBERT word tagger."""
    notes = []
    for name, metric in chosen.items():
        auto = metric_parts(automatic.get(name, metric))[0]
        if metric == "sequence" and auto != "sequence":
            why = "its scores do not look like a CTC recogniser's (a blank class between characters)"
        elif metric == "top1" and auto == "tags":
            why = "a tagger's task reads a sample's labels together; top1 counts positions one by one"
        else:
            continue
        notes.append(
            f"--metric {metric} on {name}: measured as asked; auto would read it as {automatic[name]} ({why})"
        )
    return notes


def _at(metric: str) -> tuple[str, float] | None:
    """(HEAD, T) of ``HEAD@T`` with T a number in (0, 1); None otherwise."""
    head, at, value = str(metric).partition("@")
    if not at:
        return None
    try:
        t = float(value)
    except ValueError:
        return None
    return (head, t) if 0.0 < t < 1.0 else None


def thresholded(metric: str) -> float | None:
    """T of ``top1@T`` (a decision taken only where the top class's score reaches T, T in (0, 1)),
    else None. A text-orientation classifier whose package turns a line only where P(180) > 0.9
    agreed on 97.3% of argmaxes and changed 8.25% of those decisions (:func:`decisions`)."""
    parsed = _at(metric)
    return parsed[1] if parsed is not None and parsed[0] == "top1" else None


def class_threshold(metric: str) -> tuple[int, float] | None:
    """(K, T) of ``classK@T``, a decision per sample (or position) whether class K's score reaches T,
    else None. An FSMN voice-activity detector's package reads its silence state's probability, one
    of 248, against a threshold: top1 over the 248 refused a fold that kept 99.1% of its speech frames."""
    parsed = _at(metric)
    if parsed is None or not parsed[0].startswith("class") or not parsed[0][5:].isdigit():
        return None
    return int(parsed[0][5:]), parsed[1]


def binary_threshold(metric: str) -> float | None:
    """T of ``binary@T``: each value's decision whether it is above T (T in (0, 1)), where
    ``binary`` reads a probability at 0.5; else None. A package that cuts an ECG quality score at 0.1
    and 0.625 kept 93.8% of its 3-class decisions where ``binary`` counted 32 of 32 at 0.5."""
    parsed = _at(metric)
    return parsed[1] if parsed is not None and parsed[0] == "binary" else None


def metric_base(metric: str) -> str:
    """The metric a parametrised one is of (``top1`` for ``top1@T`` and ``classK@T``, ``binary`` for
    ``binary@T``); any other as it is."""
    if binary_threshold(metric) is not None:
        return "binary"
    return "top1" if thresholded(metric) is not None or class_threshold(metric) is not None else metric


def decided(metric: str, ref: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """(ref, cand, metric) as ``metric`` compares them: ``top1@T``'s :func:`decisions`, read by top1;
    any other metric's outputs as they are."""
    t = thresholded(metric)
    if t is not None:
        return decisions(ref, t), decisions(cand, t), "top1"
    one = class_threshold(metric)
    if one is not None:
        return class_decisions(ref, *one), class_decisions(cand, *one), "top1"
    cut = binary_threshold(metric)
    if cut is not None:  # 0/1 decisions, which binary reads at 0.5
        above = [
            (np.nan_to_num(np.asarray(x, np.float64), nan=-np.inf) > cut).astype(np.int64)
            for x in (ref, cand)
        ]
        return above[0], above[1], "binary"
    return ref, cand, metric


def class_decisions(scores: np.ndarray, k: int, t: float) -> np.ndarray:
    """1 where class ``k``'s score reaches ``t``, else 0, per sample (or position): class scores
    [..., C] as labels ``top1`` compares."""
    scores = np.asarray(scores)
    if scores.ndim < 2 or scores.dtype.kind != "f" or scores.shape[-1] <= k:
        raise ValueError(
            f"class{k}@{t:g} reads class {k}'s score of class scores [N, C]; a {list(scores.shape)} "
            f"{scores.dtype} output has none"
        )
    return (np.nan_to_num(scores[..., k], nan=-np.inf) >= t).astype(np.int64)


def decisions(scores: np.ndarray, t: float) -> np.ndarray:
    """Each sample's class where its top score reaches ``t``, else -1 (no decision): class scores
    [N, C] (a Softmax's probabilities) as labels ``top1`` compares; labels as they are."""
    scores = np.asarray(scores)
    if scores.dtype.kind in "biu":  # labels already: no score to hold to the threshold
        return scores
    if scores.ndim < 2 or scores.shape[-1] < 2:
        raise ValueError(f"top1@{t:g} reads class scores [N, C]; a {list(scores.shape)} output has none")
    top = np.nan_to_num(scores, nan=-np.inf)
    return np.where(top.max(axis=-1) >= t, top.argmax(axis=-1), -1).astype(np.int64)


def set_by(metric: str | None, value: float, top1: float | None, values: dict | None = None) -> str:
    """`` (its r2 part)`` where a ``top1+r2`` figure ``value`` (the lower part's) is set by the part beside
    the ``top1`` printed with it (russtress read "top1 40.6%  top1+r2 0.0101": which counts?); each
    part's value where another joined figure's parts differ (``values``: khmer-ocr-ocm's recogniser read
    "sequence+margin 0.0000" where 39% of its lines were read alike); '' otherwise."""
    parts = str(metric).split("+")
    if values and "top1" not in parts and len(set(values.values())) > 1:
        return " (" + ", ".join(f"{k} {v:.4f}" for k, v in values.items()) + ")"
    if len(parts) != 2 or "top1" not in parts or top1 is None or value >= top1 - 5e-5:
        return ""
    return f" (its {parts[1 - parts.index('top1')]} part)"
