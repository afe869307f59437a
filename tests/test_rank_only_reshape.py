"""A Reshape whose target is computed in a way the trace cannot follow, below opset 14: ONNX's
inference leaves its output without a shape, and every op after it too. tf2onnx writes such targets
for Keras's MultiHeadAttention (``ReduceProd`` of shape slices), and the feed-forward block after it,
Tensordot's ``Reshape(x, [−1, C]) → MatMul → Reshape back``, was blocked as "a target shape that
cannot be traced" at opset 13 while it folded at opset 17 (an independent oracle builder's finding).
The target's length still fixes the output's rank, and that is all the feed-forward block's proof
needs. Duplicate oracle: the hidden units come in identical pairs whose down-projection rows split
0.3 / 0.7."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from harness import rel_err, run_ort
from onnx import TensorProto, helper, numpy_helper

import onnxfold

D, H = 4, 3  # model width, compact hidden width


def ints(name: str, values: list[int]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def block(hidden: int, w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, opset: int) -> onnx.ModelProto:
    """x [B, T, D] → an untraceable reshape to [B, T, D] (ReduceProd of the batch dim) → Tensordot
    FFN (D → hidden → D) with its reshapes built from Shape/Gather/Concat → y [B, T, D]."""
    nodes = [
        helper.make_node("Shape", ["x"], ["xs"]),
        helper.make_node("Gather", ["xs", "i0"], ["b1d"], axis=0),
        helper.make_node("ReduceProd", ["b1d"], ["b"], keepdims=1),  # the trace stops here
        helper.make_node("Concat", ["b", "minus1", "d"], ["t_shape"], axis=0),
        helper.make_node("Reshape", ["x", "t_shape"], ["t"]),
    ]
    src = "t"
    for k, flat in enumerate(("flat", "flat_h")):
        nodes += [
            helper.make_node("Shape", [src], [f"s{k}"]),
            helper.make_node("Gather", [f"s{k}", "i01"], [f"lead{k}"], axis=0),
            helper.make_node("Concat", [f"lead{k}", f"width{k}"], [f"back{k}"], axis=0),
            helper.make_node("Reshape", [src, flat], [f"f{k}"]),
            helper.make_node("MatMul", [f"f{k}", f"w{k}"], [f"m{k}"]),
            helper.make_node("Reshape", [f"m{k}", f"back{k}"], [f"r{k}"]),
        ]
        if k == 0:
            nodes += [helper.make_node("Add", ["r0", "b1"], ["a0"]), helper.make_node("Relu", ["a0"], ["h"])]
            src = "h"
    nodes.append(helper.make_node("Identity", ["r1"], ["y"]))
    inits = [
        ints("i0", [0]),
        ints("i01", [0, 1]),
        ints("minus1", [-1]),
        ints("d", [D]),
        ints("width0", [hidden]),
        ints("width1", [D]),
        ints("flat", [-1, D]),
        ints("flat_h", [-1, hidden]),
        numpy_helper.from_array(w1, "w0"),
        numpy_helper.from_array(b1, "b1"),
        numpy_helper.from_array(w2, "w1"),
    ]
    graph = helper.make_graph(
        nodes,
        "tensordot_ffn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "time", D])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "time", D])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("opset", [13, 17])
def test_feed_forward_after_an_untraced_reshape_folds_back_exactly(tmp_path: Path, opset: int) -> None:
    rng = np.random.default_rng(opset)
    w1 = rng.standard_normal((D, H)).astype(np.float32)
    b1 = rng.standard_normal(H).astype(np.float32)
    w2 = rng.standard_normal((H, D)).astype(np.float32)
    pairs = [0, 1, 2, 0, 1, 2]  # each hidden unit twice
    share = np.array([0.3, 0.3, 0.3, 0.7, 0.7, 0.7], dtype=np.float32)
    twin = block(6, w1[:, pairs], b1[pairs], w2[pairs] * share[:, None], opset)
    compact = block(H, w1, b1, w2, opset)
    src = tmp_path / "twin.onnx"
    onnx.save(twin, str(src))
    feeds = [{"x": rng.standard_normal((b, t, D)).astype(np.float32)} for b, t in ((2, 5), (1, 9))]
    for feed in feeds:
        assert rel_err(run_ort(twin, feed)[0], run_ort(compact, feed)[0]) < 1e-6

    groups = onnxfold.analyze(src)
    hidden = [g for g in groups if g.size == 6]
    assert len(hidden) == 1 and hidden[0].foldable, [
        (g.name, g.size, [b.message for b in g.blocked]) for g in groups
    ]

    out = tmp_path / "folded.onnx"
    onnxfold.fold(src, 0.5, out, method="fold", repair="none", round_to=1, validate=False)
    folded = onnx.load(str(out))
    w = {t.name: numpy_helper.to_array(t) for t in folded.graph.initializer}
    assert w["w0"].shape == (D, H) and w["w1"].shape == (H, D)
    for feed in feeds:
        assert rel_err(run_ort(folded, feed)[0], run_ort(compact, feed)[0]) < 1e-5

    same = tmp_path / "same.onnx"
    onnxfold.fold(src, 0.0, same, validate=False)
    for feed in feeds:
        assert np.array_equal(run_ort(onnx.load(str(same)), feed)[0], run_ort(twin, feed)[0])


def test_a_reshape_of_known_dims_that_no_mapping_follows_is_not_called_unknown() -> None:
    """BlazeFace's one-channel score head, [1, 1, 48, 48] -> [1, 2304, 1], read "merges the channel axis
    with dims of unknown size": every dim was known; what blocks it is the regrouping."""
    from harness import Net, rnd
    from onnx import shape_inference

    from onnxfold.analysis import analyze_graph
    from onnxfold.api import as_model

    rng = np.random.default_rng(0)
    net = Net({"w1": rnd(rng, 4, 3, 1, 1), "w2": rnd(rng, 4, 4, 1, 1)})
    h = net("Relu", net("Conv", net.input("x", [1, 3, 6, 6]), "w1"))
    y = net("Reshape", net("Conv", h, "w2", name="head"), net.i64("shape", [1, -1, 1]), name="flat")
    model = as_model(shape_inference.infer_shapes(net.model(y)))
    head = next(g for g in analyze_graph(model.graph, model.node_scopes()) if g.name == "head")
    (reason,) = head.blocked
    assert "unknown size" not in reason.message, reason.message
    assert (
        reason.message
        == "Reshape flat merges the channel axis with the dims after it into [1, -1, 1], which no channel mapping follows"
    )
