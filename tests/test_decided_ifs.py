"""torch's ``squeeze(dim)`` of a dim it cannot prove to be 1 exports as ``If(Shape(x)[dim] == 1, then:
Squeeze, else: Identity)``. Where the shapes decide the condition, canonicalize takes the branch
(:mod:`onnxfold.ir.branches`): asterocr's AsterNet had 39.5% of its parameters "used inside a
subgraph of If" (trial 196). Exact oracles: duplicated channels through the inlined Squeeze fold back
to the compact model, and ``-s 0`` keeps every bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from harness import S, initializers, producer, rel_err, rnd, run_ort, widen
from onnx import TensorProto, helper

import onnxfold


def _model(w: dict[str, np.ndarray]) -> onnx.ModelProto:
    """x [N, 3, 8, 8] → Conv (c) → Relu → ReduceMean over H → If(H == 1: Squeeze H) → [N, c, 8] →
    Transpose [N, 8, c] → MatMul [c, 5] → y."""
    then_g = helper.make_graph(
        [helper.make_node("Squeeze", ["m", "axis2"], ["sq"])],
        "then",
        [],
        [helper.make_tensor_value_info("sq", TensorProto.FLOAT, None)],
    )
    else_g = helper.make_graph(
        [helper.make_node("Identity", ["m"], ["id"])],
        "else",
        [],
        [helper.make_tensor_value_info("id", TensorProto.FLOAT, None)],
    )
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["h"], pads=[1, 1, 1, 1], name="c1"),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("ReduceMean", ["r"], ["m"], axes=[2], keepdims=1),
        helper.make_node("Shape", ["m"], ["s"]),
        helper.make_node("Gather", ["s", "two"], ["hdim"], axis=0),
        helper.make_node("Equal", ["hdim", "one"], ["cond"]),
        helper.make_node("If", ["cond"], ["z"], then_branch=then_g, else_branch=else_g, name="squeeze_if"),
        helper.make_node("Transpose", ["z"], ["t"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["t", "w2"], ["y"], name="m2"),
    ]
    consts = {"axis2": np.array([2], np.int64), "two": np.array(2, np.int64), "one": np.array(1, np.int64)}
    graph = helper.make_graph(
        nodes,
        "squeezed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 5])],
        [onnx.numpy_helper.from_array(v, k) for k, v in {**w, **consts}.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_a_decided_squeeze_if_folds_its_channels_back_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    compact_w = {"w1": rnd(rng, 4, 3, 3, 3), "b1": rnd(rng, 4), "w2": rnd(rng, 4, 5)}
    compact = _model(compact_w)
    wide = _model(widen(compact_w, producer("w1", "b1", 4) + [("w2", 0, [S(4)])]))
    src = tmp_path / "wide.onnx"
    onnx.save(wide, src)
    groups = [g for g in onnxfold.analyze(src) if "c1" in g.producers]
    assert groups and groups[0].foldable, [(g.name, g.blocked) for g in onnxfold.analyze(src)]
    x = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)
    ref = run_ort(compact, {"x": x})[0]
    half, same = tmp_path / "half.onnx", tmp_path / "same.onnx"
    onnxfold.fold(src, 0.5, half, method="fold", repair="none", round_to=1, validate=False)
    folded = onnx.load(str(half))
    assert rel_err(run_ort(folded, {"x": x})[0], ref) <= 1e-5
    assert initializers(folded)["w1"].shape == (4, 3, 3, 3)
    assert not any(n.op_type == "If" for n in folded.graph.node)
    onnxfold.fold(src, 0.0, same, validate=False)
    assert np.array_equal(run_ort(onnx.load(str(same)), {"x": x})[0], run_ort(wide, {"x": x})[0])


def test_an_if_the_shapes_do_not_decide_stays() -> None:
    """With H free the condition is a run-time value: the If stays and the channels it reads stay
    whole, with the reason."""
    from onnxfold.ir.branches import inline_decided_ifs
    from onnxfold.ir.model import model_from_proto

    rng = np.random.default_rng(1)
    model = _model({"w1": rnd(rng, 4, 3, 3, 3), "b1": rnd(rng, 4), "w2": rnd(rng, 4, 5)})
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    assert inline_decided_ifs(model_from_proto(model).graph) == 0
