"""``onnxfold bench real`` without any download: the judges on hand-made outputs, the registry, and
the sweep machinery end to end on the bundled LeNet-5 registered as a stand-in model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from onnxfold.bench import real
from onnxfold.bench import real_judges as judge
from onnxfold.bench.real_models import REGISTRY, RealModel, by_name
from onnxfold.bench.real_tasks import ClassTask, Task, to_chw


def test_ctc_greedy_collapses_repeats_and_drops_blank() -> None:
    steps = [0, 3, 3, 0, 3, 5, 5, 0]
    probs = np.eye(6)[steps][None]
    assert judge.ctc_greedy(probs) == [(3, 3, 5)]
    assert judge.ctc_greedy(np.eye(6)[[0, 0]][None]) == [()]


def test_cer_and_exact_agreement() -> None:
    assert judge.edit_distance("kitten", "sitting") == 3
    assert judge.cer(["abcd", "ef"], ["abcd", "ef"]) == 0.0
    assert judge.cer(["abcd", "ef"], ["abxd", ""]) == pytest.approx(3 / 6)
    assert judge.exact_agreement([(1, 2), (3,)], [(1, 2), (4,)]) == 0.5
    assert judge.exact_agreement([], []) == 1.0


def test_iou_nms_and_box_f1() -> None:
    a = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    assert judge.iou(a, a).diagonal() == pytest.approx([1.0, 1.0])
    assert judge.iou(a[:1], np.array([[5, 0, 15, 10]]))[0, 0] == pytest.approx(50 / 150)
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30]], float)
    assert judge.nms(boxes, np.array([0.9, 0.8, 0.7]), 0.5) == [0, 2]
    # one box matched, one shifted below IoU 0.5 (FP + FN), one missing (FN)
    ref = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), np.array([[0, 0, 4, 4]])]
    got = [np.array([[0, 0, 10, 9], [26, 20, 36, 30]]), np.zeros((0, 4))]
    assert judge.match_boxes(ref[0], got[0]) == (1, 1, 1)
    assert judge.box_f1(ref, got) == pytest.approx(2 * 1 / (2 * 1 + 1 + 2))
    assert judge.box_f1([np.zeros((0, 4))], [np.zeros((0, 4))]) == 1.0
    # a class column must match too
    assert judge.match_boxes(np.array([[0, 0, 10, 10, 1]]), np.array([[0, 0, 10, 10, 2]])) == (0, 1, 1)


def test_mean_cosine() -> None:
    x = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert judge.mean_cosine(x, x) == pytest.approx(1.0)
    assert judge.mean_cosine(x, np.array([[0.0, 1.0], [0.0, 5.0]])) == pytest.approx(0.5)


def test_largest_kept_picks_the_largest_reduction_that_keeps_the_task() -> None:
    points = [
        {"method": "m", "sparsity": 0.1, "reduction": 0.15, "agreement": 1.0},
        {"method": "m", "sparsity": 0.2, "reduction": 0.3, "agreement": 0.96},
        {"method": "m", "sparsity": 0.3, "reduction": 0.45, "agreement": 0.5},
        {"method": "m", "sparsity": 0.4, "reduction": 0.6, "agreement": 0.97, "error": "boom"},
    ]
    assert real.largest_kept(points, 0.95)["sparsity"] == 0.2
    assert real.largest_kept(points, 0.99)["sparsity"] == 0.1
    assert real.largest_kept(points, 1.01) is None


def test_registry_facts() -> None:
    kinds = {m.kind.split(" ")[0] for m in REGISTRY}
    assert len(REGISTRY) >= 6 and len({m.name for m in REGISTRY}) == len(REGISTRY)
    assert {"OCR", "classification", "audio", "text"} <= kinds and any(
        "detection" in m.kind for m in REGISTRY
    )
    for m in REGISTRY:
        assert m.version.count(".") >= 1 and m.member and m.preprocessing and m.decoding and m.metric
    with pytest.raises(ValueError, match="unknown models"):
        by_name(["nope"])


def test_to_chw_normalisations() -> None:
    img = np.full((2, 3, 3), 255, np.uint8)
    assert to_chw([img], "pm1").shape == (1, 3, 2, 3) and to_chw([img], "pm1").max() == 1.0
    bgr = to_chw([np.array([[[10, 20, 30]]], np.uint8)], "bgr255")
    assert bgr[0, :, 0, 0].tolist() == [30.0, 20.0, 10.0]


class DigitsTask(Task):
    """Stand-in task: LeNet-5 on sklearn's digits; agreement = top-1 label agreement."""

    def inputs(self, rng, n):
        from onnxfold.models.digits import load_digits_split

        _, _, x, y = load_digits_split()
        idx = rng.choice(len(x), n, replace=False)
        return {"input": x[idx]}, [int(v) for v in y[idx]]

    def predict(self, path, feeds):
        from onnxfold.runtime.session import make_session

        session = make_session(str(path))
        return [int(i) for i in session.run(None, feeds)[0].argmax(-1)]

    def accuracy(self, ref, truth):
        return ClassTask.accuracy(self, ref, truth)


