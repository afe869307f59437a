"""Hugging Face transformers built from configs (offline): heads and MLPs fold with a recipe; with a KV
cache in the signature (LLaMA), the heads are kept and the MLPs fold."""

from __future__ import annotations

import inspect
import os
import warnings

import numpy as np
import onnx
import pytest
import torch
import transformers

import onnxfold
from onnxfold.runtime.session import make_session

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RECIPE = "default: 0.0\nrules:\n  - layers: 0-1\n    heads: 0.5\n    mlp: 0.5\n"


class LastHidden(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, **call: bool) -> None:
        super().__init__()
        self.model, self.call = model, call

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, **self.call).last_hidden_state


COMMON = dict(
    vocab_size=100,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=64,
    attn_implementation="eager",
)
LAYERS, KV_HEADS, HEAD_DIM = 2, 4, 16  # LLaMA without num_key_value_heads: one KV head per query head
PAST = [f"past_{kind}_{i}" for i in range(LAYERS) for kind in ("key", "value")]
PRESENT = [name.replace("past", "present") for name in PAST]


def tiny_llama() -> torch.nn.Module:
    torch.manual_seed(0)
    return transformers.LlamaModel(transformers.LlamaConfig(**COMMON)).eval()


@torch.no_grad()
def duplicate_halves(model: torch.nn.Module) -> torch.nn.Module:
    """Make the second half of every layer's heads and MLP neurons copies of the first half: producer rows
    (q/k/v, gate/up or BERT's intermediate, with biases) and consumer columns (o_proj, down_proj or BERT's
    output denses). Every channel then has an exact twin, so folding heads and MLPs at 0.5 pairs the twins
    and gives back the same function (a twin pair's consumer columns are summed)."""

    def rows(lin: torch.nn.Linear) -> None:
        half = lin.weight.shape[0] // 2
        lin.weight[half:] = lin.weight[:half]
        if lin.bias is not None:
            lin.bias[half:] = lin.bias[:half]

    def cols(lin: torch.nn.Linear) -> None:
        half = lin.weight.shape[1] // 2
        lin.weight[:, half:] = lin.weight[:, :half]

    for layer in getattr(model, "layers", None) or model.encoder.layer:
        if hasattr(layer, "self_attn"):  # LLaMA, Mistral (GQA: KV head i serves query heads of the same half)
            attn, mlp = layer.self_attn, layer.mlp
            for lin in (attn.q_proj, attn.k_proj, attn.v_proj, mlp.gate_proj, mlp.up_proj):
                rows(lin)
            cols(attn.o_proj)
            cols(mlp.down_proj)
        else:  # BERT
            attn = layer.attention
            for lin in (attn.self.query, attn.self.key, attn.self.value, layer.intermediate.dense):
                rows(lin)
            cols(attn.output.dense)
            cols(layer.output.dense)
    return model


def build(kind: str) -> torch.nn.Module:
    if kind == "llama":
        return LastHidden(duplicate_halves(tiny_llama()), use_cache=False)
    torch.manual_seed(0)
    bert = transformers.BertModel(transformers.BertConfig(**COMMON)).eval()
    return LastHidden(duplicate_halves(bert))


def assert_same_function(got: np.ndarray, ref: np.ndarray) -> None:
    """The duplicate oracle: the fold of twin channels computes what the original computes."""
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-4 * max(1.0, float(np.abs(ref).max()))


def export(model: torch.nn.Module, path, style: str):
    ids = torch.randint(0, 100, (2, 7))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if style == "legacy":
            torch.onnx.export(
                model,
                (ids,),
                str(path),
                dynamo=False,
                input_names=["input_ids"],
                output_names=["hidden"],
                dynamic_axes={"input_ids": {0: "batch", 1: "seq"}},
                opset_version=17,
            )
        else:
            torch.onnx.export(
                model,
                (ids,),
                str(path),
                input_names=["input_ids"],
                output_names=["hidden"],
                dynamic_shapes={"input_ids": {0: torch.export.Dim("batch"), 1: torch.export.Dim("seq")}},
            )
    return path


