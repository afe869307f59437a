"""A fold that changes nothing leaves the graph no larger than it found it: canonicalize's per-consumer
copies of shape computations and vectors are merged back by cleanup."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

import onnxfold
from onnxfold.runtime.session import make_session


def _shared_shape_chain_model() -> onnx.ModelProto:
    """Two conv branches flattened by Reshapes that share one computed target
    Concat(Unsqueeze(Gather(Shape(x), 0)), [-1]), then added."""
    rng = np.random.default_rng(0)
    inits = [
        nh.from_array(rng.standard_normal((16, 8, 3, 3)).astype(np.float32), "w1"),
        nh.from_array(rng.standard_normal((16, 8, 1, 1)).astype(np.float32), "w2"),
        nh.from_array(np.array(0, np.int64), "zero"),
        nh.from_array(np.array([0], np.int64), "axis0"),
        nh.from_array(np.array([-1], np.int64), "minus1"),
    ]
    nodes = [
        oh.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        oh.make_node("Relu", ["c1"], ["a"]),
        oh.make_node("Conv", ["x", "w2"], ["b"]),
        oh.make_node("Shape", ["x"], ["s"]),
        oh.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        oh.make_node("Unsqueeze", ["n", "axis0"], ["n1"]),
        oh.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
        oh.make_node("Reshape", ["a", "target"], ["ra"]),
        oh.make_node("Reshape", ["b", "target"], ["rb"]),
        oh.make_node("Add", ["ra", "rb"], ["y"]),
    ]
    graph = oh.make_graph(
        nodes,
        "g",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 4, 4])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 256])],
        inits,
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


@pytest.mark.parametrize(
    "how", [{"sparsity": 0.0}, {"sparsity": 0.5, "ignore": [".*"]}], ids=["sparsity0", "ignore-all"]
)
def test_a_fold_that_folds_nothing_does_not_grow_the_graph(tmp_path: Path, how: dict) -> None:
    src = tmp_path / "m.onnx"
    onnx.save(_shared_shape_chain_model(), src)
    out = tmp_path / "f.onnx"
    onnxfold.fold(src, output=out, validate=False, repair="none", **how)
    before, after = onnx.load(src), onnx.load(out)
    assert len(after.graph.node) <= len(before.graph.node)
    assert len(after.graph.initializer) <= len(before.graph.initializer)
    x = np.random.default_rng(1).standard_normal((3, 8, 4, 4)).astype(np.float32)
    ref, got = (make_session(p, optimize=False).run(None, {"x": x})[0] for p in (src, out))
    np.testing.assert_array_equal(got, ref)
