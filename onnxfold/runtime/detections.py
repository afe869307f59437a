"""End-to-end detections: rows [x1, y1, x2, y2, score, class] that the model itself selected and sorted.

A YOLO exported with its selection inside the graph (TopK or NonMaxSuppression; ultralytics'
end-to-end heads, ``nms=True``) writes [B, K, 6]: K rows per image, sorted by score, the first few
real boxes and the rest padding. r2 compares rows by position, and a fold that shifts one score
reorders everything below it: on isbnx's ISBN detector a fold with r2 0.118 kept its boxes at box F1
0.54 (mean IoU 0.99 where matched). ``boxes`` judges what the detector is for instead:

    boxes = 2·Σ matched / (Σ reference boxes + Σ candidate boxes)   (1 when neither has any)

over every sample, a box being a row scoring at least the threshold, and a candidate box matching an
unmatched reference box of the same class with IoU ≥ 0.5, best scores first (box F1 against the
original's boxes). The threshold is 0.25 (a detector's usual confidence), or lower where the
reference scores fewer boxes than one per sample there (random inputs): then the score of its
B-th best row, so that the metric still sees boxes.

The layout is read from the values (:func:`detection_columns`): a score column in [0, 1] that never
rises down the rows of any sample (the selection sorted them), a class column of whole numbers, and
four coordinate columns, corners when x2 ≥ x1 and y2 ≥ y1 on every scored row, else centre and size.
"""

from __future__ import annotations

import numpy as np

#: a detector's usual confidence threshold
SCORE_THRESHOLD = 0.25
IOU_MATCH = 0.5
#: at least this many rows per sample: fewer are not a padded selection
MIN_ROWS = 8


def detection_columns(ref: np.ndarray) -> tuple[int, int, list[int], bool] | None:
    """(score column, class column, the four box columns, corners?) of end-to-end detections
    [B, K, 6] (see the module docstring), or None when ``ref`` is not such an output."""
    a = np.asarray(ref)
    if (
        a.ndim != 3
        or a.shape[2] != 6
        or a.shape[1] < MIN_ROWS
        or a.dtype.kind != "f"
        or not np.isfinite(a).all()
    ):
        return None
    whole = [c for c in range(6) if np.array_equal(a[..., c], np.round(a[..., c])) and a[..., c].min() >= -1]
    scores = [
        c
        for c in range(6)
        if a[..., c].min() >= 0
        and a[..., c].max() <= 1
        and (np.diff(a[..., c], axis=1) <= 0).all()
        and c not in whole
    ]
    if len(scores) != 1 or len(whole) != 1:
        return None
    score, label = scores[0], whole[0]
    box = [c for c in range(6) if c not in (score, label)]
    kept = a[a[..., score] > 0][:, box]
    corners = bool(len(kept) == 0 or ((kept[:, 2] >= kept[:, 0]).all() and (kept[:, 3] >= kept[:, 1]).all()))
    if not corners and len(kept) and ((kept[:, 2] < 0).any() or (kept[:, 3] < 0).any()):
        return None
    return score, label, box, corners


def threshold(ref: np.ndarray, score: int) -> float:
    """0.25, or the score of the reference's B-th best row where fewer than B rows reach 0.25."""
    values = np.sort(np.asarray(ref)[..., score].reshape(-1))[::-1]
    samples = np.asarray(ref).shape[0]
    if (values >= SCORE_THRESHOLD).sum() >= samples or not len(values):
        return SCORE_THRESHOLD
    return float(max(values[min(samples, len(values)) - 1], 1e-6))


