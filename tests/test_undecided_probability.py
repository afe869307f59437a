"""One Sigmoid probability per sample that random inputs leave on one side of 0.5 takes no decision.

Trial 158: skill-extractor's classifier reads unit-norm sentence embeddings; the data-free proxy's N(0, 1)
vectors (norm about 20) made it say "no" to all 32 (at most 0.12), and its search read "p_skill r2
1.0000" with a note that this "rests on a few samples (1 in 5 gives below 0.0000)", where the range test
(a tenth of [0, 1]) saw the output move. Its decisions were never taken, which the report now says.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from harness import Net

import onnxfold
from onnxfold.runtime.exercised import unexercised, unexercised_by_both
from onnxfold.search.evaluate import Evaluator


def _classifier(bias: float) -> onnx.ModelProto:
    """x [N, 8] -> Relu(MatMul 8->16) -> MatMul 16->1 + ``bias`` -> Sigmoid: a yes/no probability."""
    rng = np.random.default_rng(0)
    net = Net(
        {
            "W1": rng.standard_normal((8, 16)).astype(np.float32),
            "W2": (rng.standard_normal((16, 1)) * 0.3).astype(np.float32),
            "b": np.full(1, bias, np.float32),
        }
    )
    h = net("Relu", net("MatMul", net.input("x", ["N", 8]), "W1"))
    return net.model(net("Sigmoid", net("Add", net("MatMul", h, "W2"), "b")))


def test_a_probability_no_random_sample_lifts_past_one_half_is_unexercised() -> None:
    model = _classifier(-7.0)
    evaluator = Evaluator(model)
    (name,) = evaluator.metrics
    ref = evaluator.reference[name]
    assert ref.max() < 0.5 and ref.max() - ref.min() > 0.1  # no decision, yet more than a tenth of [0, 1]
    why = evaluator.unexercised[name]
    assert why.startswith("decided every sample one way (this Sigmoid output between ")
    assert why.endswith("below 0.5)")
    # a candidate still below 0.5 everywhere and near the original inside the Sigmoid keeps the verdict;
    # one that lifts a sample past it has taken a decision the original did not
    assert unexercised_by_both(name, ref, ref * 0.98, "Sigmoid", samples=len(ref)) == why
    lifted = ref.copy()
    lifted[0] = 0.7
    assert unexercised_by_both(name, ref, lifted, "Sigmoid", samples=len(ref)) is None
    # both ways, or too few samples to say: exercised
    both = Evaluator(_classifier(0.0))
    assert both.unexercised == {}
    few = np.array([[0.01], [0.05], [0.2], [0.3]], np.float32)  # 4 samples spread over 0.29: too few
    assert unexercised(name, few, "Sigmoid", samples=4) is None
    assert unexercised(name, np.tile(few, (2, 1)), "Sigmoid", samples=8).startswith("decided every sample")


def test_the_data_free_search_and_validation_say_the_proxy_took_no_decision(tmp_path: Path) -> None:
    src = tmp_path / "no.onnx"
    onnx.save(_classifier(-7.0), src)
    report = onnxfold.fold(str(src), output=str(tmp_path / "out.onnx"))[1]
    assert any(v.startswith("decided every sample one way") for v in report.search.unexercised.values())
    text = report.format()
    assert "the proxy decided every sample one way" in text
    assert "note: the random inputs exercise none of the outputs" in text
