"""A quantization that leaves most weights in float says so: onnxruntime's dynamic mode has no GRU
kernel, and NSNet2's two GRUs, 71% of its weights, stayed float32 with nothing said (the file came out
1.12x smaller than the fold alone)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from harness import scaled_mlp_proto
from onnx import TensorProto, helper, numpy_helper

import onnxfold
from onnxfold.passes import QuantizePass


def _gru(path: Path, hidden: int = 32) -> Path:
    """x [T, 1, 16] -> GRU (hidden 32) -> Squeeze -> MatMul [32, 8]: the GRU holds 83% of the weights."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((1, 3 * hidden, 16)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.standard_normal((1, 3 * hidden, hidden)).astype(np.float32), "R"),
        numpy_helper.from_array(rng.standard_normal((hidden, 8)).astype(np.float32), "out"),
        numpy_helper.from_array(np.array([1], np.int64), "axis"),
    ]
    graph = helper.make_graph(
        [
            helper.make_node("GRU", ["x", "W", "R"], ["y"], hidden_size=hidden),
            helper.make_node("Squeeze", ["y", "axis"], ["h"]),
            helper.make_node("MatMul", ["h", "out"], ["z"]),
        ],
        "gru",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 1, 16])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_quantization_that_leaves_a_gru_in_float_says_so(tmp_path: Path) -> None:
    src = _gru(tmp_path / "gru.onnx")
    _, report = onnxfold.run_pipeline(src, [QuantizePass(mode="dynamic")], tmp_path / "q.onnx")
    note = next(r for r in report.passes if r.name == "quantize").stats.get("note", "")
    gru = 3 * 32 * 16 + 3 * 32 * 32
    share = int(note.split("% of the weights stay float32")[0].split()[-1])
    assert abs(share - 100 * gru / (gru + 32 * 8)) < 1.5 and f"GRU {gru:,}" in note, note
    _, plain = onnxfold.run_pipeline(
        src, [QuantizePass(mode="dynamic", op_types=["MatMul"])], tmp_path / "m.onnx"
    )
    assert "stay float32" in next(r for r in plain.passes if r.name == "quantize").stats.get("note", "")


def test_static_quantization_reaches_the_tensors_behind_an_ml_scaler(tmp_path: Path) -> None:
    """Trial 185: static quantization of a skl2onnx MLP regressor left its 9 activations float
    ("onnxruntime's quantizer could not tell their type") and quantized none of its products: ONNX's
    inference cannot type a Scaler's output, and the quantizer's pre-processing dropped the Cast
    behind it. The types are now read from one run, and both MatMuls read quantized activations."""
    rng = np.random.default_rng(0)  # skl2onnx's MLP regressor: x [N, 6] -> Scaler -> Cast -> 16 -> 1
    w1, b1, w2 = (rng.standard_normal(s).astype(np.float32) for s in ((6, 16), (16,), (16, 1)))
    src = tmp_path / "mlp.onnx"
    onnx.save(scaled_mlp_proto(w1, b1, w2), str(src))
    samples = tmp_path / "x.npy"
    np.save(samples, np.random.default_rng(1).standard_normal((32, 6)).astype(np.float32))
    out = tmp_path / "q.onnx"
    _, report = onnxfold.run_pipeline(src, [QuantizePass(mode="static", calibration=str(samples))], out)
    note = str(next(r for r in report.passes if r.name == "quantize").stats.get("note", ""))
    assert "could not tell" not in note, note
    graph = onnx.load(str(out)).graph
    made = {o: n.op_type for n in graph.node for o in n.output}
    for node in (n for n in graph.node if n.op_type == "MatMul"):
        assert made.get(node.input[0]) == "DequantizeLinear", (node.name, made.get(node.input[0]))
