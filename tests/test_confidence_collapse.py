"""Random inputs that make a classifier answer one class excuse a fold's figure only while the fold
keeps that class with about the original's confidence: chessvision's piece classifier folded at 0.3
still answered class 6 to every noise sample, at 0.19 where the original said 0.986, and read every
square of a real board as empty, while its validation called the figure a note (trial 122)."""

from __future__ import annotations

import numpy as np
import pytest

from onnxfold.runtime.exercised import unexercised_by_both


def scores(confidence: float, n: int = 32, classes: int = 13, top: int = 6) -> np.ndarray:
    rest = (1.0 - confidence) / (classes - 1)
    p = np.full((n, classes), rest, np.float32)
    p[:, top] = confidence
    return p


@pytest.mark.parametrize(("kept", "excused"), [(0.95, True), (0.6, True), (0.19, False)])
def test_one_class_answers_excuse_the_figure_only_while_the_confidence_holds(
    kept: float, excused: bool
) -> None:
    ref = scores(0.986)
    why = unexercised_by_both("output0", ref, scores(kept), "Softmax", samples=32)
    assert (why is not None) == excused, why
