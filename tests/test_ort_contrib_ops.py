"""onnxruntime's fused transformer ops (com.microsoft Attention with a packed QKV weight, GroupQueryAttention,
RotaryEmbedding, SkipLayerNormalization, BiasGelu, FastGelu) fold heads and MLP neurons, with their head-count
attributes rewritten. Exact oracles, built with onnx.helper and run in onnxruntime (CPU): a model whose heads /
neurons are duplicates of a compact model's (producer columns copied, consumer rows halved) folds back to the
compact model's outputs at sparsity 0.5; sparsity 0 changes nothing, bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxfold
from onnxfold.analysis import ATTENTION_HEADS, MIXES_CHANNELS
from onnxfold.runtime.inputs import make_inputs
from onnxfold.runtime.session import make_session

HIDDEN, HEAD_DIM = 32, 8
MS = "com.microsoft"
OPSETS = [helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)]
RNG = np.random.default_rng(0)


def rand(*shape: int) -> np.ndarray:
    return (RNG.standard_normal(shape) / 4).astype(np.float32)


def heads_order(compact_heads: list[int], head_dim: int = HEAD_DIM) -> np.ndarray:
    """Channel indices of a wide tensor whose head j is compact head ``compact_heads[j]``."""
    return np.concatenate([np.arange(h * head_dim, (h + 1) * head_dim) for h in compact_heads])


def save(path: Path, nodes, inits: dict, outputs: list[str], extra_inputs=(), out_dims=None) -> Path:
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "S", HIDDEN]), *extra_inputs]
    outs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, (out_dims or {}).get(n, ["B", "S", HIDDEN]))
        for n in outputs
    ]
    init = [numpy_helper.from_array(a, n) for n, a in inits.items()]
    graph = helper.make_graph(nodes, "g", inputs, outs, init)
    onnx.save(helper.make_model(graph, opset_imports=OPSETS, ir_version=9), str(path))
    return path


def run(path: Path, feeds: dict, names: list[str] | None = None) -> list[np.ndarray]:
    session = make_session(str(path), providers=["CPUExecutionProvider"], optimize=False)
    return session.run(names, feeds)


def x_feed(seed: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal((2, 6, HIDDEN)).astype(np.float32)}


def node_attrs(path: Path, name: str) -> dict:
    node = next(n for n in onnx.load(str(path)).graph.node if n.name == name)
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def assert_folds_back(
    wide: Path, compact: Path, tmp_path: Path, feeds: dict, heads: int | None = None
) -> Path:
    """The wide twin computes the compact function, folds back to it at 0.5 and is unchanged at 0."""
    ref = run(compact, feeds)
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(run(wide, feeds), ref, strict=True))
    exact = tmp_path / "zero.onnx"
    onnxfold.fold(wide, 0.0, exact, repair="none", check=True)
    assert all(np.array_equal(a, b) for a, b in zip(run(exact, feeds), run(wide, feeds), strict=True))
    out = tmp_path / "folded.onnx"
    _, report = onnxfold.fold(wide, 0.5, out, repair="none", check=True)
    folded = [p for p in report.plans if p.status == "folded"]
    assert folded and all(p.k * 2 == p.group.size for p in folded)
    if heads is not None:
        assert [p.group.kind for p in folded].count("heads") == heads
    for got, want in zip(run(out, feeds), ref, strict=True):
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-5 * max(1.0, float(np.abs(want).max()))
    return out


# --------------------------------------------------------------------------- packed Attention


def packed_attention(path: Path, w: dict, heads: int, sizes: list[int] | None) -> Path:
    attrs = {"num_heads": heads} | ({"qkv_hidden_sizes": sizes} if sizes else {})
    nodes = [
        helper.make_node("Attention", ["x", "w_qkv", "b_qkv"], ["attn"], name="attn", domain=MS, **attrs),
        helper.make_node("MatMul", ["attn", "w_o"], ["y"], name="o_proj"),
    ]
    return save(path, nodes, w, ["y"])


@pytest.mark.parametrize("v_head", [HEAD_DIM, HEAD_DIM // 2])
def test_duplicate_heads_of_a_packed_attention_fold_back_exactly(tmp_path, v_head):
    """com.microsoft Attention, W = [hidden, q | k | v]: the q, k and v column blocks of a head fold together,
    and num_heads (and qkv_hidden_sizes, where v's heads are narrower) shrink with them."""
    heads = 2
    q, k, v = rand(HIDDEN, heads * HEAD_DIM), rand(HIDDEN, heads * HEAD_DIM), rand(HIDDEN, heads * v_head)
    bq, bk, bv = (rand(t.shape[1]) for t in (q, k, v))
    w_o = rand(heads * v_head, HIDDEN)
    sizes = None if v_head == HEAD_DIM else [heads * HEAD_DIM, heads * HEAD_DIM, heads * v_head]
    compact = packed_attention(
        tmp_path / "c.onnx",
        {"w_qkv": np.hstack([q, k, v]), "b_qkv": np.concatenate([bq, bk, bv]), "w_o": w_o},
        heads,
        sizes,
    )
    twin = [0, 1, 0, 1]
    qk_order, v_order = heads_order(twin), heads_order(twin, v_head)
    wide = packed_attention(
        tmp_path / "w.onnx",
        {
            "w_qkv": np.hstack([q[:, qk_order], k[:, qk_order], v[:, v_order]]),
            "b_qkv": np.concatenate([bq[qk_order], bk[qk_order], bv[v_order]]),
            "w_o": w_o[v_order] / 2,
        },
        2 * heads,
        [2 * s for s in sizes] if sizes else None,
    )
    out = assert_folds_back(wide, compact, tmp_path, x_feed(), heads=1)
    attrs = node_attrs(out, "attn")
    assert attrs["num_heads"] == heads and attrs.get("qkv_hidden_sizes") == sizes


def test_packed_attention_with_an_attention_bias_keeps_its_heads(tmp_path):
    w = {
        "w_qkv": rand(HIDDEN, 3 * 4 * HEAD_DIM),
        "b_qkv": rand(3 * 4 * HEAD_DIM),
        "w_o": rand(4 * HEAD_DIM, HIDDEN),
    }
    nodes = [
        helper.make_node(
            "Attention",
            ["x", "w_qkv", "b_qkv", "", "", "bias"],
            ["attn"],
            name="attn",
            domain=MS,
            num_heads=4,
        ),
        helper.make_node("MatMul", ["attn", "w_o"], ["y"], name="o_proj"),
    ]
    bias = helper.make_tensor_value_info("bias", TensorProto.FLOAT, ["B", 4, "S", "S"])
    groups = onnxfold.analyze(save(tmp_path / "m.onnx", nodes, w, ["y"], [bias]))
    attn = next(g for g in groups if g.producers == ["attn"])
    assert any(r.code == ATTENTION_HEADS and "attention bias per head" in r.message for r in attn.blocked)


# --------------------------------------------------------------------------- GroupQueryAttention


GQA_HEAD = 16  # onnxruntime's rotary inside GroupQueryAttention wants a multiple of 16


def gqa(path: Path, w: dict, heads: int, kv_heads: int, cache: bool) -> Path:
    """x → q/k/v MatMul → GroupQueryAttention (rotary inside) → o_proj → y; with ``cache`` the past
    key/value are (empty) graph inputs and the present key/value graph outputs."""
    half = GQA_HEAD // 2
    angles = np.outer(np.arange(32), 1.0 / 10000 ** (np.arange(half) / half))
    inits = dict(w, cos=np.cos(angles).astype(np.float32), sin=np.sin(angles).astype(np.float32))
    inits |= {
        "axis_1": np.array([1], np.int64),
        "axis_0": np.array([0], np.int64),
        "one": np.array(1, np.int64),
    }
    past = ["past_key", "past_value"] if cache else ["", ""]
    nodes = [
        helper.make_node("Shape", ["x"], ["x_shape"]),
        helper.make_node("Gather", ["x_shape", "axis_1"], ["seq"], axis=0),
        helper.make_node("Gather", ["x_shape", "axis_0"], ["batch"], axis=0),
        helper.make_node("Squeeze", ["seq", "axis_0"], ["seq_scalar"]),
        helper.make_node("Cast", ["seq_scalar"], ["total"], to=TensorProto.INT32),
        helper.make_node("Sub", ["seq", "one"], ["last"]),
        helper.make_node("Expand", ["last", "batch"], ["last_b"]),
        helper.make_node("Cast", ["last_b"], ["seqlens_k"], to=TensorProto.INT32),
        *[helper.make_node("MatMul", ["x", f"w_{p}"], [p], name=f"{p}_proj") for p in "qkv"],
        helper.make_node(
            "GroupQueryAttention",
            ["q", "k", "v", *past, "seqlens_k", "total", "cos", "sin"],
            ["attn", "present_key", "present_value"],
            name="attn",
            domain=MS,
            num_heads=heads,
            kv_num_heads=kv_heads,
            do_rotary=1,
        ),
        helper.make_node("MatMul", ["attn", "w_o"], ["y"], name="o_proj"),
    ]
    cache_dims = ["B", kv_heads, 0, GQA_HEAD]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, cache_dims) for n in past if n]
    outputs = ["y", "present_key", "present_value"] if cache else ["y"]
    dims = {n: ["B", kv_heads, "S", GQA_HEAD] for n in outputs[1:]}
    return save(path, nodes, inits, outputs, inputs, dims)


