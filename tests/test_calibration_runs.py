"""Static quantization calibrates in runs whose intermediate tensors fit in memory.

A new user's trial: a nucleus segmenter on 1024×1024 microscope tiles (15.8 GMACs), static
quantization with 8 samples: 24.3 GB resident, and the process was killed by the kernel, without a
message; with 32 samples too. onnxruntime's calibration keeps every tensor of a run alive, so the
quantize pass cuts the samples into runs by the activations one sample takes
(:func:`onnxfold.runtime.calibration.fit_runs`): 6.9 GB with 32 samples, runs of 1. MinMax ranges
merge over runs, so the quantized model is the same either way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from harness import Net, rnd
from onnx import numpy_helper

import onnxfold
import onnxfold.runtime.calibration as calibration
from onnxfold.passes import QuantizePass
from onnxfold.report.stats import activation_bytes


def _cnn(path: Path) -> Path:
    rng = np.random.default_rng(0)
    net = Net({"w1": rnd(rng, 8, 3, 3, 3), "b1": rnd(rng, 8), "w2": rnd(rng, 4, 8, 3, 3)})
    h = net("Relu", net("Conv", net.input("x", ["N", 3, 16, 16]), "w1", "b1", pads=[1, 1, 1, 1]))
    onnx.save(
        net.model(net("Flatten", net("GlobalAveragePool", net("Conv", h, "w2", pads=[1, 1, 1, 1])))), path
    )
    return path


def test_activation_bytes_count_every_computed_tensor_of_one_sample(tmp_path: Path) -> None:
    model = onnx.load(str(_cnn(tmp_path / "cnn.onnx")))
    # conv 8×16×16, relu 8×16×16, conv 4×16×16, pool 4, flatten 4: floats of 4 bytes
    want = 4 * (2 * 8 * 16 * 16 + 4 * 16 * 16 + 4 + 4)
    assert activation_bytes(model, {"x": [1, 3, 16, 16]}) == want
    assert activation_bytes(model, {"x": [5, 3, 16, 16]}) == want  # per sample


def test_calibration_runs_fit_the_budget_and_quantize_alike(tmp_path: Path, monkeypatch) -> None:
    src = _cnn(tmp_path / "cnn.onnx")
    x = np.random.default_rng(1).standard_normal((8, 3, 16, 16)).astype(np.float32)
    whole = tmp_path / "whole.onnx"
    _, report = onnxfold.run_pipeline(src, [QuantizePass(mode="static", batch=8)], whole, inputs={"x": x})
    assert "calibration runs of" not in report.format()
    per_sample = activation_bytes(onnx.load(str(src)), {"x": [1, 3, 16, 16]})
    monkeypatch.setattr(calibration, "CALIBRATION_RUN_BYTES", 3 * per_sample)
    cut = tmp_path / "cut.onnx"
    _, report = onnxfold.run_pipeline(src, [QuantizePass(mode="static", batch=8)], cut, inputs={"x": x})
    assert "calibration runs of 3 samples, since one sample's activations take" in report.format()
    assert report.passes[0].stats["calibration_samples"] == 8
    a = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(whole)).graph.initializer}
    b = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(cut)).graph.initializer}
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)  # the same ranges


def test_onnxruntime_s_scratch_files_stay_out_of_the_user_s_folder(tmp_path: Path, monkeypatch) -> None:
    """onnxruntime writes ``sym_shape_infer_temp.onnx`` (and a ``<uuid>.data``) into the current
    folder where its symbolic shape inference is incomplete (a trial found them beside g2p-id's BERT
    after every quantize run): the pass runs it in its scratch folder."""
    import onnxruntime.quantization as ortq

    real_pre, real_dynamic = ortq.quant_pre_process, ortq.quantize_dynamic

    def pre(*args, **kwargs):
        Path("sym_shape_infer_temp.onnx").write_bytes(b"scratch")
        return real_pre(*args, **kwargs)

    def dynamic(*args, **kwargs):
        Path("scratch.data").write_bytes(b"scratch")
        return real_dynamic(*args, **kwargs)

    monkeypatch.setattr(ortq, "quant_pre_process", pre)
    monkeypatch.setattr(ortq, "quantize_dynamic", dynamic)
    src = _cnn(tmp_path / "cnn.onnx")
    user = tmp_path / "user"
    user.mkdir()
    monkeypatch.chdir(user)
    for mode in ("static", "dynamic"):
        onnxfold.run_pipeline(src, [QuantizePass(mode=mode)], tmp_path / f"{mode}.onnx")
        assert (tmp_path / f"{mode}.onnx").exists()
    assert sorted(p.name for p in user.iterdir()) == []


def test_a_quantized_model_answering_a_constant_is_called_out(tmp_path: Path) -> None:
    """fastmrz's U-Net, static INT8: 0.1098 at every pixel, its task lost, and only a low cosine said
    anything. The pass compares the quantized model's outputs with the float model's on a feed."""
    from onnxfold.runtime.calibration import collapsed_outputs

    src = _cnn(tmp_path / "cnn.onnx")
    flat = onnx.load(str(src))
    for t in flat.graph.initializer:  # the same graph, its last weights zero: a constant output
        if t.name == "w2":
            t.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(t)), "w2"))
    onnx.save(flat, str(tmp_path / "flat.onnx"))
    feed = {"x": np.random.default_rng(2).standard_normal((4, 3, 16, 16)).astype(np.float32)}
    assert collapsed_outputs(src, src, feed) == ""
    said = collapsed_outputs(src, tmp_path / "flat.onnx", feed)
    assert "answers a constant for" in said and "(0 everywhere)" in said and "mode=dynamic" in said


def test_the_quantize_pass_warns_where_its_result_answers_a_constant(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    """The pass itself runs the check (a commit once added the check without its call): here the
    quantizer's result is replaced by a model whose output is constant."""
    import logging

    import onnxruntime.quantization as ortq

    src = _cnn(tmp_path / "cnn.onnx")
    flat = onnx.load(str(src))
    for t in flat.graph.initializer:
        if t.name == "w2":
            t.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(t)), "w2"))

    def constant(model_input, model_output, **kwargs):
        onnx.save(flat, str(model_output))

    monkeypatch.setattr(ortq, "quantize_dynamic", constant)
    x = np.random.default_rng(3).standard_normal((4, 3, 16, 16)).astype(np.float32)
    with caplog.at_level(logging.WARNING):
        _, report = onnxfold.run_pipeline(
            src, [QuantizePass(mode="dynamic")], tmp_path / "q.onnx", inputs={"x": x}
        )
    assert "answers a constant for" in report.passes[0].stats.get("note", "")
    assert any("answers a constant for" in r.getMessage() for r in caplog.records)


