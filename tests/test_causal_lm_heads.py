"""Heads of a transformers causal LM exported as ``onnxfold bench llm`` exports SmolLM2 (a tiny LLaMA with
grouped-query attention, tied embeddings and transformers' default ``sdpa`` attention), by the dynamo
exporter and by the legacy one (which needs an explicit ``attention_mask`` without a KV cache).

The dynamo export writes kᵀ as ``Reshape(k, [−1, S, dh]) → Transpose → Reshape(·, [B, H, dh, S])`` and
zeroes NaN rows of the probabilities with ``Where(IsNaN(p), 0, p)``; the legacy export takes the head
count of repeat_kv from ``Shape`` after a ``[B, S, −1, dh]`` Reshape. Both kept every head before. The
oracle: KV head 1 and its query group are copies of KV head 0 and its group, so folding the heads at 0.5
gives back the same logits, at any sequence length; at sparsity 0 the fold is bit for bit the export.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import onnx
import pytest
import torch
import transformers
from harness import Net, rnd, run_ort

import onnxfold
from onnxfold.analysis import UNSUPPORTED_FORM
from onnxfold.bench.llm_model import export_causal_lm
from onnxfold.ir.model import model_from_proto, to_model_proto
from onnxfold.passes import REGISTRY
from onnxfold.pipeline.manager import PassManager, parse_pipeline
from onnxfold.runtime.session import make_session

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VOCAB, HIDDEN, HEADS, KV_HEADS, HEAD_DIM, LAYERS = 128, 64, 4, 2, 16, 2
RECIPE = "default: 0.0\nrules:\n  - heads: 0.5\n    mlp: 0.0\n"


@torch.no_grad()
def tiny_causal_lm() -> torch.nn.Module:
    """A 2-layer LlamaForCausalLM (tied embeddings, GQA 4/2, head_dim 16) whose KV head 1 with its query
    heads 2, 3 copies KV head 0 with heads 0, 1 (q/k/v rows); o_proj reads the copies through the same
    columns, so the model computes what a 1-KV-head model with doubled o_proj columns computes."""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=128,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        head_dim=HEAD_DIM,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    model = transformers.LlamaForCausalLM(config).eval()
    for layer in model.model.layers:
        attn = layer.self_attn
        for lin in (attn.q_proj, attn.k_proj, attn.v_proj):
            half = lin.weight.shape[0] // 2
            lin.weight[half:] = lin.weight[:half]
        half = attn.o_proj.weight.shape[1] // 2
        attn.o_proj.weight[:, half:] = attn.o_proj.weight[:, :half]
    return model


class MaskedLogits(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.lm = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


def export(path, style: str):
    model = tiny_causal_lm()
    if style == "dynamo":  # exactly the bench's export
        assert export_causal_lm(model, path, VOCAB) < 1e-4
        return path
    ids = torch.randint(0, VOCAB, (2, 7))
    dyn = {0: "batch", 1: "seq"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            MaskedLogits(model),
            (ids, torch.ones_like(ids)),
            str(path),
            dynamo=False,
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={"input_ids": dyn, "attention_mask": dyn, "logits": dyn},
            opset_version=17,
        )
    return path


@pytest.fixture(scope="module", params=["dynamo", "legacy"])
def exported(request, tmp_path_factory):
    """(style, path) of the export, made once per style for the tests of this module."""
    return request.param, export(tmp_path_factory.mktemp(request.param) / "m.onnx", request.param)


def feeds(style: str, batch: int, seq: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {"input_ids": rng.integers(0, VOCAB, (batch, seq)).astype(np.int64)}
    if style == "legacy":
        mask = np.ones((batch, seq), np.int64)
        mask[1, seq // 2 :] = 0  # a padded row: the mask path folds with the heads too
        out["attention_mask"] = mask
    return out


def head_plans(report) -> list:
    return sorted((p for p in report.plans if p.group.kind == "heads"), key=lambda p: p.group.layer)


def test_duplicate_kv_heads_fold_back_exactly(tmp_path, exported):
    style, src = exported
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    out = tmp_path / "f.onnx"
    _, report = onnxfold.fold(src, 0.0, out, recipe=recipe, repair="none", validate=False, check=True)
    heads = head_plans(report)
    assert [p.group.layer for p in heads] == list(range(LAYERS)), [
        (p.group.name, p.status, p.reason) for p in report.plans
    ]
    for p in heads:  # one unit = a KV head with its query group: 2 units → 1
        assert p.status == "folded" and (p.group.size, p.k) == (KV_HEADS, 1), (p.group.name, p.reason)
    assert {p.group.kind for p in report.plans if p.status == "folded"} == {"heads"}
    assert report.after.params < report.before.params
    ref_sess, got_sess = make_session(str(src)), make_session(str(out))
    for seq, seed in ((5, 0), (11, 1)):
        feed = feeds(style, 2, seq, seed)
        ref = ref_sess.run(None, feed)[0]
        got = got_sess.run(None, feed)[0]
        assert got.shape == ref.shape == (2, seq, VOCAB)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4 * max(1.0, float(np.abs(ref).max())))


def test_sparsity_zero_keeps_foldable_heads_and_every_bit(tmp_path, exported):
    style, src = exported
    groups = onnxfold.analyze(str(src))
    heads = [g for g in groups if g.kind == "heads"]
    assert len(heads) == LAYERS and all(not g.blocked for g in heads), [
        (g.name, [str(r) for r in g.blocked]) for g in groups if g.blocked
    ]
    out = tmp_path / "f.onnx"
    onnxfold.fold(src, 0.0, out, repair="none", validate=False, check=True)
    ref_sess, got_sess = make_session(str(src)), make_session(str(out))
    for seq, seed in ((5, 0), (11, 1)):
        feed = feeds(style, 2, seq, seed)
        np.testing.assert_array_equal(got_sess.run(None, feed)[0], ref_sess.run(None, feed)[0])


# --------------------------------------------------------------------------------- the forms, one by one
def canonical(proto: onnx.ModelProto) -> onnx.ModelProto:
    model = model_from_proto(proto)
    PassManager(parse_pipeline("canonicalize", REGISTRY)).run(model)
    return to_model_proto(model)


def merged_key_transpose(swapped: bool) -> onnx.ModelProto:
    """k [N, 4, 5, 3] → Reshape [−1, 5, 3] (from Shape(k)) → Transpose(0, 2, 1) → Reshape [N, 4, 3, 5],
    the dynamo export of kᵀ; ``swapped=False`` reshapes back to [N, 4, 5, 3] instead, which is no
    transpose of k (the elements of [N·4, 3, 5] reread in another shape)."""
    net = Net({})
    k = net.input("k", ["N", 4, 5, 3])
    dims = net("Shape", k)
    seq = net("Slice", dims, net.i64("m2", [-2]), net.i64("m1", [-1]))
    lead = net("Slice", dims, net.i64("zero", [0]), net.i64("two", [2]))
    flat = net("Reshape", k, net("Concat", net.i64("minus", [-1]), seq, net.i64("d", [3]), axis=0))
    turned = net("Transpose", flat, perm=[0, 2, 1])
    back = [net.i64("d2", [3]), seq] if swapped else [seq, net.i64("d2", [3])]
    return net.model(net("Reshape", turned, net("Concat", lead, *back, axis=0)))


@pytest.mark.parametrize("swapped", [True, False])
def test_key_transpose_through_merged_batch_and_heads(swapped):
    src = merged_key_transpose(swapped)
    out = canonical(src)
    ops = [n.op_type for n in out.graph.node]
    if swapped:  # one Transpose of the last two axes: the head axis is never merged with the batch
        assert ops == ["Transpose"]
        assert list(out.graph.node[0].attribute[0].ints) == [0, 1, 3, 2]
    else:
        assert ops.count("Reshape") == 2
    feed = {"k": np.random.default_rng(0).standard_normal((2, 4, 5, 3)).astype(np.float32)}
    np.testing.assert_array_equal(run_ort(out, feed)[0], run_ort(src, feed)[0])


def permuted_key_transpose(picks: list[int]) -> onnx.ModelProto:
    """k = Transpose(v [N, 5, 4, 3], (0, 2, 1, 3)), then kᵀ as above, its targets read from
    ``Gather(Shape(v), picks)`` (pipecat's smart-turn, a dynamo export at a symbolic batch, reads them
    from the shape of k before its head Transpose): with picks (0, 2, 1, 3) they are k's dims."""
    net = Net({})
    v = net.input("v", ["N", 5, 4, 3])
    k = net("Transpose", v, perm=[0, 2, 1, 3])
    dims = net("Gather", net("Shape", v), net.i64("picks", picks), axis=0)
    seq = net("Slice", dims, net.i64("m2", [-2]), net.i64("m1", [-1]))
    depth = net("Slice", dims, net.i64("m1b", [-1]), net.i64("end", [4]))
    lead = net("Slice", dims, net.i64("zero", [0]), net.i64("two", [2]))
    flat = net("Reshape", k, net("Concat", net.i64("minus", [-1]), seq, depth, axis=0))
    turned = net("Transpose", flat, perm=[0, 2, 1])
    return net.model(net("Reshape", turned, net("Concat", lead, depth, seq, axis=0)))


