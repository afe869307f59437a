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


def _self_resized(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """x [N, 3, 8, 8] -> Relu(Conv 3x3) -> Resize to Concat(Shape(h)[0:2], [16, 16]) -> Conv 1x1: torch's
    ``F.interpolate(h, size=(16, 16))`` as the dynamo exporter writes it (XFeat's fusion stage)."""
    from harness import Net

    net = Net(weights)
    h = net("Relu", net("Conv", net.input("x", ["N", 3, 8, 8]), "w1", "b1", pads=[1, 1, 1, 1]))
    sizes = net("Concat", net("Shape", h, start=0, end=2), net.i64("hw", [16, 16]), axis=0)
    up = net("Resize", h, "", "", sizes, mode="linear")
    return net.model(net("Conv", up, "w2", "b2"))


def test_a_resize_to_its_own_computed_size_folds_with_its_group(tmp_path: Path) -> None:
    """XFeat (trial 205): the Shape that reads the channel count sizes the very tensor it reads, so the
    count read at run time is the folded one; the analysis blocked the 64-channel group through it. The
    duplicate oracle: its wide twin folds back to the compact model's outputs."""
    from harness import A, S, run_ort, widen

    rng = np.random.default_rng(0)
    compact = {
        "w1": rng.standard_normal((6, 3, 3, 3)).astype(np.float32),
        "b1": rng.standard_normal(6).astype(np.float32),
        "w2": rng.standard_normal((4, 6, 1, 1)).astype(np.float32),
        "b2": rng.standard_normal(4).astype(np.float32),
    }
    wide = widen(compact, [("w1", 0, [A(6)]), ("b1", 0, [A(6)]), ("w2", 1, [S(6)])])
    model = _self_resized(wide)
    (group,) = [g for g in onnxfold.analyze(model) if g.size == 12]
    assert group.foldable, group.blocked
    _, report = onnxfold.fold(
        model, output=tmp_path / "o.onnx", sparsity=0.5, round_to=1, method="fold", repair="none"
    )
    assert [p.k for p in report.plans if p.status == "folded"] == [6]
    x = {"x": np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)}
    want = run_ort(_self_resized(compact), x)[0]
    got = ort.InferenceSession(str(tmp_path / "o.onnx"), providers=["CPUExecutionProvider"]).run(None, x)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    shown = onnx.load_from_string(model.SerializeToString())  # the count also leaves the graph: blocked
    sizes = next(n for n in shown.graph.node if n.op_type == "Concat").output[0]
    shown.graph.output.append(onnx.helper.make_tensor_value_info(sizes, onnx.TensorProto.INT64, [4]))
    (group,) = [g for g in onnxfold.analyze(shown) if g.size == 12]
    assert not group.foldable
