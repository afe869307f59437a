"""Deliverable formats: fold → INT8 (static QDQ, dynamic), float16, and runtime-agnostic checks.

Models are the bundled digits zoo (models/zoo/*.onnx) scored on the fixed digits test split. The
MLP keeps its accuracy when folded at 50%, so it carries the fold→quantize checks against the
original; the conv models check quantization and float16 against their own float32 version.
onnx.reference checks that the saved graphs mean the same outside onnxruntime.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxfold
from onnxfold.ir.model import iter_tensors, load_model
from onnxfold.models.digits import load_digits_split
from onnxfold.passes import REGISTRY, CanonicalizePass, CleanupPass, Float16Pass, FoldPass, QuantizePass
from onnxfold.pipeline.manager import PassContext, PassManager
from onnxfold.runtime.session import make_session

ZOO = Path(onnxfold.__file__).resolve().parent.parent / "models" / "zoo"
if not ZOO.is_dir():  # installed layout
    from onnxfold import models

    ZOO = Path(models.__file__).resolve().parent / "zoo"


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return load_digits_split()


def predict(model: str | Path | onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = make_session(model, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def reference_run(model: str | Path | onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """Run with onnx.reference. Its DequantizeLinear starts at opset 19, so older QDQ graphs are converted."""
    from onnx import version_converter
    from onnx.reference import ReferenceEvaluator

    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node):
        opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
        if opset < 19:
            proto = version_converter.convert_version(proto, 21)
    return ReferenceEvaluator(proto).run(None, {proto.graph.input[0].name: x})[0]


def weight_types(path: Path) -> dict[int, int]:
    """Number of initializer elements per ONNX data type."""
    counts: dict[int, int] = {}
    for t in onnx.load(str(path)).graph.initializer:
        counts[t.data_type] = counts.get(t.data_type, 0) + int(np.prod(t.dims, dtype=np.int64))
    return counts


def test_registry_has_deliver_passes() -> None:
    assert REGISTRY["quantize"] is QuantizePass and REGISTRY["float16"] is Float16Pass
    assert QuantizePass(mode="dynamic").opts["mode"] == "dynamic"
    with pytest.raises(ValueError):
        QuantizePass(mode="int4")


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_fold_then_quantize_agrees_with_original(mode: str, digits, tmp_path: Path) -> None:
    x_train, _, x_test, y_test = digits
    src = ZOO / "mlp.onnx"
    out = tmp_path / f"mlp-{mode}.onnx"
    model, report = onnxfold.run_pipeline(
        src,
        [CanonicalizePass(), FoldPass(sparsity=0.5), CleanupPass(), QuantizePass(mode=mode)],
        out,
        inputs={"input": x_train[:256]},
        check=True,
    )
    stats = report.passes[-1].stats
    assert stats["quantized_nodes"] > 0 and stats["preprocess"] == "full"
    if mode == "static":
        assert stats["calibration"] == "pipeline inputs" and stats["calibration_samples"] == 256
    ref, got = predict(src, x_test), predict(out, x_test)
    agreement = float(np.mean(ref.argmax(1) == got.argmax(1)))
    acc_ref, acc_got = float(np.mean(ref.argmax(1) == y_test)), float(np.mean(got.argmax(1) == y_test))
    assert agreement >= 0.95, agreement
    assert acc_got >= acc_ref - 0.03, (acc_ref, acc_got)
    # INT8 weights: the big matrices are stored as 8-bit, the file is a fraction of the original
    types = weight_types(out)
    int8 = types.get(onnx.TensorProto.INT8, 0) + types.get(onnx.TensorProto.UINT8, 0)
    assert int8 > 0.9 * sum(types.values()), types
    assert out.stat().st_size < src.stat().st_size / 6
    # nothing refers to the temporary folder the quantizer used
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in iter_tensors(model.to_onnx().graph))
    assert model.base_dir == src.parent.absolute()
    assert {d for d, _ in model.opset_imports} <= {"", "ai.onnx", "com.microsoft"}


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_quantize_conv_models(mode: str, digits, tmp_path: Path) -> None:
    """Conv + BN graphs (BN fused by ORT's pre-processing): INT8 keeps the accuracy of float32."""
    x_train, _, x_test, y_test = digits
    src = ZOO / "resnet18.onnx"
    out = tmp_path / "q.onnx"
    _, report = onnxfold.run_pipeline(src, [QuantizePass(mode=mode)], out, inputs={"input": x_train[:128]})
    ref, got = predict(src, x_test), predict(out, x_test)
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert ("QuantizeLinear" in ops and "Conv" in ops) if mode == "static" else "ConvInteger" in ops
    # the slow kernels are named in the notes under the report, not only in a warning above it
    assert ("ConvInteger nodes, which onnxruntime's CPU kernels run slower" in report.format()) == (
        mode == "dynamic"
    )
    assert "BatchNormalization" not in ops
    assert float(np.mean(ref.argmax(1) == got.argmax(1))) >= 0.97
    assert float(np.mean(got.argmax(1) == y_test)) >= float(np.mean(ref.argmax(1) == y_test)) - 0.02
    assert out.stat().st_size < src.stat().st_size / 3


def test_calibration_sources(digits, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    x_train = digits[0]
    src = ZOO / "lenet5.onnx"
    npy = tmp_path / "calib.npy"
    np.save(npy, x_train[:40])
    _, report = onnxfold.run_pipeline(src, [QuantizePass(calibration=str(npy), batch=16)])
    assert report.passes[0].stats["calibration"] == f"file {npy}"
    assert report.passes[0].stats["calibration_samples"] == 40
    # a batch left by an earlier pass wins over the pipeline inputs
    model = load_model(src)
    ctx = PassContext(
        original=model.copy(), inputs={"input": x_train[:8]}, data={"calibration": x_train[:24]}
    )
    manager = PassManager([QuantizePass()])
    manager.run(model, ctx)
    assert manager.records[0].stats["calibration"] == "ctx.data"
    assert manager.records[0].stats["calibration_samples"] == 24
    # no data at all: random inputs, with a warning
    with caplog.at_level(logging.WARNING):
        model, report = onnxfold.run_pipeline(src, [QuantizePass(samples=8)])
    assert report.passes[0].stats["calibration"] == "random"
    assert any("random" in r.getMessage() for r in caplog.records)
    assert predict(model.to_onnx(), x_train[:4]).shape == (4, 10)


def test_quantize_external_data_model(exported, tmp_path: Path) -> None:
    """A dynamo export keeps its weights in <file>.data; the quantized model is self-contained."""
    pair = exported("mlp", "dynamo")
    src = pair.copy_to(tmp_path / "src", "compact")
    out = tmp_path / "out" / "q.onnx"
    out.parent.mkdir()
    x = pair.input(16)
    model, _ = onnxfold.run_pipeline(src, [QuantizePass(mode="dynamic")], out)
    for f in (tmp_path / "src").iterdir():
        f.unlink()  # the result must not need the input's files either
    assert not (tmp_path / "out" / "q.onnx.data").exists()
    ref = predict(pair.compact, x)
    assert cosine(ref, predict(out, x)) > 0.99
    assert cosine(ref, predict(model.to_onnx(), x)) > 0.99


@pytest.mark.parametrize("name", ["resnet18", "vgg11bn-fused", "lenet5", "mlp"])
def test_float16_agrees_with_float32(name: str, digits, tmp_path: Path) -> None:
    x_test, y_test = digits[2], digits[3]
    src = ZOO / f"{name}.onnx"
    out = tmp_path / "fp16.onnx"
    _, report = onnxfold.run_pipeline(src, [Float16Pass()], out, check=True)
    proto = onnx.load(str(out))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    types = weight_types(out)
    assert types.get(onnx.TensorProto.FLOAT, 0) == 0 and types[onnx.TensorProto.FLOAT16] > 0, types
    assert report.passes[0].stats["fp16_nodes"] > 0
    ref, got = predict(src, x_test), predict(out, x_test)
    assert got.dtype == np.float32
    assert cosine(ref, got) > 0.999
    assert float(np.mean(ref.argmax(1) == got.argmax(1))) >= 0.99
    assert np.mean(got.argmax(1) == y_test) >= np.mean(ref.argmax(1) == y_test) - 0.01
    assert out.stat().st_size < 0.6 * src.stat().st_size
    # the same graph in onnx.reference (numpy float16 arithmetic)
    assert cosine(got[:64], reference_run(out, x_test[:64])) > 0.999


def test_float16_without_io_casts(digits, tmp_path: Path) -> None:
    x = digits[2][:32]
    src = ZOO / "resnet18-fused.onnx"
    model, _ = onnxfold.run_pipeline(src, [Float16Pass(keep_io_types=False)])
    proto = model.to_onnx()
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert not any(n.op_type == "Cast" for n in proto.graph.node)
    got = predict(proto, x.astype(np.float16))
    assert got.dtype == np.float16
    assert cosine(predict(src, x), got) > 0.999


def test_float16_keeps_shape_arithmetic_and_resize_in_float32(tmp_path: Path) -> None:
    """Resize scales, Cast(Shape) arithmetic and integer tensors stay as they were; data goes float16."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    factor = numpy_helper.from_array(np.array(1000.3, np.float32), "factor")  # 16·1000.3 is not a float16
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Resize", ["c", "", "scales"], ["r"], mode="nearest"),
        helper.make_node("Shape", ["r"], ["s"]),
        helper.make_node("Cast", ["s"], ["sf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["sf", "factor"], ["sh"]),
        helper.make_node("Cast", ["sh"], ["si"], to=TensorProto.INT64),
        helper.make_node("Cast", ["r"], ["rf"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["rf"], ["y"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, []),
            helper.make_tensor_value_info("si", TensorProto.INT64, [4]),
        ],
        [w, scales, factor],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model, report = onnxfold.run_pipeline(proto, [Float16Pass()])
    out = model.to_onnx()
    inits = {t.name: t.data_type for t in out.graph.initializer}
    assert inits == {"w": TensorProto.FLOAT16, "scales": TensorProto.FLOAT, "factor": TensorProto.FLOAT}
    casts = {n.output[0]: n.attribute[0].i for n in out.graph.node if n.op_type == "Cast"}
    assert casts["sf"] == TensorProto.FLOAT and casts["rf"] == TensorProto.FLOAT16
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    ref_y, ref_si = make_session(proto).run(["y", "si"], {"x": x})
    y, si = make_session(out).run(["y", "si"], {"x": x})
    assert y.dtype == np.float32 and abs(float(y) - float(ref_y)) < 1e-2 * max(1.0, abs(float(ref_y)))
    np.testing.assert_array_equal(ref_si, [1000, 4001, 16004, 16004])
    np.testing.assert_array_equal(si, ref_si)


def test_reference_agrees_with_onnxruntime_on_folded_and_quantized(digits, tmp_path: Path) -> None:
    """onnx.reference runs the folded model and its QDQ and dynamic INT8 versions like onnxruntime does."""
    x_train, x = digits[0], digits[2][:100]
    src = ZOO / "lenet5.onnx"
    folded = tmp_path / "folded.onnx"
    onnxfold.run_pipeline(
        src, [CanonicalizePass(), FoldPass(sparsity=0.25, method="fold"), CleanupPass()], folded
    )
    ort_out, ref_out = predict(folded, x), reference_run(folded, x)
    assert np.abs(ort_out - ref_out).max() < 1e-4
    for mode in ("static", "dynamic"):
        out = tmp_path / f"{mode}.onnx"
        onnxfold.run_pipeline(folded, [QuantizePass(mode=mode)], out, inputs={"input": x_train[:128]})
        ort_q, ref_q = predict(out, x), reference_run(out, x)
        assert float(np.mean(ort_q.argmax(1) == ref_q.argmax(1))) >= 0.98, mode
        assert cosine(ort_q, ref_q) > 0.999, mode
        # and the INT8 model still follows the float32 folded model
        assert float(np.mean(ort_q.argmax(1) == ort_out.argmax(1))) >= 0.95, mode


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_quantize_refuses_a_float16_model_before_any_pass_works(tmp_path: Path, capsys, mode: str) -> None:
    """ukis-csmask's float16 UNet (float32 inputs and outputs, Casts around float16 weights) failed
    inside onnxruntime's quantizer (dynamic) or wrote a QuantizeLinear of a float16 tensor that
    validation then rejected (static), after the fold had run."""
    from onnx import TensorProto, helper, numpy_helper

    from onnxfold.api import as_model
    from onnxfold.cli.commands import main
    from onnxfold.errors import PassError

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((4, 16)).astype(np.float16), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((16, 3)).astype(np.float16), "w2")
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["x"], ["xh"], to=TensorProto.FLOAT16),
            helper.make_node("MatMul", ["xh", "w1"], ["h"]),
            helper.make_node("Relu", ["h"], ["a"]),
            helper.make_node("MatMul", ["a", "w2"], ["yh"]),
            helper.make_node("Cast", ["yh"], ["y"], to=TensorProto.FLOAT),
        ],
        "half",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [w1, w2],
    )
    src, out = tmp_path / "half.onnx", tmp_path / "q.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    pipeline = f"canonicalize,fold:sparsity=0.25,cleanup,quantize:mode={mode},validate"
    assert main(["run", str(src), "-o", str(out), "--pipeline", pipeline]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "onnxfold: error: quantize: 112 of the model's 112 float weights are 16-bit floats: onnxruntime's "
        "quantizer takes float32 models; quantize the float32 model instead"
    )
    assert not out.exists()
    # bfloat16, which graphsurgeon keeps as TensorProto's type number 16, is refused alike
    w1.data_type, w1.raw_data = TensorProto.BFLOAT16, np.zeros(64, np.uint16).tobytes()
    w2.data_type, w2.raw_data = TensorProto.BFLOAT16, np.zeros(48, np.uint16).tobytes()
    for node in graph.node:
        if node.op_type == "Cast" and node.attribute[0].i == TensorProto.FLOAT16:
            node.attribute[0].i = TensorProto.BFLOAT16
    with pytest.raises(PassError, match="112 of the model's 112 float weights are 16-bit floats"):
        QuantizePass().preflight(as_model(helper.make_model(graph)), PassContext())


def test_a_quantized_model_gains_no_parameters_and_its_warning_names_quantization(
    digits, tmp_path: Path
) -> None:
    """A trial's fold-then-quantize pipeline read "Nothing was folded: these are values the input
    computes at run time from constants (its shape arithmetic), which canonicalize stores" beside the
    quantizer's scales and zero points, and "most pretrained models folded this far lose it" where
    nothing was folded. Scales and zero points are now weight bytes, not parameters (a featurizer read
    811K -> 830K parameters)."""
    from onnxfold.report.fold_report import task_warning
    from onnxfold.runtime.compare import OutputMetrics, ValidationReport

    src, out = ZOO / "resnet18.onnx", tmp_path / "q.onnx"
    _, report = onnxfold.run_pipeline(
        src, [QuantizePass(mode="static")], out, inputs={"input": digits[0][:64]}
    )
    assert report.after.params <= report.before.params  # the scales and zero points are not parameters
    assert report.after.weight_bytes < 0.5 * report.before.weight_bytes
    assert report.params_note is None
    scores = OutputMetrics("y", (2, 10), (2, 10), "float32", True, False, fidelity_metric="r2", fidelity=0.3)
    low = ValidationReport("CPU", {"input": (2, 1, 8, 8)}, [scores], seed=0)
    assert "nothing was folded: another pass (quantization, float16, dequantization)" in task_warning(
        low, folded=False
    )
    assert "most pretrained models folded this far" in task_warning(low, folded=True)
    # on given samples, after static INT8: dynamic mode is named, and for a model that convolves, its
    # cost (an FSMN VAD's dynamic INT8 ran 168 ms against 47 in float, and the advice said nothing)
    given = ValidationReport("CPU", {"input": (2, 1, 8, 8)}, [scores], seed=None)
    plain = task_warning(given, folded=False, quantized="static")
    assert "quantize:mode=dynamic, or float32 ops" in plain and "ConvInteger" not in plain
    convs = task_warning(given, folded=False, quantized="static", convs=True)
    assert "quantize:mode=dynamic (its ConvInteger may run slower than float: bench speed tells)" in convs
    assert "ConvInteger" not in task_warning(given, folded=False, quantized="dynamic", convs=True)
    assert report.before.op_counts["Conv"] > 0  # what the report passes for its own warning


def test_options_joined_by_another_separator_get_the_commas_hint() -> None:
    """A trial wrote ``quantize:mode=static|calibration=fit_X.npy`` and read only "'static|calibration=
    fit_X.npy' is not one of static, dynamic"."""
    from onnxfold.pipeline.manager import PipelineError, parse_pipeline

    with pytest.raises(PipelineError) as info:
        parse_pipeline("quantize:mode=static|calibration=fit_X.npy,validate", REGISTRY)
    assert str(info.value).endswith(
        "is not one of static, dynamic; a pass's options are separated by commas, each KEY=VALUE: "
        "quantize:mode=static,calibration=FILE"
    ), info.value
    with pytest.raises(PipelineError) as plain:
        parse_pipeline("quantize:mode=fast", REGISTRY)
    assert "separated by commas" not in str(plain.value)


def test_a_vector_weight_quantized_per_channel_is_said_once_in_the_pass_s_words(
    tmp_path: Path, caplog
) -> None:
    """An input BatchNormalization no Conv precedes keeps its scale [C]: onnxruntime's quantizer logged
    "Axis 1 is out-of-range for weight 'inp_batch_norm.weight' with rank 1" for it, raw, on a trial's
    wake-word model."""
    import logging

    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    tensors = {
        "bn.weight": rng.uniform(0.5, 1.5, 3),
        "bn.bias": rng.standard_normal(3),
        "bn.mean": rng.standard_normal(3),
        "bn.var": rng.uniform(0.5, 1.5, 3),
        "W": rng.standard_normal((4, 3, 3, 3)),
    }
    graph = helper.make_graph(
        [
            helper.make_node("BatchNormalization", ["x", "bn.weight", "bn.bias", "bn.mean", "bn.var"], ["b"]),
            helper.make_node("Conv", ["b", "W"], ["y"], pads=[1, 1, 1, 1]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 8, 8])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in tensors.items()],
    )
    src, out = tmp_path / "bn.onnx", tmp_path / "q.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), src)
    feeds = {"x": rng.standard_normal((16, 3, 8, 8)).astype(np.float32)}
    with caplog.at_level(logging.WARNING):
        _, report = onnxfold.run_pipeline(
            src, [QuantizePass(mode="static", preprocess=False)], out, inputs=feeds
        )
    assert not [r for r in caplog.records if "out-of-range" in r.getMessage()]
    note = next(r.stats.get("note") for r in report.passes if r.name == "quantize")
    assert note == "1 one-dimensional weight (bn.weight) got one scale each: they have no channel axis"


def test_the_convinteger_warning_counts_only_the_nodes_quantization_made(
    digits, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """khmercut's INT8 segmenter, dequantized and quantized again, read "dynamic mode made 5
    ConvInteger nodes": all 5 were its own, which dequantization leaves as they are."""
    from onnxfold.passes import DequantizePass

    src, once, twice = ZOO / "lenet5.onnx", tmp_path / "q.onnx", tmp_path / "qq.onnx"
    with caplog.at_level("WARNING"):
        onnxfold.run_pipeline(src, [QuantizePass(mode="dynamic")], once)
    made = [r.getMessage() for r in caplog.records if "ConvInteger nodes" in r.getMessage()]
    convs = sum(n.op_type == "ConvInteger" for n in onnx.load(str(once)).graph.node)
    assert convs > 0 and made == [
        f"quantize: dynamic mode made {convs} ConvInteger nodes, " + made[0].split(", ", 1)[1]
    ]
    caplog.clear()
    with caplog.at_level("WARNING"):
        onnxfold.run_pipeline(once, [DequantizePass(), QuantizePass(mode="dynamic")], twice)
    assert sum(n.op_type == "ConvInteger" for n in onnx.load(str(twice)).graph.node) == convs  # its own
    assert not [r for r in caplog.records if "ConvInteger nodes" in r.getMessage()]


def test_validation_runs_on_the_quantize_pass_s_calibration_file(digits, tmp_path: Path) -> None:
    """CREPE quantized with calibration=FILE and no --inputs was validated on 2 random frames (a note
    that they exercise nothing): validation now runs on the calibration samples and says so."""
    from onnxfold.passes import ValidatePass

    x_train = digits[0]
    src = ZOO / "lenet5.onnx"
    npy = tmp_path / "calib.npy"
    np.save(npy, x_train[:40])
    pipeline = [QuantizePass(calibration=str(npy)), ValidatePass()]
    _, report = onnxfold.run_pipeline(src, pipeline, tmp_path / "q.onnx")
    validation = report.validation
    assert validation.seed is None and validation.inputs["input"][0] == 40  # the file's 40 digits
    assert validation.source == "the quantize pass's calibration samples, 40 of them"
    assert "(measured on the quantize pass's calibration samples, 40 of them)" in report.format()
    assert "random inputs" not in report.format()
    assert report.to_dict()["validation"]["source"] == validation.source
    ref, got = predict(src, x_train[:40]), predict(tmp_path / "q.onnx", x_train[:40])
    (out,) = validation.outputs  # computed here on the same 40: the figure is theirs
    assert out.top1_agreement == pytest.approx(float(np.mean(ref.argmax(1) == got.argmax(1))))
    _, plain = onnxfold.run_pipeline(src, [QuantizePass(), ValidatePass()], tmp_path / "r.onnx")
    assert plain.validation.seed is not None and plain.validation.source is None  # random, as before
