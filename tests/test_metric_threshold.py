"""``top1@T``: decisions a pipeline takes only where the top class's probability reaches T. PP-OCR's
orientation classifier turns a line only where P(180) > 0.9: a fold agreeing on 97.3% of the argmaxes
of 400 new lines changed 8.25% of those decisions, and top1 could not say so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from harness import Net, rnd

import onnxfold
from onnxfold.runtime.fidelity import counted, fidelity_value, output_metrics
from onnxfold.runtime.metric_spec import (
    binary_threshold,
    class_decisions,
    class_threshold,
    decisions,
    parse_metric,
    thresholded,
)


def test_a_decision_below_the_threshold_is_no_decision() -> None:
    ref = np.array([[0.95, 0.05], [0.2, 0.8], [0.05, 0.95], [0.6, 0.4]])
    cand = np.array([[0.85, 0.15], [0.3, 0.7], [0.04, 0.96], [0.55, 0.45]])
    np.testing.assert_array_equal(decisions(ref, 0.9), [0, -1, 1, -1])
    assert fidelity_value("top1", ref, cand, 4) == 1.0  # every argmax kept
    assert fidelity_value("top1@0.9", ref, cand, 4) == 0.75  # the first sample's decision is lost
    assert counted("top1@0.9", ref, 4) == 4  # samples counted, as top1 counts them
    np.testing.assert_array_equal(decisions(np.array([2, 0, 1]), 0.9), [2, 0, 1])  # labels stay


@pytest.mark.parametrize(
    "bad",
    [
        *("top1@0", "top1@1", "top1@x", "top1@", "r2@0.5", "class@0.5", "classx@0.5", "class1@1"),
        *("binary@1", "binary@", "auto+r2", "binary@0.1+bogus", "r2+", "none+r2"),
    ],
)
def test_a_threshold_outside_0_and_1_is_refused(bad: str) -> None:
    assert thresholded(bad) is None and class_threshold(bad) is None and binary_threshold(bad) is None
    with pytest.raises(ValueError, match=r"or top1@T, classK@T or binary@T, T in \(0, 1\)"):
        parse_metric(bad)
    assert parse_metric("top1@0.9,box=r2") == ("top1@0.9", {"box": "r2"})


def test_a_global_threshold_leaves_outputs_without_classes_to_r2() -> None:
    rng = np.random.default_rng(0)
    ref = {"p": rng.dirichlet(np.ones(3), 8), "v": rng.standard_normal(8)}
    assert output_metrics(ref, "top1@0.8") == {"p": "top1@0.8", "v": "r2"}


def test_a_search_at_a_threshold_keeps_the_confident_decisions_of_its_samples(tmp_path: Path) -> None:
    """The search counts each sample's thresholded decision: every fitting sample keeps it."""
    rng = np.random.default_rng(1)
    w1 = rnd(rng, 6, 16)
    w1[:, 8:] = w1[:, :8]  # a twin: half of the hidden channels fold exactly
    w2 = rnd(rng, 16, 2) * 2
    net = Net({"w1": w1, "w2": w2})
    h = net("Relu", net("MatMul", net.input("x", ["N", 6]), "w1"))
    src = tmp_path / "m.onnx"
    onnx.save(net.model(net("Softmax", net("MatMul", h, "w2"), axis=1)), src)
    x = rng.standard_normal((32, 6)).astype(np.float32)
    out = tmp_path / "o.onnx"
    _, report = onnxfold.fold(str(src), output=str(out), inputs={"x": x}, metric="top1@0.9", round_to=1)
    (o,) = report.search.chosen.outputs
    assert o.metric == "top1@0.9" and o.samples == 32
    import onnxruntime as ort

    a = ort.InferenceSession(str(src)).run(None, {"x": x})[0]
    b = ort.InferenceSession(str(out)).run(None, {"x": x})[0]
    assert (decisions(a, 0.9) == decisions(b, 0.9)).all()  # computed here, not by the tool
    assert report.param_sparsity > 0


def test_one_class_s_score_against_a_threshold_is_the_decision() -> None:
    """``classK@T``: an FSMN voice-activity detector's package reads its silence state's probability,
    one of 248, against a threshold; top1 over all 248 refused a fold that kept 99.1% of its frames."""
    # [N=2, L=3, C=4] frames: class 0 against the rest
    ref = np.array([[[0.7, 0.1, 0.1, 0.1], [0.2, 0.5, 0.2, 0.1], [0.4, 0.3, 0.2, 0.1]]] * 2)
    cand = ref.copy()
    cand[:, :, 1:] = cand[:, :, [2, 1, 3]]  # the argmax among the others moves: top1 counts it
    cand[1, 2] = [0.6, 0.2, 0.1, 0.1]  # one frame's class-0 decision flips at 0.5
    np.testing.assert_array_equal(class_decisions(ref, 0, 0.5), [[1, 0, 0], [1, 0, 0]])
    assert fidelity_value("top1", ref, cand, 2) < 0.7
    assert fidelity_value("class0@0.5", ref, cand, 2) == pytest.approx(5 / 6)
    assert class_threshold("class12@0.25") == (12, 0.25)
    assert parse_metric("class0@0.5,cache=none") == ("class0@0.5", {"cache": "none"})
    with pytest.raises(ValueError, match=r"class4@0.5 reads class 4's score of class scores \[N, C\]"):
        fidelity_value("class4@0.5", ref, cand, 2)


