"""Static quantization of models a new user's trial (swift-f0, a pitch tracker) could not quantize:

- its audio input fixes a batch of 1 beside two scalar inputs (fmin, fmax). The fold read the folder
  of 32 samples, but calibration refused it ("inputs must hold the same, non-zero number of samples,
  got [1, 32]": a scalar counted as one sample). Scalars hold no samples; calibration runs one sample
  at a time, each with the scalars.
- a Softmax in float64: onnxruntime's quantizer failed inside ("Only an existing tensor can be
  modified"). Nodes on float64 tensors are left as they are, and the note says so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from harness import Net, rnd

import onnxfold
from onnxfold.passes import QuantizePass
from onnxfold.report.comparison import params_growth
from onnxfold.report.stats import ModelStats
from onnxfold.runtime.sample_files import load_inputs
from onnxfold.runtime.session import make_session


def _tracker(path: Path, double: bool = False) -> Path:
    rng = np.random.default_rng(0)
    net = Net({"w1": rnd(rng, 16, 32), "w2": rnd(rng, 32, 8)})
    x, gain = net.input("x", [1, 16]), net.input("gain", [])
    h = net("Relu", net("MatMul", net("Mul", x, gain), "w1"))
    y = net("MatMul", h, "w2")
    if double:
        y = net("Softmax", net("Cast", y, to=onnx.TensorProto.DOUBLE), axis=-1)
        y = net("Cast", y, to=onnx.TensorProto.FLOAT)
    onnx.save(net.model(y), str(path))
    return path


def _samples(n: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"x": rng.standard_normal((n, 16)).astype(np.float32), "gain": np.array(0.5, np.float32)}


def test_a_batch_of_one_beside_scalars_calibrates_sample_by_sample(tmp_path: Path) -> None:
    src = _tracker(tmp_path / "tracker.onnx")
    out = tmp_path / "q.onnx"
    _, report = onnxfold.run_pipeline(src, [QuantizePass(mode="static")], out, inputs=_samples())
    assert report.passes[0].stats["calibration_samples"] == 8
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "QuantizeLinear" in ops
    feed = {"x": _samples()["x"][:1], "gain": np.array(0.5, np.float32)}
    got = make_session(str(out)).run(None, feed)[0]
    want = make_session(str(src)).run(None, feed)[0]
    assert got.shape == want.shape and np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.9


def test_float64_nodes_are_left_in_float64(tmp_path: Path) -> None:
    src = _tracker(tmp_path / "double.onnx", double=True)
    out = tmp_path / "q.onnx"
    _, report = onnxfold.run_pipeline(src, [QuantizePass(mode="static")], out, inputs=_samples())
    stats = report.passes[0].stats
    assert stats["float64_nodes_left"] >= 1 and "computing in float64 stay as they are" in stats["note"]
    proto = onnx.load(str(out))
    assert any(n.op_type == "Softmax" for n in proto.graph.node)
    assert any(n.op_type == "QuantizeLinear" for n in proto.graph.node)


def test_scales_and_zero_points_are_weight_bytes_not_parameters(tmp_path: Path) -> None:
    # per-channel scales read as growth: a wake-word featurizer's "params 811K -> 830K +2.4%"
    src = _tracker(tmp_path / "tracker.onnx")
    _, report = onnxfold.run_pipeline(
        src, [QuantizePass(mode="static")], tmp_path / "q.onnx", inputs=_samples()
    )
    proto = onnx.load(str(tmp_path / "q.onnx"))
    scales = {i for n in proto.graph.node if n.op_type == "DequantizeLinear" for i in n.input[1:]}
    assert len(scales & {t.name for t in proto.graph.initializer}) >= 4  # per-channel, per weight
    assert report.after.params == report.before.params == 16 * 32 + 32 * 8
    assert report.after.weight_bytes < 0.5 * report.before.weight_bytes  # they count as bytes
    assert params_growth(report.before, report.after, quantized=True) is None


def test_a_quantized_model_that_grew_says_why() -> None:
    before = ModelStats(params=100, weight_bytes=400, tensor_params={"w": 100})
    smaller = ModelStats(params=120, weight_bytes=140, tensor_params={"w_quantized": 100, "s": 20})
    grown = ModelStats(params=500, weight_bytes=900, tensor_params={"w_quantized": 100, "basis": 400})
    assert "the weight bytes show the saving" in params_growth(before, smaller, quantized=True)
    # the mode where known: a static QDQ model read "in dynamic mode ... these count" (trial 161)
    assert "in dynamic mode" in params_growth(before, smaller, quantized="dynamic")
    static = params_growth(before, smaller, quantized="static")
    assert "in dynamic mode" not in static and "pre-processing" in static and "8-bit saving" in static
    text = params_growth(before, grown, quantized=True)
    assert "weight bytes grew too" in text and "preprocess=false" in text


def test_a_task_lost_to_quantization_is_advised_on_quantization() -> None:
    """Trial 64: static INT8 alone broke a digit reader (r2 0.27) and the warning advised a search for
    the largest compression; after a fold and a quantization it cannot tell which pass cost it."""
    from types import SimpleNamespace

    from onnxfold.report.fold_report import task_warning

    out = SimpleNamespace(
        name="output",
        fidelity=0.27,
        fidelity_metric="r2",
        unexercised=None,
        top1_agreement=None,
        counted=None,
    )
    validation = SimpleNamespace(outputs=[out], seed=None)
    alone = task_warning(validation, folded=False, quantized="static")
    assert "quantize:mode=dynamic" in alone and "--min-fidelity" not in alone
    dynamic = task_warning(validation, folded=False, quantized="dynamic")  # trial 65: it advised itself
    assert "mode=dynamic" not in dynamic and "float32 ops" in dynamic
    both = task_warning(validation, folded=True, quantized="static")
    assert "--min-fidelity" in both and "a fold alone shows which pass costs it" in both
    assert "quantize" not in task_warning(validation, folded=True)


def test_a_quantized_model_of_another_opset_drops_canonicalize_s_recipes() -> None:
    """U²-Net-P (opset 11): the quantize pass converts it to opset 13 for per-channel scales, and the
    shape arithmetic canonicalize had made constant was restored on save as opset-11 Unsqueeze nodes
    (axes an attribute) in the opset-13 graph: "Unsqueeze ... has input size 1", nothing written
    (checked on the model itself). A quantized model of the same opset keeps them."""
    from onnxfold.ir.model import model_from_proto
    from onnxfold.passes.quantize import replace_model_contents

    net = Net({"w": rnd(np.random.default_rng(3), 4, 3, 1, 1)}, opset=11)
    proto = net.model(net("Conv", net.input("x", ["N", 3, 8, 8]), "w"))
    for quantized_opset, kept in ((13, False), (11, True)):
        model, new = model_from_proto(proto), model_from_proto(proto)
        model.computed_constants["recipe"] = object()
        new.opset_imports = [("", quantized_opset)]
        replace_model_contents(model, new)
        assert ("recipe" in model.computed_constants) == kept


def test_a_preprocessed_model_onnxruntime_cannot_load_is_quantized_as_it_is(
    tmp_path: Path, monkeypatch
) -> None:
    """quant_pre_process wrote a model of a canonicalized ALBERT tagger that onnxruntime failed to load
    ("Attempt to replace the existing tensor"); the pass then stopped. It quantizes the model as it is."""
    import onnxruntime.quantization as ortq

    def broken(src, dst, *args, **kwargs) -> None:
        Path(dst).write_bytes(b"not a model onnxruntime loads")

    monkeypatch.setattr(ortq, "quant_pre_process", broken)
    src = _tracker(tmp_path / "tracker.onnx")
    out = tmp_path / "q.onnx"
    _, report = onnxfold.run_pipeline(src, [QuantizePass(mode="dynamic")], out, inputs=_samples())
    assert report.passes[0].stats["preprocess"] == "failed"
    assert any(n.op_type == "MatMulInteger" for n in onnx.load(str(out)).graph.node)


def test_random_calibration_draws_ids_inside_the_tables_they_index(tmp_path: Path) -> None:
    """An ALBERT tagger's token types (input.3, a table of 2 rows) were drawn in [0, 4) without --inputs:
    onnxruntime failed on "idx=3 must be within [-2,1]", and the error advised op_types/exclude."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Gather", ["E", "input.1"], ["e"]),
        helper.make_node("Gather", ["TT", "input.3"], ["t"]),
        helper.make_node("Add", ["e", "t"], ["h"]),
        helper.make_node("MatMul", ["h", "W"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(rng.standard_normal((50, 16)).astype(np.float32), "E"),
        numpy_helper.from_array(rng.standard_normal((2, 16)).astype(np.float32), "TT"),
        numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32), "W"),
    ]
    ids = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in ("input.1", "input.3")
    ]
    out = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 16])]
    src = tmp_path / "tokens.onnx"
    graph = helper.make_graph(nodes, "g", ids, out, inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    for mode in ("dynamic", "static"):
        _, report = onnxfold.run_pipeline(src, [QuantizePass(mode=mode)], tmp_path / f"{mode}.onnx")
        assert (tmp_path / f"{mode}.onnx").exists(), mode


def _lstm_tagger(path: Path) -> Path:
    """x [T, batch, 8] -> LSTM (hidden 16) -> MatMul -> per-step scores (easyhtr's reader's tail)."""
    rng = np.random.default_rng(2)
    net = Net({"W": rnd(rng, 1, 64, 8), "R": rnd(rng, 1, 64, 16), "H": rnd(rng, 16, 4)})
    x = net.input("x", ["T", "batch", 8])
    y, *_ = net("LSTM", x, "W", "R", hidden_size=16, outs=3)
    scores = net("MatMul", net("Squeeze", y, net.i64("axis", [1])), "H")
    onnx.save(net.model(scores), str(path))
    return path


def test_onnxruntime_only_ops_in_a_quantized_result_are_said(tmp_path: Path) -> None:
    """Dynamic mode made an LSTM com.microsoft's DynamicQuantizeLSTM, which only onnxruntime runs
    (a trial read the README's "plain ONNX" and found it; another's speaker LSTM kept cosine 0.90):
    by default the LSTM stays float, said in the note; asked for by op type it is quantized, and the
    note says the result holds onnxruntime-only ops."""
    src = _lstm_tagger(tmp_path / "tagger.onnx")
    out = tmp_path / "q.onnx"
    _, report = onnxfold.run_pipeline(src, [QuantizePass(mode="dynamic")], out)
    nodes = onnx.load(str(out)).graph.node
    assert all(n.domain != "com.microsoft" for n in nodes) and "LSTM" in {n.op_type for n in nodes}
    note = report.passes[0].stats.get("note", "")
    assert "1 LSTM layer(s) stay float32" in note and "onnxruntime-only" not in note, note
    assert report.passes[0].stats["recurrent_nodes_left"] == 1
    _, report = onnxfold.run_pipeline(src, [QuantizePass(mode="dynamic", op_types=["MatMul", "LSTM"])], out)
    domains = {(n.domain, n.op_type) for n in onnx.load(str(out)).graph.node}
    assert ("com.microsoft", "DynamicQuantizeLSTM") in domains
    note = report.passes[0].stats.get("note", "")
    assert "onnxruntime-only ops (1 DynamicQuantizeLSTM" in note and "stay float32" not in note, note


def _matting(path: Path) -> Path:
    """frames x [B, 16] (free batch) scaled by ratio [1] (fixed), as RVM's downsample_ratio beside its
    frames: a ratio of 8 values cannot scale the [B, 3] result."""
    rng = np.random.default_rng(0)
    net = Net({"w1": rnd(rng, 16, 32), "w2": rnd(rng, 32, 3)})
    x, ratio = net.input("x", ["B", 16]), net.input("ratio", [1])
    y = net("Mul", net("MatMul", net("Relu", net("MatMul", x, "w1")), "w2"), ratio)
    onnx.save(net.model(y), str(path))
    return path


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_calibration_runs_the_batch_another_input_fixes(tmp_path: Path, mode: str) -> None:
    """RVM (trial 89): its first input's batch is free, its downsample_ratio [1] fixes a batch of 1;
    calibration on 32 given samples ran 8 at a time and both modes failed ("Got: 8 Expected: 1")."""
    src = _matting(tmp_path / "m.onnx")
    out = tmp_path / "q.onnx"
    rng = np.random.default_rng(2)
    given = {"x": rng.standard_normal((32, 16)).astype(np.float32), "ratio": np.full(32, 0.5, np.float32)}
    _, report = onnxfold.run_pipeline(src, [QuantizePass(mode=mode)], out, inputs=given)
    assert report.passes[0].modified
    feed = {"x": np.ones((4, 16), np.float32), "ratio": np.array([0.5], np.float32)}
    assert make_session(str(out)).run(None, feed)[0].shape == (4, 3)


def test_calibration_takes_a_recurrent_state_cut_on_its_batch_axis(tmp_path: Path) -> None:
    """A streaming VAD's state h [1, batch, 128] beside its audio [batch, 576]: fold took the samples,
    and a pipeline's quantize refused them after the fold had run ("inputs must hold the same, non-zero
    number of samples, got [1, 32]"): calibration counts each input's samples on its sample axis."""
    rng = np.random.default_rng(0)
    net = Net({"W": rnd(rng, 8, 4)})
    x, h = net.input("x", ["N", 8]), net.input("h", [1, "N", 4])
    out = net("Add", net("MatMul", x, "W"), net("Squeeze", h, net.i64("zero", [0])))
    onnx.save(net.model(out), str(tmp_path / "stream.onnx"))
    feed = {
        "x": rng.standard_normal((32, 8)).astype(np.float32),
        "h": rng.standard_normal((1, 32, 4)).astype(np.float32),
    }
    np.savez(tmp_path / "calib.npz", **feed)
    got = load_inputs(tmp_path / "calib.npz", onnx.load(str(tmp_path / "stream.onnx")), chunked=True)
    assert got["h"].shape == (1, 32, 4)
    _, report = onnxfold.run_pipeline(
        tmp_path / "stream.onnx",
        [QuantizePass(mode="static", calibration=str(tmp_path / "calib.npz"))],
        tmp_path / "q.onnx",
    )
    assert report.passes[0].stats["calibration_samples"] == 32


def test_a_static_quantization_on_random_calibration_says_so_among_the_report_notes(tmp_path: Path) -> None:
    """Trial 155: `run --pipeline ...,quantize:mode=static,validate` without calibration data logged
    its random calibration on stderr after "wrote", and the report's notes said nothing of it."""
    src = _tracker(tmp_path / "tracker.onnx")
    _, report = onnxfold.run_pipeline(src, [QuantizePass(mode="static")], tmp_path / "q.onnx")
    stats = report.passes[0].stats
    assert stats["calibration"] == "random"
    assert f"calibrated on {stats['calibration_samples']} random samples" in stats["note"]
    assert f"quantize: {stats['note']}" in report.format()
    _, given = onnxfold.run_pipeline(
        src, [QuantizePass(mode="static")], tmp_path / "g.onnx", inputs=_samples()
    )
    assert "random samples" not in given.passes[0].stats.get("note", "")
