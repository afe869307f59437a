"""Classes the given samples never show: PaddleOCR's English recogniser, fitted on 32 lines that reached
60 of its 97 characters and no '#', measured 1.0000 and read no '#' after. The search says which
classes its samples leave unmeasured."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from harness import Net, rnd

import onnxfold
from onnxfold.runtime.classes_reached import class_support, classes_reached, classes_shown
from onnxfold.search.exercise_notes import coverage_notes


def test_the_classes_an_argmax_reaches_are_counted_on_the_last_axis() -> None:
    rng = np.random.default_rng(0)
    lines = rng.random((4, 10, 6))
    lines[..., 4:] = -1.0  # classes 4 and 5 never win at any position
    scores = rng.random((8, 3))  # every class wins somewhere
    scores[np.arange(3), np.arange(3)] = 5.0
    reference = {"lines": lines, "scores": scores, "box": rng.random((8, 4))}
    metrics = {"lines": "sequence+margin", "scores": "top1+r2", "box": "r2"}
    assert classes_reached(reference, metrics) == {"lines": (4, 6)}
    assert classes_reached(reference, {**metrics, "lines": "r2"}) == {}  # not judged by its argmax
    assert classes_reached(reference, {**metrics, "lines": "class0@0.5"}) == {}  # one class's score alone
    boundaries = rng.standard_normal((8, 30))  # a decision per character: tags reads no argmax there
    boundaries[:, 20:] = -5.0
    assert classes_reached({"b": boundaries}, {"b": "tags+r2"}) == {}
    assert classes_reached({"b": boundaries}, {"b": "top1"}) != {}  # its argmax never reaches 20 to 29
    (note,) = coverage_notes(classes_reached(reference, metrics))
    assert "(on lines 4 of its 6)" in note and "the others are not measured" in note
    assert coverage_notes({}) == []


def test_the_classes_left_out_are_named_and_those_one_or_two_samples_show_are_flagged() -> None:
    labels = np.array([0] * 12 + [1] * 10 + [2] * 2 + [4] * 1)  # class 3 never, 2 by two, 4 by one
    scores = np.eye(5)[labels] + 0.01
    lines = np.zeros((4, 7, 9))
    lines[:, :, 1] = 1.0  # a sequence: every position reads class 1
    lines[0, 0, 5] = 2.0  # class 5 once, in one sample
    assert classes_shown(scores).tolist() == [12, 10, 2, 0, 1]
    assert classes_shown(lines).tolist() == [0, 4, 0, 0, 0, 1, 0, 0, 0]
    reference = {"scores": scores, "lines": lines}
    metrics = {"scores": "top1", "lines": "sequence"}
    reached = classes_reached(reference, metrics)
    missing, thin = class_support(reference, reached, metrics)
    assert missing == {"scores": [3], "lines": [0, 2, 3, 4, 6, 7, 8]}
    assert thin == {"scores": {2: 2, 4: 1}}  # a sequence's rare characters are not flagged
    notes = coverage_notes(reached, False, missing, thin)
    assert "on scores 4 of its 5, class 3 not shown" in notes[0]
    assert "on lines 2 of its 9, classes 0, 2, 3, 4, 6, 7, 8 not shown" in notes[0]
    assert "(on scores class 2 by 2, class 4 by 1)" in notes[1]
    wide = np.eye(20)[np.arange(40) % 10]  # ten of twenty classes, four samples each
    gone, few = class_support({"w": wide}, classes_reached({"w": wide}, {"w": "top1"}), {"w": "top1"})
    assert few == {} and coverage_notes({"w": (10, 20)}, False, gone, few)[0].count("not shown") == 1
    assert (
        "10, 11, 12, 13, 14, 15, 16, 17 and 2 more not shown"
        in coverage_notes({"w": (10, 20)}, False, gone)[0]
    )
    assert class_support({"s": scores[:6]}, {}, {"s": "top1"}) == ({}, {})  # under 8 samples: no flag
    assert coverage_notes({}, True, {}, thin) == []  # the proxy's random samples: no such note


def test_a_search_on_samples_that_leave_classes_out_says_so(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    w1 = rnd(rng, 6, 16)
    w1[:, 8:] = w1[:, :8]  # a twin: half of the hidden channels fold exactly
    bias = np.array([0, 0, 0, -50, -50], np.float32)  # classes 3 and 4 never win
    net = Net({"w1": w1, "w2": rnd(rng, 16, 5), "b": bias})
    h = net("Relu", net("MatMul", net.input("x", ["N", 6]), "w1"))
    src = tmp_path / "m.onnx"
    onnx.save(net.model(net("Softmax", net("Add", net("MatMul", h, "w2"), "b"), axis=1)), src)
    x = rng.standard_normal((32, 6)).astype(np.float32)
    _, report = onnxfold.fold(str(src), output=str(tmp_path / "o.onnx"), inputs={"x": x}, round_to=1)
    (name,) = [o.name for o in report.search.chosen.outputs if o.metric == "top1"]
    import onnxruntime as ort

    reached = np.unique(ort.InferenceSession(str(src)).run(None, {"x": x})[0].argmax(axis=1)).size
    assert reached < 5  # computed here, not by the tool
    assert report.search.classes_reached == {name: (reached, 5)}
    assert report.to_dict()["search"]["classes_reached"] == {name: [reached, 5]}
    left_out = sorted(set(range(5)) - set(ort.InferenceSession(str(src)).run(None, {"x": x})[0].argmax(1)))
    assert report.search.classes_missing == {name: left_out} and left_out[-2:] == [3, 4]
    listed = ", ".join(map(str, left_out))
    assert (
        f"reach only some classes (on {name} {reached} of its 5, classes {listed} not shown)"
        in report.format()
    )
    assert report.to_dict()["search"]["classes_missing"] == {name: left_out}
    free = onnxfold.fold(str(src), output=str(tmp_path / "f.onnx"), round_to=1)[1]
    assert free.search.proxy and free.search.classes_reached == {}  # random inputs: no such note


def test_a_proxy_that_reaches_a_tenth_of_the_classes_or_less_says_so(tmp_path: Path) -> None:
    """tempocnn's 256 tempo classes: its data-free proxy's argmaxes reached 3 of them, and "top1 1.0000"
    stood for a fold that moved 8% of real tracks' tempi (trial 169)."""
    rng = np.random.default_rng(6)
    w1 = rnd(rng, 6, 16)
    w1[:, 8:] = w1[:, :8]
    bias = np.full(40, -50.0, np.float32)
    bias[:2] = 0.0  # 2 of 40 classes ever win
    net = Net({"w1": w1, "w2": rnd(rng, 16, 40), "b": bias})
    h = net("Relu", net("MatMul", net.input("x", ["N", 6]), "w1"))
    src = tmp_path / "m.onnx"
    onnx.save(net.model(net("Softmax", net("Add", net("MatMul", h, "w2"), "b"), axis=1)), src)
    free = onnxfold.fold(str(src), output=str(tmp_path / "f.onnx"), round_to=1)[1]
    (name,) = [o.name for o in free.search.chosen.outputs if o.metric == "top1"]
    assert free.search.proxy and free.search.classes_reached == {name: (2, 40)}
    assert f"the proxy's random samples reach only a few classes (on {name} 2 of its 40)" in free.format()
    assert classes_reached({name: np.eye(40)[np.arange(32) % 5]}, {name: "top1"}, 0.1) == {}  # 5 of 40


