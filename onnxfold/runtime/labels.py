"""Outputs that hold labels already: integer or boolean values (an ArgMax's class per sample, a
tagger's tag per position), compared by equality, never as quantities.

* ``top1`` on labels = the fraction of values equal in both (one per sample for [N], per position
  for [N, L]);
* ``tags`` on labels = the fraction of samples whose every value is equal.

``auto`` takes ``top1`` for labels, and ``tags`` on the user's samples for a token model's
per-position labels [N, L] (:func:`~onnxfold.runtime.fidelity.output_metrics`). r2 read tag ids as
numbers: unidic-lite-imitator's ALBERT tagger writes the ArgMax of its part-of-speech scores, [1, 256]
int64, and a search to r2 0.95 on 32 sentences kept 21.9% of 128 new sentences whole (0.99: 61.7%);
``tags`` asked before read the sequence axis as classes and reported 32 of 32 where 1 of 32 kept every
label.
"""

from __future__ import annotations

import numpy as np

from onnxfold.runtime.sequences import per_sample_paths


def is_labels(ref: np.ndarray) -> bool:
    """Whether an output holds labels (integer or boolean values) rather than scores or features."""
    return np.asarray(ref).dtype.kind in "biu"


def label_agreement(metric: str, ref: np.ndarray, cand: np.ndarray, samples: int | None = None) -> float:
    """``top1`` or ``tags`` (module docstring) of labels ``cand`` against ``ref`` of the same shape."""
    if metric == "top1":
        return float(np.mean(ref == cand))
    if metric == "tags":
        a, b = per_sample_paths(ref, samples), per_sample_paths(cand, samples)
        return float(np.mean(np.all(a == b, axis=1)))
    raise ValueError(f"{metric} needs scores over classes; an output of labels is compared by top1 or tags")


def score_agreement(metric: str, ref: np.ndarray, cand: np.ndarray, samples: int | None = None) -> float:
    """``top1``, ``tags``, ``sequence`` or ``margin`` of scores ``cand`` against ``ref``: the argmaxes
    over the last axis compared as labels, as CTC paths (``sequence``), or the candidate's deviation
    doubled (``margin``). ``tags`` of an output [N, L] that holds no classes per position reads each
    value as a decision at :func:`~onnxfold.runtime.probability_maps.threshold` (a word boundary per
    character, a bit) and counts the samples whose every decision agrees: a Thai word segmenter's fold
    that kept 0.962 of its characters' boundaries split 7% of new sentences as before."""
    from onnxfold.runtime.probability_maps import threshold
    from onnxfold.runtime.sequences import sequence_agreement

    if ref.ndim == 0 or ref.shape[-1] < 2:
        raise ValueError(f"{metric} needs an output whose last axis holds at least two classes")
    if metric == "tags" and ref.ndim == 2:  # argmaxes there: RivaGAN's 32 bits read 32 of 32 where 10 moved
        t = threshold(ref)
        return label_agreement("tags", ref > t, cand > t, samples)
    if metric != "top1" and ref.ndim == 2:
        raise ValueError(
            f"{metric} reads a sample's classes at each of its positions ([N, L, C] scores); a {list(ref.shape)} "
            "output has one argmax per sample, which is top1, or one decision per value (a boundary per "
            "character, multi-label scores, bits): binary per value, tags per sample whose every one agrees"
        )
    if metric in ("top1", "tags"):  # the argmaxes are labels
        return label_agreement(metric, ref.argmax(axis=-1), cand.argmax(axis=-1), samples)
    if metric == "sequence":
        return sequence_agreement(ref.argmax(axis=-1), cand.argmax(axis=-1), samples)
    doubled = 2 * cand.astype(np.float64) - ref.astype(np.float64)  # margin: the deviation doubled
    return sequence_agreement(ref.argmax(axis=-1), doubled.argmax(axis=-1), samples)


__all__ = ["is_labels", "label_agreement", "score_agreement"]
