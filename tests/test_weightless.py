"""A model that stores no weight tensor has nothing to fold: luscinia's LightGBM stress model keeps its
48.5M tree values in node attributes, and analyze took 14 GB and 208 s to print an empty table (fold:
16.7 GB, 546 s, "nothing folded"). It is now read from the protobuf alone: analyze says why in one
line, and fold writes the model as given."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

from onnxfold.cli.checks import weightless
from onnxfold.cli.commands import main
from onnxfold.cli.parser import EXIT_UNCHANGED


def _trees(path: Path) -> Path:
    """x [N, 2] → a two-leaf TreeEnsembleRegressor (ai.onnx.ml) → Identity → y [N, 1]."""
    tree = oh.make_node(
        "TreeEnsembleRegressor",
        ["x"],
        ["t"],
        domain="ai.onnx.ml",
        n_targets=1,
        nodes_treeids=[0, 0, 0],
        nodes_nodeids=[0, 1, 2],
        nodes_featureids=[0, 0, 0],
        nodes_values=[0.5, 0.0, 0.0],
        nodes_modes=["BRANCH_LEQ", "LEAF", "LEAF"],
        nodes_truenodeids=[1, 0, 0],
        nodes_falsenodeids=[2, 0, 0],
        target_treeids=[0, 0],
        target_nodeids=[1, 2],
        target_ids=[0, 0],
        target_weights=[-1.0, 1.0],
    )
    graph = oh.make_graph(
        [tree, oh.make_node("Identity", ["t"], ["y"])],
        "trees",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17), oh.make_opsetid("ai.onnx.ml", 3)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def test_a_tree_ensemble_is_answered_from_its_protobuf(tmp_path: Path, capsys) -> None:
    src = _trees(tmp_path / "trees.onnx")
    why = weightless(src)
    assert why.startswith("the model stores no weight tensor for a fold to rewrite (its 2 nodes: Identity, ")
    assert "TreeEnsembleRegressor (ai.onnx.ml)" in why
    assert main(["analyze", str(src)]) == 0
    assert capsys.readouterr().out.strip() == f"0 channel groups: {why}"
    out, report = tmp_path / "o.onnx", tmp_path / "r.json"
    assert main(["fold", str(src), "-o", str(out), "--report", str(report)]) == 0
    assert out.read_bytes() == src.read_bytes()  # the model as given
    assert f"nothing folded: {why}; wrote {out}, the model as given" in capsys.readouterr().out
    assert json.loads(report.read_text())["nothing_folded"] == why
    assert main(["fold", str(src), "-o", str(out), "--fail-if-unchanged"]) == EXIT_UNCHANGED


def test_a_weight_anywhere_is_something_to_fold(tmp_path: Path) -> None:
    w = nh.from_array(np.ones((2, 3), np.float32), "w")
    shape = nh.from_array(np.array([1, 3], np.int64), "shape")  # an int64 shape constant is no weight
    graph = oh.make_graph(
        [oh.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [w, shape],
    )
    path = tmp_path / "m.onnx"
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), path)
    assert weightless(path) == ""
    del graph.initializer[0]  # the MatMul's weight read from an input: nothing stored to fold
    graph.input.append(oh.make_tensor_value_info("w", TensorProto.FLOAT, [2, 3]))
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), path)
    assert weightless(path).startswith("the model stores no weight tensor")
    assert weightless(tmp_path / "missing.onnx") == ""  # its own load says what is wrong


def test_graphsurgeons_warnings_stay_off_stderr(tmp_path: Path, capfd) -> None:
    """A ZipMap's sequence of maps made onnx-graphsurgeon print "[W] Could not convert: UNDEFINED to a
    corresponding NumPy type" and "[W] colored module is not installed" on every command (trial 129)."""
    from onnxfold.ir.model import load_model

    seq = onnx.TypeProto()
    seq.sequence_type.elem_type.map_type.key_type = TensorProto.INT64
    seq.sequence_type.elem_type.map_type.value_type.tensor_type.elem_type = TensorProto.FLOAT
    graph = oh.make_graph(
        [oh.make_node("ZipMap", ["x"], ["probs"], domain="ai.onnx.ml", classlabels_int64s=[0, 1])],
        "zip",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [oh.make_value_info("probs", seq)],
    )
    path = tmp_path / "zip.onnx"
    onnx.save(
        oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17), oh.make_opsetid("ai.onnx.ml", 3)]), path
    )
    capfd.readouterr()
    load_model(path).to_onnx()
    captured = capfd.readouterr()
    assert "[W]" not in captured.err + captured.out, captured
