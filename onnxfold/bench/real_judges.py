"""Task judges of ``onnxfold bench real``: pure functions on decoded outputs.

* CTC greedy decoding (argmax per step, repeats collapsed, blank dropped), character error rate
  (Levenshtein distance / reference length), exact-line agreement;
* boxes: IoU, greedy NMS, greedy one-to-one matching at IoU >= 0.5 (same class), F1 = 2TP/(2TP+FP+FN)
  summed over images (1 when both sides have no box);
* labels: agreement; embeddings: mean cosine.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from onnxfold.runtime.detections import iou


def ctc_greedy(probs: np.ndarray, blank: int = 0) -> list[tuple[int, ...]]:
    """Decode ``probs`` (N, T, C) greedily: argmax per step, collapse repeats, drop ``blank``."""
    best = np.asarray(probs).argmax(axis=-1)
    out = []
    for row in best:
        keep = np.ones(row.size, bool)
        keep[1:] = row[1:] != row[:-1]
        out.append(tuple(int(c) for c in row[keep] if c != blank))
    return out


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance between two sequences."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def cer(refs: Sequence[Sequence], hyps: Sequence[Sequence]) -> float:
    """Character error rate: total edit distance / total reference length (0 when both are empty)."""
    dist = sum(edit_distance(r, h) for r, h in zip(refs, hyps, strict=True))
    total = sum(len(r) for r in refs)
    return dist / total if total else float(dist > 0)


def exact_agreement(refs: Sequence, hyps: Sequence) -> float:
    """The fraction of items equal on both sides."""
    if not refs:
        return 1.0
    return sum(r == h for r, h in zip(refs, hyps, strict=True)) / len(refs)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> list[int]:
    """Greedy non-maximum suppression: indices kept, best score first."""
    order = list(np.argsort(-np.asarray(scores), kind="stable"))
    keep: list[int] = []
    while order:
        i = order.pop(0)
        keep.append(int(i))
        if order:
            over = iou(boxes[[i]], boxes[order])[0]
            order = [j for j, o in zip(order, over, strict=True) if o < threshold]
    return keep


def match_boxes(ref: np.ndarray, got: np.ndarray, threshold: float = 0.5) -> tuple[int, int, int]:
    """(TP, FP, FN) of ``got`` against ``ref`` (rows x0, y0, x1, y1[, class]): greedy one-to-one
    matching by IoU, highest first, pairs of the same class (when given) with IoU >= ``threshold``."""
    if not len(ref) or not len(got):
        return 0, len(got), len(ref)
    ref, got = np.asarray(ref, float).reshape(len(ref), -1), np.asarray(got, float).reshape(len(got), -1)
    m = iou(ref[:, :4], got[:, :4])
    if ref.shape[1] > 4 and got.shape[1] > 4:
        m = np.where(ref[:, None, 4] == got[None, :, 4], m, 0.0)
    tp = 0
    while m.size and m.max() >= threshold:
        i, j = np.unravel_index(int(m.argmax()), m.shape)
        tp += 1
        m[i, :] = 0.0
        m[:, j] = 0.0
    return tp, len(got) - tp, len(ref) - tp


def box_f1(refs: Sequence[np.ndarray], gots: Sequence[np.ndarray], threshold: float = 0.5) -> float:
    """F1 = 2TP / (2TP + FP + FN) over all images (1.0 when neither side has a box)."""
    tp = fp = fn = 0
    for r, g in zip(refs, gots, strict=True):
        a, b, c = match_boxes(r, g, threshold)
        tp, fp, fn = tp + a, fp + b, fn + c
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def mean_cosine(ref: np.ndarray, got: np.ndarray) -> float:
    """Mean cosine similarity of matching rows."""
    ref, got = np.asarray(ref, float), np.asarray(got, float)
    num = (ref * got).sum(-1)
    den = np.linalg.norm(ref, axis=-1) * np.linalg.norm(got, axis=-1)
    return float(np.mean(num / np.maximum(den, 1e-12)))
