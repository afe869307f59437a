"""A model file is written only when onnx's checker accepts it, or onnxruntime loads it all the same:
a dequantized diacritizer whose Loop bodies read a constant the rewrite had dropped was written with
exit 0, and onnxruntime refused it."""

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


def test_an_invalid_model_is_not_written(tmp_path: Path) -> None:
    out = tmp_path / "bad.onnx"
    with pytest.raises(ModelError, match=r"not valid ONNX \(.*'gone'.*\); nothing written"):
        save_model(_model("gone"), out)
    assert list(tmp_path.iterdir()) == []  # no temporary file left either
    assert save_model(_model("c"), tmp_path / "good.onnx").exists()