def _corners(rows: np.ndarray, corners: bool) -> np.ndarray:
    if corners:
        return rows
    cx, cy, w, h = rows.T
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of boxes ``a`` (N, 4) and ``b`` (M, 4), corners (x0, y0, x1, y1); a box with x1 < x0
    or y1 < y0 has no area, and a pair without union IoU 0."""
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)

    def area(x: np.ndarray) -> np.ndarray:
        return np.clip(x[:, 2:] - x[:, :2], 0, None).prod(-1)

    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def box_agreement(ref: np.ndarray, cand: np.ndarray) -> float:
    """Box F1 of the candidate's detections against the reference's (see the module docstring)."""
    matched, total = box_counts(ref, cand)
    return 1.0 if total.sum() == 0 else float(2.0 * matched.sum() / total.sum())


def box_counts(ref: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: the candidate's boxes matched, and the boxes of both (box F1 = 2·Σ matched / Σ total),
    of end-to-end detections, or of a raw YOLO head's rows after a per-class NMS (:func:`raw_head`)."""
    layout = detection_columns(ref)
    a, b = np.asarray(ref, np.float64), np.asarray(cand, np.float64)
    if layout is None:
        head = head_layout(ref)
        if head is None:
            raise ValueError("boxes: the output is not detections ([B, K, 6], or a YOLO head's rows)")
        if a.shape != b.shape:
            return np.zeros(1), np.ones(1)
        a, b = _head_rows(a, *head), _head_rows(b, *head)
        return _matched(a, b, 4, 5, [0, 1, 2, 3], True, threshold(a, 4), nms=True)
    score, label, box, corners = layout
    if a.shape != b.shape:
        return np.zeros(1), np.ones(1)
    return _matched(a, b, score, label, box, corners, threshold(a, score))


def _matched(a, b, score: int, label: int, box: list[int], corners: bool, cut: float, nms: bool = False):
    matched, total = np.zeros(len(a)), np.zeros(len(a))
    for s, (r, c) in enumerate(zip(a, b, strict=True)):
        r, c = r[r[:, score] >= cut], c[np.nan_to_num(c[:, score], nan=-1.0) >= cut]
        r, c = r[np.argsort(-r[:, score], kind="stable")], c[np.argsort(-c[:, score], kind="stable")]
        rb, cb = _corners(r[:, box], corners), _corners(c[:, box], corners)
        if nms:
            (r, rb), (c, cb) = _suppressed(r, rb, label), _suppressed(c, cb, label)
        total[s] = len(r) + len(c)
        free = np.ones(len(r), bool)
        for i in range(len(c)):
            candidates = free & (r[:, label] == c[i, label])
            if not candidates.any():
                continue
            ious = np.where(candidates, iou(cb[i], rb)[0], -1.0)
            j = int(np.argmax(ious))
            if ious[j] >= IOU_MATCH:
                free[j] = False
                matched[s] += 1
    return matched, total


#: the fewest rows of a raw detection head, one per anchor
MIN_ANCHORS = 64
#: a box overlapping a better one of its class this much is suppressed (YOLO's usual NMS)
IOU_NMS = 0.45


def raw_head(ref: np.ndarray) -> str | None:
    """``"v5"`` or ``"v8"`` where ``ref`` is a YOLO head's raw rows (:func:`head_layout`), else None."""
    layout = head_layout(ref)
    return None if layout is None else layout[0]


def head_layout(ref: np.ndarray) -> tuple[str, int] | None:
    """(kind, end) of a YOLO head's rows before the selection: ``"v5"`` for [B, A, 5 + C (+ M)]
    (centre, size, objectness, class probabilities per anchor), ``"v8"`` for [B, 4 + C (+ M), A] (no
    objectness); columns 4..end of a row are its scores. At least :data:`MIN_ANCHORS` anchors, more
    than columns, scores in [0, 1], sizes ≥ 0 and coordinates in pixels (some above 1). r2 over every
    anchor read 0.968 on a YOLOv5 digit reader whose fold changed 19.5% of the numbers it read: most
    anchors are background, and their drift hides the few boxes.

    A segmenting or pose head appends M unbounded values per anchor (mask coefficients, keypoints): the
    scores are then the columns from 4 that stay in [0, 1], if most of them are background (a median
    at most :data:`BACKGROUND`). r2 over a YOLOv8s-seg plate detector's [1, 37, 8400] read 0.9956
    where its boxes kept F1 0.78."""
    a = np.asarray(ref)
    if a.ndim != 3 or a.dtype.kind != "f" or not np.isfinite(a).all():
        return None
    for kind, rows, first in (("v5", a, 5), ("v8", np.swapaxes(a, 1, 2), 4)):
        n, width = rows.shape[1], rows.shape[2]
        if n < MIN_ANCHORS or n <= width or width <= first:
            continue
        if rows[..., 2:4].min() < 0 or rows[..., :4].max() <= 1:
            continue
        bounded = [(rows[..., c].min() >= 0 and rows[..., c].max() <= 1) for c in range(4, width)]
        end = 4 + (bounded.index(False) if False in bounded else len(bounded))
        if end == width:
            return kind, end
        if end > first and np.median(rows[..., 4:end]) <= BACKGROUND:
            return kind, end
    return None


