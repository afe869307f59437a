"""Attention heads after a strided convolution front end (wav2vec2, HuBERT, a Conformer's
subsampling), exported by dynamo with a dynamic length: the head split's target holds the sequence
length as arithmetic on the input's, ``((T − 5) // 4 − 3) // 2 + 1``, which the trace does not
follow. The exporter names that dim with the same expression on both sides of the Reshape, so the
entry is a copy of the input's dim: the heads fold (an independent oracle builder's finding; they
were blocked as "a target shape that cannot be traced"). Duplicate oracle: the q/k/v rows of the
last heads copy the first ones', the output projection's columns are split between the copies."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from harness import rel_err, run_ort

import onnxfold

C, E, D = 6, 24, 4  # input channels, width, head dim


class ConvAttention(torch.nn.Module):
    def __init__(self, heads: int) -> None:
        super().__init__()
        self.front = torch.nn.Sequential(
            torch.nn.Conv1d(C, E, 5, stride=4), torch.nn.GELU(), torch.nn.Conv1d(E, E, 3, stride=2)
        )
        self.heads = heads
        self.q, self.k, self.v = (torch.nn.Linear(E, heads * D) for _ in range(3))
        self.o, self.out = torch.nn.Linear(heads * D, E), torch.nn.Linear(E, 3)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = self.front(audio).transpose(1, 2)  # [B, T', E]
        b, t, _ = x.shape
        q, k, v = (p(x).view(b, t, self.heads, D).transpose(1, 2) for p in (self.q, self.k, self.v))
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.out(x + self.o(a.transpose(1, 2).reshape(b, t, self.heads * D)))


def twins(compact_heads: int, copies: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The compact net and its twin whose last ``copies`` heads copy its first ones'."""
    torch.manual_seed(0)
    compact = ConvAttention(compact_heads).eval()
    twin = ConvAttention(compact_heads + copies).eval()
    twin.front.load_state_dict(compact.front.state_dict())
    twin.out.load_state_dict(compact.out.state_dict())
    src = list(range(compact_heads)) + list(range(copies))
    rows = torch.tensor([h * D + d for h in src for d in range(D)])
    share = torch.ones(len(src))
    for c in range(copies):  # the copy takes 0.3 of the head's output, the original 0.7
        share[c], share[compact_heads + c] = 0.7, 0.3
    with torch.no_grad():
        for name in ("q", "k", "v"):
            p, t = getattr(compact, name), getattr(twin, name)
            t.weight.copy_(p.weight[rows])
            t.bias.copy_(p.bias[rows])
        twin.o.weight.copy_(compact.o.weight[:, rows] * share.repeat_interleave(D)[None])
        twin.o.bias.copy_(compact.o.bias)
    return compact, twin


def export(net: torch.nn.Module, path: Path) -> Path:
    batch, length = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("length", min=64, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.randn(2, C, 200),),
            str(path),
            input_names=["audio"],
            output_names=["y"],
            dynamic_shapes={"audio": {0: batch, 2: length}},
            dynamo=True,
            external_data=False,
        )
    return path


@pytest.mark.parametrize("compact_heads,copies", [(4, 2), (3, 3)])
def test_heads_after_strided_convs_fold_back_exactly(tmp_path: Path, compact_heads: int, copies: int) -> None:
    compact, twin = twins(compact_heads, copies)
    x = torch.randn(3, C, 333)
    with torch.no_grad():
        assert torch.allclose(twin(x), compact(x), atol=1e-5)
    src = export(twin, tmp_path / "twin.onnx")
    groups = onnxfold.analyze(src)
    heads = [g for g in groups if g.size == compact_heads + copies]
    assert len(heads) == 1 and heads[0].foldable, [
        (g.name, g.size, [b.message for b in g.blocked]) for g in groups
    ]
    out = tmp_path / "folded.onnx"
    sparsity = copies / (compact_heads + copies)
    name = heads[0].name
    override = f"^{re.escape(name)}$={sparsity}"
    onnxfold.fold(
        src, 0.0, out, method="fold", repair="none", round_to=1, validate=False, overrides=[override]
    )
    folded = onnx.load(str(out))
    for length in (200, 333, 1001):
        feed = {"audio": np.random.default_rng(length).standard_normal((2, C, length)).astype(np.float32)}
        with torch.no_grad():
            ref = compact(torch.from_numpy(feed["audio"])).numpy()
        assert rel_err(run_ort(folded, feed)[0], ref) < 1e-5

    def params(model: onnx.ModelProto) -> int:
        return sum(
            int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT
        )

    twin_params, folded_params = params(onnx.load(str(src))), params(folded)
    assert twin_params - folded_params == copies * D * (3 * E + 3 + E)  # q/k/v rows, biases, o columns
