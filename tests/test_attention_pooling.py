"""Attention pooling over time: weights = softmax_T(Linear(stream → 1)), pooled = Σ_T weights · stream.
The weights [N, T, 1] hold one channel broadcast over the stream's C, so the stream's channels still
line up at the Mul (atspm-detector's phase network had its 32-channel residual stream blocked there,
"combines tensors whose channels do not line up"). The duplicate oracle folds the stream exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch

import onnxfold
from onnxfold.runtime.session import make_session


class _Pooled(torch.nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.stem = torch.nn.Conv1d(4, width, 3, padding=1)
        self.score = torch.nn.Linear(width, 1)
        self.head = torch.nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x)).transpose(1, 2)  # [N, T, C]
        w = torch.softmax(self.score(h), dim=1)  # [N, T, 1]
        return self.head((w * h).sum(dim=1))


def _export(net: torch.nn.Module, path: Path) -> Path:
    x = torch.randn(2, 4, 20)
    torch.onnx.export(
        net.eval(), (x,), str(path), input_names=["x"], output_names=["y"],
        dynamic_axes={"x": {0: "N", 2: "T"}, "y": {0: "N"}}, dynamo=False,
    )  # fmt: skip
    return path


def _twin(tmp_path: Path) -> tuple[Path, Path]:
    """A net of 8 stream channels and its twin of 16, each channel twice, the readers' columns halved."""
    torch.manual_seed(0)
    small = _Pooled(8)
    big = _Pooled(16)
    with torch.no_grad():
        big.stem.weight.copy_(torch.cat([small.stem.weight] * 2))
        big.stem.bias.copy_(torch.cat([small.stem.bias] * 2))
        big.score.weight.copy_(torch.cat([small.score.weight] * 2, dim=1) / 2)
        big.score.bias.copy_(small.score.bias)
        big.head.weight.copy_(torch.cat([small.head.weight] * 2, dim=1) / 2)
        big.head.bias.copy_(small.head.bias)
    return _export(small, tmp_path / "small.onnx"), _export(big, tmp_path / "big.onnx")


def test_the_stream_read_by_attention_pooling_is_foldable(tmp_path: Path) -> None:
    _, big = _twin(tmp_path)
    groups = {g.name: g for g in onnxfold.analyze(str(big))}
    stem = next(g for g in groups.values() if g.size == 16)
    assert stem.foldable, stem.blocked
    score = next(
        g for g in groups.values() if g.size == 1 and "broadcasts" in "; ".join(r.message for r in g.blocked)
    )
    assert not score.foldable


def test_folding_the_twin_s_stream_gives_the_small_net_back_exactly(tmp_path: Path) -> None:
    small, big = _twin(tmp_path)
    out = tmp_path / "folded.onnx"
    onnxfold.fold(str(big), 0.5, str(out), method="fold", repair="none", round_to=1)
    widths = sorted(tuple(t.dims) for t in onnx.load(str(out)).graph.initializer if len(t.dims) == 3)
    assert widths == [(8, 4, 3)], widths
    x = np.random.default_rng(1).standard_normal((5, 4, 33)).astype(np.float32)
    want = make_session(str(small)).run(None, {"x": x})[0]
    got = make_session(str(out)).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
