"""A default-rounded search that keeps the model whole tries exact widths (onnxfold.search.exact_widths).

Trial 154: MediaPipe's face mesh has residual groups of 16, 16, 32 and 64 channels; rounded to 8 each
group's first step removes a quarter or half of it, every one missed, and the default search kept the
model whole, where at exact widths 12.9% fewer parameters kept its landmarks. The oracle here is a
group of 16 channels of which 4 duplicate others: 12 is its exact width, 8 (the only rounded one) is not.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

import onnxfold
from onnxfold.cli import main
from onnxfold.folding.cluster import DEFAULT_ROUND_TO

DISTINCT, COPIES = 12, 4  # 16 channels: 12 distinct, 4 that copy the first 4


def _duplicated(seed: int = 0) -> onnx.ModelProto:
    """x[N, 4, 8, 8] -> Conv 4->16 -> Relu -> Conv 16->8 (1x1): the hidden channels 12..15 are copies of
    0..3, their consumer columns random, so a fold to 12 channels is exact and any narrower one is not."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((DISTINCT, 4, 3, 3)).astype(np.float32)
    b1 = rng.standard_normal(DISTINCT).astype(np.float32) * 0.1
    w1 = np.concatenate([w1, w1[:COPIES]])
    b1 = np.concatenate([b1, b1[:COPIES]])
    w2 = rng.standard_normal((8, DISTINCT + COPIES, 1, 1)).astype(np.float32)
    graph = oh.make_graph(
        [
            oh.make_node("Conv", ["x", "w1", "b1"], ["h"], pads=[1, 1, 1, 1]),
            oh.make_node("Relu", ["h"], ["r"]),
            oh.make_node("Conv", ["r", "w2"], ["y"]),
        ],
        "dup16",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8, 8])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 8, 8])],
        [nh.from_array(v, k) for k, v in {"w1": w1, "b1": b1, "w2": w2}.items()],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_a_default_rounding_that_keeps_the_model_whole_gives_way_to_exact_widths(
    tmp_path: Path, caplog
) -> None:
    src, out = tmp_path / "dup.onnx", tmp_path / "out.onnx"
    onnx.save(_duplicated(), src)
    rng = np.random.default_rng(1)
    samples = rng.standard_normal((16, 4, 8, 8)).astype(np.float32)
    with caplog.at_level("WARNING", logger="onnxfold"):
        _, report = onnxfold.fold(str(src), output=str(out), min_fidelity=0.999, inputs=samples)
    # the second search says so before its second sensitivity pass (khmer-ocr-ocm's read as a repeat)
    assert any("searching again at exact widths" in r.getMessage() for r in caplog.records)
    search = report.search
    assert search.met and search.chosen.steps > 0
    (plan,) = [p for p in report.plans if p.status == "folded"]
    assert plan.k == DISTINCT  # the duplicates, and nothing else, merged
    assert search.unrounded.startswith(f"at multiples of {DEFAULT_ROUND_TO} the search kept the model whole")
    assert "a 16-channel group's first step removed 8 of them" in search.unrounded
    assert report.rounding_line() == f"widths: not rounded: {search.unrounded}"
    assert report.validation.latency is not None  # exact widths are timed against the original
    x = rng.standard_normal((3, 4, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(_run(out, x), _run(src, x), rtol=1e-4, atol=1e-4)  # §6.5's oracle

    # a rounding asked for is kept: the search keeps the model whole at 8, as asked
    _, asked = onnxfold.fold(
        str(src), output=str(tmp_path / "asked.onnx"), min_fidelity=0.999, inputs=samples, round_to=8
    )
    assert asked.search.unrounded == "" and not asked.search.chosen.steps


def test_the_cli_leaves_the_rounding_to_the_default_unless_round_to_is_given(tmp_path: Path) -> None:
    src = tmp_path / "dup.onnx"
    onnx.save(_duplicated(), src)
    samples = tmp_path / "x.npy"
    np.save(samples, np.random.default_rng(2).standard_normal((16, 4, 8, 8)).astype(np.float32))
    common = ["--inputs", str(samples), "--min-fidelity", "0.999", "--no-validate"]
    for flags, unrounded in (([], True), (["--round-to", "8"], False)):
        out, rep = tmp_path / f"o{len(flags)}.onnx", tmp_path / f"r{len(flags)}.json"
        assert main(["fold", str(src), "-o", str(out), "--report", str(rep), *common, *flags]) == 0
        data = json.loads(rep.read_text())
        assert ("unrounded" in data["search"]) is unrounded
        assert data["round_to"] == (1 if unrounded else 8)


def test_exact_widths_whose_best_met_the_target_under_min_gain_are_reported() -> None:
    """EasyOCR's recogniser: progress read "best meeting it 0.1%" at exact widths, and the report said
    "no group folds within the target" (trial 168). The rounded result is kept, and says why."""
    from types import SimpleNamespace

    from onnxfold.search.exact_widths import better_exact

    def result(steps: int, kept_whole: str = "") -> SimpleNamespace:
        chosen = SimpleNamespace(steps=steps)
        return SimpleNamespace(
            met=True,
            chosen=chosen,
            kept_whole=kept_whole,
            curves=[],
            candidates=[],
            target=0.95,
            input_params=0,
        )

    small = "the best candidate, 0.1% fewer parameters (0.1% fewer MACs) at fidelity 1.0000, removes less than --min-gain 0.01"
    rounded = result(0)
    kept = better_exact(rounded, result(0, small), 8, 100)
    assert kept is rounded
    assert kept.kept_whole == f"at multiples of 8 the model was kept whole; at exact widths {small}"
    plain = result(0)
    assert better_exact(plain, result(0), 8, 100).kept_whole == ""  # nothing met there either
    reason = "the best candidate, 2.1% fewer parameters ..."  # the rounded search's own, kept, not doubled
    kept = better_exact(result(0, reason), result(0, small), 8, 100)
    assert (
        kept.kept_whole
        == f"{reason}; a second search at exact widths (--round-to 1), not multiples of 8, kept it whole too"
    )


def test_a_second_search_that_kept_the_model_whole_too_says_what_it_measured() -> None:
    """A skl2onnx MLP regressor at --min-fidelity 0.9999: the report named the rounded search's 12.1%
    candidate, an 8-channel step, and nothing of the exact widths' search it had announced (trial 185)."""
    from types import SimpleNamespace

    from onnxfold.runtime.fidelity import OutputFidelity
    from onnxfold.search.exact_widths import better_exact
    from onnxfold.search.target import Candidate

    def cand(steps: int, reduction: float, r2: float) -> Candidate:
        return Candidate(steps, r2, 0, 0, reduction, reduction, [OutputFidelity("variable", "r2", r2)])

    rounded = SimpleNamespace(met=True, chosen=cand(0, 0.0, 1.0), kept_whole="", curves=[], input_params=0)
    tried = [cand(0, 0.0, 1.0), cand(1, 0.015, 0.9996), cand(3, 0.045, 0.9990)]
    exact = SimpleNamespace(
        met=True, chosen=tried[0], kept_whole="", curves=[], candidates=tried, target=0.9999, input_params=0
    )
    kept = better_exact(rounded, exact, 8, 100)
    assert kept is rounded and kept.exact_missed == (
        "at exact widths (--round-to 1) too no fold kept the target: the smallest measured, 1.5% fewer "
        "parameters, missed it: variable r2 0.9996"
    )