def test_values_guard_the_argmax_of_scores_the_proxy_decides_one_way(tmp_path: Path) -> None:
    """3DDFA's 62 face parameters [N, 62], a Gemm's without a Softmax: on noise their argmax reached 2
    of them, and top1 alone read 1.0000 for a fold that made the landmarks 26% worse (trial 167).
    Where the proxy's argmaxes reach a tenth of the classes or fewer, r2 guards them."""
    import onnxruntime as ort

    rng = np.random.default_rng(7)
    bias = np.zeros(40, np.float32)
    bias[:2] = 50.0  # two parameters' scale: every argmax lands on one of them
    net = Net({"w1": rnd(rng, 6, 32), "w2": rnd(rng, 32, 40), "b": bias})
    h = net("Relu", net("MatMul", net.input("x", ["N", 6]), "w1"))
    src, out = tmp_path / "m.onnx", tmp_path / "f.onnx"
    onnx.save(net.model(net("Add", net("MatMul", h, "w2"), "b")), src)
    free = onnxfold.fold(str(src), output=str(out), round_to=1)[1]
    (name,) = free.search.classes_reached
    assert {o.metric for o in free.search.chosen.outputs if o.name == name} == {"top1", "r2"}
    assert "so r2 guards it on scores [N, C]" in free.format()
    x = np.random.default_rng(1).standard_normal((256, 6)).astype(np.float32)
    ref = ort.InferenceSession(str(src)).run(None, {"x": x})[0][:, 2:]
    got = ort.InferenceSession(str(out)).run(None, {"x": x})[0][:, 2:]
    r2 = (
        1 - ((got - ref) ** 2).sum() / ((ref - ref.mean(axis=0)) ** 2).sum()
    )  # computed here, not by the tool
    assert r2 > 0.9, r2


def test_validation_on_random_inputs_guards_class_scores_as_the_search_does(tmp_path: Path) -> None:
    """rxnfp's reaction BERT at -s 0.3 --method fold: validation's 2 random reactions read "top1 100.0%"
    at cosine 0.845 with no warning, and 35% of 420 real reactions changed class. Scores [N, C] whose
    random argmaxes reach a tenth of the classes or fewer are guarded by r2 there too."""
    from onnxfold.report.task_warning import task_warning

    rng = np.random.default_rng(7)
    bias = np.zeros(40, np.float32)
    bias[:2] = 50.0  # every argmax lands on one of two classes
    net = Net({"w1": rnd(rng, 6, 32), "w2": rnd(rng, 32, 40), "b": bias})
    h = net("Relu", net("MatMul", net.input("x", ["N", 6]), "w1"))
    src = tmp_path / "m.onnx"
    onnx.save(net.model(net("Add", net("MatMul", h, "w2"), "b")), src)
    _, report = onnxfold.fold(str(src), 0.5, tmp_path / "f.onnx", method="fold", repair="none", round_to=1)
    (out,) = report.validation.outputs
    assert out.fidelity_metric == "top1+r2" and out.top1_agreement >= 0.9  # the labels alone look kept
    assert out.fidelity < 0.9 and "keeps top1+r2" in task_warning(report.validation)
    _, given = onnxfold.fold(
        str(src),
        0.5,
        tmp_path / "g.onnx",
        method="fold",
        repair="none",
        round_to=1,
        inputs={"x": rng.standard_normal((8, 6)).astype(np.float32)},
    )
    assert given.validation.outputs[0].fidelity_metric == "top1+r2"  # on given samples: as before
