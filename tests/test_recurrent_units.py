"""The hidden units of LSTM, GRU and RNN fold (onnxfold.analysis.rules.recurrent): a layer whose hidden
units are exact duplicates folds back to the compact layer (rows of W, R, B averaged per gate block,
R's columns summed, hidden_size shrunk), in both directions of a bidirectional layer, and a zero
initial state that torch writes as a slice of ConstantOfShape is left out first
(onnxfold.ir.recurrent_states): Resemblyzer's three LSTMs shared one such tensor."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from harness import A, S, run_ort, widen
from onnx import TensorProto, helper, numpy_helper

import onnxfold
from onnxfold.api import as_model
from onnxfold.ir.model import to_model_proto
from onnxfold.passes import CanonicalizePass
from onnxfold.pipeline.manager import PassContext

H, IN, T, BATCH = 3, 5, 7, 4
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def _weights(op: str, dirs: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    g = GATES[op]
    return {
        "W": (rng.standard_normal((dirs, g * H, IN)) * 0.5).astype(np.float32),
        "R": (rng.standard_normal((dirs, g * H, H)) * 0.5).astype(np.float32),
        "B": (rng.standard_normal((dirs, 2 * g * H)) * 0.3).astype(np.float32),
        "V": rng.standard_normal((dirs * H, 2)).astype(np.float32),
    }


def _model(op: str, dirs: int, w: dict[str, np.ndarray], zero_state: bool = False, state_input: bool = False):
    """x [T, batch, IN] → op → Y_h [dirs, batch, hidden] → [batch, dirs·hidden] → MatMul V [.., 2].
    ``zero_state``: initial states sliced from ConstantOfShape([dirs, batch, hidden], 0) as torch writes
    them; ``state_input``: initial_h is a graph input."""
    hidden = w["R"].shape[2]
    attrs = {"hidden_size": hidden, **({"direction": "bidirectional"} if dirs == 2 else {})}
    states = ["", ""] if op == "LSTM" else [""]
    nodes = []
    ints = [numpy_helper.from_array(np.array([0, -1], np.int64), "flat")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [T, "batch", IN])]
    if zero_state:
        ints += [
            numpy_helper.from_array(np.array([dirs], np.int64), "dirs"),
            numpy_helper.from_array(np.array([hidden], np.int64), "hid"),
            numpy_helper.from_array(np.array([1], np.int64), "one"),
            numpy_helper.from_array(np.array([0], np.int64), "zero"),
            numpy_helper.from_array(np.array([2], np.int64), "two"),
            numpy_helper.from_array(np.array([dirs], np.int64), "end"),
        ]
        nodes += [
            helper.make_node("Shape", ["x"], ["shape"]),
            helper.make_node("Slice", ["shape", "one", "two"], ["b"]),
            helper.make_node("Concat", ["dirs", "b", "hid"], ["state_shape"], axis=0),
            helper.make_node("ConstantOfShape", ["state_shape"], ["zeros"]),
        ]
        for i in range(len(states)):
            nodes.append(helper.make_node("Slice", ["zeros", "zero", "end"], [f"s{i}"]))
            states[i] = f"s{i}"
    if state_input:
        inputs.append(helper.make_tensor_value_info("h0", TensorProto.FLOAT, [dirs, "batch", hidden]))
        states[0] = "h0"
    nodes += [
        helper.make_node(op, ["x", "W", "R", "B", "", *states], ["Y", "Y_h"], **attrs),
        helper.make_node("Transpose", ["Y_h"], ["t"], perm=[1, 0, 2]),
        helper.make_node("Reshape", ["t", "flat"], ["f"]),
        helper.make_node("MatMul", ["f", "V"], ["out"]),
    ]
    inits = [numpy_helper.from_array(v, k) for k, v in w.items()] + ints
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 2])]
    graph = helper.make_graph(nodes, "rnn", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _wide(op: str, dirs: int, w: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every hidden unit twice: its rows in each gate block repeated, R's columns and V's rows
    repeated and halved."""
    g = GATES[op]
    spec = [("W", 1, [A(H)] * g), ("R", 1, [A(H)] * g), ("R", 2, [S(H)]), ("B", 1, [A(H)] * 2 * g)]
    return widen(w, [*spec, ("V", 0, [S(H)] * dirs)])