def test_sweep_end_to_end_on_a_stand_in_model(tmp_path: Path) -> None:
    from onnxfold.models import bundled_model

    spec = RealModel(
        "lenet5", "classification", "bundled", "0.0", "lenet5.onnx", "class", None, "-", "-", "-"
    )
    task = DigitsTask(spec, Path(bundled_model("lenet5.onnx")))
    methods = ["l2", "fold:none", "target:32"]
    rec = real.sweep_model(
        spec, task, methods, [0.0, 0.3, 0.6], keep=0.95, judge_samples=64, patience=0, log=lambda _: None
    )
    assert rec["original"]["accuracy"] > 0.8
    zero = [p for p in rec["points"] if p["sparsity"] == 0.0]
    assert len(zero) == 2
    for p in zero:  # sparsity 0 is exact: same task output, no parameter removed
        assert p["agreement"] == 1.0 and p["reduction"] == 0.0
    for m in ("l2", "fold:none"):
        pts = [p for p in rec["points"] if p["method"] == m]
        assert [p["sparsity"] for p in pts] == [0.0, 0.3, 0.6]
        assert pts[1]["reduction"] > 0.0 and pts[2]["reduction"] > pts[1]["reduction"]
        assert rec["kept"][m] == {
            k: real.largest_kept(pts, 0.95)[k] for k in ("sparsity", "reduction", "agreement")
        }
    if real._target_api():  # the targeted mode is not in this build: skipped with its reason
        assert "min_fidelity" in rec["skipped"]["target:32"]
    else:
        assert any(p["method"] == "target:32" for p in rec["points"])
    header, rows = real.table([rec], methods)
    assert header[-3:] == methods and rows[0][0] == "lenet5" and rows[0][4] == "64"
    assert real.markdown([rec], methods).count("\n") == 3
    real.plot([rec], methods, 0.95, tmp_path / "real.png")
    assert (tmp_path / "real.png").stat().st_size > 0
    json.dumps(rec)


def test_patience_stops_a_method_after_misses() -> None:
    from onnxfold.models import bundled_model

    spec = RealModel(
        "lenet5", "classification", "bundled", "0.0", "lenet5.onnx", "class", None, "-", "-", "-"
    )
    task = DigitsTask(spec, Path(bundled_model("lenet5.onnx")))
    rec = real.sweep_model(
        spec,
        task,
        ["l2"],
        [0.0, 0.9, 0.95, 0.97],
        keep=1.01,
        judge_samples=16,
        patience=2,
        log=lambda _: None,
    )
    assert len(rec["points"]) == 2 and rec["kept"] == {}


def test_bench_real_rejects_unknown_methods(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown methods"):
        real.bench_real(["ppocr-cls"], ["nope"], out_dir=tmp_path)
    with pytest.raises(ValueError, match="keep"):
        real.bench_real(["ppocr-cls"], ["l2"], keep=0.0, out_dir=tmp_path)
    with pytest.raises(ValueError, match="judge-samples"):
        real.bench_real(["ppocr-cls"], ["l2"], out_dir=tmp_path, judge_samples=0)


def test_cli_hands_bench_real_its_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    from onnxfold.cli.commands import main

    seen = {}
    monkeypatch.setattr(real, "bench_real", lambda *a: seen.setdefault("args", a))
    assert (
        main(
            [
                "bench",
                "real",
                "ppocr-cls",
                "--methods",
                "l2,fold:none",
                "--sparsities",
                "0.1",
                "--keep",
                "0.9",
                "--judge-samples",
                "256",
            ]
        )
        == 0
    )
    models, methods, sparsities, keep = seen["args"][:4]
    assert seen["args"][-1] == 256  # judge_samples
    assert models == ["ppocr-cls"] and methods == ["l2", "fold:none"] and sparsities == [0.1] and keep == 0.9
