"""Attention projections as onnx-simplifier writes them: x [B, T, D] → Reshape [−1, D] → Gemm →
Reshape to [B, T, H, dh], the batch and the length read from different inputs' shapes. The head
split regroups the leading dims while it splits the channels, and was blocked as "reshapes the
channel axis" (an independent oracle builder's finding, on a dynamo export simplified by onnxsim).
Duplicate oracle: heads 2 and 3 copy heads 0 and 1 (q, k and v rows), the output projection's
columns of each pair split 0.3 / 0.7; folding at 0.5 gives the two-head model back. Its nodes are
unnamed, as onnx.helper leaves them: canonicalize named its per-Reshape copies of the shared target
after their readers, so all three were "split__" (distinct tensors, one name) until it named the
nodes first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from harness import rel_err, run_ort
from onnx import TensorProto, helper, numpy_helper

import onnxfold

D, DH = 8, 4


def _ints(name: str, values: list[int]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, np.int64), name)


def _layer(w: dict[str, np.ndarray], heads: int) -> onnx.ModelProto:
    nodes = [
        helper.make_node("Reshape", ["x", "flat"], ["rows"]),
        helper.make_node("Shape", ["mask"], ["batch"], start=0, end=1),
        helper.make_node("Shape", ["x"], ["length"], start=1, end=2),
        helper.make_node("Concat", ["batch", "length", "heads", "dh"], ["split"], axis=0),
    ]
    for p, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
        nodes += [
            helper.make_node("Gemm", ["rows", f"w{p}", f"b{p}"], [f"{p}_rows"]),
            helper.make_node("Reshape", [f"{p}_rows", "split"], [f"{p}_heads"]),
            helper.make_node("Transpose", [f"{p}_heads"], [f"{p}_t"], perm=perm),
        ]
    nodes += [
        helper.make_node("MatMul", ["q_t", "k_t"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["probs"], axis=-1),
        helper.make_node("MatMul", ["probs", "v_t"], ["ctx"]),
        helper.make_node("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["ctx_t", "merged"], ["ctx_rows"]),
        helper.make_node("Gemm", ["ctx_rows", "wo", "bo"], ["y"]),
    ]
    inits = [numpy_helper.from_array(v, k) for k, v in w.items()]
    inits += [
        _ints("flat", [-1, D]),
        _ints("heads", [heads]),
        _ints("dh", [DH]),
        _ints("merged", [-1, heads * DH]),
    ]
    graph = helper.make_graph(
        nodes,
        "simplified",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "T", D]),
            helper.make_tensor_value_info("mask", TensorProto.INT64, ["B", "T"]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, D])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_head_split_that_regroups_the_leading_dims_folds_back_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    f = np.float32
    compact = {f"w{p}": rng.normal(size=(D, 2 * DH)).astype(f) for p in "qkv"}
    compact |= {f"b{p}": rng.normal(size=2 * DH).astype(f) for p in "qkv"}
    compact |= {"wo": rng.normal(size=(2 * DH, D)).astype(f), "bo": rng.normal(size=D).astype(f)}
    cols = np.r_[0:DH, DH : 2 * DH, 0:DH, DH : 2 * DH]  # heads 0, 1, then their copies
    share = np.repeat([0.3, 0.3, 0.7, 0.7], DH).astype(f)
    wide = {k: (v[..., cols] if k[0] in "wb" and k[1] in "qkv" else v) for k, v in compact.items()}
    wide["wo"] = compact["wo"][cols] * share[:, None]
    src = tmp_path / "wide.onnx"
    onnx.save(_layer(wide, 4), str(src))
    feed = {"x": rng.normal(size=(2, 5, D)).astype(f), "mask": np.ones((2, 5), np.int64)}
    want = run_ort(_layer(compact, 2), feed)[0]
    assert rel_err(run_ort(onnx.load(str(src)), feed)[0], want) < 1e-5  # the oracle holds
    (heads,) = [g for g in onnxfold.analyze(src) if g.size == 4]
    assert heads.foldable, [b.message for b in heads.blocked]
    out = tmp_path / "folded.onnx"
    onnxfold.fold(src, 0.5, out, method="fold", repair="none", round_to=1, validate=False)
    folded = onnx.load(str(out))
    assert rel_err(run_ort(folded, feed)[0], want) < 1e-5
    sizes = {t.name: tuple(t.dims) for t in folded.graph.initializer}
    assert sizes["wq"] == (D, 2 * DH) and sizes["wo"] == (2 * DH, D)
    same = tmp_path / "same.onnx"
    onnxfold.fold(src, 0.0, same, validate=False)
    assert np.array_equal(run_ort(onnx.load(str(same)), feed)[0], run_ort(onnx.load(str(src)), feed)[0])
