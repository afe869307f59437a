"""Outputs that are not tensors: skl2onnx writes a classifier's probabilities through a ZipMap, a
sequence of {class: probability} maps per sample, and a scikit-learn MLP's search failed on it
("float() argument must be a string or a real number, not 'dict'"). The sessions that measure hand
such outputs over as arrays, [samples, classes] in the classes' order (strings as label codes); the
model written keeps its ZipMap, and other sessions (a constant fold's) keep what onnxruntime gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from harness import save_ml_model
from onnx import TensorProto, helper, numpy_helper

import onnxfold
from onnxfold.runtime.session import as_array, make_session


def _sklearn_like(path: Path, names: bool = False) -> Path:
    """x [N, 8] -> MatMul+Add+Relu (16) -> MatMul+Add -> Softmax -> ArgMax label and a ZipMap;
    ``names``: the label a class name, looked up in a string constant (skl2onnx's ``classes``)."""
    rng = np.random.default_rng(0)
    inits = {
        "W1": rng.standard_normal((8, 16)),
        "B1": rng.standard_normal(16) * 0.1,
        "W2": rng.standard_normal((16, 3)),
        "B2": rng.standard_normal(3) * 0.1,
    }
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["m1"]),
        helper.make_node("Add", ["m1", "B1"], ["a1"]),
        helper.make_node("Relu", ["a1"], ["r1"]),
        helper.make_node("MatMul", ["r1", "W2"], ["m2"]),
        helper.make_node("Add", ["m2", "B2"], ["a2"]),
        helper.make_node("Softmax", ["a2"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["index" if names else "label"], axis=1, keepdims=0),
        helper.make_node(
            "ZipMap",
            ["probabilities"],
            ["output_probability"],
            domain="ai.onnx.ml",
            classlabels_int64s=[0, 1, 2],
        ),
    ]
    if names:
        nodes.append(
            helper.make_node("ArrayFeatureExtractor", ["classes", "index"], ["label"], domain="ai.onnx.ml")
        )
    seq_map = helper.make_sequence_type_proto(
        helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, []))
    )
    graph = helper.make_graph(
        nodes,
        "sklearn_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [
            helper.make_tensor_value_info("label", TensorProto.STRING if names else TensorProto.INT64, None),
            helper.make_value_info("output_probability", seq_map),
        ],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()]
        + (
            [numpy_helper.from_array(np.array([b"setosa", b"versicolor", b"virginica"], object), "classes")]
            if names
            else []
        ),
    )
    return save_ml_model(graph, path)


def test_a_zipmap_output_reads_as_class_scores_and_folds(tmp_path: Path) -> None:
    src = _sklearn_like(tmp_path / "mlp.onnx")
    x = np.random.default_rng(1).standard_normal((32, 8)).astype(np.float32)
    label, probs = make_session(str(src), arrays=True).run(None, {"x": x})
    assert isinstance(make_session(str(src)).run(None, {"x": x})[1], list)  # as onnxruntime gives it
    assert probs.shape == (32, 3) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert np.array_equal(probs.argmax(1), label)
    # -s 0: bit for bit, ZipMap kept
    out = tmp_path / "s0.onnx"
    _, report = onnxfold.fold(src, output=out, sparsity=0.0, inputs=x)
    assert report.validation.exact
    assert "ZipMap" in {n.op_type for n in onnx.load(str(out)).graph.node}
    # the default search on the samples folds and measures both outputs
    out = tmp_path / "searched.onnx"
    _, report = onnxfold.fold(src, output=out, inputs=x)
    names = {o.name for o in report.search.chosen.outputs}
    assert names == {"label", "output_probability"}, names
    got = make_session(str(out), arrays=True).run(None, {"x": x})[0]
    assert np.mean(got == label) >= 0.95


def test_as_array_orders_a_maps_classes_and_stacks_equal_tensors() -> None:
    maps = [{2: 0.1, 0: 0.7, 1: 0.2}, {0: 0.3, 2: 0.6, 1: 0.1}]
    np.testing.assert_allclose(as_array(maps), [[0.7, 0.2, 0.1], [0.3, 0.1, 0.6]], rtol=1e-6)
    tensors = [np.zeros((2, 3)), np.ones((2, 3))]
    assert as_array(tensors).shape == (2, 2, 3)
    ragged = [np.zeros(2), np.zeros(3)]
    assert as_array(ragged) is ragged
    array = np.ones(3)
    assert as_array(array) is array


def test_string_labels_are_compared_and_written_back(tmp_path: Path) -> None:
    """skl2onnx names a classifier's classes in a string constant: cleanup failed to write it ("Can not
    use raw_data to store string type"), and the label output could not be compared (dtype object)."""
    src = _sklearn_like(tmp_path / "named.onnx", names=True)
    x = np.random.default_rng(1).standard_normal((32, 8)).astype(np.float32)
    out = tmp_path / "s0.onnx"
    _, report = onnxfold.fold(src, output=out, sparsity=0.0, inputs=x)
    assert report.validation.exact
    written = onnx.load(str(out))
    classes = next(t for t in written.graph.initializer if t.name == "classes")
    assert list(classes.string_data) == [b"setosa", b"versicolor", b"virginica"]
    import onnxruntime as ort

    want = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(["label"], {"x": x})[0]
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(["label"], {"x": x})[0]
    assert want.dtype == object and got.shape == want.shape and (got == want).all()
    _, report = onnxfold.fold(src, output=tmp_path / "searched.onnx", inputs=x)
    assert report.search.chosen.outputs and report.search.met
    codes = as_array(np.array([b"setosa", b"virginica", b"setosa"], object))
    assert codes.dtype == np.int64 and codes[0] == codes[2] != codes[1]


def test_looking_for_strings_and_infinities_loads_no_external_data(tmp_path: Path) -> None:
    """The string check of every export read each constant's values, which loads weights still in
    external data (the folded file then differed from the one written before it: data_location gone)
    and would hold a large model's weights in memory; the non-finite check of the analysis alike."""
    from onnx_graphsurgeon.ir.tensor import LazyValues

    from onnxfold.analysis.finish import nonfinite_members
    from onnxfold.ir.model import load_model

    src = _sklearn_like(tmp_path / "mlp.onnx")
    proto = onnx.load(str(src))
    onnx.save(
        proto, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.data", size_threshold=0
    )
    model = load_model(tmp_path / "ext.onnx")
    lazy = {
        n for n, t in model.graph.tensors().items() if isinstance(getattr(t, "_values", None), LazyValues)
    }
    assert {"W1", "W2"} <= lazy
    model.to_onnx()

    class Walk:  # what nonfinite_members reads of an analysis
        graph = model.graph

    members = [type("M", (), {"tensor": n, "role": "average"})() for n in ("W1", "W2")]
    assert nonfinite_members(Walk(), members) == []
    still = {
        n for n, t in model.graph.tensors().items() if isinstance(getattr(t, "_values", None), LazyValues)
    }
    assert still == lazy
