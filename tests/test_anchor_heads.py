"""A detector's raw anchor heads (SCRFD: a Sigmoid score per anchor [N, A, 1] beside box offsets
[N, A, 4] and landmarks [N, A, 10], decoded by the package): r2 took each anchor as a channel and
measured the regressions on background that nothing reads, so a fold the package's own decoding read
at face F1 0.993 measured 0.45, and every search kept the model whole. The score's r2 now pools the
anchors, and a regression's counts the anchors the reference scores (:mod:`onnxfold.runtime.anchors`)."""

from __future__ import annotations

import numpy as np
import pytest

from onnxfold.runtime.anchors import FLOOR, AnchorView
from onnxfold.runtime.fidelity import model_fidelity, output_metrics

N, A = 16, 400


def _heads(seed: int = 0) -> dict[str, np.ndarray]:
    """Scores near 0 on background, a few anchors per image scored high; boxes everywhere."""
    rng = np.random.default_rng(seed)
    score = rng.uniform(0.0, 0.05, (N, A, 1)).astype(np.float32)
    for i in range(N):
        score[i, rng.choice(A, 6, replace=False), 0] = rng.uniform(0.6, 0.95, 6)
    boxes = rng.normal(2.0, 1.0, (N, A, 4)).astype(np.float32)
    return {"score": score, "bbox": boxes}


def _metrics(reference: dict[str, np.ndarray]) -> dict[str, str]:
    return output_metrics(reference, "auto", samples=N, bounds={"score": "Sigmoid"})


def test_background_drift_that_changes_no_decision_keeps_the_heads() -> None:
    ref = _heads()
    metrics = _metrics(ref)
    assert metrics == {"score": "mask+r2", "bbox": "r2"}
    rng = np.random.default_rng(1)
    cand = {k: v.copy() for k, v in ref.items()}
    background = ref["score"][..., 0] < FLOOR
    cand["score"][background] *= rng.uniform(0.5, 1.5, cand["score"][background].shape)
    cand["bbox"][background] = rng.normal(2.0, 1.0, cand["bbox"][background].shape)  # read by nothing
    cand["bbox"][~background] += rng.normal(0, 0.02, cand["bbox"][~background].shape)
    value, per = model_fidelity(ref, cand, metrics, N)
    assert value > 0.98, per
    # measured as before (each anchor a channel, boxes everywhere) it read as lost
    assert min(p.value for p in model_fidelity(ref, cand, {"score": "r2", "bbox": "r2"}, N)[1]) < 0.5


def test_boxes_moved_where_the_faces_are_are_seen() -> None:
    ref = _heads()
    metrics = _metrics(ref)
    cand = {k: v.copy() for k, v in ref.items()}
    faces = ref["score"][..., 0] >= FLOOR
    cand["bbox"][faces] += np.random.default_rng(2).normal(0, 1.0, cand["bbox"][faces].shape)
    per = {p.name: p.value for p in model_fidelity(ref, cand, metrics, N)[1]}
    assert per["bbox"] < 0.5, per  # 6 of 400 anchors an image: everywhere it read 0.98
    assert model_fidelity(ref, cand, {"score": "r2", "bbox": "r2"}, N)[1][1].value > 0.9
    # and scores that fall under the threshold: the mask sees the lost faces
    lost = {**ref, "score": np.where(faces[..., None], 0.3, ref["score"]).astype(np.float32)}
    assert model_fidelity(ref, lost, metrics, N)[0] < 0.5


def test_no_anchor_marked_or_no_regression_beside_it_measures_as_before() -> None:
    ref = _heads()
    quiet = {**ref, "score": np.clip(ref["score"], 0, 0.05)}  # random inputs: no face anywhere
    view = AnchorView(quiet, {"score": "r2", "bbox": "r2"}, N)
    assert view.rows == {}
    alone = AnchorView({"score": ref["score"]}, {"score": "mask+r2"}, N)  # a score without regressions
    assert alone.rows == {}
    got = AnchorView(ref, _metrics(ref), N)("bbox", "r2", ref["bbox"], ref["bbox"])
    assert got[0].shape == (N * A, 4) and got[2].sum() == N * 6


