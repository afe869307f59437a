"""What the report says of a fold that folds nothing, and where it counts MACs on a model with free dims."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import onnxfold
from onnxfold.ir.model import to_model_proto
from onnxfold.passes.canonicalize import CanonicalizePass


def _cnn(path: Path, kernel: int = 3) -> Path:
    """x [N, 2, H, W] (free H, W, named as tf2onnx names them) -> Conv 2 -> 8 (kernel × kernel,
    no padding) -> Relu -> Conv 8 -> 4 (1 × 1)."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w1", "b1"], ["c"]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("Conv", ["r", "w2"], ["y"]),
        ],
        "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["unk__1", 2, "unk__2", "unk__3"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [
            numpy_helper.from_array(rng.standard_normal((8, 2, kernel, kernel)).astype(np.float32), "w1"),
            numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b1"),
            numpy_helper.from_array(rng.standard_normal((4, 8, 1, 1)).astype(np.float32), "w2"),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_fold_that_folds_nothing_says_why_it_holds_more_parameters(tmp_path: Path, monkeypatch) -> None:
    """LEADER's fingerprint model came out of a fold that removed nothing with 8 more parameters (its
    shape arithmetic stored as constants), and the note said the fold had edited a copy. Here
    canonicalize is made to store one more value: the note says nothing was folded; a fold that folds
    keeps the note about edited copies."""
    src = _cnn(tmp_path / "cnn.onnx")
    real = CanonicalizePass.run

    def growing(self, model, ctx):
        result = real(self, model, ctx)
        proto = to_model_proto(model)
        out = proto.graph.output[0].name
        proto.graph.node[-1].output[0] = "pre"
        proto.graph.initializer.append(numpy_helper.from_array(np.zeros(1, np.float32), "zero__1"))
        proto.graph.node.append(helper.make_node("Add", ["pre", "zero__1"], [out]))
        model.graph = onnxfold.api.as_model(proto).graph
        return result

    monkeypatch.setattr(CanonicalizePass, "run", growing)
    _, report = onnxfold.fold(str(src), 0.0, None, validate=False)  # the model in memory, not written
    assert report.after.params == report.before.params + 1
    assert "Nothing was folded" in report.params_note and "edited" not in report.params_note
    # written, it is the input's bytes (no larger than given), and its figures are the input's
    _, report = onnxfold.fold(str(src), 0.0, str(tmp_path / "kept.onnx"), validate=False)
    assert report.as_given and (tmp_path / "kept.onnx").read_bytes() == src.read_bytes()
    assert report.after.params == report.before.params and report.params_note is None
    _, report = onnxfold.fold(
        str(src), 0.25, str(tmp_path / "f.onnx"), validate=False, round_to=1, method="fold"
    )
    assert report.params_note is None or "Nothing was folded" not in report.params_note


def test_macs_are_counted_at_the_free_dims_the_model_runs_at(tmp_path: Path) -> None:
    """A 20 × 20 kernel does not run on 16 × 16 random inputs; validation runs it at 64 × 64, and the
    MACs are counted there too (LEADER's were counted at 16 × 16, where it cannot run)."""
    src = _cnn(tmp_path / "k20.onnx", kernel=20)
    _, report = onnxfold.fold(str(src), 0.0, str(tmp_path / "o.onnx"))
    assert report.default_shapes == {"x": (1, 2, 64, 64)}
    side = 64 - 20 + 1
    assert report.before.macs == side * side * (8 * 2 * 20 * 20 + 4 * 8)
    assert "[1, 2, 64, 64]" in report.format()


def test_a_change_under_a_tenth_of_a_percent_keeps_its_digits() -> None:
    """minimol's fold removed 0.05% of its parameters, and the table read -0.1%."""
    from onnxfold.report.comparison import ratio_cells

    assert ratio_cells(7_919_929, 7_919_929 - 3_960) == ("0.999", "-0.05%")
    assert ratio_cells(100, 50) == ("0.500", "-50.0%") and ratio_cells(100, 100) == ("1.000", "+0.0%")


def test_a_change_the_rounding_hides_is_printed_in_every_digit() -> None:
    """trueocr's recogniser read "weights it held twice are stored once (1.06M -> 1.06M parameters)"."""
    from onnxfold.report.table import count_change

    assert count_change(1_058_312, 1_058_056) == "1,058,312 -> 1,058,056"
    assert count_change(419_000, 305_000) == "419K -> 305K"
    assert count_change(1_000, 1_000) == "1.00K -> 1.00K"  # no change: as rounded
