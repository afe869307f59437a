"""Duplicate oracles whose consumer splits a weight unevenly (w·a and w·(1 − a), a anywhere, one copy's
column zero) and whose copies an exporter rounded an ulp apart: the copies compute the same
activation, so folding them back is exact whatever the split (a Keras/tf2onnx oracle with a outside
[0.25, 0.75] folded at 0.10–0.90 relative error, its copies paired by distance)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from harness import rel_err, run_ort
from onnx import TensorProto, helper, numpy_helper

import onnxfold

K, D_IN, D_OUT = 6, 5, 4  # compact width; input and output widths


def _model() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """x → MatMul W1 → Add b → Relu → MatMul W2 with each of K hidden channels twice at shuffled
    positions, W2's rows split by a ∈ {−0.5, 0, 1, 1.5, 0.3, 2}, and one copy's bias an ulp off."""
    rng = np.random.default_rng(8)
    compact = {
        "W1": rng.standard_normal((D_IN, K)).astype(np.float32),
        "b": rng.standard_normal(K).astype(np.float32),
        "W2": rng.standard_normal((K, D_OUT)).astype(np.float32),
    }
    where = rng.permutation(np.r_[0:K, 0:K])
    first = np.array([np.flatnonzero(where == c)[0] for c in range(K)])
    share = np.array([-0.5, 0.0, 1.0, 1.5, 0.3, 2.0])
    split = np.where(np.isin(np.arange(2 * K), first), share[where], 1 - share[where])
    bias = compact["b"][where].copy()
    second = np.flatnonzero(~np.isin(np.arange(2 * K), first))[0]
    bias[second] = np.nextafter(bias[second], np.float32(np.inf))  # an exporter's rounding
    wide = {
        "W1": compact["W1"][:, where],
        "b": bias,
        "W2": (compact["W2"][where] * split[:, None]).astype(np.float32),
    }
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W1"], ["h"], name="fc1"),
            helper.make_node("Add", ["h", "b"], ["a"], name="bias"),
            helper.make_node("Relu", ["a"], ["r"], name="relu"),
            helper.make_node("MatMul", ["r", "W2"], ["y"], name="fc2"),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", D_IN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", D_OUT])],
        [numpy_helper.from_array(v, k) for k, v in wide.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), compact


@pytest.mark.parametrize("method", ["fold", "auto"])
def test_copies_fold_back_exactly_whatever_their_consumer_split(tmp_path: Path, method: str) -> None:
    model, compact = _model()
    src, out = tmp_path / "m.onnx", tmp_path / "f.onnx"
    onnx.save(model, src)
    onnxfold.fold(src, 0.5, out, method=method, repair="none", round_to=1, validate=False)
    x = np.random.default_rng(2).standard_normal((16, D_IN)).astype(np.float32)
    ref = np.maximum(x @ compact["W1"] + compact["b"], 0) @ compact["W2"]
    assert rel_err(run_ort(onnx.load(str(out)), {"x": x})[0], ref) < 1e-5