def gqa_feeds(kv_heads: int, cache: bool) -> dict:
    feeds = x_feed()
    if cache:
        feeds |= {n: np.zeros((2, kv_heads, 0, GQA_HEAD), np.float32) for n in ("past_key", "past_value")}
    return feeds


def test_duplicate_kv_heads_and_their_query_groups_fold_back_exactly(tmp_path):
    """No KV cache: one KV head and its query group are one unit; kv_num_heads and num_heads both shrink."""
    heads, kv = 4, 2
    w = {p: rand(HIDDEN, n * GQA_HEAD) for p, n in (("q", heads), ("k", kv), ("v", kv))}
    w["o"] = rand(heads * GQA_HEAD, HIDDEN)
    compact = gqa(tmp_path / "c.onnx", {f"w_{p}": a for p, a in w.items()}, heads, kv, cache=False)
    kv_twin = [0, 1, 0, 1]  # wide KV head j is compact KV head j mod 2, with that head's query group
    q_twin = [2 * j + i for j in kv_twin for i in range(2)]
    wide_w = {
        "w_q": w["q"][:, heads_order(q_twin, GQA_HEAD)],
        "w_k": w["k"][:, heads_order(kv_twin, GQA_HEAD)],
        "w_v": w["v"][:, heads_order(kv_twin, GQA_HEAD)],
        "w_o": w["o"][heads_order(q_twin, GQA_HEAD)] / 2,
    }
    wide = gqa(tmp_path / "w.onnx", wide_w, 2 * heads, 2 * kv, cache=False)
    out = assert_folds_back(wide, compact, tmp_path, gqa_feeds(kv, False), heads=1)
    attrs = node_attrs(out, "attn")
    assert (attrs["num_heads"], attrs["kv_num_heads"]) == (heads, kv)