class LastHiddenWithCache(torch.nn.Module):
    """``input_ids`` plus explicit per-layer past keys/values (``[batch, kv_heads, past_seq, head_dim]``,
    key then value for each layer) → the last hidden state plus the present keys/values (past and this
    step's, concatenated on the sequence axis), through a ``transformers.DynamicCache`` built in forward."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        # transformers 5.x renames ``past_key_values`` to ``cache`` (the old name is removed in 5.40)
        params = inspect.signature(model.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"

    def forward(self, input_ids: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cache = transformers.DynamicCache(
            list(zip(past[0::2], past[1::2], strict=True)), config=self.model.config
        )
        hidden = self.model(input_ids=input_ids, use_cache=True, **{self.cache_arg: cache}).last_hidden_state
        return (hidden, *[t for layer in cache.layers for t in (layer.keys, layer.values)])


def export_with_cache(path, style: str):
    model = LastHiddenWithCache(tiny_llama())
    ids = torch.randint(0, 100, (2, 7))
    past = tuple(torch.randn(2, KV_HEADS, 3, HEAD_DIM) for _ in PAST)
    names = dict(input_names=["input_ids", *PAST], output_names=["hidden", *PRESENT])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if style == "legacy":
            axes = {"input_ids": {0: "batch", 1: "seq"}, "hidden": {0: "batch", 1: "seq"}}
            axes |= {n: {0: "batch", 2: "past_seq"} for n in PAST} | {
                n: {0: "batch", 2: "total_seq"} for n in PRESENT
            }
            torch.onnx.export(
                model, (ids, *past), str(path), dynamo=False, dynamic_axes=axes, opset_version=17, **names
            )
        else:
            batch, seq, past_seq = (torch.export.Dim(n) for n in ("batch", "seq", "past_seq"))
            shapes = ({0: batch, 1: seq}, tuple({0: batch, 2: past_seq} for _ in PAST))
            torch.onnx.export(model, (ids, *past), str(path), dynamic_shapes=shapes, **names)
    return path


def io_signature(path) -> list:
    graph = onnx.load(str(path), load_external_data=False).graph
    sig = []
    for v in list(graph.input) + list(graph.output):
        dims = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        sig.append((v.name, dims))
    return sig


@pytest.mark.parametrize(("kind", "style"), [("llama", "dynamo"), ("bert", "legacy"), ("bert", "dynamo")])
def test_tiny_transformer_folds_heads_and_mlp_with_a_recipe(tmp_path, kind, style):
    src = export(build(kind), tmp_path / "m.onnx", style)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    out = tmp_path / "f.onnx"
    _, report = onnxfold.fold(src, 0.0, out, recipe=recipe, check=True)
    onnx.checker.check_model(str(out), full_check=True)
    assert io_signature(out) == io_signature(src)  # names and symbolic dims unchanged
    folded = [p for p in report.plans if p.status == "folded"]
    kinds = {(p.group.kind, p.group.layer) for p in folded}
    assert kinds == {("heads", 0), ("heads", 1), ("channels", 0), ("channels", 1)}
    assert all(p.k == p.group.size // 2 for p in folded)
    heads = [p for p in folded if p.group.kind == "heads"]
    assert all(p.group.size == 4 and p.group.unit == 16 for p in heads)
    ids = np.random.default_rng(0).integers(0, 100, (3, 9)).astype(np.int64)
    got = make_session(str(out)).run(None, {"input_ids": ids})[0]
    ref = make_session(str(src)).run(None, {"input_ids": ids})[0]
    assert got.shape == ref.shape == (3, 9, 64)
    assert_same_function(got, ref)
    assert report.after.params < report.before.params
    text = report.format()
    assert "heads" in text and "channels" in text


@pytest.mark.parametrize(("kind", "style"), [("bert", "dynamo"), ("bert", "legacy"), ("llama", "dynamo")])
def test_no_compression_gives_the_same_outputs_bit_for_bit_as_onnxruntime_runs_them(tmp_path, kind, style):
    """``-s 0`` under onnxruntime's default optimisations: the symbols the exporter named the dims
    with (batch, seq) stay on the tensors between nodes. Inferred again, BERT's dynamo export had
    165 of them made up (``unk__N``); onnxruntime could no longer prove a residual Add's operands
    the same shape, fused 2 of its 4 Add + LayerNormalization into SkipLayerNormalization and the
    outputs moved by 7e-7 (an independent oracle builder's finding)."""
    src = export(build(kind), tmp_path / "m.onnx", style)
    out = tmp_path / "same.onnx"
    onnxfold.fold(src, 0.0, out, validate=False)
    ids = np.random.default_rng(0).integers(0, 100, (3, 9)).astype(np.int64)
    got = make_session(str(out)).run(None, {"input_ids": ids})[0]
    ref = make_session(str(src)).run(None, {"input_ids": ids})[0]
    assert np.array_equal(got, ref), float(np.abs(got - ref).max())


@pytest.mark.parametrize("style", ["dynamo", "legacy"])
def test_tiny_llama_with_kv_cache_keeps_its_heads_and_folds_its_mlps(tmp_path, style):
    """LLaMA exported with KV-cache inputs and outputs, by both exporters (the legacy one manages here: the
    packed-sequence check that needs ``aten::diff`` only runs without a cache). The past/present keys and
    values carry the head axis in the model's signature, so the head groups must stay blocked, naming the
    graph input and output, while both MLPs fold; the cache passes through the folded model unchanged.
    Legacy exports may block the heads at the causal-mask Add as well (the mask's head dim comes from an
    Expand of a computed shape); the signature reasons are asserted either way."""
    if int(transformers.__version__.split(".")[0]) < 5:
        pytest.skip(
            "the KV-cache wrapper uses the transformers 5 Cache API (DynamicCache(pairs), cache.layers)"
        )
    src = export_with_cache(tmp_path / "m.onnx", style)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    out = tmp_path / "f.onnx"
    _, report = onnxfold.fold(src, 0.0, out, recipe=recipe, check=True)
    onnx.checker.check_model(str(out), full_check=True)
    signature = io_signature(src)
    assert [name for name, _ in signature] == ["input_ids", *PAST, "hidden", *PRESENT]
    assert dict(signature)["past_key_0"] == ["batch", KV_HEADS, "past_seq", HEAD_DIM]
    assert io_signature(out) == signature  # names and symbolic dims unchanged

    folded = [p for p in report.plans if p.status == "folded"]
    assert {(p.group.kind, p.group.layer) for p in folded} == {("channels", 0), ("channels", 1)}
    assert all(p.group.size == 128 and p.k == 64 for p in folded)
    heads = sorted((p for p in report.plans if p.group.kind == "heads"), key=lambda p: p.group.layer)
    assert [p.group.layer for p in heads] == list(range(LAYERS))
    for i, p in enumerate(heads):
        assert p.status == "blocked" and p.group.size == KV_HEADS and p.group.unit == HEAD_DIM, p.reason
        for kind in ("key", "value"):
            assert f"reaches graph output present_{kind}_{i}" in p.reason, p.reason
            assert f"graph input past_{kind}_{i}" in p.reason, p.reason  # past and new k/v are concatenated
        assert {"graph-output", "graph-input"} <= {r.code for r in p.reasons}, p.reasons
    assert report.after.params < report.before.params

    rng = np.random.default_rng(0)
    src_sess, out_sess = make_session(str(src)), make_session(str(out))
    for past_seq in (3, 0):
        feeds = {"input_ids": rng.integers(0, 100, (3, 5)).astype(np.int64)}
        feeds |= {n: rng.standard_normal((3, KV_HEADS, past_seq, HEAD_DIM)).astype(np.float32) for n in PAST}
        ref, got = src_sess.run(None, feeds), out_sess.run(None, feeds)
        shapes = [(3, 5, 64)] + [(3, KV_HEADS, past_seq + 5, HEAD_DIM)] * len(PRESENT)
        assert [g.shape for g in got] == [r.shape for r in ref] == shapes
        assert all(np.isfinite(g).all() for g in got)
        for name, present in zip(PAST, got[1:], strict=True):
            np.testing.assert_array_equal(present[:, :, :past_seq], feeds[name])  # the past passes through
        for r, g in zip(ref[1:3], got[1:3], strict=True):  # layer 0's k/v come before any folded MLP
            np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5)