def test_a_search_on_one_class_s_decision_keeps_it_on_every_fitting_sample(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    w1 = rnd(rng, 6, 16)
    w1[:, 8:] = w1[:, :8]  # a twin: half of the hidden channels fold exactly
    net = Net({"w1": w1, "w2": rnd(rng, 16, 5) * 2})
    h = net("Relu", net("MatMul", net.input("x", ["N", 7, 6]), "w1"))
    src = tmp_path / "m.onnx"
    onnx.save(net.model(net("Softmax", net("MatMul", h, "w2"), axis=-1)), src)
    x = rng.standard_normal((32, 7, 6)).astype(np.float32)
    out = tmp_path / "o.onnx"
    _, report = onnxfold.fold(str(src), output=str(out), inputs={"x": x}, metric="class0@0.3", round_to=1)
    (o,) = report.search.chosen.outputs
    assert o.metric == "class0@0.3"
    import onnxruntime as ort

    a = ort.InferenceSession(str(src)).run(None, {"x": x})[0]
    b = ort.InferenceSession(str(out)).run(None, {"x": x})[0]
    assert 0.05 < (a[..., 0] >= 0.3).mean() < 0.95  # decisions both ways
    assert ((a[..., 0] >= 0.3) == (b[..., 0] >= 0.3)).mean() >= 0.95  # computed here, not by the tool
    assert report.param_sparsity > 0


def test_a_score_cut_elsewhere_than_half_is_read_at_its_cuts() -> None:
    """``binary@T``: an ECG quality model's package cuts its Sigmoid score at 0.1 and 0.625; binary at
    0.5 counted 32 of 32 for a fold that kept 93.8% of the package's three classes."""
    ref = np.array([[0.05], [0.3], [0.7], [0.95]])
    cand = np.array([[0.12], [0.3], [0.6], [0.95]])
    assert fidelity_value("binary", ref, cand, 4) == 1.0  # nothing crosses 0.5
    assert fidelity_value("binary@0.1", ref, cand, 4) == 0.75  # the first crosses 0.1
    assert fidelity_value("binary@0.625", ref, cand, 4) == 0.75  # the third crosses 0.625
    assert fidelity_value("binary@0.1+binary@0.625", ref, cand, 4) == 0.75
    assert fidelity_value("binary@0.2+binary@0.8", ref, cand, 4) == 1.0
    assert counted("binary@0.1", ref, 4) == 4  # samples counted, as binary counts them
    assert binary_threshold("binary@0.625") == 0.625
    assert parse_metric("binary@0.1+binary@0.625+r2,aux=none") == (
        "binary@0.1+binary@0.625+r2",
        {"aux": "none"},
    )


def test_a_search_at_two_cuts_keeps_both_decisions_on_every_fitting_sample(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    w1 = rnd(rng, 6, 16)
    w1[:, 8:] = w1[:, :8]  # a twin: half of the hidden channels fold exactly
    net = Net({"w1": w1, "w2": rnd(rng, 16, 1) * 2})
    h = net("Relu", net("MatMul", net.input("x", ["N", 6]), "w1"))
    src = tmp_path / "m.onnx"
    onnx.save(net.model(net("Sigmoid", net("MatMul", h, "w2"))), src)
    x = rng.standard_normal((48, 6)).astype(np.float32)
    out = tmp_path / "o.onnx"
    metric = "binary@0.6+binary@0.9"
    _, report = onnxfold.fold(str(src), output=str(out), inputs={"x": x}, metric=metric, round_to=1)
    assert [o.metric for o in report.search.chosen.outputs] == ["binary@0.6", "binary@0.9"]
    assert all(o.samples == 48 for o in report.search.chosen.outputs)
    import onnxruntime as ort

    a = ort.InferenceSession(str(src)).run(None, {"x": x})[0]
    b = ort.InferenceSession(str(out)).run(None, {"x": x})[0]
    for cut in (0.6, 0.9):  # computed here, not by the tool
        assert 0.1 < (a > cut).mean() < 0.9
        assert ((a > cut) == (b > cut)).mean() >= 0.95
    assert report.param_sparsity > 0