def test_duplicate_query_heads_fold_within_their_kv_group_when_a_kv_cache_pins_the_kv_heads(tmp_path):
    """A KV cache (past inputs, present outputs) keeps the KV heads; the query heads of each KV head's group
    still fold, within their group, and only num_heads shrinks."""
    heads, kv = 4, 2
    w = {p: rand(HIDDEN, n * GQA_HEAD) for p, n in (("q", heads), ("k", kv), ("v", kv))}
    w["o"] = rand(heads * GQA_HEAD, HIDDEN)
    compact = gqa(tmp_path / "c.onnx", {f"w_{p}": a for p, a in w.items()}, heads, kv, cache=True)
    q_twin = [0, 1, 0, 1, 2, 3, 2, 3]  # each KV head's query group holds its compact group twice
    wide_w = {
        "w_q": w["q"][:, heads_order(q_twin, GQA_HEAD)],
        "w_k": w["k"],
        "w_v": w["v"],
        "w_o": w["o"][heads_order(q_twin, GQA_HEAD)] / 2,
    }
    wide = gqa(tmp_path / "w.onnx", wide_w, 2 * heads, kv, cache=True)
    groups = onnxfold.analyze(wide)
    k_group = next(g for g in groups if g.producers == ["k_proj"])
    assert any(r.code == ATTENTION_HEADS and "KV cache past_key" in r.message for r in k_group.blocked)
    q_group = next(g for g in groups if g.producers == ["q_proj"])
    assert q_group.foldable and (q_group.size, q_group.parts) == (2 * heads, kv)
    out = assert_folds_back(wide, compact, tmp_path, gqa_feeds(kv, True), heads=1)
    attrs = node_attrs(out, "attn")
    assert (attrs["num_heads"], attrs["kv_num_heads"]) == (heads, kv)


def test_packed_qkv_group_query_attention_is_blocked_with_a_reason(tmp_path):
    w = {"w_qkv": rand(HIDDEN, 8 * GQA_HEAD), "w_o": rand(4 * GQA_HEAD, HIDDEN)}
    nodes = [
        helper.make_node("MatMul", ["x", "w_qkv"], ["qkv"], name="qkv_proj"),
        helper.make_node(
            "GroupQueryAttention",
            ["qkv", "", "", "", "", "seqlens_k", "total"],
            ["attn", "pk", "pv"],
            name="attn",
            domain=MS,
            num_heads=4,
            kv_num_heads=2,
        ),
        helper.make_node("MatMul", ["attn", "w_o"], ["y"], name="o_proj"),
    ]
    extra = [
        helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, ["B"]),
        helper.make_tensor_value_info("total", TensorProto.INT32, []),
    ]
    groups = onnxfold.analyze(save(tmp_path / "m.onnx", nodes, w, ["y"], extra))
    qkv = next(g for g in groups if g.producers == ["qkv_proj"])
    assert any(r.code == ATTENTION_HEADS and "packed QKV" in r.message for r in qkv.blocked)


