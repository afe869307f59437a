"""Token ids outside the embedding table they index are refused when the samples are read, with one
line that names the input, its ids and the table (trial 121: ids + 40000 into a 30,522-row table ran
into the fold for minutes without a word)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

from onnxfold.cli.commands import main
from onnxfold.ir.model import model_from_proto
from onnxfold.runtime.sample_files import load_inputs


def embedder() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes = [
        oh.make_node("Gather", ["table", "ids"], ["e"]),
        oh.make_node("MatMul", ["e", "w1"], ["h"]),
        oh.make_node("Relu", ["h"], ["r"]),
        oh.make_node("MatMul", ["r", "w2"], ["y"]),
    ]
    graph = oh.make_graph(
        nodes,
        "embedder",
        [oh.make_tensor_value_info("ids", TensorProto.INT64, ["N", "L"])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "L", 3])],
        [
            nh.from_array(rng.standard_normal((10, 4)).astype(np.float32), "table"),
            nh.from_array(rng.standard_normal((4, 8)).astype(np.float32), "w1"),
            nh.from_array(rng.standard_normal((8, 3)).astype(np.float32), "w2"),
        ],
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


def test_ids_inside_the_table_load_and_ids_past_it_are_refused() -> None:
    model = model_from_proto(embedder())
    inside = np.array([[0, 9, -10, 3]] * 4, np.int64)  # Gather takes [-rows, rows - 1]
    assert load_inputs({"ids": inside}, model)["ids"].shape == (4, 4)
    for bad in (inside + 1, inside - 1):
        with pytest.raises(
            ValueError, match=r"input 'ids' holds ids .* outside the 10 rows of the embedding table"
        ):
            load_inputs({"ids": bad}, model)


def test_the_cli_refuses_them_in_one_line_and_writes_nothing(tmp_path, capsys) -> None:
    path, out = tmp_path / "m.onnx", tmp_path / "out.onnx"
    onnx.save(embedder(), path)
    np.save(tmp_path / "ids.npy", np.full((8, 5), 40000, np.int64))
    code = main(["fold", str(path), "-o", str(out), "-s", "0.5", "--inputs", str(tmp_path / "ids.npy")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not out.exists()
    assert len(err) == 1 and "holds ids 40000 to 40000, outside the 10 rows" in err[0], err
