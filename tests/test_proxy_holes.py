"""NaN from the original on the data-free proxy's random inputs is named, with a hint at
``--input-value``: a terrain diffusion model takes the log of its noise level ``sigma``; drawn from
N(0, 1), half the proxy's samples came out NaN, and the search printed fidelity 1.0000 on the rest
without a word (its real sigma is 80)."""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

from onnxfold.search.evaluate import Evaluator


def _noise_level_model() -> onnx.ModelProto:
    """x [B, 4] → MatMul 4×8 → × log(sigma) per sample → Relu → MatMul 8×3 → y."""
    rng = np.random.default_rng(0)
    graph = oh.make_graph(
        [
            oh.make_node("Log", ["sigma"], ["ls"]),
            oh.make_node("Unsqueeze", ["ls", "axis1"], ["ls1"]),
            oh.make_node("MatMul", ["x", "w1"], ["h"]),
            oh.make_node("Mul", ["h", "ls1"], ["hs"]),
            oh.make_node("Relu", ["hs"], ["r"]),
            oh.make_node("MatMul", ["r", "w2"], ["y"]),
        ],
        "g",
        [
            oh.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 4]),
            oh.make_tensor_value_info("sigma", TensorProto.FLOAT, ["B"]),
        ],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 3])],
        [
            nh.from_array(rng.standard_normal((4, 8)).astype(np.float32), "w1"),
            nh.from_array(rng.standard_normal((8, 3)).astype(np.float32), "w2"),
            nh.from_array(np.array([1], np.int64), "axis1"),
        ],
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


def test_nan_on_random_inputs_names_the_per_sample_input_to_set(caplog) -> None:
    model = _noise_level_model()
    with caplog.at_level(logging.WARNING):
        ev = Evaluator(model, metric="r2")
    assert ev.proxy
    bad = int((~np.isfinite(ev.reference["y"])).any(axis=1).sum())
    assert 0 < bad < ev.samples  # the premise: N(0, 1) draws of sigma, some negative
    lines = [r.getMessage() for r in caplog.records if "NaN or inf" in r.getMessage()]
    assert len(lines) == 1, lines
    assert f"the original gives NaN or inf in y on {bad} of {ev.samples} samples" in lines[0]
    assert "--input-value sigma=V sets the value it reads" in lines[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # the value it reads: no NaN, no word
        Evaluator(
            model,
            metric="r2",
            inputs={"x": np.ones((8, 4), np.float32), "sigma": np.full(8, 80.0, np.float32)},
        )
    assert not [r for r in caplog.records if "NaN or inf" in r.getMessage()]


def test_a_proxy_of_random_inputs_is_not_called_synthesised_where_deepinversion_was_too_costly() -> None:
    """Trial 186: "4 random samples ... (a BN model's, not DeepInversion's: ... would cost 297.3T MACs)"
    was followed by "a data-free proxy on inputs synthesised from its BN statistics"."""
    from onnxfold.search.target import Candidate, SearchResult

    def text(inputs: str) -> str:
        chosen = Candidate(0, 1.0, 10, 10, 0.0, 0.0)
        result = SearchResult("min_fidelity", 0.99, chosen, True, [chosen], [], {}, inputs, True, {}, 1.0)
        return result.summary()

    costly = "data-free proxy: 4 random samples (a BN model's, not DeepInversion's: DeepInversion samples would cost 297.3T MACs)"
    assert "data-free proxy on random inputs, not a measure" in text(costly)
    synthesised = "data-free proxy: data-free: 64 DeepInversion samples from the BN statistics"
    assert "data-free proxy on inputs synthesised from its BN statistics" in text(synthesised)


def test_a_proxy_of_a_model_without_bn_is_not_called_a_bn_models() -> None:
    """Trial 188: mandsot's Transformer read "32 random samples ... (a BN model's, not DeepInversion's: no
    BatchNormalization nodes ...)"."""
    import numpy as np

    from onnxfold.api import as_model
    from onnxfold.folding.samples import NO_BN
    from onnxfold.models import bundled_model
    from onnxfold.search import Evaluator

    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)
    evaluator = Evaluator(as_model(str(bundled_model("lenet5.onnx"))), {"input": x}, "top1")
    evaluator.proxy, evaluator.unsynthesised = True, NO_BN
    text = evaluator.describe()
    assert f"({NO_BN})" in text and "a BN model's" not in text, text
    evaluator.unsynthesised = "DeepInversion optimises a float input; x is uint8"
    assert "(a BN model's, not DeepInversion's: DeepInversion optimises" in evaluator.describe()
