"""A detector's raw anchor heads: scores, and the regressions read at the anchors they mark.

An anchor-based detector that leaves decoding to its package (SCRFD, RetinaFace, a YOLO exported
without its NMS, each level apart) writes a score per anchor from a Sigmoid ([R, k], or [N, A, k]
with a batch axis) and beside it regressions of the same rows (box offsets [R, 4], landmarks
[R, 10]). The package keeps the anchors whose score passes its threshold and reads their
regressions there; the rest, nearly every anchor of a photo, is background that nothing reads. Over
every anchor, r2 measures that background's drift: a fold of SCRFD-2.5G that the package's own
decoding read at face F1 0.993 (keypoint error 0.041 of the eye distance) measured r2 0.45 on its
scores and 0.82 on its boxes, and the search kept the model whole.

Two things made it so. With a batch axis, [N, A, k], r2 took each anchor as a channel (as it takes
positions of a sequence [N, L, C]): an anchor's score over 32 images, nearly constant on
background, divided by its own tiny variance. And the regressions were measured where nothing reads
them.

So where a score output is read by ``mask`` (a Sigmoid map that marks a region,
:func:`~onnxfold.runtime.probability_maps.mask_map`), has at least
:data:`~onnxfold.runtime.detections.MIN_ANCHORS` rows per sample, and other outputs read by r2 hold
its rows (the same dims but the last), those outputs are anchor heads (:class:`AnchorView`): their
r2 pools every anchor of every sample as one row, with the last axis as channels (the score, each
box coordinate), the score's over all anchors and each regression's over the anchors that the
reference scores at least :data:`FLOOR`, where a package's threshold may read it. Where the
reference marks no anchor (random inputs), nothing changes. On SCRFD that fold measured r2 0.988,
0.900 and 0.954 on its three score levels and 0.95 or more on its boxes and keypoints.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from onnxfold.runtime.detections import MIN_ANCHORS
from onnxfold.runtime.padding import token_positions

#: the lowest score a detector's threshold is set at in common use (YOLO's 0.25; SCRFD 0.4 or 0.5)
FLOOR = 0.25
#: at most this many scores per anchor (classes) on a score output's last axis
MAX_CLASSES = 128


class AnchorView:
    """What each output's metric is measured on (``model_fidelity``'s outputs, ``metrics``: their
    metrics, ``samples`` joined on their leading axis, ``mask``: the samples' padding [N, L] or None):
    call it with (output, metric part, reference, candidate) for the arrays to measure and the
    positions kept (module docstring; the token positions of padded samples, :mod:`.padding`)."""

    def __init__(
        self,
        reference: Mapping[str, np.ndarray],
        metrics: Mapping[str, str],
        samples: int | None = None,
        mask: np.ndarray | None = None,
    ) -> None:
        self.tokens = {n: token_positions(reference[n], mask) for n in reference}
        self.rows: dict[str, np.ndarray | None] = {}  # anchor heads: the rows measured (None: all)
        for name, metric in metrics.items():
            ref = np.asarray(reference.get(name, ()))
            if "mask" not in metric.split("+") or ref.ndim < 2 or ref.dtype.kind != "f":
                continue
            if ref.shape[-1] > MAX_CLASSES or ref.size // ref.shape[-1] < MIN_ANCHORS * max(1, samples or 1):
                continue
            held = [
                other
                for other, m in metrics.items()
                if other != name
                and m == "r2"
                and np.ndim(reference.get(other, ())) == ref.ndim
                and np.shape(reference[other])[:-1] == ref.shape[:-1]
            ]
            marked = ref.max(axis=-1) >= FLOOR
            if held and marked.any():
                self.rows[name] = None
                self.rows.update({other: marked for other in held if other not in self.rows})
        #: maps [N, C, H, W] beside a detection map [N, 1, H, W] -> the positions it marks [N, H, W]
        self.dense: dict[str, np.ndarray] = dense_heads(reference, metrics)
        for name, held in softmax_heads(reference, samples).items():
            if metrics.get(name) != "r2" or any(metrics.get(h) != "r2" for h in held):
                continue
            marked = foreground(np.asarray(reference[name])) >= FLOOR
            if marked.any():  # random inputs may mark none: nothing changes
                self.rows[name] = None
                self.rows.update({h: marked for h in held if h not in self.rows})

    def __call__(
        self, name: str, metric: str, ref: np.ndarray, cand: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        if name in self.dense and metric in ("r2", "mask", "top1") and np.shape(cand) == np.shape(ref):
            marked = self.dense[name].reshape(-1)  # each marked position a row of the map's channels
            rows = [np.moveaxis(np.asarray(x), 1, -1).reshape(marked.size, -1)[marked] for x in (ref, cand)]
            return rows[0], rows[1], None
        if metric != "r2" or name not in self.rows or self.tokens.get(name) is not None:
            return ref, cand, self.tokens.get(name)
        ref, cand, rows = np.asarray(ref), np.asarray(cand), self.rows[name]
        flat = cand.reshape(-1, cand.shape[-1]) if cand.ndim else cand
        return ref.reshape(-1, ref.shape[-1]), flat, None if rows is None else rows.reshape(-1)


def dense_heads(reference: Mapping[str, np.ndarray], metrics: Mapping[str, str]) -> dict[str, np.ndarray]:
    """A dense detector's maps (BatDetect2, CenterNet-style heads): beside a detection map [N, 1, H, W]
    read by ``mask`` (or by r2, its values probabilities in [0, 1]) whose reference marks some positions
    (at least :data:`FLOOR`), every other float map [N, C, H, W] of its size read by r2 or ``mask``
    (sizes, offsets, per-position class probabilities) -> the marked positions [N, H, W], where its
    package reads them. BatDetect2's class map [1, 18, 128, 512] read by ``mask`` over every pixel
    measured 0.673 for a fold whose calls the package found at F1 0.980 with 97.7% of their classes
    alike (trial 194); at the marked positions, 0.853."""
    out: dict[str, np.ndarray] = {}
    for name, metric in metrics.items():
        det = np.asarray(reference.get(name, ()))
        if det.ndim != 4 or det.shape[1] != 1 or det.dtype.kind != "f" or not det.size:
            continue
        probability = metric == "r2" and 0.0 <= float(det.min()) and float(det.max()) <= 1.0
        if "mask" not in metric.split("+") and not probability:
            continue
        marked = det[:, 0] >= FLOOR
        if not marked.any() or marked.all():
            continue
        for other, m in metrics.items():
            ref = np.asarray(reference.get(other, ()))
            if other == name or ref.ndim != 4 or ref.dtype.kind != "f" or other in out:
                continue
            parts = set(m.split("+"))
            if (
                ref.shape[0] == det.shape[0]
                and ref.shape[2:] == det.shape[2:]
                and (parts <= {"r2", "mask"} or (parts == {"top1"} and _class_probabilities(ref)))
            ):
                out[other] = marked
    return out


def dense_classes(reference: Mapping[str, np.ndarray], metrics: Mapping[str, str]) -> list[str]:
    """The maps of :func:`dense_heads` that hold class probabilities (C ≥ 2 summing to one at each
    position): read by top1 at the marked positions, the class a dense detector's package takes at
    each detection. BatDetect2's species map, by mask+r2 there, read 0.853 for a fold whose calls
    kept 97.7% of their species (trial 194), and refused every fold at --target-params 0.3."""
    return [n for n in dense_heads(reference, metrics) if _class_probabilities(np.asarray(reference[n]))]


def _class_probabilities(ref: np.ndarray) -> bool:
    """Whether map ``ref`` [N, C, H, W] holds C ≥ 2 probabilities summing to one at each position."""
    return ref.ndim == 4 and ref.shape[1] >= 2 and _rows_sum_to_one(np.moveaxis(ref, 1, -1))


#: at most this many regressions per anchor beside a Softmax's scores (a box's 4, 5 landmarks' 10)
MAX_OFFSETS = 16


def softmax_heads(reference: Mapping[str, np.ndarray], samples: int | None = None) -> dict[str, list[str]]:
    """An SSD's heads: class probabilities [..., A, C] (rows that sum to 1, 2 to :data:`MAX_CLASSES`
    classes, at least :data:`~onnxfold.runtime.detections.MIN_ANCHORS` rows a sample) -> the outputs
    beside them that regress the same rows (the same dims but the last, at most :data:`MAX_OFFSETS`,
    rows that do not sum to 1). OpenCV's res10 face SSD writes conf [1, 8892, 2] and loc [1, 8892, 4]:
    auto read loc's box offsets as CTC lines (``sequence+margin`` 0.0000 for a fold whose faces agreed
    at F1 0.97) and conf's per-anchor argmax, background nearly everywhere, at top1 0.9988 (trial 184);
    both are read by r2 (:func:`~onnxfold.runtime.fidelity.output_metrics`), the offsets at the anchors
    a class other than the background marks (:class:`AnchorView`)."""
    out: dict[str, list[str]] = {}
    for name, ref in reference.items():
        ref = np.asarray(ref)
        if ref.ndim < 2 or ref.dtype.kind != "f" or not 2 <= ref.shape[-1] <= MAX_CLASSES:
            continue
        if ref.size // ref.shape[-1] < MIN_ANCHORS * max(1, samples or 1) or not _rows_sum_to_one(ref):
            continue
        held = [
            other
            for other, r in reference.items()
            if other != name
            and np.ndim(r) == ref.ndim
            and np.shape(r)[:-1] == ref.shape[:-1]
            and np.asarray(r).dtype.kind == "f"
            and np.shape(r)[-1] <= MAX_OFFSETS
            and not _rows_sum_to_one(np.asarray(r))
        ]
        if held:
            out[name] = held
    return out


def foreground(scores: np.ndarray) -> np.ndarray:
    """Per row, the highest probability of a class other than the background, the class that wins at
    the most rows (an SSD's class 0, nearly every anchor of a photo)."""
    if scores.shape[-1] < 2:
        return scores[..., 0]
    wins = np.bincount(scores.argmax(axis=-1).ravel(), minlength=scores.shape[-1])
    return np.delete(scores, int(wins.argmax()), axis=-1).max(axis=-1)


def _rows_sum_to_one(values: np.ndarray) -> bool:
    return bool(values.size and np.isfinite(values).all() and values.min() >= 0) and bool(
        np.allclose(values.sum(axis=-1), 1.0, atol=1e-3)
    )


__all__ = ["FLOOR", "AnchorView", "dense_classes", "foreground", "softmax_heads"]
