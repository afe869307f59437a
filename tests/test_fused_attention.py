"""Attention fused into one op (ONNX Attention, com.microsoft MultiHeadAttention): whole heads fold and
the head-count attributes are rewritten. Exact oracle: a model whose heads are duplicates of a compact
model's (q/k/v head blocks copied, output-projection head rows halved) folds back to it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxfold
from onnxfold.analysis import ATTENTION_HEADS, SECONDARY_OUTPUT
from onnxfold.runtime.session import make_session

HIDDEN, HEAD_DIM, HEADS = 32, 8, 2


def weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = {n: rng.standard_normal((HIDDEN, HEADS * HEAD_DIM)).astype(np.float32) / 4 for n in ("q", "k", "v")}
    w["o"] = rng.standard_normal((HEADS * HEAD_DIM, HIDDEN)).astype(np.float32) / 4
    return w


def duplicated(w: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Twice the heads: wide head j is compact head j mod HEADS (interleaved to make the fold work)."""
    order = np.concatenate([np.arange(h * HEAD_DIM, (h + 1) * HEAD_DIM) for h in list(range(HEADS)) * 2])
    out = {n: w[n][:, order] for n in ("q", "k", "v")}
    out["o"] = w["o"][order] / 2
    return out


def build(path: Path, w: dict[str, np.ndarray], op: str, heads: int, extra_output: bool = False) -> Path:
    init = [numpy_helper.from_array(a, f"w_{n}") for n, a in w.items()]
    nodes = [
        helper.make_node("MatMul", ["x", f"w_{n}"], [n], name=f"layers.0.{n}_proj") for n in ("q", "k", "v")
    ]
    outs = ["attn"] + (["present_k", "present_v"] if extra_output else [])
    if op == "Attention":
        nodes.append(
            helper.make_node(
                "Attention",
                ["q", "k", "v"],
                outs,
                name="layers.0.attn",
                q_num_heads=heads,
                kv_num_heads=heads,
            )
        )
        opsets = [helper.make_opsetid("", 23)]
    else:
        nodes.append(
            helper.make_node(
                "MultiHeadAttention",
                ["q", "k", "v"],
                ["attn"],
                name="layers.0.attn",
                domain="com.microsoft",
                num_heads=heads,
            )
        )
        opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    nodes.append(helper.make_node("MatMul", ["attn", "w_o"], ["y"], name="layers.0.o_proj"))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", "S", HIDDEN])]
    if extra_output:
        outputs.append(helper.make_tensor_value_info("present_k", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "S", HIDDEN])], outputs, init
    )
    onnx.save(helper.make_model(graph, opset_imports=opsets, ir_version=10), str(path))
    return path


def run(path: Path, x: np.ndarray) -> np.ndarray:
    return make_session(str(path), providers=["CPUExecutionProvider"], optimize=False).run(["y"], {"x": x})[0]


@pytest.mark.parametrize("op", ["Attention", "MultiHeadAttention"])
def test_duplicate_heads_of_a_fused_attention_op_fold_back_exactly(tmp_path, op):
    w = weights()
    compact = build(tmp_path / "c.onnx", w, op, HEADS)
    wide = build(tmp_path / "w.onnx", duplicated(w), op, 2 * HEADS)
    x = np.random.default_rng(1).standard_normal((2, 6, HIDDEN)).astype(np.float32)
    ref = run(compact, x)
    assert np.allclose(run(wide, x), ref, atol=1e-5)  # the twin computes the same function
    out = tmp_path / "f.onnx"
    _, report = onnxfold.fold(wide, 0.5, out, repair="none", check=True)
    heads = [p for p in report.plans if p.group.kind == "heads"]
    assert len(heads) == 1 and heads[0].status == "folded" and (heads[0].group.size, heads[0].k) == (4, 2)
    node = next(n for n in onnx.load(str(out)).graph.node if n.name == "layers.0.attn")
    attrs = {a.name: a.i for a in node.attribute}
    assert all(attrs[a] == HEADS for a in attrs if a.endswith("num_heads"))
    got = run(out, x)
    assert np.abs(got - ref).max() <= 1e-5 * max(1.0, float(np.abs(ref).max()))


def test_fused_attention_returning_present_keys_keeps_its_heads(tmp_path):
    wide = build(tmp_path / "w.onnx", duplicated(weights()), "Attention", 2 * HEADS, extra_output=True)
    groups = onnxfold.analyze(wide)
    heads = [g for g in groups if any("q_proj" in p for p in g.producers)]
    assert heads and not heads[0].foldable
    assert any(r.code == SECONDARY_OUTPUT and "present key/value" in r.message for r in heads[0].blocked)


def test_grouped_query_fused_attention_is_blocked_with_a_reason(tmp_path):
    path = build(tmp_path / "w.onnx", weights(), "Attention", HEADS)
    model = onnx.load(str(path))
    node = next(n for n in model.graph.node if n.op_type == "Attention")
    for a in node.attribute:
        if a.name == "kv_num_heads":
            a.i = 1
    onnx.save(model, str(path))
    blocked = [r for g in onnxfold.analyze(path) for r in g.blocked]
    assert any(r.code == ATTENTION_HEADS and "grouped-query" in r.message for r in blocked)