def _scores(path: Path) -> Path:
    """x [N, 4] -> MatMul [4, 3] + bias -> Sigmoid: probabilities read at 0.5 (a heatmap)."""
    rng = np.random.default_rng(4)
    net = Net({"w": rnd(rng, 4, 3), "b": np.array([-8.0, -8.0, -8.0], np.float32)})
    onnx.save(net.model(net("Sigmoid", net("Add", net("MatMul", net.input("x", ["N", 4]), "w"), "b"))), path)
    return path


def test_a_probability_calibrated_below_one_half_still_reaches_it(tmp_path: Path, caplog) -> None:
    """CenterFace calibrated on random images: its heatmap's quantized logits' range ended below 0,
    and the static INT8 model found none of 194 faces while validation on random inputs read r2 0.91.
    The logits a probability output reads now stay float, so calibration on quiet inputs no longer
    caps the probability."""
    import logging

    from onnxfold.runtime.session import make_session as session

    src = _scores(tmp_path / "s.onnx")
    pool = (3.0 * np.random.default_rng(5).standard_normal((4000, 4))).astype(np.float32)
    top = session(str(src)).run(None, {"x": pool})[0].max(axis=1)
    quiet = pool[np.argsort(top)[:32]]  # every probability below 0.5: logits below 0 alone
    lo, hi = quiet.min(), quiet.max()
    loud = pool[(top > 0.9) & (pool.min(axis=1) >= lo) & (pool.max(axis=1) <= hi)]  # within x's range
    assert top[np.argsort(top)[:32]].max() < 0.5 and len(loud) >= 4
    with caplog.at_level(logging.WARNING):
        _, report = onnxfold.run_pipeline(
            src, [QuantizePass(mode="static")], tmp_path / "q.onnx", inputs={"x": quiet}
        )
    assert "cannot output a probability" not in report.passes[0].stats.get("note", "")
    got = session(str(tmp_path / "q.onnx")).run(None, {"x": loud})[0].max(axis=1)
    assert (got > 0.5).all(), got  # at most 0.5 where the logits' 8-bit range ends at 0


def test_a_float_sigmoid_after_logits_quantized_to_at_most_0_is_called_out(tmp_path: Path) -> None:
    """Where a QDQ pair still caps the logits (a model quantized elsewhere), the check names it."""
    from onnx import TensorProto, helper

    def qdq(zero: int) -> Path:
        graph = helper.make_graph(
            [
                helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"]),
                helper.make_node("Sigmoid", ["dq"], ["p"]),
            ],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
            [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 3])],
            [
                numpy_helper.from_array(np.array(0.05, np.float32), "s"),
                numpy_helper.from_array(np.array(zero, np.uint8), "z"),
            ],
        )
        path = tmp_path / f"q{zero}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
        return path

    said = calibration.clipped_outputs(qdq(255), "pipeline inputs")  # the range [-12.75, 0]
    assert "cannot output a probability of 0.5 for p (a Sigmoid's, at most 0.5)" in said, said
    assert calibration.clipped_outputs(qdq(128), "pipeline inputs") == ""  # up to 6.35: 0.998