class MaskedHidden(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def test_bert_with_attention_mask_folds_duplicate_heads_exactly(tmp_path):
    """With an attention_mask input the legacy exporter builds the [B, 1, S, S] mask with an Expand
    whose shape is Where(Equal(X, ConstantOfShape(Shape(X)) * -1), ones, X): ONNX cannot infer its
    head dim, but it is 1, so the mask broadcasts over heads and the heads fold. Heads 2 and 3 are
    copies of heads 0 and 1, so folding 4 → 2 heads is exact, padded positions included."""
    torch.manual_seed(0)
    bert = transformers.BertModel(transformers.BertConfig(**COMMON)).eval()
    with torch.no_grad():
        for layer in bert.encoder.layer:
            for lin in (layer.attention.self.query, layer.attention.self.key, layer.attention.self.value):
                lin.weight[32:] = lin.weight[:32]
                lin.bias[32:] = lin.bias[:32]
    ids = torch.randint(0, 100, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.int64)
    mask[1, 4:] = 0
    src = tmp_path / "m.onnx"
    dyn = {0: "batch", 1: "seq"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            MaskedHidden(bert),
            (ids, mask),
            str(src),
            dynamo=False,
            input_names=["input_ids", "attention_mask"],
            output_names=["hidden"],
            dynamic_axes={"input_ids": dyn, "attention_mask": dyn, "hidden": dyn},
            opset_version=17,
        )
    recipe = tmp_path / "r.yaml"
    recipe.write_text("default: 0.0\nrules:\n  - heads: 0.5\n    mlp: 0.0\n")
    out = tmp_path / "f.onnx"
    _, report = onnxfold.fold(src, 0.0, out, recipe=recipe, repair="none", validate=False, check=True)
    heads = [p for p in report.plans if p.group.kind == "heads"]
    assert len(heads) == 2 and all(p.status == "folded" and p.k == 2 for p in heads), [
        (p.group.name, p.status, p.reason) for p in heads
    ]
    rng = np.random.default_rng(0)
    feeds = {
        "input_ids": rng.integers(0, 100, (3, 9)).astype(np.int64),
        "attention_mask": np.ones((3, 9), np.int64),
    }
    feeds["attention_mask"][1, 5:] = 0
    feeds["attention_mask"][2, 2:] = 0
    ref = make_session(str(src)).run(None, feeds)[0]
    got = make_session(str(out)).run(None, feeds)[0]
    assert np.abs(got - ref).max() <= 1e-4 * max(1.0, float(np.abs(ref).max()))
    assert report.after.params < report.before.params


def test_mistral_gqa_with_static_sequence_folds_its_kv_groups(tmp_path):
    """The dynamo export of a GQA model with a static sequence builds repeat_kv's Expand shape from one
    deduplicated constant for batch, KV heads and repeat factor: the heads fold without a rollback."""
    torch.manual_seed(0)
    cfg = transformers.MistralConfig(
        vocab_size=100,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        attn_implementation="eager",
    )
    model = LastHidden(duplicate_halves(transformers.MistralModel(cfg).eval()), use_cache=False)
    ids = torch.randint(0, 100, (2, 7))
    src = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (ids,),
            str(src),
            input_names=["input_ids"],
            output_names=["hidden"],
            dynamic_shapes={"input_ids": {0: torch.export.Dim("batch")}},
        )
    out = tmp_path / "f.onnx"
    _, report = onnxfold.fold(src, 0.5, out, check=True, validate=False)
    heads = [p for p in report.plans if p.group.kind == "heads"]
    assert len(heads) == 2 and all(p.status == "folded" and (p.group.size, p.k) == (2, 1) for p in heads), [
        (p.status, p.reason[:200]) for p in heads
    ]
    feed = {"input_ids": np.random.default_rng(0).integers(0, 100, (3, 7)).astype(np.int64)}
    got = make_session(str(out)).run(None, feed)[0]
    ref = make_session(str(src)).run(None, feed)[0]
    assert got.shape == (3, 7, 64)
    assert_same_function(got, ref)
