"""A Resize to another tensor's size (``F.interpolate(x, size=y.shape[2:])``) no longer blocks the
channel groups through it: RetinaFace's FPN exported its sizes as Concat(Shape(x)[0:2], Shape(y)[2:4]),
and the analysis blocked 4 of its 64-channel groups as "computed sizes"."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import onnxfold

torch = pytest.importorskip("torch")


class TinyFPN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fine = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.coarse = torch.nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.head = torch.nn.Conv2d(16, 4, 1)

    def forward(self, x):
        fine = torch.relu(self.fine(x))
        coarse = torch.relu(self.coarse(x))
        up = torch.nn.functional.interpolate(coarse, size=fine.shape[2:], mode="nearest")
        return self.head(fine + up)


def export(path: Path) -> Path:
    x = torch.randn(1, 3, 16, 12)
    torch.onnx.export(
        TinyFPN().eval(),
        x,
        str(path),
        opset_version=11,
        dynamo=False,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "h", 3: "w"}},
    )
    return path


def run(path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_a_resize_to_another_tensors_size_folds_with_its_group(tmp_path: Path) -> None:
    model = export(tmp_path / "fpn.onnx")
    assert any(
        n.op_type == "Resize" and len(n.input) > 3 and n.input[3] for n in onnx.load(str(model)).graph.node
    )
    groups = {g.name: g for g in onnxfold.analyze(model)}
    merged = [g for g in groups.values() if g.size == 16]
    assert len(merged) == 1 and merged[0].foldable, [(g.name, g.blocked) for g in groups.values()]
    x = np.random.default_rng(0).standard_normal((2, 3, 20, 14)).astype(np.float32)
    onnxfold.fold(model, sparsity=0.0, output=tmp_path / "same.onnx", validate=False)
    np.testing.assert_array_equal(run(tmp_path / "same.onnx", x), run(model, x))
    _, report = onnxfold.fold(model, sparsity=0.5, output=tmp_path / "half.onnx", round_to=1, method="fold")
    assert [p.k for p in report.plans if p.status == "folded"] == [8]
    for h, w in ((20, 14), (9, 7)):  # the folded model still resizes to any size at run time
        x = np.random.default_rng(h).standard_normal((1, 3, h, w)).astype(np.float32)
        assert run(tmp_path / "half.onnx", x).shape == run(model, x).shape == (1, 4, h, w)
