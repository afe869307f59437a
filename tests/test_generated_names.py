"""Names canonicalize makes never take a name the source already holds. It names the pieces of a
partly known shape vector ``<vector>_dims<k>`` and the per-Reshape copies of a shared target
``<target>__<reader>``; an onnxfold output holds such names already, so folding it again made two
distinct tensors of one name (graphsurgeon printed 206 warnings on a refolded Keras BERT), and where
the two held different values one replaced the other on export: even ``-s 0`` failed validation
("cannot be reshaped to the requested shape"). The model below holds both names with other values.

Duplicate oracle beside it: hidden units 4–7 of the second branch copy units 0–3, their output
columns split 0.3 / 0.7; folding at 0.5 gives the compact branch back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from harness import rel_err, run_ort
from onnx import TensorProto, helper, numpy_helper

import onnxfold
from onnxfold.ir.model import load_model
from onnxfold.pipeline.manager import PassContext


def _model(wa: np.ndarray, wb: np.ndarray) -> onnx.ModelProto:
    rng = np.random.default_rng(0)

    def init(name: str, value) -> onnx.TensorProto:
        return numpy_helper.from_array(np.asarray(value), name)

    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="up"),
        helper.make_node("Relu", ["h"], ["r"], name="act"),
        helper.make_node("Shape", ["r"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "first_two"], ["bt"], name="lead"),  # [N, 3]: partly known
        helper.make_node("Concat", ["bt", "four", "rest"], ["tgt"], axis=0, name="target"),
        helper.make_node("Reshape", ["r", "tgt"], ["r4"], name="first"),
        helper.make_node("Reshape", ["r", "tgt"], ["r4b"], name="second"),  # shares the target
        helper.make_node("Add", ["r4", "r4b"], ["both"], name="sum"),
        helper.make_node("Reshape", ["both", "bt_dims1"], ["flat"], name="back"),
        helper.make_node("Reshape", ["flat", "tgt__second"], ["flat2"], name="again"),
        helper.make_node("MatMul", ["flat2", "w2"], ["y1"], name="down"),
        helper.make_node("MatMul", ["x", "wa"], ["ha"], name="branch_up"),
        helper.make_node("Relu", ["ha"], ["ra"], name="branch_act"),
        helper.make_node("MatMul", ["ra", "wb"], ["y2"], name="branch_down"),
        helper.make_node("Add", ["y1", "y2"], ["y"], name="out"),
    ]
    inits = [
        init("w1", rng.standard_normal((4, 16)).astype(np.float32)),
        init("w2", rng.standard_normal((16, 4)).astype(np.float32)),
        init("wa", wa),
        init("wb", wb),
        init("first_two", np.array([0, 1], np.int64)),
        init("four", np.array([4], np.int64)),
        init("rest", np.array([-1], np.int64)),
        # the names canonicalize would give its own tensors, here with other values
        init("bt_dims1", np.array([0, 0, 16], np.int64)),
        init("tgt__second", np.array([-1, 3, 16], np.int64)),
    ]
    graph = helper.make_graph(
        nodes,
        "names",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return model


def _weights() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    wa = rng.standard_normal((4, 4)).astype(np.float32)
    wb = rng.standard_normal((4, 4)).astype(np.float32)
    wa_dup = np.concatenate([wa, wa], axis=1)
    wb_dup = np.concatenate([0.3 * wb, 0.7 * wb], axis=0)
    return wa_dup, wb_dup, wa, wb


def test_canonicalize_names_no_two_tensors_alike(tmp_path: Path) -> None:
    from onnxfold.passes.canonicalize import CanonicalizePass

    src = tmp_path / "src.onnx"
    onnx.save(_model(*_weights()[:2]), str(src))
    model = load_model(src)
    stats = CanonicalizePass().run(model, PassContext()).stats
    assert stats["static_dims_materialized"] >= 1 and stats["shape_computations_isolated"] >= 1
    seen: dict[str, set[int]] = {}
    for node in model.graph.nodes:
        for tensor in (*node.inputs, *node.outputs):
            seen.setdefault(tensor.name, set()).add(id(tensor))
    assert not {name for name, ids in seen.items() if len(ids) > 1}


def test_a_source_holding_our_names_folds_exactly(tmp_path: Path) -> None:
    wa_dup, wb_dup, wa, wb = _weights()
    src, compact = tmp_path / "src.onnx", _model(wa, wb)
    onnx.save(_model(wa_dup, wb_dup), str(src))
    feed = {"x": np.random.default_rng(2).standard_normal((2, 3, 4)).astype(np.float32)}
    same = tmp_path / "same.onnx"
    onnxfold.fold(src, 0.0, same, validate=False)
    assert np.array_equal(run_ort(onnx.load(str(same)), feed)[0], run_ort(onnx.load(str(src)), feed)[0])
    out = tmp_path / "out.onnx"
    onnxfold.fold(src, 0.5, out, round_to=1, validate=False)
    folded = onnx.load(str(out))
    assert {t.name: tuple(t.dims) for t in folded.graph.initializer}["wa"] == (4, 4)
    assert rel_err(run_ort(folded, feed)[0], run_ort(compact, feed)[0]) < 1e-5


def test_unfused_matmuls_share_one_transposed_weight_under_a_fresh_name(tmp_path: Path) -> None:
    """Two FusedMatMul(·, B, transB=1) read one weight: unfused, they read one transposed copy of it
    (two copies counted it twice), named apart from the source's ``B_T``, a different tensor."""
    from onnxfold.passes.canonicalize import CanonicalizePass

    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("FusedMatMul", ["x", "B"], ["h1"], domain="com.microsoft", transB=1, name="m1"),
        helper.make_node("FusedMatMul", ["x", "B"], ["h2"], domain="com.microsoft", transB=1, name="m2"),
        helper.make_node("Add", ["h1", "h2"], ["h"], name="add"),
        helper.make_node("MatMul", ["h", "B_T"], ["y"], name="last"),
    ]
    inits = [
        numpy_helper.from_array(rng.standard_normal((5, 6)).astype(np.float32), "B"),
        numpy_helper.from_array(rng.standard_normal((5, 3)).astype(np.float32), "B_T"),
    ]
    graph = helper.make_graph(
        nodes,
        "tied",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        inits,
    )
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)]
    )
    src = tmp_path / "tied.onnx"
    onnx.save(proto, str(src))
    model = load_model(src)
    CanonicalizePass().run(model, PassContext())
    matmuls = [n for n in model.graph.nodes if n.op == "MatMul" and n.name in ("m1", "m2")]
    assert len(matmuls) == 2 and matmuls[0].inputs[1] is matmuls[1].inputs[1]
    assert matmuls[0].inputs[1].name != "B_T"
    feed = {"x": rng.standard_normal((4, 6)).astype(np.float32)}
    same = tmp_path / "same.onnx"
    onnxfold.fold(src, 0.0, same, validate=False)
    assert np.array_equal(run_ort(onnx.load(str(same)), feed)[0], run_ort(proto, feed)[0])
