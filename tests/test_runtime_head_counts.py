"""Multi-query attention whose repeat count is computed at run time (``rep = q.shape[1] // k.shape[1]``,
exported by the legacy exporter as Div(4, Gather(Shape(k), 1))): the value width folds. The count's
value became known only after a first round of static dims was made constant and shapes inferred
again; until then the repeat's Expand shape could not be traced and kept v blocked (an independent
oracle builder's finding). Duplicate oracle: v's second half copies its first."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from harness import rel_err, run_ort

import onnxfold

E, H, D, V = 16, 4, 8, 6  # width, query heads, head dim, v's compact width (one KV head)


class MultiQuery(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q, self.k = torch.nn.Linear(E, H * D), torch.nn.Linear(E, D)
        self.v, self.o = torch.nn.Linear(E, 2 * V), torch.nn.Linear(H * 2 * V, E)
        self.inp, self.head = torch.nn.Linear(12, E), torch.nn.Linear(E, 3)
        self.scale = torch.nn.Parameter(torch.rand(E) + 0.5)  # a hand-written RMSNorm's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        x = x + self.attend(x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.scale)
        return self.head(x)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[0], x.shape[1]
        q = self.q(x).view(b, t, -1, D).transpose(1, 2)
        k = self.k(x).view(b, t, -1, D).transpose(1, 2)
        v = self.v(x).view(b, t, -1, 2 * V).transpose(1, 2)
        inv = 1.0 / (10000 ** (torch.arange(0, D, 2, dtype=torch.float32) / D))
        angle = torch.arange(t, dtype=torch.float32)[:, None] * inv[None, :]
        cos, sin = (
            torch.cat((angle, angle), -1).cos()[None, None],
            torch.cat((angle, angle), -1).sin()[None, None],
        )

        def half(z: torch.Tensor) -> torch.Tensor:  # rotate_half, with chunk as LLaMA writes it
            first, second = z.chunk(2, dim=-1)
            return torch.cat((-second, first), dim=-1)

        q, k = q * cos + half(q) * sin, k * cos + half(k) * sin
        heads, kv = q.shape[1], k.shape[1]
        rep = heads // kv
        k = k[:, :, None].expand(b, kv, rep, t, D).reshape(b, heads, t, D)
        v = v[:, :, None].expand(b, kv, rep, t, 2 * V).reshape(b, heads, t, 2 * V)
        p = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D), -1)
        return self.o((p @ v).transpose(1, 2).reshape(b, t, -1))


def test_the_value_width_folds_when_the_repeat_count_is_computed_at_run_time(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = MultiQuery().eval()
    with torch.no_grad():
        net.v.weight[V:], net.v.bias[V:] = net.v.weight[:V], net.v.bias[:V]
        cols = net.o.weight.view(E, H, 2 * V)
        cols[:, :, V:] = cols[:, :, :V]
    src, out = tmp_path / "m.onnx", tmp_path / "f.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.randn(2, 5, 12),),
            str(src),
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch", 1: "seq"}},
            opset_version=17,
        )
    groups = onnxfold.analyze(src)
    values = [g for g in groups if g.size == 2 * V]
    assert len(values) == 1 and values[0].foldable, [
        (g.name, g.size, [b.message for b in g.blocked]) for g in groups
    ]
    onnxfold.fold(src, 0.5, out, method="fold", repair="none", round_to=1, validate=False)
    folded = onnx.load(str(out))
    assert any(list(t.dims) == [E, V] for t in folded.graph.initializer)  # v at its compact width
    x = np.random.default_rng(1).standard_normal((3, 7, 12)).astype(np.float32)
    ref = run_ort(onnx.load(str(src)), {"x": x})[0]
    assert rel_err(run_ort(folded, {"x": x})[0], ref) < 1e-5