#: a head's scores with appended values: most anchors are background, their scores at most this
BACKGROUND = 0.1


def detected_nothing(ref: np.ndarray) -> str | None:
    """How detections ``ref`` (:func:`detections_like`) left ``boxes`` unexercised: no row of any
    sample scores :data:`SCORE_THRESHOLD`, so the boxes it compares (:func:`threshold` lowered to the
    B-th best row) are ones any detector discards; None where some box is detected, or ``ref`` holds
    no detections. On uniform noise a YOLOX barcode detector's best score was 0.005, and a fold of 0.6%
    of its parameters read boxes 0.0000 (trial 198)."""
    a = np.asarray(ref)
    layout = detection_columns(a)
    if layout is not None:
        scores = a[..., layout[0]]
    elif (head := head_layout(a)) is not None:
        scores = _head_rows(np.asarray(a, np.float64), *head)[..., 4]
    else:
        return None
    best = float(np.nanmax(scores)) if scores.size else 0.0
    if best >= SCORE_THRESHOLD:
        return None
    return (
        f"detected nothing (its best score {best:.2g}, under {SCORE_THRESHOLD:g}): the boxes compared are "
        "ones a detector discards"
    )


def detections_like(ref: np.ndarray) -> bool:
    """Whether ``ref`` holds detections that ``boxes`` reads: end-to-end rows (:func:`detection_columns`)
    or a YOLO head's raw rows (:func:`raw_head`)."""
    return detection_columns(ref) is not None or raw_head(ref) is not None


def _head_rows(a: np.ndarray, kind: str, end: int) -> np.ndarray:
    """A raw head's anchors as rows [B, A, 6]: corners, score (objectness × class probability for
    v5), class; columns 4..``end`` hold the scores (:func:`head_layout`)."""
    rows = a if kind == "v5" else np.swapaxes(a, 1, 2)
    probs = rows[..., 5:end] * rows[..., 4:5] if kind == "v5" else rows[..., 4:end]
    cx, cy, w, h = (rows[..., i] for i in range(4))
    label = np.argmax(np.nan_to_num(probs, nan=-1.0), axis=-1)
    score = np.take_along_axis(probs, label[..., None], axis=-1)[..., 0]
    return np.stack(
        [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, score, label.astype(np.float64)], axis=-1
    )


def _suppressed(rows: np.ndarray, boxes: np.ndarray, label: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy per-class NMS of rows sorted by score: a row overlapping a kept one of its class by more
    than :data:`IOU_NMS` goes."""
    if len(rows) < 2:
        return rows, boxes
    overlap = iou(boxes, boxes)
    same = rows[:, label][:, None] == rows[:, label][None, :]
    keep: list[int] = []
    for i in range(len(rows)):
        if not any(same[i, k] and overlap[i, k] > IOU_NMS for k in keep):
            keep.append(i)
    return rows[keep], boxes[keep]


def fitted_boxes(chosen: dict[str, str], reference, named) -> dict[str, str]:
    """``chosen`` (output -> metric) with ``boxes`` kept where the output is end-to-end detections
    (:func:`detection_columns`) and r2 where a metric given for every output meets one that is not;
    ValueError, naming the outputs, where an output named for it (``OUTPUT=boxes``) is not or no output
    is. A trial's ``--metric boxes`` on a raw YOLOv5 head [10, 252, 15] failed after 30 s of folding,
    in validation, with no output named."""
    unfit = [n for n, m in chosen.items() if "boxes" in m.split("+") and not detections_like(reference[n])]
    if not unfit:
        return chosen
    fits = [n for n, m in chosen.items() if "boxes" in m.split("+") and n not in unfit]
    if any(n in named for n in unfit) or not fits:
        shapes = ", ".join(f"{n} [{', '.join(['B', *map(str, np.shape(reference[n])[1:])])}]" for n in unfit)
        raise ValueError(
            f"--metric boxes: {shapes} {'is' if len(unfit) == 1 else 'are'} not end-to-end detections "
            "[B, K, 6] (a box, a score and a class per row, after the selection) nor a YOLO head's rows "
            "[B, anchors, 5 + C] or [B, 4 + C, anchors]; give OUTPUT=boxes for such an output and auto "
            "or r2 for the others"
        )
    return {n: ("r2" if n in unfit else m) for n, m in chosen.items()}
