"""A CRNN's per-step ``x[t]`` (Gather of one time step) passes the channels through.

captcha-whisperer's CRNN reads its convolutional features as ``[W, N, C·H]`` and gathers each of
the 20 time steps for its LSTM: the 512-channel group that feeds the LSTM's input weights (68% of
the model's parameters) was blocked as "reaches unsupported op Gather", 40 times over."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import onnxfold

torch = pytest.importorskip("torch")

HEIGHT, STEPS = 3, 5


class StepNet(torch.nn.Module):
    """conv → relu → [W, N, C·H] → per step: fc(x[t]) → stacked [W, N, 6]."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(2, width, 3, padding=1)
        self.fc = torch.nn.Linear(width * HEIGHT, 6)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        n, c, height, w = h.shape
        seq = h.permute(3, 0, 1, 2).reshape(w, n, c * height)
        return torch.stack([self.fc(seq[t]) for t in range(STEPS)])


def export(net: StepNet, path: Path) -> Path:
    torch.onnx.export(
        net.eval(),
        torch.randn(2, 2, HEIGHT, STEPS),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "n"}, "y": {1: "n"}},
    )
    return path


def duplicated(compact: StepNet) -> StepNet:
    """Every conv channel twice; fc's columns (channel-major c·H + h) halved between each pair."""
    width = compact.conv.out_channels
    wide = StepNet(2 * width)
    with torch.no_grad():
        wide.conv.weight.copy_(compact.conv.weight.repeat_interleave(2, dim=0))
        wide.conv.bias.copy_(compact.conv.bias.repeat_interleave(2))
        columns = compact.fc.weight.reshape(6, width, HEIGHT).repeat_interleave(2, dim=1) / 2
        wide.fc.weight.copy_(columns.reshape(6, 2 * width * HEIGHT))
        wide.fc.bias.copy_(compact.fc.bias)
    return wide


def run(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_duplicate_channels_read_step_by_step_fold_to_the_compact_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    compact = StepNet(4)
    small = export(compact, tmp_path / "compact.onnx")
    wide = export(duplicated(compact), tmp_path / "wide.onnx")
    groups = onnxfold.analyze(wide)
    assert [g.foldable for g in groups if g.size == 8] == [True], [(g.name, g.blocked) for g in groups]
    _, report = onnxfold.fold(
        wide, sparsity=0.5, output=tmp_path / "folded.onnx", round_to=1, method="fold", repair="none"
    )
    assert [p.k for p in report.plans if p.status == "folded"] == [4]
    x = np.random.default_rng(0).standard_normal((3, 2, HEIGHT, STEPS)).astype(np.float32)
    np.testing.assert_allclose(run(tmp_path / "folded.onnx", x), run(small, x), rtol=1e-5, atol=1e-5)
    onnxfold.fold(wide, sparsity=0.0, output=tmp_path / "same.onnx", validate=False)
    np.testing.assert_array_equal(run(tmp_path / "same.onnx", x), run(wide, x))


def test_a_gather_of_channels_still_blocks(tmp_path: Path) -> None:
    """Gathering on the channel axis picks channels: that group must not fold."""

    class PickChannels(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(2, 8, 3, padding=1)

        def forward(self, x):
            return torch.relu(self.conv(x))[:, 2] * 2.0

    model = export(PickChannels(), tmp_path / "pick.onnx")
    groups = onnxfold.analyze(model)
    assert [g.foldable for g in groups if g.size == 8] == [False]


def test_reasons_that_differ_only_in_their_node_are_told_once() -> None:
    """The blocked CRNN group's reason read "reaches unsupported op Gather (…)" 40 times over, and
    the analyze table padded every row to 2,160 characters."""
    from onnxfold.analysis.groups import REASON_WIDTH, BlockReason, ChannelGroup, reasons_text
    from onnxfold.api import format_groups

    steps = [
        BlockReason(
            "unsupported-op", f"reaches unsupported op Gather (/lstm/Gather_{t})", f"/lstm/Gather_{t}"
        )
        for t in range(40)
    ]
    other = BlockReason("graph-output", "reaches graph output logits", "")
    text = reasons_text([*steps, other])
    assert (
        text
        == "reaches unsupported op Gather (/lstm/Gather_0) (and 39 more like it); reaches graph output logits"
    )
    # the most repeated reason first, whatever the graph order (a ViT's residual stream: its 50
    # LayerNorm reductions, not the class token's Concat found first)
    assert reasons_text([other, *steps[:3]]).startswith(
        "reaches unsupported op Gather (/lstm/Gather_0) (and 2 more"
    )
    many = [BlockReason("other", f"reason number {i} " + "x" * 30, "") for i in range(20)]
    group = ChannelGroup(name="g", size=8, blocked=many)
    table = format_groups([group]).splitlines()
    assert len(table[-2]) < REASON_WIDTH + 80 and table[-2].endswith(" …")
    assert "--members or --json gives them whole" in table[-1]
