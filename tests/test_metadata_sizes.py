"""Sides an image model's metadata states (Ultralytics' ``imgsz``) replace the 224×224 guess where
its input leaves them free: chessvision's piece classifier reads 64×64 squares, and its data-free
proxy ran on 224×224 noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

import onnxfold
from onnxfold.api import as_model
from onnxfold.runtime.metadata_sizes import metadata_shapes, stated_size


def _classifier(path: Path, imgsz: str | None) -> Path:
    """images [batch, 3, height, width] → Conv 3→8 (3×3, no pad) → Relu → Conv 8→4 (1×1) → GAP."""
    rng = np.random.default_rng(0)
    graph = oh.make_graph(
        [
            oh.make_node("Conv", ["images", "w1"], ["c1"]),
            oh.make_node("Relu", ["c1"], ["r"]),
            oh.make_node("Conv", ["r", "w2"], ["c2"]),
            oh.make_node("GlobalAveragePool", ["c2"], ["p"]),
            oh.make_node("Flatten", ["p"], ["scores"]),
        ],
        "cls",
        [oh.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [oh.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 4])],
        [
            nh.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1"),
            nh.from_array(rng.standard_normal((4, 8, 1, 1)).astype(np.float32), "w2"),
        ],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    if imgsz is not None:
        model.metadata_props.add(key="imgsz", value=imgsz)
    onnx.save(model, path)
    return path


def test_the_stated_size_parses_as_exporters_write_it() -> None:
    assert stated_size({"imgsz": "[64, 64]"}) == (64, 64)
    assert stated_size({"imgsz": "(480, 640)"}) == (480, 640)
    assert stated_size({"imgsz": "320"}) == (320, 320)
    assert stated_size({"imgsz": "[]"}) is None and stated_size({"task": "classify"}) is None


def test_a_stated_size_is_where_macs_are_counted_and_the_proxy_runs(tmp_path: Path) -> None:
    src = _classifier(tmp_path / "m.onnx", "[40, 40]")
    assert metadata_shapes(as_model(src)) == {"images": (1, 3, 40, 40)}
    _, report = onnxfold.fold(src, output=tmp_path / "o.onnx", min_fidelity=0.99)
    assert report.before.macs == 8 * 3 * 9 * 38 * 38 + 4 * 8 * 38 * 38  # at 40×40, worked by hand
    assert "each images [1, 3, 40, 40]" in report.search.inputs, report.search.inputs
    assert "guessed" not in report.search.inputs
    _, plain = onnxfold.fold(
        _classifier(tmp_path / "p.onnx", None), output=tmp_path / "p2.onnx", min_fidelity=0.99
    )
    assert "each images [1, 3, 224, 224] (free dims guessed" in plain.search.inputs, plain.search.inputs
