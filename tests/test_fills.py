"""A decoder's zero initial state, ``ConstantOfShape([batch, H])`` (torch's ``zeros(B, H)`` beside an
unrolled GRU cell: g2p_en's ``h0 · z`` and ``h0 @ R``), moves with the hidden units it meets: its H
entry becomes k. Exact oracle: a wide twin whose hidden units are duplicated (W's columns and the
biases copied, R's and V's rows halved) folds back to the compact decoder's outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

import onnxfold
from onnxfold.runtime.session import make_session

D, H, OUT = 5, 6, 3


def decoder(hidden: int, rng: np.random.Generator | None = None, compact: dict | None = None):
    """h0 = zeros(B, hidden); g = x W + b; h1 = tanh(g + h0 R) + h0 · σ(g); h2 = tanh(g + h1 R2); y = h2 V."""
    if compact is None:
        w = {
            "W": rng.standard_normal((D, hidden)),
            "b": rng.standard_normal(hidden),
            "R": rng.standard_normal((hidden, hidden)) / 2,
            "R2": rng.standard_normal((hidden, hidden)) / 2,
            "V": rng.standard_normal((hidden, OUT)),
        }
    else:
        w = {
            "W": np.concatenate([compact["W"]] * 2, axis=1),
            "b": np.concatenate([compact["b"]] * 2),
            "V": np.concatenate([compact["V"]] * 2) / 2,
        }
        for r in ("R", "R2"):
            w[r] = np.tile(compact[r], (2, 2)) / 2
    consts = [nh.from_array(v.astype(np.float32), k) for k, v in w.items()]
    consts += [
        nh.from_array(np.array(0, np.int64), "zero"),
        nh.from_array(np.array([0], np.int64), "axis0"),
        nh.from_array(np.array([hidden], np.int64), "width"),
    ]
    nodes = [
        oh.make_node("Shape", ["x"], ["s"], "shape"),
        oh.make_node("Gather", ["s", "zero"], ["batch"], "batch", axis=0),
        oh.make_node("Unsqueeze", ["batch", "axis0"], ["batch1"], "unsqueeze"),
        oh.make_node("Concat", ["batch1", "width"], ["dims"], "dims", axis=0),
        oh.make_node("ConstantOfShape", ["dims"], ["h0"], "h0"),
        oh.make_node("MatMul", ["x", "W"], ["xw"], "input"),
        oh.make_node("Add", ["xw", "b"], ["g"], "bias"),
        oh.make_node("MatMul", ["h0", "R"], ["r0"], "recur0"),
        oh.make_node("Add", ["g", "r0"], ["a0"], "add0"),
        oh.make_node("Tanh", ["a0"], ["t0"], "tanh0"),
        oh.make_node("Sigmoid", ["g"], ["z"], "gate"),
        oh.make_node("Mul", ["h0", "z"], ["kept"], "keep"),
        oh.make_node("Add", ["t0", "kept"], ["h1"], "h1"),
        oh.make_node("MatMul", ["h1", "R2"], ["r1"], "recur1"),
        oh.make_node("Add", ["g", "r1"], ["a1"], "add1"),
        oh.make_node("Tanh", ["a1"], ["h2"], "tanh1"),
        oh.make_node("MatMul", ["h2", "V"], ["y"], "head"),
    ]
    graph = oh.make_graph(
        nodes,
        "decoder",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", D])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", OUT])],
        consts,
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), w


def run(path: Path, x: np.ndarray) -> np.ndarray:
    return make_session(path, providers=["CPUExecutionProvider"], threads=1).run(None, {"x": x})[0]


@pytest.mark.parametrize("method", ["fold", "auto"])
def test_a_zero_initial_state_folds_with_the_hidden_units_back_exactly(tmp_path, method) -> None:
    small, weights = decoder(H, np.random.default_rng(0))
    wide, _ = decoder(2 * H, compact=weights)
    paths = {name: tmp_path / f"{name}.onnx" for name in ("compact", "wide", "folded")}
    onnx.save(small, paths["compact"])
    onnx.save(wide, paths["wide"])
    x = np.random.default_rng(1).standard_normal((7, D)).astype(np.float32)
    want = run(paths["compact"], x)
    np.testing.assert_allclose(run(paths["wide"], x), want, rtol=1e-5, atol=1e-5)  # the twin is exact
    (hidden,) = [g for g in onnxfold.analyze(paths["wide"]) if g.name == "input"]
    assert hidden.foldable and hidden.size == 2 * H, hidden.blocked
    _, report = onnxfold.fold(
        paths["wide"], 0.5, paths["folded"], method=method, repair="none", validate=False
    )
    assert {p.group.name: p.status for p in report.plans}["input"] == "folded"
    got = run(paths["folded"], x)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    assert report.after.params == sum(v.size for v in weights.values())  # shape vectors are no parameters
    stored = {t.name: nh.to_array(t) for t in onnx.load(str(paths["folded"])).graph.initializer}
    assert [v for k, v in stored.items() if k.startswith("width")] == [np.array([H])]


def test_sparsity_zero_leaves_a_zero_initial_state_bit_for_bit(tmp_path) -> None:
    wide, _ = decoder(2 * H, np.random.default_rng(4))
    src, out = tmp_path / "wide.onnx", tmp_path / "out.onnx"
    onnx.save(wide, src)
    onnxfold.fold(src, 0.0, out, validate=False)
    x = np.random.default_rng(3).standard_normal((2, D)).astype(np.float32)
    assert np.array_equal(run(out, x), run(src, x))


def test_a_fill_on_another_axis_is_read_as_a_broadcast(tmp_path) -> None:
    """Mean pooling under a mask of ones [B, L] that the graph builds (a fixed length L = 4), unsqueezed
    to [B, L, 1] and multiplied into the hidden states [B, L, C]: the fill lies on the positions, not
    the channels, and the hidden group folds as it did before fills were tracked."""
    rng = np.random.default_rng(2)
    w = {"W": rng.standard_normal((D, 8)), "V": rng.standard_normal((8, OUT))}
    consts = [nh.from_array(v.astype(np.float32), k) for k, v in w.items()]
    consts += [
        nh.from_array(np.array(0, np.int64), "zero"),
        nh.from_array(np.array([0], np.int64), "axis0"),
        nh.from_array(np.array([4], np.int64), "length"),
        nh.from_array(np.array([-1], np.int64), "last"),
        nh.from_array(np.array([1], np.int64), "positions"),
    ]
    nodes = [
        oh.make_node("Shape", ["x"], ["s"], "shape"),
        oh.make_node("Gather", ["s", "zero"], ["batch"], "batch", axis=0),
        oh.make_node("Unsqueeze", ["batch", "axis0"], ["batch1"], "unsqueeze"),
        oh.make_node("Concat", ["batch1", "length"], ["dims"], "dims", axis=0),
        oh.make_node(
            "ConstantOfShape", ["dims"], ["ones"], "ones", value=nh.from_array(np.array([1.0], np.float32))
        ),
        oh.make_node("Unsqueeze", ["ones", "last"], ["mask"], "mask"),
        oh.make_node("MatMul", ["x", "W"], ["h"], "hidden"),
        oh.make_node("Relu", ["h"], ["r"], "relu"),
        oh.make_node("Mul", ["r", "mask"], ["masked"], "masked"),
        oh.make_node("ReduceSum", ["masked", "positions"], ["pooled"], "pool", keepdims=0),
        oh.make_node("MatMul", ["pooled", "V"], ["y"], "head"),
    ]
    graph = oh.make_graph(
        nodes,
        "pooled",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, D])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", OUT])],
        consts,
    )
    src = tmp_path / "pooled.onnx"
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), src)
    (hidden,) = [g for g in onnxfold.analyze(src) if g.name == "hidden"]
    assert hidden.foldable, hidden.blocked
