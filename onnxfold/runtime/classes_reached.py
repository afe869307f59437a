"""Which classes an output's argmaxes reach on the samples measured, and the class scores whose
values must guard their argmax where the samples (a data-free proxy's random ones) reach few of them:
read by the search's evaluator and by validation alike."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

#: on the data-free proxy, the share of an output's classes under which its argmaxes reach too few to
#: say much: tempocnn's 256 tempo classes, 3 of them on noise, read "top1 1.0000" for a fold that moved
#: 8% of real tracks' tempi (trial 169); a classifier's few classes reached on noise are no news
PROXY_CLASS_SHARE = 0.1


def classes_reached(
    reference: Mapping[str, np.ndarray], metrics: Mapping[str, str], under: float = 1.0
) -> dict[str, tuple[int, int]]:
    """Output → (classes its argmax reaches on the samples ``reference``, classes it has), for the class
    scores [..., C] judged by their argmax (top1, sequence, tags, margin, top1@T) whose samples reach
    under ``under`` of its classes (1: any left out). A fold is judged on the classes the samples show:
    PaddleOCR's English recogniser, fitted on 32 lines that reached 60 of its 97 characters and no '#', measured 1.0000 and read no
    '#' after (the original read all 10 of the judge's)."""
    from onnxfold.runtime.metric_spec import COUNTS_OF_CLASSES, class_threshold, metric_base, metric_parts

    out = {}
    for name, values in reference.items():
        first = metric_parts(metrics.get(name, "r2"))[0]
        values = np.asarray(values)
        if metric_base(first) not in COUNTS_OF_CLASSES or class_threshold(first) is not None:
            continue
        if values.dtype.kind != "f" or values.ndim < 2 or values.shape[-1] < 2:
            continue
        if first == "tags" and values.ndim == 2:  # a decision per value, no argmax (labels.score_agreement)
            continue
        reached = int(np.unique(np.nan_to_num(values, nan=-np.inf).argmax(axis=-1)).size)
        if reached < values.shape[-1] * under:
            out[name] = (reached, int(values.shape[-1]))
    return out


#: a class shown by at most this many given samples is measured by them alone: pyvital's ECG beat
#: classifier, its PVC class shown by 1 of 32 samples, wrote a 40.5% fold whose PVC recall fell from 0.989
#: to 0.956, where 32 samples balanced by class wrote 37.8% with every PVC kept (trial 203)
THIN_SAMPLES = 2


def classes_shown(values: np.ndarray) -> np.ndarray:
    """Per class of the scores ``values`` [N, ..., C], the samples (along the first axis) whose argmax
    reaches it at some position."""
    values = np.nan_to_num(np.asarray(values), nan=-np.inf)
    winners = values.argmax(axis=-1).reshape(values.shape[0], -1)
    hit = np.zeros((values.shape[0], values.shape[-1]), dtype=bool)
    hit[np.arange(values.shape[0])[:, None], winners] = True
    return hit.sum(axis=0)


def class_support(
    reference: Mapping[str, np.ndarray], reached: Mapping[str, tuple[int, int]], metrics: Mapping[str, str]
) -> tuple[dict[str, list[int]], dict[str, dict[int, int]]]:
    """The classes the given samples never show, for the outputs in ``reached`` (:func:`classes_reached`),
    and the classes of class scores [N, C] judged by their argmax that :data:`THIN_SAMPLES` or fewer of
    at least 8 samples show (class → samples): output → missing classes, output → thin classes."""
    missing = {
        name: [int(c) for c in np.flatnonzero(classes_shown(reference[name]) == 0)] for name in reached
    }
    thin = {}
    for name in classes_reached(reference, metrics, under=np.inf):  # every output judged by its argmax
        values = np.asarray(reference[name])
        if values.ndim != 2 or values.shape[0] < 8:  # a sequence's rare characters are no news
            continue
        shown = classes_shown(values)
        few = {int(c): int(shown[c]) for c in np.flatnonzero((shown > 0) & (shown <= THIN_SAMPLES))}
        if few:
            thin[name] = few
    return missing, thin


def proxy_guarded(
    reached: Mapping[str, tuple[int, int]],
    metrics: Mapping[str, str],
    reference: Mapping[str, np.ndarray],
    asked,
) -> list[str]:
    """The outputs [B, C] that auto judges by top1 alone whose proxy argmaxes :func:`classes_reached` reach
    a few of their classes: their values guard them too (``top1+r2``). Decisions the proxy does not
    exercise say nothing of the values: 3DDFA's 62 face parameters, 2 of them argmaxes on noise, read
    top1 1.0000 for a fold that made its landmarks 26% worse (guarded: 33.1%, landmarks within 0.2%).
    ``asked``: the outputs whose metric the user gave."""
    return [
        name
        for name in reached
        if name not in asked and metrics.get(name) == "top1" and np.ndim(reference.get(name)) == 2
    ]
