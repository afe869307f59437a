"""A model quantized by onnxruntime counts the parameters of its float original: scales and zero points
are weight bytes, not parameters (trial 121: a dynamic INT8 fold read "20.6M -> 20.6M +0.2%")."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

from onnxfold.report.stats import weight_counts


def mlp() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    graph = oh.make_graph(
        [
            oh.make_node("MatMul", ["x", "w1"], ["h"]),
            oh.make_node("Add", ["h", "b1"], ["hb"]),
            oh.make_node("Relu", ["hb"], ["r"]),
            oh.make_node("MatMul", ["r", "w2"], ["y"]),
        ],
        "mlp",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 32])],
        [nh.from_array(f(64, 128), "w1"), nh.from_array(f(128), "b1"), nh.from_array(f(128, 32), "w2")],
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


@pytest.mark.parametrize("per_channel", [False, True])
def test_a_dynamically_quantized_model_counts_its_float_parameters(tmp_path, per_channel: bool) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, out = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(mlp(), src)
    quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8, per_channel=per_channel)
    quantized = onnx.load(out)
    assert {n.op_type for n in quantized.graph.node} >= {"MatMulInteger", "DynamicQuantizeLinear"}
    params, stored, _ = weight_counts(quantized)
    assert params == 64 * 128 + 128 + 128 * 32 == weight_counts(mlp())[0]
    assert stored < weight_counts(mlp())[1]