# --------------------------------------------------------------------------- RotaryEmbedding


def rotary_mha(path: Path, w: dict, heads: int) -> Path:
    half = HEAD_DIM // 2
    angles = np.outer(np.arange(32), 1.0 / 10000 ** (np.arange(half) / half))
    inits = dict(w, cos=np.cos(angles).astype(np.float32), sin=np.sin(angles).astype(np.float32))
    nodes = [*[helper.make_node("MatMul", ["x", f"w_{p}"], [p], name=f"{p}_proj") for p in "qkv"]]
    for p in "qk":
        nodes.append(
            helper.make_node(
                "RotaryEmbedding",
                [p, "pos", "cos", "sin"],
                [f"{p}_rot"],
                name=f"{p}_rotary",
                domain=MS,
                num_heads=heads,
            )
        )
    nodes += [
        helper.make_node(
            "MultiHeadAttention", ["q_rot", "k_rot", "v"], ["attn"], name="attn", domain=MS, num_heads=heads
        ),
        helper.make_node("MatMul", ["attn", "w_o"], ["y"], name="o_proj"),
    ]
    pos = helper.make_tensor_value_info("pos", TensorProto.INT64, ["B", "S"])
    return save(path, nodes, inits, ["y"], [pos])


def test_duplicate_heads_through_rotary_embedding_fold_back_exactly(tmp_path):
    heads = 2
    w = {f"w_{p}": rand(HIDDEN, heads * HEAD_DIM) for p in "qkv"} | {"w_o": rand(heads * HEAD_DIM, HIDDEN)}
    compact = rotary_mha(tmp_path / "c.onnx", w, heads)
    order = heads_order([0, 1, 0, 1])
    wide_w = {n: a[:, order] for n, a in w.items() if n != "w_o"} | {"w_o": w["w_o"][order] / 2}
    wide = rotary_mha(tmp_path / "w.onnx", wide_w, 2 * heads)
    feeds = x_feed() | {"pos": np.broadcast_to(np.arange(6, dtype=np.int64), (2, 6)).copy()}
    out = assert_folds_back(wide, compact, tmp_path, feeds, heads=1)
    assert all(node_attrs(out, n)["num_heads"] == heads for n in ("q_rotary", "k_rotary", "attn"))


# --------------------------------------------------------------------------- MLP: BiasGelu, FastGelu


NORM_SCALE, NORM_SHIFT = 1 + rand(HIDDEN), rand(HIDDEN)


def mlp(path: Path, w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, act: str) -> Path:
    """SkipLayerNormalization(x, x) → MatMul → BiasGelu/FastGelu with the per-neuron bias → MatMul."""
    act_node = helper.make_node(act, ["h", "b1"], ["g"], name="act", domain=MS)
    nodes = [
        helper.make_node(
            "SkipLayerNormalization", ["x", "x", "gamma", "beta"], ["n"], name="norm", domain=MS
        ),
        helper.make_node("MatMul", ["n", "w1"], ["h"], name="up_proj"),
        act_node,
        helper.make_node("MatMul", ["g", "w2"], ["y"], name="down_proj"),
    ]
    inits = {"gamma": NORM_SCALE, "beta": NORM_SHIFT, "w1": w1, "b1": b1, "w2": w2}
    return save(path, nodes, inits, ["y"])


@pytest.mark.parametrize("act", ["BiasGelu", "FastGelu"])
def test_duplicate_neurons_through_a_bias_gelu_fold_back_exactly(tmp_path, act):
    """The per-neuron bias of BiasGelu/FastGelu is sliced and merged with its neuron; the MLP after a
    SkipLayerNormalization is found (its output shape is inferred for the contrib op)."""
    w1, b1, w2 = rand(HIDDEN, 24), rand(24), rand(24, HIDDEN)
    compact = mlp(tmp_path / "c.onnx", w1, b1, w2, act)
    order = np.tile(np.arange(24), 2)
    wide = mlp(tmp_path / "w.onnx", w1[:, order], b1[order], w2[order] / 2, act)
    assert_folds_back(wide, compact, tmp_path, x_feed(), heads=0)


