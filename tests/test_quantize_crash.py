"""A quantized model that onnxruntime's default session cannot run is not delivered as it is.

A new user's trial: brainmaze-eeg-models' spindle detector, folded then quantized static, made
onnxruntime crash (SIGSEGV in its fused QDQ Add/Mul kernels with several threads); the crash came in
the validate pass, in process, and took the whole pipeline with it: no output, no message. The
quantize pass now runs its result once in a child process (:mod:`onnxfold.runtime.probe`); where that
crashes it requantizes leaving one op type in float32 at a time, and says which.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from test_deliver import ZOO, digits, predict  # noqa: F401 - the fixture

import onnxfold
import onnxfold.runtime.probe as probe
from onnxfold.passes import QuantizePass
from onnxfold.pipeline.manager import PassError


def test_the_probe_says_how_a_child_run_ends(tmp_path: Path, monkeypatch) -> None:
    src = ZOO / "lenet5.onnx"
    x = np.zeros((2, 1, 8, 8), np.float32)
    assert probe.crash(src, {"input": x}) is None
    failed = probe.crash(src, {"input": np.zeros((2, 3), np.float32)})
    assert failed is not None and failed.startswith("failed: ") and "input" in failed
    monkeypatch.setattr(probe, "_PROBE", "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    assert probe.crash(src, {"input": x}) == "crashed (SIGSEGV)"


def _quantized_types(path: Path) -> set[str]:
    proto = onnx.load(str(path))
    dequantized = {o for n in proto.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    skip = {"QuantizeLinear", "DequantizeLinear"}
    return {n.op_type for n in proto.graph.node if n.op_type not in skip and set(n.input) & dequantized}


def test_a_crashing_op_type_is_left_in_float32(digits, tmp_path: Path, monkeypatch, caplog) -> None:  # noqa: F811
    """A stand-in for onnxruntime's crash: any model whose Gemm reads a dequantized tensor. LeNet-5
    quantizes Conv and Gemm; the result keeps Conv quantized and Gemm in float32, and says so."""
    x_train, _, x_test, _ = digits
    src, out = ZOO / "lenet5.onnx", tmp_path / "q.onnx"
    real = probe.crash
    probed: list[set[str]] = []

    def crashes_on_gemm(path, feed, seconds=probe.PROBE_SECONDS):
        probed.append(_quantized_types(Path(path)))
        return "crashed (SIGSEGV)" if "Gemm" in probed[-1] else real(path, feed, seconds)

    monkeypatch.setattr(probe, "crash", crashes_on_gemm)
    with caplog.at_level(logging.WARNING):
        _, report = onnxfold.run_pipeline(
            src, [QuantizePass(mode="static")], out, inputs={"input": x_train[:64]}
        )
    assert probed[0] >= {"Conv", "Gemm"} and len(probed) >= 2
    assert "Conv" in _quantized_types(out) and "Gemm" not in _quantized_types(out)
    note = report.passes[0].stats["note"]
    assert "crashed (SIGSEGV)" in note and "Gemm node(s) are left in float32" in note
    assert any("left in float32" in r.getMessage() for r in caplog.records)
    ref, got = predict(src, x_test), predict(out, x_test)
    assert float(np.mean(ref.argmax(1) == got.argmax(1))) >= 0.97


def test_a_crash_no_single_op_type_explains_stops_the_pipeline(digits, tmp_path: Path, monkeypatch) -> None:  # noqa: F811
    x_train = digits[0]
    monkeypatch.setattr(probe, "crash", lambda path, feed, seconds=0: "crashed (SIGSEGV)")
    out = tmp_path / "q.onnx"
    with pytest.raises(PassError, match="crashed \\(SIGSEGV\\) running the quantized model"):
        onnxfold.run_pipeline(
            ZOO / "lenet5.onnx", [QuantizePass(mode="static")], out, inputs={"input": x_train[:64]}
        )
    assert not out.exists()


def test_the_probe_keeps_the_cause_at_the_end_of_a_long_error(tmp_path: Path, monkeypatch) -> None:
    """onnxruntime names the cause last ("... In Node, (...) : Error Unrecognized attribute: axis for
    operator DequantizeLinear"); a head cut at 300 characters lost it."""
    line = "onnxruntime...InvalidGraph: INVALID_GRAPH : " + "x" * 400 + " Unrecognized attribute: axis"
    monkeypatch.setattr(probe, "_PROBE", f"import sys\nsys.exit({line!r})\n")
    failed = probe.crash(ZOO / "lenet5.onnx", {"input": np.zeros((2, 1, 8, 8), np.float32)})
    assert failed.startswith("failed: onnxruntime...InvalidGraph") and failed.endswith(
        "Unrecognized attribute: axis"
    )
    assert len(failed) < 320


def test_a_model_below_opset_13_is_quantized_per_channel_at_opset_13(tmp_path: Path) -> None:
    """keras2onnx's MTCNN (opset 12): per-channel scales are DequantizeLinear's axis, which opset 13
    brings; onnxruntime refused the quantized graph. The model is converted to opset 13 first."""
    from harness import Net, rnd

    rng = np.random.default_rng(0)
    net = Net({"w1": rnd(rng, 8, 3, 3, 3), "b1": rnd(rng, 8), "w2": rnd(rng, 4, 8, 3, 3)}, opset=12)
    h = net("Relu", net("Conv", net.input("x", ["N", 3, 8, 8]), "w1", "b1", pads=[1, 1, 1, 1]))
    src, out = tmp_path / "cnn12.onnx", tmp_path / "q.onnx"
    onnx.save(
        net.model(net("Flatten", net("GlobalAveragePool", net("Conv", h, "w2", pads=[1, 1, 1, 1])))), src
    )
    x = rng.standard_normal((64, 3, 8, 8)).astype(np.float32)
    _, report = onnxfold.run_pipeline(src, [QuantizePass(mode="static")], out, inputs={"x": x})
    assert report.passes[0].stats["opset"].startswith("13")
    assert "quantize: the model was converted from opset 12 to 13: per-channel scales" in report.format()
    proto = onnx.load(str(out))
    assert {o.domain: o.version for o in proto.opset_import}.get("", 0) >= 13
    axes = [
        a
        for n in proto.graph.node
        if n.op_type == "DequantizeLinear"
        for a in n.attribute
        if a.name == "axis"
    ]
    assert axes  # per-channel scales
    assert "Conv" in _quantized_types(out)
    ref, got = predict(src, x).ravel(), predict(out, x).ravel()
    assert float(ref @ got / (np.linalg.norm(ref) * np.linalg.norm(got))) > 0.99


def test_a_layernorm_over_two_axes_does_not_stop_static_quantization(tmp_path: Path) -> None:
    """PESTO's pitch CNN normalises [N, 1, 219] over its last two axes with a [1, 219] scale and bias:
    onnxruntime 1.32's bias-scale adjustment read each row of that bias as one value and raised "The
    truth value of an array ... is ambiguous", which stopped the pass. It is turned off there."""
    from onnx import TensorProto
    from onnx import helper as oh
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(0)
    weights = {
        "s": 1 + 0.1 * rng.standard_normal((1, 219)),
        "b": 0.1 * rng.standard_normal((1, 219)),
        "w1": rng.standard_normal((8, 1, 3)),
        "b1": rng.standard_normal(8),
        "w2": rng.standard_normal((4, 8, 3)) * 0.3,
        "b2": rng.standard_normal(4),
    }
    graph = oh.make_graph(
        [
            oh.make_node("LayerNormalization", ["x", "s", "b"], ["n"], axis=-2),
            oh.make_node("Conv", ["n", "w1", "b1"], ["h"], kernel_shape=[3], pads=[1, 1]),
            oh.make_node("Relu", ["h"], ["r"]),
            oh.make_node("Conv", ["r", "w2", "b2"], ["y"], kernel_shape=[3], pads=[1, 1]),
        ],
        "ln",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 219])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 219])],
        [nh.from_array(v.astype(np.float32), k) for k, v in weights.items()],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = 9
    src, out = tmp_path / "ln.onnx", tmp_path / "q.onnx"
    onnx.save(model, str(src))
    x = rng.standard_normal((16, 1, 219)).astype(np.float32)
    onnxfold.run_pipeline(src, [QuantizePass(mode="static")], out, inputs={"x": x})
    assert "Conv" in _quantized_types(out)
    import onnxruntime as ort

    got = ort.InferenceSession(str(out)).run(None, {"x": x})[0]
    want = ort.InferenceSession(str(src)).run(None, {"x": x})[0]
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.99  # computed here: the INT8 model works
