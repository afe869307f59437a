"""A model file is not written where onnx's checker rejects it and onnxruntime cannot load it while it
loads the model it was made from: a dequantized diacritizer whose Loop bodies read a constant the
rewrite had dropped was written with exit 0, and onnxruntime refused it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxfold.ir.limits import ModelError
from onnxfold.ir.save import save_model


def _model(read: str):
    """y = x + ``read``: valid where ``read`` is the initializer "c", else reading a name nothing holds."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", read], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(np.ones(2, np.float32), "c")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_model_broken_by_a_rewrite_is_not_written(tmp_path: Path) -> None:
    import onnx
    import onnx_graphsurgeon as gs

    from onnxfold.ir.model import load_model

    src = tmp_path / "m.onnx"
    onnx.save(_model("c"), str(src))
    model = load_model(src)
    model.graph.nodes[0].inputs[1] = gs.Variable("gone", dtype=np.float32, shape=[2])  # nothing makes it
    out = tmp_path / "bad.onnx"
    with pytest.raises(ModelError, match=r"not valid ONNX \(.*'gone'.*\); nothing written"):
        save_model(model, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temporary file left either
    assert save_model(load_model(src), tmp_path / "good.onnx").exists()
    # a source onnxruntime cannot load either (a custom op, say): written as it came
    onnx.save(_model("gone"), str(src))
    assert save_model(load_model(src), out).exists()