@pytest.mark.parametrize("picks", [[0, 2, 1, 3], [0, 1, 2, 3]])
def test_key_transpose_whose_targets_come_from_the_shape_before_the_head_transpose(picks):
    src = permuted_key_transpose(picks)
    out = canonical(src)
    feed = {"v": np.random.default_rng(0).standard_normal((2, 5, 4, 3)).astype(np.float32)}
    transposes = [n for n in out.graph.node if n.op_type == "Transpose"]
    if picks == [0, 2, 1, 3]:  # k's own dims: one Transpose of its last two axes after the head one
        assert [n.op_type for n in out.graph.node] == ["Transpose", "Transpose"]
        assert list(transposes[1].attribute[0].ints) == [0, 1, 3, 2]
        np.testing.assert_array_equal(run_ort(out, feed)[0], run_ort(src, feed)[0])
    else:  # v's dims in v's order are not k's: kept as it is (it runs on no shape here but its own)
        assert [n.op_type for n in out.graph.node].count("Reshape") == 2


def test_head_count_of_a_minus_one_reshape_is_inferred():
    """Legacy export: k [N, S, 32] → Reshape to [Shape(x)[0], Shape(x)[1], −1, 16] with x [N, S, 64]: the
    −1 is 32 / 16 = 2 once the symbols N and S cancel, so the head count read by Shape is a constant."""
    net = Net({"w": np.ones((64, 32), np.float32)})
    x = net.input("x", ["N", "S", 64])
    dims = net("Shape", x)
    picked = [
        net("Unsqueeze", net("Gather", dims, net.i64(f"i{i}", i)), net.i64(f"a{i}", [0])) for i in (0, 1)
    ]
    target = net("Concat", *picked, net.i64("minus", [-1]), net.i64("hd", [16]), axis=0)
    heads = net("Reshape", net("MatMul", x, "w"), target, name="split")
    model = model_from_proto(net.model(heads))
    PassManager(parse_pipeline("canonicalize", REGISTRY)).run(model)
    # the shapes the passes see (a file is written with the shapes its source recorded: here none)
    assert list(model.graph.tensors()["split_y"].shape) == ["N", "S", 2, 16]


def test_where_by_a_per_channel_constant_condition_blocks():
    """Where(IsNaN(h), 0, h) passes the channels of h; a constant condition with one entry per channel
    would select differently for merged channels, so its group stays, with the reason naming it."""
    rng = np.random.default_rng(0)
    net = Net({"w1": rnd(rng, 4, 6), "w2": rnd(rng, 6, 3), "w3": rnd(rng, 6, 6), "w4": rnd(rng, 6, 3)})
    x = net.input("x", [2, 4])
    h = net("MatMul", x, "w1", name="mm1")
    kept = net("Where", net("IsNaN", h), net.f("zero", 0.0), h)
    g = net("MatMul", x, "w3", name="mm3")
    picked = net("Where", net.const("cond", [True, False] * 3), g, net.f("zero2", 0.0))
    model = net.model(net("Add", net("MatMul", kept, "w2"), net("MatMul", picked, "w4")))
    groups = {g.producers[0]: g for g in onnxfold.analyze(model)}
    assert groups["mm1"].foldable, groups["mm1"].blocked
    assert [r.code for r in groups["mm3"].blocked] == [UNSUPPORTED_FORM], groups["mm3"].blocked
    assert "constant condition" in groups["mm3"].blocked[0].message