def _ssd(rng: np.random.Generator, n: int = 2, anchors: int = 500) -> dict[str, np.ndarray]:
    """An SSD's raw heads: conf [n, A, 2], a softmax with the background (class 0) winning at all but
    a few anchors, and loc [n, A, 4], box offsets per anchor."""
    logits = 0.3 * rng.standard_normal((n, anchors, 2)) + np.array([3.0, 0.0])
    logits[:, :20, 1] += 8.0  # the faces: 20 anchors a sample
    conf = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    return {"conf": conf, "loc": rng.standard_normal((n, anchors, 4))}


def test_an_ssd_s_softmax_scores_and_box_offsets_are_read_as_anchor_heads() -> None:
    """OpenCV's res10 face SSD (conf [1, 8892, 2] from a Softmax, loc [1, 8892, 4]): auto read the box
    offsets as CTC lines (sequence+margin 0.0000 for a fold whose faces agreed at F1 0.97) and the
    per-anchor argmax, background nearly everywhere, at top1 0.9988 "for a model answering class 0
    everywhere" (trial 184). Both are read by r2, the offsets at the anchors a face class marks."""
    from onnxfold.runtime.anchors import foreground, softmax_heads
    from onnxfold.runtime.exercised import judged_one_way

    rng = np.random.default_rng(0)
    ref = _ssd(rng)
    assert softmax_heads(ref, samples=2) == {"conf": ["loc"]}
    producers = {"conf": "Softmax", "loc": "Concat"}
    assert output_metrics(ref, "auto", producers, samples=2) == {"conf": "r2", "loc": "r2"}
    assert output_metrics(ref, "loc=top1", producers, samples=2)["loc"] == "top1"  # as the user asks
    marked = foreground(ref["conf"]) >= FLOOR
    assert marked[:, :20].all() and not marked[:, 20:].any()
    cand = {"conf": ref["conf"], "loc": ref["loc"].copy()}
    cand["loc"][:, 20:] += 5.0  # background anchors' offsets, which no decoding reads
    _, outputs = model_fidelity(ref, cand, {"conf": "r2", "loc": "r2"}, samples=2)
    assert {o.name: o.value for o in outputs}["loc"] == 1.0
    heads = softmax_heads(ref, samples=2)
    assert judged_one_way("conf", "r2", ref["conf"], "Softmax", samples=2, anchor_scores=heads) is None
    assert judged_one_way("conf", "r2", ref["conf"], "Softmax", samples=2) is not None  # alone: one way
    assert softmax_heads({"conf": ref["conf"]}, samples=2) == {}  # no offsets beside it: no detector
    assert softmax_heads(_ssd(rng, anchors=40), samples=2) == {}  # too few rows for anchors