def _feed(state_input: bool = False, dirs: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    feed = {"x": rng.standard_normal((T, BATCH, IN)).astype(np.float32)}
    if state_input:
        feed["h0"] = rng.standard_normal((dirs, BATCH, 2 * H)).astype(np.float32)
    return feed


def _hidden_sizes(proto) -> list[int]:
    return [
        a.i for n in proto.graph.node if n.op_type in GATES for a in n.attribute if a.name == "hidden_size"
    ]


@pytest.mark.parametrize("dirs", [1, 2])
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("method", ["fold", "auto"])
def test_duplicated_hidden_units_fold_back_to_the_compact_layer(op: str, dirs: int, method: str) -> None:
    w = _weights(op, dirs)
    compact, wide = _model(op, dirs, w), _model(op, dirs, _wide(op, dirs, w))
    feed = _feed()
    (ref,) = run_ort(compact, feed)
    np.testing.assert_allclose(run_ort(wide, feed)[0], ref, rtol=1e-5, atol=1e-6)
    model, report = onnxfold.fold(wide, 0.5, validate=False, round_to=1, method=method)
    folded = to_model_proto(model)
    assert _hidden_sizes(folded) == [H]
    assert [p.status for p in report.plans if p.group.size == 2 * H] == ["folded"]
    np.testing.assert_allclose(run_ort(folded, feed)[0], ref, rtol=1e-5, atol=1e-6)
    unchanged, _ = onnxfold.fold(wide, 0.0, validate=False)
    np.testing.assert_array_equal(run_ort(to_model_proto(unchanged), feed)[0], run_ort(wide, feed)[0])


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_a_zero_initial_state_written_by_the_exporter_is_left_out(op: str) -> None:
    w = _weights(op, 1)
    compact, wide = _model(op, 1, w, zero_state=True), _model(op, 1, _wide(op, 1, w), zero_state=True)
    feed = _feed()
    model = as_model(wide)
    result = CanonicalizePass().run(model, PassContext())
    assert result.stats["zero_recurrent_states_dropped"] == (2 if op == "LSTM" else 1)
    canonical = to_model_proto(model)
    assert not any(n.op_type == "ConstantOfShape" for n in canonical.graph.node)
    np.testing.assert_array_equal(run_ort(canonical, feed)[0], run_ort(wide, feed)[0])
    folded, report = onnxfold.fold(wide, 0.5, validate=False, round_to=1, method="fold")
    assert _hidden_sizes(to_model_proto(folded)) == [H]
    np.testing.assert_allclose(
        run_ort(to_model_proto(folded), feed)[0], run_ort(compact, feed)[0], rtol=1e-5, atol=1e-6
    )


def test_a_state_fed_from_outside_keeps_the_hidden_units() -> None:
    """A streaming model feeds its state back as a graph input: its units are blocked, with the reason."""
    w = _wide("GRU", 1, _weights("GRU", 1))
    proto = _model("GRU", 1, w, state_input=True)
    onnx.checker.check_model(proto)
    model, report = onnxfold.fold(proto, 0.5, validate=False, round_to=1, method="fold")
    (hidden,) = [p for p in report.plans if p.group.size == 2 * H]
    assert hidden.status == "blocked"
    assert any(r.code == "recurrent-state" and "h0 is computed" in r.message for r in hidden.group.blocked)
    feed = _feed(state_input=True)
    np.testing.assert_array_equal(run_ort(to_model_proto(model), feed)[0], run_ort(proto, feed)[0])


@pytest.mark.parametrize("method", ["auto", "lsq", "hybrid"])
def test_duplicated_hidden_units_fold_back_when_fitted_on_samples(method: str) -> None:
    """With samples the consumers' columns are fitted by least squares (the next layer's, and the
    output projection's); duplicates still fold back exactly."""
    w = _weights("LSTM", 2)
    compact, wide = _model("LSTM", 2, w), _model("LSTM", 2, _wide("LSTM", 2, w))
    x = np.random.default_rng(3).standard_normal((T, 32, IN)).astype(np.float32)
    model, _ = onnxfold.fold(wide, 0.5, validate=False, round_to=1, method=method, inputs={"x": x})
    folded = to_model_proto(model)
    assert _hidden_sizes(folded) == [H]
    np.testing.assert_allclose(
        run_ort(folded, _feed())[0], run_ort(compact, _feed())[0], rtol=1e-5, atol=1e-6
    )
