"""Single-head attention's values fold: probs·v mixes v's positions, not its channels, so v's channels
pass to the output projection (a Paddle2ONNX attention block kept them blocked as "contracts or mixes
the channel axis"). Exact duplicate oracles, v as the right operand and, transposed, as the left."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from harness import rel_err, run_ort
from onnx import TensorProto, helper, numpy_helper

import onnxfold

D, K = 6, 4  # model width; v's compact width (8 channels wide)


def _attention(transposed: bool) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """y = softmax(q·kᵀ/√D)·v·Wo, or with ``transposed`` y = (vᵀ·probsᵀ)ᵀ·Wo (v's channels
    on the left operand's rows); v = x·Wv with each of K channels twice, at shuffled positions, and
    Wo's rows split between the copies. Returns the model and the compact twin's weights."""
    rng = np.random.default_rng(21)
    compact = {
        "Wq": rng.standard_normal((D, D)),
        "Wk": rng.standard_normal((D, D)),
        "Wv": rng.standard_normal((D, K)),
        "Wo": rng.standard_normal((K, D)),
    }
    where = rng.permutation(np.r_[0:K, 0:K])
    first = np.array([np.flatnonzero(where == c)[0] for c in range(K)])
    share = rng.uniform(0.2, 0.8, K)
    split = np.where(np.isin(np.arange(2 * K), first), share[where], 1 - share[where])
    wide = dict(compact, Wv=compact["Wv"][:, where], Wo=compact["Wo"][where] * split[:, None])
    wide = {k: v.astype(np.float32) for k, v in wide.items()} | {"scale": np.float32(1 / np.sqrt(D))}
    nodes = [
        helper.make_node("MatMul", ["x", "Wq"], ["q"], name="q_proj"),
        helper.make_node("MatMul", ["x", "Wk"], ["k"], name="k_proj"),
        helper.make_node("MatMul", ["x", "Wv"], ["v"], name="v_proj"),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1], name="kt"),
        helper.make_node("MatMul", ["q", "kt"], ["s"], name="scores"),
        helper.make_node("Mul", ["s", "scale"], ["ss"], name="scaled"),
        helper.make_node("Softmax", ["ss"], ["p"], axis=-1, name="probs"),
    ]
    if transposed:  # (vᵀ·pᵀ)ᵀ: v's channels are the rows of the left operand
        nodes += [
            helper.make_node("Transpose", ["v"], ["vt"], perm=[0, 2, 1], name="vt"),
            helper.make_node("Transpose", ["p"], ["pt"], perm=[0, 2, 1], name="pt"),
            helper.make_node("MatMul", ["vt", "pt"], ["ot"], name="mix"),
            helper.make_node("Transpose", ["ot"], ["o"], perm=[0, 2, 1], name="o"),
        ]
    else:
        nodes.append(helper.make_node("MatMul", ["p", "v"], ["o"], name="mix"))
    nodes.append(helper.make_node("MatMul", ["o", "Wo"], ["y"], name="out_proj"))
    graph = helper.make_graph(
        nodes,
        "attention",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 5, D])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5, D])],
        [numpy_helper.from_array(v, k) for k, v in wide.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), compact


def _compact_outputs(compact: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    q, k, v = (x @ compact[w] for w in ("Wq", "Wk", "Wv"))
    s = q @ k.transpose(0, 2, 1) / np.sqrt(D)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return p @ v @ compact["Wo"]


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("method", ["fold", "auto"])
def test_the_values_of_single_head_attention_fold_exactly(
    tmp_path: Path, transposed: bool, method: str
) -> None:
    model, compact = _attention(transposed)
    src, out = tmp_path / "m.onnx", tmp_path / "f.onnx"
    onnx.save(model, src)
    values = [g for g in onnxfold.analyze(src) if "v_proj" in g.producers]
    assert len(values) == 1 and values[0].foldable, [(g.name, g.reason) for g in onnxfold.analyze(src)]
    onnxfold.fold(src, 0.5, out, method=method, repair="none", round_to=1, validate=False)
    folded = onnx.load(str(out))
    wv = {i.name: numpy_helper.to_array(i) for i in folded.graph.initializer}
    assert any(w.shape == (D, K) for w in wv.values())  # v at its compact width
    x = np.random.default_rng(4).standard_normal((3, 5, D)).astype(np.float32)
    assert rel_err(run_ort(folded, {"x": x})[0], _compact_outputs(compact, x)) < 1e-5


def test_single_head_values_fold_through_a_dynamo_export_with_free_dims(tmp_path: Path) -> None:
    """torch's dynamo export writes the head split as ``view(B, T, -1, D)`` with B and T free: ONNX's
    inference makes the head count up (``unk__N``), so the merge back ``[B, T, 1, D] → [B, T, D]`` read as
    moving the channel axis and the values stayed blocked (an independent oracle builder's finding;
    the legacy export folded). The graph fixes the −1 to 1: x's dims B and T cancel the entries that
    copy them, and D is constant. Duplicate oracle: v's second half copies its first."""
    import warnings

    import torch

    class Attention(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k, self.v = (torch.nn.Linear(D, n) for n in (D, D, 2 * K))
            self.o = torch.nn.Linear(2 * K, D)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, t, _ = x.shape
            q, k, v = (p(x).view(b, t, -1, p.out_features).transpose(1, 2) for p in (self.q, self.k, self.v))
            att = torch.softmax(q @ k.transpose(-2, -1), dim=-1) @ v
            return self.o(att.transpose(1, 2).reshape(b, t, -1))

    net = Attention().eval()
    with torch.no_grad():
        net.v.weight[K:], net.v.bias[K:] = net.v.weight[:K], net.v.bias[:K]
        net.o.weight[:, K:] = net.o.weight[:, :K]
    src, out = tmp_path / "m.onnx", tmp_path / "f.onnx"
    dims = {"x": {0: torch.export.Dim("batch"), 1: torch.export.Dim("seq")}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.randn(2, 5, D),), str(src), input_names=["x"], dynamic_shapes=dims)
    groups = onnxfold.analyze(src)
    values = [g for g in groups if g.size == 2 * K]
    assert len(values) == 1 and values[0].foldable, [
        (g.name, g.size, [b.message for b in g.blocked]) for g in groups
    ]
    onnxfold.fold(src, 0.5, out, method="fold", repair="none", round_to=1, validate=False)
    x = np.random.default_rng(4).standard_normal((3, 7, D)).astype(np.float32)
    ref = run_ort(onnx.load(str(src)), {"x": x})[0]
    assert rel_err(run_ort(onnx.load(str(out)), {"x": x})[0], ref) < 1e-5
