"""The shapes of a subgraph's tensors (``value_info`` of a Loop body) are written only where the source
recorded them: graphsurgeon writes the shapes it knows, an outer tensor's too, and onnxruntime then
optimizes the body differently (tf2onnx's GRU loop ran 3e-8 off after a fold at ``-s 0``, which must
reproduce the model bit for bit; found by an independent oracle builder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from harness import run_ort
from onnx import TensorProto, helper, numpy_helper

import onnxfold


def _loop_model(body_shapes: bool) -> onnx.ModelProto:
    """x [N, 4] → t = tanh(x W) → a Loop of 3 steps, acc ← 0.5 acc + t (t read from the outer
    scope) → y = acc V."""
    rng = np.random.default_rng(3)
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Mul", ["acc_in", "half"], ["scaled"]),
            helper.make_node("Add", ["scaled", "t"], ["acc_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, ["N", 6]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, ["N", 6]),
        ],
        [numpy_helper.from_array(np.array(0.5, np.float32), "half")],
    )
    if body_shapes:
        body.value_info.append(helper.make_tensor_value_info("scaled", TensorProto.FLOAT, ["N", 6]))
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Tanh", ["xw"], ["t"]),
            helper.make_node("Mul", ["t", "zero"], ["acc0"]),
            helper.make_node("Loop", ["steps", "go", "acc0"], ["acc"], body=body),
            helper.make_node("MatMul", ["acc", "V"], ["y"]),
        ],
        "loop",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [
            numpy_helper.from_array(rng.normal(size=(4, 6)).astype(np.float32), "W"),
            numpy_helper.from_array(rng.normal(size=(6, 3)).astype(np.float32), "V"),
            numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
            numpy_helper.from_array(np.array(3, np.int64), "steps"),
            numpy_helper.from_array(np.array(True), "go"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _bodies(model: onnx.ModelProto) -> list[onnx.GraphProto]:
    return [a.g for n in model.graph.node for a in n.attribute if a.type == onnx.AttributeProto.GRAPH]


@pytest.mark.parametrize("body_shapes", [False, True])
def test_a_loop_body_keeps_the_shapes_its_source_recorded(tmp_path: Path, body_shapes: bool) -> None:
    src = tmp_path / "loop.onnx"
    onnx.save(_loop_model(body_shapes), str(src))
    out = tmp_path / "same.onnx"
    onnxfold.fold(src, 0.0, out, validate=False)
    written = onnx.load(str(out))
    (body,) = _bodies(written)
    names = {v.name for v in body.value_info}
    assert ("scaled" in names) if body_shapes else not names, names
    feed = {"x": np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)}
    assert np.array_equal(run_ort(written, feed)[0], run_ort(onnx.load(str(src)), feed)[0])
