"""A segmenter's map of class probabilities per position is judged by the overlap of its class
regions (``mask``: the mean over classes of each argmax region's IoU), not by r2 or per-pixel
agreement, where the background dominates: a nucleus segmenter's [N, H, W, 2] softmax map (a new
user's trial, tf2onnx, the softmax built from Exp / ReduceSum / Div) read r2 0.998 where 0.5% of
pixels flipped and 11% of its nuclei were lost or split."""

from __future__ import annotations

import numpy as np
import pytest

from onnxfold.runtime.fidelity import fidelity_value, output_metrics
from onnxfold.runtime.probability_maps import class_axis, class_map


def _softmax(logits: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def _maps(axis: int, seed: int = 0) -> np.ndarray:
    """4 samples of 16×16 with 2 classes: background, and a square of foreground per sample."""
    logits = np.zeros((4, 16, 16, 2), np.float32)
    logits[..., 0] = 2.0
    for s in range(4):
        logits[s, 2 + s : 8 + s, 3:9, 1] = 5.0
    logits += np.random.default_rng(seed).normal(scale=0.1, size=logits.shape).astype(np.float32)
    probs = _softmax(logits, -1)
    return probs if axis == -1 else np.moveaxis(probs, -1, 1)


@pytest.mark.parametrize("axis", [-1, 1], ids=["nhwc", "nchw"])
def test_a_class_map_is_judged_by_the_mean_iou_of_its_regions(axis: int) -> None:
    ref = _maps(axis)
    assert class_axis(ref) == (3 if axis == -1 else 1) and class_map(ref)
    assert output_metrics({"map": ref}, "auto", samples=4)["map"] == "mask+r2"
    cand = np.moveaxis(ref, 1, -1).copy() if axis == 1 else ref.copy()
    cand[0, 2:8, 3:5] = [0.9, 0.1]  # sample 0 loses a third of its square: 12 of 36 pixels
    cand = np.moveaxis(cand, -1, 1) if axis == 1 else cand
    fg_iou = (4 * 36 - 12) / (4 * 36)
    bg_iou = (4 * 256 - 4 * 36) / (4 * 256 - 4 * 36 + 12)
    assert fidelity_value("mask", ref, cand) == pytest.approx((fg_iou + bg_iou) / 2)
    per_pixel = fidelity_value(
        "top1",
        ref if axis == -1 else np.moveaxis(ref, 1, -1),
        cand if axis == -1 else np.moveaxis(cand, 1, -1),
    )
    assert per_pixel > 0.98 > fidelity_value("mask", ref, cand)  # per pixel, the loss hides


def test_scores_that_are_no_probabilities_or_mark_one_class_stay_as_they_were() -> None:
    ref = _maps(-1)
    assert class_axis(ref * 2) is None  # rows summing to 2
    assert class_axis(ref[..., :1]) is None  # one class
    assert class_axis(ref[:, 0]) is None  # rank 3: sequence scores have their own metrics
    background = np.broadcast_to(np.array([0.9, 0.1], np.float32), (4, 8, 8, 2)).copy()
    assert class_axis(background) == 3 and not class_map(background)
    assert output_metrics({"map": background}, "auto", samples=4)["map"] == "r2"
