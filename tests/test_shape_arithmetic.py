"""Channel counts computed at run time from ``Shape``, against exact duplicate-channel oracles.

Paddle2ONNX builds a head's Reshape target as ``Concat(Slice(Cast(Shape(x)), 0, 2), Mul(H, W))``; the
legacy torch exporter writes ``x.chunk(2, 1)`` as Slices whose bounds are ``(Shape(x)[1] + 1) / 2 · i``.
Both are fixed by the weights, so they fold: the wide graph (every channel of a group duplicated) folded
at sparsity 0.5 must give the compact graph's outputs, and at sparsity 0 its own outputs bit for bit. A
channel count mixed with a dim known only at run time (the batch) stays blocked with a reason naming it.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from harness import A, Net, S, rel_err, rnd, run_ort, widen
from onnx import TensorProto

import onnxfold
from onnxfold.analysis import UNTRACED_RESHAPE
from onnxfold.ir.model import to_model_proto

X = ["N", 3, 6, 6]  # dynamic batch: Shape(x) is only partly static


def feeds(batch: int = 3, seed: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal([batch, 3, 6, 6]).astype(np.float32)}


def fold(proto: onnx.ModelProto, sparsity: float):
    model, report = onnxfold.fold(proto, sparsity, validate=False, repair="none")
    folded = to_model_proto(model)
    onnx.checker.check_model(folded, full_check=True)
    return folded, report.plans


def folded_plans(plans: list, producer: str) -> list:
    return [p for p in plans if p.status == "folded" and producer in p.group.producers]


def head_w(rng: np.random.Generator, n1: int = 4, n2: int = 5) -> dict[str, np.ndarray]:
    return {
        "w1": rnd(rng, n1, 3, 3, 3),
        "b1": rnd(rng, n1),
        "w2": rnd(rng, n2, n1, 3, 3),
        "b2": rnd(rng, n2),
        "fw": rnd(rng, 6, n2),
        "fb": rnd(rng, 6),
    }


HEAD_DUP = [("w1", 0, [A(4)]), ("b1", 0, [A(4)]), ("w2", 1, [S(4)]), ("w2", 0, [A(5)])]
HEAD_DUP += [("b2", 0, [A(5)]), ("fw", 1, [S(5)])]


def paddle_head(w: dict[str, np.ndarray], mixed: bool = False, opset: int = 17) -> onnx.ModelProto:
    """x → Conv c1 → Relu → Conv c2 → Relu = h [N, C, 6, 6] → Reshape to [N, C, H·W] with the target
    ``Concat(Slice(Cast(Shape(h)), 0, 2), Mul(Gather(Shape, 2), Gather(Shape, 3)))`` → ReduceMean over
    H·W → Gemm. ``mixed``: the target is ``[N·C, H·W]`` (Mul of the batch and the channel count), and a
    second Reshape restores [N, C] with a constant target. Below opset 14 ONNX infers no shape for a
    Reshape with a computed target (Paddle2ONNX exports opset 11-12); canonicalize completes it."""
    net = Net(w, opset)
    h = net("Relu", net("Conv", net.input("x", X), "w1", "b1", name="c1", pads=[1, 1, 1, 1]))
    h = net("Relu", net("Conv", h, "w2", "b2", name="c2", pads=[1, 1, 1, 1]))
    dims = net("Cast", net("Shape", h, name="shape"), to=TensorProto.INT32)
    hw = net("Mul", net("Gather", dims, net.i64("i2", [2])), net("Gather", dims, net.i64("i3", [3])))
    if mixed:
        nc = net("Mul", net("Gather", dims, net.i64("i0", [0])), net("Gather", dims, net.i64("i1", [1])))
        target = net("Concat", nc, hw, axis=0)
    else:
        lead = net("Slice", dims, net.i64("s0", [0]), net.i64("s1", [2]), net.i64("ax", [0]), name="lead")
        target = net("Concat", lead, hw, axis=0)
    flat = net("Reshape", h, net("Cast", target, to=TensorProto.INT64), name="flat")
    pooled = net("ReduceMean", flat, axes=[-1], keepdims=0)
    if mixed:
        pooled = net("Reshape", pooled, net.i64("nc", [-1, w["w2"].shape[0]]), name="back")
    return net.model(net("Gemm", pooled, "fw", "fb", name="fc", transB=1))


def chunk_w(rng: np.random.Generator, n: int = 3) -> dict[str, np.ndarray]:
    return {
        "w1": rnd(rng, 2 * n, 3, 3, 3),
        "b1": rnd(rng, 2 * n),
        "wa": rnd(rng, 4, n, 3, 3),
        "ba": rnd(rng, 4),
        "wb": rnd(rng, 5, n, 1, 1),
        "bb": rnd(rng, 5),
    }


# each half of c1 is its own group once the chunk cuts it: duplicated half by half
CHUNK_DUP = [("w1", 0, [A(3), A(3)]), ("b1", 0, [A(3), A(3)]), ("wa", 1, [S(3)]), ("wb", 1, [S(3)])]


def legacy_chunk(w: dict[str, np.ndarray]) -> onnx.ModelProto:
    """x → Conv c1 → Relu = h, cut by ``h.chunk(2, 1)`` as the legacy exporter writes it: half =
    (Shape(h)[1] + 1) / 2, a = h[:, 0:half·1], b = h[:, half·1:half·2] → Conv ca(a), Conv cb(b) → Concat."""
    net = Net(w)
    h = net("Relu", net("Conv", net.input("x", X), "w1", "b1", name="c1", pads=[1, 1, 1, 1]))
    channels = net("Gather", net("Shape", h, name="shape"), net.i64("one", [1]), axis=0)
    half = net("Div", net("Add", channels, net.i64("plus", [1])), net.i64("two", [2]))
    mid, end = net("Mul", half, net.i64("m1", [1])), net("Mul", half, net.i64("m2", [2]))
    a = net("Slice", h, net.i64("zero", [0]), mid, net.i64("axis", [1]), name="first")
    b = net("Slice", h, mid, end, net.i64("axis_b", [1]), name="second")
    ya = net("Conv", a, "wa", "ba", name="ca", pads=[1, 1, 1, 1])
    yb = net("Conv", b, "wb", "bb", name="cb")
    return net.model(net("Concat", ya, yb, axis=1))


CASES = {
    "paddle-head": (head_w, HEAD_DUP, paddle_head, ["c1", "c2"]),
    "paddle-head-opset12": (head_w, HEAD_DUP, lambda w: paddle_head(w, opset=12), ["c1", "c2"]),
    "legacy-chunk": (chunk_w, CHUNK_DUP, legacy_chunk, ["c1", "c1"]),  # two halves, two groups
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_duplicates_fold_back_to_the_compact_model(case: str) -> None:
    weights, dup, build, expect = CASES[case]
    w = weights(np.random.default_rng(0))
    compact, wide = build(w), build(widen(w, dup))
    ref = run_ort(compact, feeds())
    assert rel_err(run_ort(wide, feeds())[0], ref[0]) < 1e-5
    folded, plans = fold(wide, 0.5)
    got = sorted(p for name in set(expect) for p in [name] * len(folded_plans(plans, name)))
    assert got == sorted(expect), [(p.group.producers, p.status, p.reason) for p in plans]
    assert all(p.k * 2 == p.group.size for p in plans if p.status == "folded")
    for batch in (1, 3):  # the batch is still read at run time
        out = run_ort(folded, feeds(batch))
        want = run_ort(compact, feeds(batch))
        assert out[0].shape == want[0].shape
        assert rel_err(out[0], want[0]) < 1e-5, rel_err(out[0], want[0])


@pytest.mark.parametrize("case", sorted(CASES))
def test_sparsity_zero_is_bit_exact(case: str) -> None:
    weights, dup, build, expect = CASES[case]
    wide = build(widen(weights(np.random.default_rng(0)), dup))
    folded, plans = fold(wide, 0.0)
    assert {name for p in plans if p.group.foldable for name in p.group.producers} >= set(expect)
    for batch in (1, 3):
        np.testing.assert_array_equal(run_ort(folded, feeds(batch))[0], run_ort(wide, feeds(batch))[0])


def test_channel_count_times_batch_stays_blocked() -> None:
    """[N·C, H·W]: the channel count multiplied by a batch known only at run time cannot become a
    constant; the group is blocked, naming the Reshape and the Mul that computes its entry; c1 folds."""
    w = head_w(np.random.default_rng(0))
    compact, wide = paddle_head(w, mixed=True), paddle_head(widen(w, HEAD_DUP), mixed=True)
    folded, plans = fold(wide, 0.5)
    c2 = next(p for p in plans if "c2" in p.group.producers)
    assert c2.status == "blocked"
    assert any(
        r.code == UNTRACED_RESHAPE and r.node == "flat" and "an entry computed by Mul" in r.message
        for r in c2.reasons
    ), c2.reasons
    assert len(folded_plans(plans, "c1")) == 1
    assert rel_err(run_ort(folded, feeds())[0], run_ort(compact, feeds())[0]) < 1e-5


@pytest.mark.parametrize("case", sorted(CASES))
def test_shape_arithmetic_no_fold_changed_is_computed_as_the_source_did(case: str) -> None:
    """canonicalize makes such arithmetic constants (or a Concat of constants and Slices of the dims)
    for the analysis; where no fold changed them the written model computes them again from Shape,
    since onnxruntime optimizes a graph with known values differently (PP-OCRv4 rec, 4.8e-7)."""
    weights, dup, build, _ = CASES[case]
    wide = build(widen(weights(np.random.default_rng(0)), dup))
    ops = Counter(n.op_type for n in wide.graph.node)
    same, _ = fold(wide, 0.0)
    assert Counter(n.op_type for n in same.graph.node) == ops
    half, _ = fold(wide, 0.5)  # the values a fold rewrote stay constants
    assert Counter(n.op_type for n in half.graph.node) != ops
