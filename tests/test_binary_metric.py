"""One Sigmoid probability per sample is a binary classifier: ``auto`` counts its decisions at 0.5
(guarded by r2 on given samples), as it counts a classifier's argmaxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from harness import Net, run_ort

import onnxfold
from onnxfold.runtime.exercised import bounded_by
from onnxfold.runtime.fidelity import OutputFidelity, counted, fidelity_value, output_metrics
from onnxfold.runtime.resample import low_value


def _matcher(seed: int = 0) -> onnx.ModelProto:
    """x [N, 16] -> Relu(x W1 + b1) [N, 32] -> Sigmoid(h w2 + b2) [N, 1]: a same-or-not score."""
    rng = np.random.default_rng(seed)
    net = Net(
        {
            "W1": (rng.standard_normal((16, 32)) / 4).astype(np.float32),
            "b1": (rng.standard_normal(32) * 0.1).astype(np.float32),
            "w2": (rng.standard_normal((32, 1)) / 3).astype(np.float32),
            "b2": np.zeros(1, np.float32),
        }
    )
    h = net("Relu", net("Add", net("MatMul", net.input("x", ["N", 16]), "W1", name="mm1"), "b1"))
    return net.model(net("Sigmoid", net("Add", net("MatMul", h, "w2", name="mm2"), "b2")))


def test_binary_counts_decisions_at_one_half() -> None:
    ref = np.array([[0.9], [0.55], [0.45], [0.1]])
    near = np.array([[0.88], [0.49], [0.46], [0.12]])  # one decision flipped by a small change
    assert fidelity_value("binary", ref, near) == 0.75
    assert fidelity_value("r2", ref, near) > 0.98  # r2 hardly sees it
    assert counted("binary", ref, 4) == 4 and counted("binary+r2", ref, 4) == 4
    assert counted("binary", np.zeros((4, 3)), 4) is None  # several values per sample: no count


def test_auto_takes_binary_for_a_sigmoid_score_that_decides_both_ways() -> None:
    model = _matcher()
    (name,) = [o.name for o in model.graph.output]
    bounds = bounded_by(model)
    assert bounds == {name: "Sigmoid"}
    both = {name: np.array([[0.2], [0.7], [0.9], [0.4]], np.float32)}
    assert output_metrics(both, bounds=bounds, samples=4) == {name: "binary+r2"}
    assert output_metrics(both, bounds=bounds, samples=4, guarded=False) == {name: "binary"}
    one_way = {name: np.array([[0.996], [0.998], [0.999], [0.997]], np.float32)}  # CapSpot on noise
    assert output_metrics(one_way, bounds=bounds, samples=4) == {name: "r2"}
    assert output_metrics(both, samples=4) == {name: "r2"}  # no Sigmoid known: a plain regression


def test_a_search_on_given_samples_keeps_the_decisions(tmp_path: Path) -> None:
    model = _matcher()
    x = np.random.default_rng(1).standard_normal((64, 16)).astype(np.float32)
    _, report = onnxfold.fold(model, output=tmp_path / "o.onnx", inputs={"x": x}, min_fidelity=0.95)
    search = report.search
    assert set(search.metrics.values()) == {"binary+r2"}
    binary = next(o for o in search.chosen.outputs if o.metric == "binary")
    assert binary.samples == 64 and binary.meets(0.95)
    ref = run_ort(model, {"x": x})[0] > 0.5
    got = run_ort(onnx.load(tmp_path / "o.onnx"), {"x": x})[0] > 0.5
    kept = float(np.mean(ref == got))
    assert kept == binary.value
    assert 64 - round(kept * 64) <= OutputFidelity("o", "binary", kept, 64).allowed_misses(0.95)


def test_binary_and_mask_decide_logits_at_zero() -> None:
    """Logits that a Sigmoid after the model reads (BCEWithLogits heads, AttaCut's word boundaries)
    decide at 0, not 0.5; probabilities still at 0.5."""
    logits = np.array([[-2.0], [-0.1], [0.3], [3.0]])
    near = np.array([[-1.0], [0.1], [0.2], [2.0]])  # one decision flipped at 0, none at 0.5
    assert fidelity_value("binary", logits, near) == 0.75
    probs = 1 / (1 + np.exp(-logits))
    assert fidelity_value("binary", probs, 1 / (1 + np.exp(-near))) == 0.75  # the same decisions
    assert fidelity_value("binary", np.array([[0.3], [0.6]]), np.array([[0.1], [0.7]])) == 1.0  # at 0.5
    rng = np.random.default_rng(0)
    maps = rng.standard_normal((16, 1, 6, 6))  # logit maps: a region where > 0
    cand = maps + 0.3 * rng.standard_normal(maps.shape) * (np.arange(16) % 4 == 0)[:, None, None, None]
    inter = np.count_nonzero((maps > 0) & (cand > 0))
    union = np.count_nonzero((maps > 0) | (cand > 0))
    assert fidelity_value("mask", maps, cand) == inter / union
    prob_maps, prob_cand = 1 / (1 + np.exp(-maps)), 1 / (1 + np.exp(-cand))
    assert fidelity_value("mask", prob_maps, prob_cand) == inter / union
    # the bootstrap of a logit map reads it at 0 too: the same draws as its probabilities at 0.5
    assert low_value("mask", maps, cand, 16) == low_value("mask", prob_maps, prob_cand, 16)
