"""The LLaMA-shaped ONNX builder (models/llama_onnx.py): a valid graph, the forward pass of an
independent numpy reference, heads and MLPs that fold with a recipe, and exact duplicate oracles."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import onnxfold
from onnxfold.models.llama_onnx import LlamaSpec, build_llama_onnx, llama_weight_shapes
from onnxfold.runtime.session import make_session

TINY = dict(layers=2, hidden=64, intermediate=128, heads=4, vocab=100)
RECIPE = "default: 0.0\nrules:\n  - layers: 0-1\n    heads: 0.5\n    mlp: 0.5\n"
IDS = np.random.default_rng(0).integers(0, 100, (2, 7)).astype(np.int64)


def _run(path, ids=IDS, optimize=True) -> np.ndarray:
    return make_session(str(path), optimize=optimize).run(None, {"input_ids": ids})[0]


def _weights(path) -> dict[str, np.ndarray]:
    model = onnx.load(str(path))  # external data loaded from path.data
    return {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}


def reference_forward(
    path,
    ids: np.ndarray,
    layers: int,
    heads: int,
    kv_heads: int | None = None,
    eps: float = 1e-6,
    theta: float = 10000.0,
    rope: bool = True,
) -> np.ndarray:
    """LLaMA written from its definition in float64, from the weights read back from the file."""
    w = _weights(path)
    kv = kv_heads or heads
    x = w["model.embed_tokens.weight"][ids]
    b, s, hidden = x.shape
    dh = w["model.layers.0.self_attn.q_proj.weight"].shape[1] // heads

    def norm(t, name):
        return t / np.sqrt((t * t).mean(-1, keepdims=True) + eps) * w[name]

    def split(t, n):
        return t.reshape(b, s, n, dh).transpose(0, 2, 1, 3)

    pos = np.arange(s)[:, None] * (1.0 / theta ** (np.arange(0, dh, 2) / dh))[None]
    cos, sin = np.cos(np.concatenate([pos, pos], -1)), np.sin(np.concatenate([pos, pos], -1))

    def rotary(t):
        rot = np.concatenate([-t[..., dh // 2 :], t[..., : dh // 2]], -1)
        return t * cos + rot * sin if rope else t

    mask = np.triu(np.full((s, s), -np.inf), 1)
    for i in range(layers):
        p = f"model.layers.{i}."
        hn = norm(x, p + "input_layernorm.weight")
        q = rotary(split(hn @ w[p + "self_attn.q_proj.weight"], heads))
        k = rotary(split(hn @ w[p + "self_attn.k_proj.weight"], kv))
        v = split(hn @ w[p + "self_attn.v_proj.weight"], kv)
        k, v = np.repeat(k, heads // kv, axis=1), np.repeat(v, heads // kv, axis=1)
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(dh) + mask
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(b, s, heads * dh)
        x = x + ctx @ w[p + "self_attn.o_proj.weight"]
        hn = norm(x, p + "post_attention_layernorm.weight")
        gate = hn @ w[p + "mlp.gate_proj.weight"]
        x = (
            x
            + (gate / (1 + np.exp(-gate)) * (hn @ w[p + "mlp.up_proj.weight"]))
            @ w[p + "mlp.down_proj.weight"]
        )
    return norm(x, "model.norm.weight") @ w["lm_head.weight"]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_builder_writes_a_valid_model_with_external_data(tmp_path, dtype):
    path = build_llama_onnx(tmp_path / "m.onnx", dtype=dtype, seed=1, **TINY)
    onnx.checker.check_model(str(path), full_check=True)
    proto = onnx.load(str(path), load_external_data=False)
    itemsize = np.dtype(dtype).itemsize
    for t in proto.graph.initializer:
        big = int(np.prod(t.dims)) * itemsize >= 1024 and t.data_type == proto.graph.initializer[0].data_type
        assert (t.data_location == onnx.TensorProto.EXTERNAL) == big, t.name
    assert [
        (v.name, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim])
        for v in list(proto.graph.input) + list(proto.graph.output)
    ] == [("input_ids", ["batch", "seq"]), ("logits", ["batch", "seq", 100])]
    ops = {n.op_type for n in proto.graph.node}
    assert {"Pow", "ReduceMean", "Sqrt", "Reciprocal", "Trilu", "Softmax", "Sigmoid", "Neg", "Range"} <= ops
    out = _run(path)
    assert out.shape == (2, 7, 100) and out.dtype == np.dtype(dtype) and np.isfinite(out).all()
    # seeded: the same arguments write the same bytes
    again = build_llama_onnx(tmp_path / "again" / "m.onnx", dtype=dtype, seed=1, **TINY)
    assert path.read_bytes() == again.read_bytes()
    assert (tmp_path / "m.onnx.data").read_bytes() == (tmp_path / "again" / "m.onnx.data").read_bytes()


@pytest.mark.parametrize("kw", [{}, {"kv_heads": 2}, {"rope": False}], ids=["mha", "gqa", "norope"])
def test_forward_matches_a_numpy_reference(tmp_path, kw):
    path = build_llama_onnx(tmp_path / "m.onnx", dtype="float32", norm_std=0.1, **TINY, **kw)
    ids = np.random.default_rng(1).integers(0, 100, (3, 9)).astype(np.int64)
    ref = reference_forward(
        path, ids, TINY["layers"], TINY["heads"], kw.get("kv_heads"), rope=kw.get("rope", True)
    )
    got = _run(path, ids, optimize=False)
    assert np.abs(got - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max()), np.abs(got - ref).max()


def test_float16_forward_is_close_to_the_reference(tmp_path):
    path = build_llama_onnx(tmp_path / "m.onnx", dtype="float16", norm_std=0.1, **TINY)
    ref = reference_forward(path, IDS, TINY["layers"], TINY["heads"])
    got = _run(path).astype(np.float64)
    assert np.abs(got - ref).max() <= 1e-2 * np.abs(ref).max()


@pytest.mark.parametrize(
    ("dtype", "kv_heads"), [("float32", None), ("float16", None), ("float32", 2)], ids=["fp32", "fp16", "gqa"]
)
def test_recipe_folds_every_layer_heads_and_mlp_never_hidden(tmp_path, dtype, kv_heads):
    src = build_llama_onnx(tmp_path / "m.onnx", dtype=dtype, kv_heads=kv_heads, **TINY)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    out = tmp_path / "f.onnx"
    _, report = onnxfold.fold(src, 0.0, out, recipe=recipe, check=True)
    onnx.checker.check_model(str(out), full_check=True)
    folded = [p for p in report.plans if p.status == "folded"]
    assert sorted((p.group.kind, p.group.layer) for p in folded) == [
        ("channels", 0),
        ("channels", 1),
        ("heads", 0),
        ("heads", 1),
    ], [(p.group.name, p.reason) for p in report.plans]
    kv = kv_heads or TINY["heads"]
    for p in folded:
        if p.group.kind == "heads":  # whole KV groups: one KV head with its heads/kv query heads
            assert (p.group.size, p.group.unit, p.k) == (kv, 16 * TINY["heads"] // kv, kv // 2)
        else:
            assert (p.group.size, p.k) == (128, 64)
    # the hidden (residual) dimension is never folded
    shapes = {t.name: tuple(t.dims) for t in onnx.load(str(out), load_external_data=False).graph.initializer}
    h = TINY["hidden"]
    assert shapes["model.embed_tokens.weight"] == (100, h) and shapes["lm_head.weight"] == (h, 100)
    for i in range(TINY["layers"]):
        p = f"model.layers.{i}."
        assert shapes[p + "self_attn.q_proj.weight"] == (h, h // 2)
        assert shapes[p + "self_attn.k_proj.weight"] == (h, 16 * kv // 2)
        assert shapes[p + "self_attn.o_proj.weight"] == (h // 2, h)
        assert shapes[p + "mlp.gate_proj.weight"] == (h, 64) and shapes[p + "mlp.down_proj.weight"] == (64, h)
    got = _run(out)
    assert got.shape == (2, 7, 100) and np.isfinite(got).all()
    # the same recipe on the model's exact twin (every head and neuron duplicated) gives the model back
    wide = build_llama_onnx(
        tmp_path / "wide" / "m.onnx", dtype=dtype, kv_heads=kv_heads, duplicate=True, **TINY
    )
    _, twin_report = onnxfold.fold(
        wide, 0.0, tmp_path / "wide" / "f.onnx", recipe=recipe, repair="none", validate=False
    )
    assert all(p.k * 2 == p.group.size for p in twin_report.plans if p.status == "folded")
    assert sum(p.status == "folded" for p in twin_report.plans) == 4
    ref, twin = _run(src, optimize=False), _run(tmp_path / "wide" / "f.onnx", optimize=False)
    tol = 1e-2 if dtype == "float16" else 1e-4
    assert np.abs(twin.astype(np.float64) - ref).max() <= tol * np.abs(ref).max()


@pytest.mark.parametrize("kv_heads", [None, 2, 1], ids=["mha", "gqa", "mqa"])
def test_duplicate_heads_and_neurons_fold_back_to_the_compact_model(tmp_path, kv_heads):
    common = dict(TINY, dtype="float32", seed=3, norm_std=0.1, kv_heads=kv_heads)
    compact = build_llama_onnx(tmp_path / "compact.onnx", **common)
    wide = build_llama_onnx(tmp_path / "wide.onnx", duplicate=True, **common)
    spec = LlamaSpec(**{k: v for k, v in common.items() if k not in ("seed", "norm_std")})
    assert llama_weight_shapes(spec.doubled()) == {
        t.name: tuple(t.dims)
        for t in onnx.load(str(wide), load_external_data=False).graph.initializer
        if t.name in llama_weight_shapes(spec)
    }
    ref, wide_out = _run(compact, optimize=False), _run(wide, optimize=False)
    assert (
        np.abs(wide_out - ref).max() <= 1e-5 * np.abs(ref).max()
    )  # the duplicate computes the same function
    for repair in ("none", "ar"):  # AR leaves clusters of identical members as they are
        out = tmp_path / f"folded-{repair}.onnx"
        _, report = onnxfold.fold(wide, 0.5, out, check=True, repair=repair, validate=False)
        assert sum(p.status == "folded" for p in report.plans) == 4
        got = _run(out, optimize=False)
        assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
    small = {
        t.name: tuple(t.dims) for t in onnx.load(str(compact), load_external_data=False).graph.initializer
    }
    folded = {t.name: tuple(t.dims) for t in onnx.load(str(out), load_external_data=False).graph.initializer}
    assert all(folded[name] == shape for name, shape in small.items() if name in llama_weight_shapes(spec))