@pytest.mark.parametrize("act", ["Gelu", "QuickGelu"])
def test_duplicate_neurons_through_a_contrib_gelu_fold_back_exactly(tmp_path, act):
    """com.microsoft Gelu/QuickGelu are channel-wise: neurons pass through them."""

    def build(path: Path, w1: np.ndarray, w2: np.ndarray) -> Path:
        nodes = [
            helper.make_node("MatMul", ["x", "w1"], ["h"], name="up_proj"),
            helper.make_node(act, ["h"], ["g"], name="act", domain=MS),
            helper.make_node("MatMul", ["g", "w2"], ["y"], name="down_proj"),
        ]
        return save(path, nodes, {"w1": w1, "w2": w2}, ["y"])

    w1, w2 = rand(HIDDEN, 24), rand(24, HIDDEN)
    order = np.tile(np.arange(24), 2)
    compact = build(tmp_path / "c.onnx", w1, w2)
    assert_folds_back(
        build(tmp_path / "w.onnx", w1[:, order], w2[order] / 2), compact, tmp_path, x_feed(), heads=0
    )


def test_bias_split_gelu_is_blocked_with_a_reason(tmp_path):
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="up_proj"),
        helper.make_node("BiasSplitGelu", ["h", "b1"], ["g"], name="act", domain=MS),
        helper.make_node("MatMul", ["g", "w2"], ["y"], name="down_proj"),
    ]
    inits = {"w1": rand(HIDDEN, 48), "b1": rand(48), "w2": rand(24, HIDDEN)}
    groups = onnxfold.analyze(save(tmp_path / "m.onnx", nodes, inits, ["y"]))
    up = next(g for g in groups if g.producers == ["up_proj"])
    assert any(r.code == MIXES_CHANNELS and "first half of the channels" in r.message for r in up.blocked)


def test_skip_layer_normalization_blocks_the_channels_it_normalises(tmp_path):
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="proj"),
        helper.make_node(
            "SkipLayerNormalization", ["h", "x", "gamma", "beta"], ["n"], name="norm", domain=MS
        ),
        helper.make_node("MatMul", ["n", "w2"], ["y"], name="out_proj"),
    ]
    inits = {
        "w1": rand(HIDDEN, HIDDEN),
        "gamma": 1 + rand(HIDDEN),
        "beta": rand(HIDDEN),
        "w2": rand(HIDDEN, HIDDEN),
    }
    groups = onnxfold.analyze(save(tmp_path / "m.onnx", nodes, inits, ["y"]))
    proj = next(g for g in groups if g.producers == ["proj"])
    assert [r.code for r in proj.blocked] == [MIXES_CHANNELS] and "normalises (input + skip)" in proj.blocked[
        0
    ].message


# --------------------------------------------------------------------------- coverage rows


@pytest.mark.parametrize(
    ("name", "heads_kind"), [("bert-ort", "Attention"), ("gqa-decoder", "GroupQueryAttention")]
)
def test_ort_fused_coverage_rows_fold_heads_and_mlp(tmp_path, name, heads_kind):
    """The coverage rows of an onnxruntime-optimized BERT and a GroupQueryAttention decoder (small variants):
    built, analysed, folded at 0.5 (attention heads and MLP neurons), checker-clean, run in onnxruntime with
    the original output names and shapes; the folded attention op's head count halves."""
    from onnxfold.bench.coverage import coverage_row
    from onnxfold.models.ort_fused import ORT_FUSED_MODELS

    row = coverage_row(name, ORT_FUSED_MODELS[name], tmp_path, 0.5, small=True)
    assert row["error"] is None, row["error"]
    assert row["checker"] and row["runs"], (row["checker_error"], row["run_error"])
    assert row["foldable"] >= 4 and row["param_sparsity"] > 0.3
    source = onnx.load(row["export_path"])
    folded = onnx.load(row["folded_path"])
    before = [n for n in source.graph.node if n.op_type == heads_kind]
    after = {n.name: n for n in folded.graph.node if n.op_type == heads_kind}
    assert before and len(after) == len(before)
    for node in before:
        old = {a.name: a.i for a in node.attribute}["num_heads"]
        assert {a.name: a.i for a in after[node.name].attribute}["num_heads"] == old // 2
    # at sparsity 0 the fold changes nothing, bit for bit
    zero = tmp_path / "zero.onnx"
    onnxfold.fold(row["export_path"], 0.0, zero, repair="none")
    session = make_session(row["export_path"], providers=["CPUExecutionProvider"], optimize=False)
    feeds = make_inputs(session, batch=2)
    for got, want in zip(run(zero, feeds), session.run(None, feeds), strict=True):
        assert np.array_equal(got, want)