def test_a_dense_detectors_maps_are_read_where_its_detection_map_marks() -> None:
    """BatDetect2 (trial 194): a detection map [N, 1, H, W] of probabilities beside size [N, 2, H, W]
    and class probabilities [N, C, H, W]; the package reads sizes and classes at the detection map's
    peaks. A candidate that moves them only where nothing is detected keeps them whole; one that moves
    them at the peaks does not."""
    from onnxfold.runtime.anchors import dense_heads

    rng = np.random.default_rng(3)
    n, c, h, w = 8, 5, 16, 32
    det = rng.uniform(0.0, 0.05, (n, 1, h, w)).astype(np.float32)
    peaks = np.zeros((n, h, w), bool)
    for i in range(n):
        ys, xs = rng.integers(0, h, 4), rng.integers(0, w, 4)
        det[i, 0, ys, xs], peaks[i, ys, xs] = 0.9, True
    logits = rng.normal(0, 3, (n, c, h, w))
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    size = rng.normal(5, 2, (n, 2, h, w)).astype(np.float32)
    ref = {"det": det, "size": size, "cls": probs}
    metrics = {"det": "r2", "size": "r2", "cls": "mask+r2"}
    assert set(dense_heads(ref, metrics)) == {"size", "cls"}
    away = ~peaks[:, None]
    shuffled = rng.permutation(probs.reshape(n, c, -1).transpose(0, 2, 1).reshape(-1, c)).reshape(n, h, w, c)
    moved_off = {
        "det": det,
        "size": np.where(away, size + rng.normal(0, 3, size.shape), size).astype(np.float32),
        "cls": np.where(away, shuffled.transpose(0, 3, 1, 2), probs).astype(np.float32),
    }
    fid, per = model_fidelity(ref, moved_off, metrics, samples=n)
    assert fid == 1.0, [(o.name, o.metric, o.value) for o in per]
    moved_on = {k: np.where(away, v, v[::-1]) if k != "det" else v for k, v in ref.items()}  # peaks swapped
    fid, per = model_fidelity(ref, moved_on, metrics, samples=n)
    assert fid < 0.5, [(o.name, o.metric, o.value) for o in per]
    # random inputs that mark nothing: every position counts, as before
    assert dense_heads({"det": det * 0.1, "size": size}, {"det": "r2", "size": "r2"}) == {}


def test_a_dense_detectors_class_probabilities_are_read_by_their_class_at_the_marks() -> None:
    """BatDetect2's species map (trial 194) read by mask+r2 at the marked positions measured 0.853 for
    a fold whose calls kept 97.7% of their species. Auto reads a class-probability map beside a
    detection map by top1 at the marks: probabilities that move while each mark keeps its class meet
    it, a class that changes at a tenth of the marks does not; a map that is no probability (sizes)
    keeps r2, and away from a detector the same map is a segmentation (mask+r2)."""
    from onnxfold.runtime.fidelity import output_metrics

    rng = np.random.default_rng(5)
    n, c, h, w = 8, 6, 16, 32
    det = rng.uniform(0.0, 0.05, (n, 1, h, w)).astype(np.float32)
    peaks = np.zeros((n, h, w), bool)
    for i in range(n):
        ys, xs = rng.choice(h, 5, replace=False), rng.choice(w, 5, replace=False)
        det[i, 0, ys, xs], peaks[i, ys, xs] = 0.9, True

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(1, keepdims=True))
        return (e / e.sum(1, keepdims=True)).astype(np.float32)

    logits = rng.normal(0, 3, (n, c, h, w))
    size = rng.normal(5, 2, (n, 2, h, w)).astype(np.float32)
    ref = {"det": det, "size": size, "cls": softmax(logits)}
    metrics = output_metrics(ref, samples=n)
    assert metrics["cls"] == "top1" and metrics["size"] == "r2", metrics
    assert output_metrics({"cls": ref["cls"]}, samples=n)["cls"] == "mask+r2"

    top = logits.argmax(1)
    kept = logits + rng.normal(0, 2.0, logits.shape)  # probabilities move, each mark's class stays
    np.put_along_axis(kept, top[:, None], np.take_along_axis(kept, top[:, None], 1) + 20, 1)
    fid, per = model_fidelity(ref, {**ref, "cls": softmax(kept)}, metrics, samples=n)
    cls = {o.name: o for o in per}["cls"]
    assert cls.value == 1.0 and fid == 1.0, [(o.name, o.metric, o.value) for o in per]
    r2_there = model_fidelity(ref, {**ref, "cls": softmax(kept)}, {**metrics, "cls": "mask+r2"}, samples=n)[0]
    assert r2_there < 0.95  # what the old reading refused
    flipped = logits.copy()
    marks = np.argwhere(peaks)[::10]  # a tenth of the marks: their class goes to the next one
    for i, y, x in marks:
        flipped[i, (top[i, y, x] + 1) % c, y, x] = logits[i, :, y, x].max() + 5
    fid, _ = model_fidelity(ref, {**ref, "cls": softmax(flipped)}, metrics, samples=n)
    assert fid == pytest.approx(1 - len(marks) / peaks.sum())
