"""Attention with a packed q/k/v projection folds whole heads: torch's ``nn.MultiheadAttention`` (the
SDPA path, and bmm on [B·H, L, D] with ``need_weights``) and ``nn.TransformerEncoderLayer`` (in_proj
[3E, E], heads merged with the batch axis as [L, B·H, D]), both batch first and sequence first, and a
timm ViT block (``qkv.reshape(B, N, 3, H, D).permute(2, 0, 3, 1, 4).unbind(0)``), exported by the
legacy and the dynamo exporter. Exact oracles: heads (and MLP neurons) whose second half copies the
first fold back to the same function; ``-s 0`` gives the same outputs bit for bit."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from harness import run_ort

import onnxfold

E, H, F = 32, 4, 48  # width, heads (two copies of two), MLP width (two copies of 24)
D = E // H


class MHA(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(E, H, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


class MHAWeights(MHA):
    """The default ``need_weights=True``: the attention runs on [B·H, L, D] through bmm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x)[0]


class Encoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.TransformerEncoderLayer(E, H, F, dropout=0.0, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class MHASeq(MHA):
    """Sequence first ([L, B, E], torch's default): the heads are split as [L, B·H, D] and leave
    through a target [L·B, E] whose leading entry is computed at run time (mandsot's encoder)."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(E, H)


class EncoderSeq(Encoder):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.TransformerEncoderLayer(E, H, F, dropout=0.0)


class Timm(torch.nn.Module):
    """timm's ``Attention``: one qkv Linear, heads split from the packed axis and unbound."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.proj = torch.nn.Linear(E, 3 * E), torch.nn.Linear(E, E)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, H, D).permute(2, 0, 3, 1, 4).unbind(0)
        att = torch.softmax(q @ k.transpose(-2, -1) * D**-0.5, dim=-1)
        return self.proj((att @ v).transpose(1, 2).reshape(b, n, c))


class TimmBatchFree(Timm):
    """``reshape(-1, N, 3, H, D)`` with the sequence fixed and the batch free: the dynamo export's
    target is the constant [-1, 5, 3, H, D], and ONNX's inference leaves the batch of its output
    unknown (a made-up symbol), which kept the packed axis from being unpacked (the coverage ViT)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[1], x.shape[2]
        q, k, v = self.qkv(x).reshape(-1, n, 3, H, D).permute(2, 0, 3, 1, 4).unbind(0)
        att = torch.softmax(q @ k.transpose(-2, -1) * D**-0.5, dim=-1)
        return self.proj((att @ v).transpose(1, 2).reshape(-1, n, c))


@torch.no_grad()
def duplicated(net: torch.nn.Module) -> tuple[torch.nn.Module, int]:
    """Heads H/2… copy heads 0… in q, k and v (rows of the packed weight and bias) and in the output
    projection's columns; MLP neurons likewise. Returns the net and the parameters a fold of the copies
    removes."""
    torch.manual_seed(0)
    for p in net.parameters():
        p.normal_(0, 0.3)
    if isinstance(net, Timm):
        packed, bias, out = net.qkv.weight, net.qkv.bias, net.proj.weight
    else:
        attn = net.attn if isinstance(net, MHA) else net.layer.self_attn
        packed, bias, out = attn.in_proj_weight, attn.in_proj_bias, attn.out_proj.weight
    half = E // 2
    for part in range(3):
        rows = slice(part * E + half, (part + 1) * E)
        packed[rows] = packed[part * E : part * E + half]
        bias[rows] = bias[part * E : part * E + half]
    out[:, half:] = out[:, :half]
    removed = 3 * half * E + 3 * half + E * half
    if isinstance(net, Encoder):
        up, down = net.layer.linear1, net.layer.linear2
        up.weight[F // 2 :] = up.weight[: F // 2]
        up.bias[F // 2 :] = up.bias[: F // 2]
        down.weight[:, F // 2 :] = down.weight[:, : F // 2]
        removed += (F // 2) * (E + 1) + E * (F // 2)
    return net.eval(), removed


def export(net: torch.nn.Module, path: Path, exporter: str) -> Path:
    x = torch.randn(2, 5, E)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter.startswith("legacy"):  # legacy-free: a sequence-first batch free (mandsot's)
            free = {"x": {1: "batch"}, "y": {1: "batch"}} if exporter == "legacy-free" else None
            torch.onnx.export(
                net,
                (x,),
                str(path),
                dynamo=False,
                input_names=["x"],
                output_names=["y"],
                opset_version=17,
                dynamic_axes=free,
            )
        else:
            dims = {"x": {0: torch.export.Dim("batch"), 1: torch.export.Dim("seq")}}
            if isinstance(net, TimmBatchFree):
                dims = {"x": {0: torch.export.Dim("batch")}}
            torch.onnx.export(
                net, (x,), str(path), input_names=["x"], output_names=["y"], dynamic_shapes=dims
            )
    return path


def params(model: onnx.ModelProto) -> int:
    """Float weights and biases (scalars that a fold lifts from Constant nodes left out)."""
    sizes = [int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    return sum(n for n in sizes if n > 1)


CASES = [
    (MHA, "legacy"),
    (MHA, "dynamo"),
    (MHAWeights, "legacy"),
    (MHAWeights, "dynamo"),
    (Encoder, "legacy"),
    (Encoder, "dynamo"),
    (MHASeq, "legacy"),
    (MHASeq, "legacy-free"),
    (MHASeq, "dynamo"),
    (EncoderSeq, "legacy"),
    (EncoderSeq, "legacy-free"),
    (EncoderSeq, "dynamo"),
    (Timm, "legacy"),
    (Timm, "dynamo"),
    (TimmBatchFree, "dynamo"),
]


@pytest.mark.parametrize(("kind", "exporter"), CASES, ids=[f"{k.__name__}-{e}" for k, e in CASES])
def test_heads_of_a_packed_projection_fold_back_exactly(tmp_path: Path, kind: type, exporter: str) -> None:
    net, removed = duplicated(kind())
    src = export(net, tmp_path / "m.onnx", exporter)
    heads = [g for g in onnxfold.analyze(src) if g.foldable and g.unit == D]
    assert heads, [(g.name, g.reason) for g in onnxfold.analyze(src)]
    same, half = tmp_path / "same.onnx", tmp_path / "half.onnx"
    onnxfold.fold(src, 0.0, same, repair="none", validate=False)
    onnxfold.fold(src, 0.5, half, method="fold", repair="none", round_to=1, validate=False)
    original = onnx.load(str(src))
    folded = onnx.load(str(half))
    assert params(folded) == params(original) - removed
    shapes = [(2, 5, E)] if exporter == "legacy" else [(2, 5, E), (3, 9, E), (1, 1, E)]
    shapes = [(2, 5, E), (3, 5, E)] if kind is TimmBatchFree else shapes
    shapes = [(2, 5, E), (2, 3, E), (2, 1, E)] if exporter == "legacy-free" else shapes
    for shape in shapes:
        x = np.random.default_rng(len(shape)).standard_normal(shape).astype(np.float32)
        ref = run_ort(original, {"x": x})[0]
        assert np.array_equal(run_ort(onnx.load(str(same)), {"x": x})[0], ref)
        got = run_ort(folded, {"x": x})[0]
        assert np.abs(got - ref).max() <= 1e-5 * max(1.0, float(np.abs(ref).max()))


@pytest.mark.parametrize("kind", [MHA, Timm], ids=["MHA", "Timm"])
def test_a_fold_that_folds_nothing_writes_the_attention_as_it_was(tmp_path: Path, kind: type) -> None:
    """The rewrites serve the analysis; where no fold uses them (``-s 0``, a model kept whole) the
    output keeps the source's attention: onnxruntime fused PP-OCRv4's rewritten attention its own way
    (two more scale Muls into FusedMatMul), 7e-7 from the source at ``-s 0``."""
    src = export(duplicated(kind())[0], tmp_path / "m.onnx", "legacy")
    same = tmp_path / "same.onnx"
    onnxfold.fold(src, 0.0, same, repair="none", validate=False)
    written = onnx.load(str(same)).graph
    ops, source = [n.op_type for n in written.node], [n.op_type for n in onnx.load(str(src)).graph.node]
    names = [n.name for n in written.node] + [t.name for t in written.initializer]
    assert not any("_unpacked" in n or n.endswith("_heads") for n in names)
    for op in ("Gather", "Split", "Squeeze", "MatMul"):  # the parts still picked as the source picks them
        assert ops.count(op) == source.count(op), op
    half = tmp_path / "half.onnx"  # a fold of the heads keeps the rewrite it needs
    onnxfold.fold(src, 0.5, half, method="fold", repair="none", round_to=1, validate=False)
    assert any("_unpacked" in n.name for n in onnx.load(str(half)).graph.node)


def test_a_later_fold_that_folds_nothing_keeps_an_earlier_fold(tmp_path: Path) -> None:
    """Once a fold has used the rewrites, the graph before them is stale: a second fold in the same
    pipeline that folds nothing must not take it back (and the first fold with it)."""
    from onnxfold.passes import CanonicalizePass, FoldPass

    src = export(duplicated(Timm())[0], tmp_path / "m.onnx", "legacy")
    out = tmp_path / "twice.onnx"
    passes = [
        CanonicalizePass(),
        FoldPass(sparsity=0.5, method="fold", round_to=1),
        FoldPass(sparsity=0.0),
    ]
    _, report = onnxfold.run_pipeline(src, passes, out)
    assert params(onnx.load(str(out))) < params(onnx.load(str(src)))
    x = np.random.default_rng(3).standard_normal((2, 5, E)).astype(np.float32)
    ref = run_ort(onnx.load(str(src)), {"x": x})[0]
    assert np.abs(run_ort(onnx.load(str(out)), {"x": x})[0] - ref).max() <= 1e-5 * max(
        1.0, float(np.abs(ref).max())
    )


class SeqFirstEncoder(Encoder):
    """``nn.TransformerEncoderLayer`` with the sequence first (torch's default), as mandsot's onset
    detector runs it: its attention reads the sequence length as ``k.size(1)`` of [B·H, L, D]."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.TransformerEncoderLayer(E, H, F, dropout=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.transpose(0, 1)).transpose(0, 1)


def test_a_lifted_attention_whose_sequence_length_a_shape_reads_runs_on_samples(tmp_path: Path) -> None:
    """Trial 188: with the batch free and the sequence fixed, canonicalize computed L = Shape(k)[1] on
    k [B·H, L, D]; the heads lift makes k [B, H, L, D], and the computation written back read H where
    L was: every --inputs run failed in onnxfold's own graph ("requested shape {8,4,4,64}")."""
    net, _ = duplicated(SeqFirstEncoder())
    path = _batch_free(net, tmp_path / "enc.onnx")
    x = np.random.default_rng(0).standard_normal((8, 5, E)).astype(np.float32)
    out = tmp_path / "o.onnx"
    onnxfold.fold(path, 0.0, out, inputs={"x": x}, method="lsq", validate=False)
    # the kept model is written simplified (its static shape arithmetic folded): the same computation
    # bit for bit under onnxruntime's basic optimizations; its extended fusions may fuse more of it
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    got, want = (ort.InferenceSession(str(p), options).run(None, {"x": x})[0] for p in (out, path))
    assert np.array_equal(got, want)


def _batch_free(net: torch.nn.Module, path: Path) -> Path:
    """The legacy export with the batch free and the sequence (5) fixed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.randn(2, 5, E),),
            str(path),
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            opset_version=17,
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        )
    return path
