"""A recogniser's target search keeps every fitting line's margin (``sequence+margin``), checked by an
independent greedy CTC decoder; counting lines alone (``sequence``) writes a fold that spends them."""

from __future__ import annotations

from itertools import groupby
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

import onnxfold

BLANK = 0


def _recogniser(tmp_path: Path) -> Path:
    """x [N, 12, 8] → MatMul → Relu (24 channels: 12 pairs of near-duplicates, a graded fold) →
    MatMul → + bias (the blank, class 0, wins most steps) → Softmax: CTC-like lines of 6 classes."""
    rng = np.random.default_rng(1)
    w1 = rng.standard_normal((8, 12))
    w1 = np.concatenate([w1, w1 + 0.2 * rng.standard_normal(w1.shape)], 1).astype(np.float32)
    w2 = (0.5 * rng.standard_normal((24, 6))).astype(np.float32)
    bias = np.array([3, 0, 0, 0, 0, 0], np.float32)
    graph = oh.make_graph(
        [
            oh.make_node("MatMul", ["x", "w1"], ["h"]),
            oh.make_node("Relu", ["h"], ["r"]),
            oh.make_node("MatMul", ["r", "w2"], ["z"]),
            oh.make_node("Add", ["z", "bias"], ["l"]),
            oh.make_node("Softmax", ["l"], ["probs"], axis=-1),
        ],
        "recogniser",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 12, 8])],
        [oh.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 12, 6])],
        [nh.from_array(w1, "w1"), nh.from_array(w2, "w2"), nh.from_array(bias, "bias")],
    )
    path = tmp_path / "rec.onnx"
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), path)
    return path


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _lines(scores: np.ndarray) -> list[tuple[int, ...]]:
    """Greedy CTC: the argmax per step, runs merged, the blank dropped."""
    return [tuple(c for c, _ in groupby(row) if c != BLANK) for row in scores.argmax(-1).tolist()]


def _kept_half_margin(ref: np.ndarray, got: np.ndarray) -> list[bool]:
    """Per line: does it still read the same with the candidate's deviation doubled (2·got − ref)?"""
    doubled = 2 * got.astype(np.float64) - ref.astype(np.float64)
    return [a == b for a, b in zip(_lines(ref), _lines(doubled), strict=True)]


def test_a_recogniser_search_keeps_every_fitting_line_s_margin(tmp_path: Path) -> None:
    model = _recogniser(tmp_path)
    x = np.random.default_rng(1).standard_normal((32, 12, 8)).astype(np.float32)
    ref = _run(model, x)
    assert sum(map(len, _lines(ref))) > 20  # the lines read something

    # lines counted alone: the fold spends their margins. The seed draws the half auto fits on; on
    # this one (of 0..3: 1 and 3) the search finds a fold that reads every line on half its margin
    counted = tmp_path / "counted.onnx"
    _, report = onnxfold.fold(
        model, output=counted, min_fidelity=0.95, inputs={"x": x}, metric="sequence", round_to=1, seed=1
    )
    got = _run(counted, x)
    assert report.param_sparsity > 0.05
    assert _lines(got) == _lines(ref)  # every fitting line is read ...
    assert not all(_kept_half_margin(ref, got))  # ... but some on half of its margin or less

    guarded = tmp_path / "guarded.onnx"  # auto: sequence+margin on the user's samples
    _, report = onnxfold.fold(model, output=guarded, min_fidelity=0.95, inputs={"x": x}, round_to=1, seed=1)
    got = _run(guarded, x)
    assert all(_kept_half_margin(ref, got))
    assert "probs sequence 1.0000 (32 of 32" in report.format()
    assert ", margin 1.0000 (32 of 32" in report.format()  # the output named once (per_outputs)
    assert report.param_sparsity < 0.05  # the margins this recogniser has leave little to fold
