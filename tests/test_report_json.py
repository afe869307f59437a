"""Every field of a fold report and of ``analyze --json`` is plain JSON (no numpy scalars), including the
groups that a Split partitions, whose sizes come from a constant split-size tensor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

import onnxfold
from onnxfold.cli import main


def _split_model(path: Path) -> Path:
    rng = np.random.default_rng(0)
    inits = [
        nh.from_array(rng.standard_normal((8, 4, 3, 3)).astype(np.float32), "w0"),
        nh.from_array(rng.standard_normal((2, 3, 1, 1)).astype(np.float32), "wa"),
        nh.from_array(rng.standard_normal((2, 5, 1, 1)).astype(np.float32), "wb"),
        nh.from_array(np.array([3, 5], np.int64), "split"),
    ]
    nodes = [
        oh.make_node("Conv", ["x", "w0"], ["c"], pads=[1, 1, 1, 1]),
        oh.make_node("Relu", ["c"], ["r"]),
        oh.make_node("Split", ["r", "split"], ["sa", "sb"], axis=1),
        oh.make_node("Conv", ["sa", "wa"], ["ya"]),
        oh.make_node("Conv", ["sb", "wb"], ["yb"]),
        oh.make_node("Concat", ["ya", "yb"], ["y"], axis=1),
    ]
    graph = oh.make_graph(
        nodes,
        "g",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        inits,
    )
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), path)
    return path


def _strict(value) -> str:
    return json.dumps(value)  # no default=: a numpy scalar anywhere raises TypeError


def test_reports_of_split_partitioned_groups_are_plain_json(tmp_path: Path, capsys) -> None:
    src = _split_model(tmp_path / "split.onnx")
    groups = onnxfold.analyze(src)
    assert sorted(g.size for g in groups if g.foldable) == [3, 5]  # the Split cut the conv's 8 channels
    _strict([g.to_dict() for g in groups])
    _, report = onnxfold.fold(src, 0.5, tmp_path / "f.onnx")
    data = json.loads(_strict(report.to_dict()))
    assert sorted(g["channels_before"] for g in data["groups"] if g["status"] == "folded") == [3, 5]
    assert main(["analyze", str(src), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == len(groups)
    assert main(["fold", str(src), "-o", str(tmp_path / "g.onnx"), "--report", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["groups"]


def test_the_parts_of_a_split_partition_have_their_own_names_and_the_search_runs_on_them(
    tmp_path: Path,
) -> None:
    """The two groups a Split cuts from one conv were both named after it, so statistics keyed by name
    mixed them up: a targeted search with samples crashed with an IndexError (NudeNet's YOLOv8). The
    model is exported at batch 1: the search and validation run the 16 samples batch by batch."""
    src = _split_model(tmp_path / "split.onnx")
    names = [g.name for g in onnxfold.analyze(src) if g.foldable]
    assert len(names) == 2 and len(set(names)) == 2, names
    x = np.random.default_rng(1).standard_normal((16, 4, 8, 8)).astype(np.float32)
    out = tmp_path / "t.onnx"
    _, report = onnxfold.fold(src, output=out, min_fidelity=0.5, metric="cosine", inputs={"x": x})
    assert report.search.met and out.exists()
