"""A recogniser that decodes in the graph (trueocr's: character ids [B, T] int64 from an ArgMax,
their confidences [B, T], each line's length [B], read with each line's valid width [B]): its lines
are read whole, its confidences are values per position, its length input is drawn at full length,
and ids all blank on random inputs say so."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from onnxfold.runtime.compare import _compare_one
from onnxfold.runtime.exercised import unexercised, unexercised_by_both
from onnxfold.runtime.fidelity import counted, fidelity_value, output_metrics
from onnxfold.runtime.inputs import make_inputs
from onnxfold.runtime.sequences import ctc_paths


def _lines(n: int = 32, steps: int = 40, seed: int = 0) -> np.ndarray:
    """CTC paths: blank 0 between characters 1..30, each character held 1-2 steps."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, steps), np.int64)
    for row in out:
        t = int(rng.integers(0, 3))
        while t < steps - 2:
            row[t : t + int(rng.integers(1, 3))] = rng.integers(1, 31)
            t += int(rng.integers(3, 6))
    return out


def test_character_ids_are_read_as_lines_and_confidences_as_values() -> None:
    ids = _lines()
    conf = np.random.default_rng(1).uniform(0.5, 1.0, ids.shape).astype(np.float32)
    lengths = np.full(32, 40, np.int64)
    reference = {"ids": ids, "conf": conf, "lengths": lengths}
    assert ctc_paths(ids, 32)
    chosen = output_metrics(reference, "auto", samples=32, guarded=True)
    assert chosen == {"ids": "sequence", "conf": "r2", "lengths": "top1"}
    # data-free: positions, as before
    assert output_metrics(reference, "auto", samples=32, guarded=False)["ids"] == "top1"


def test_a_line_with_one_character_changed_is_lost() -> None:
    ids = _lines()
    changed = ids.copy()
    first = np.flatnonzero(changed[0])[0]
    changed[0, first] = 31 if changed[0, first] != 31 else 30  # one character of line 0
    changed[1, np.flatnonzero(changed[1] == 0)[0]] = 0  # a blank kept: no change
    assert fidelity_value("sequence", ids, changed, 32) == 31 / 32
    assert fidelity_value("top1", ids, changed, 32) > 0.999  # per position it hides the line
    assert counted("sequence", ids, 32) == 32
    held = ids.copy()  # a character held one more step over a blank: the same line
    for t in range(1, held.shape[1]):
        if held[2, t] == 0 and held[2, t - 1] != 0:
            held[2, t] = held[2, t - 1]
            break
    assert fidelity_value("sequence", ids, held, 32) == 1.0


def test_frame_labels_that_no_blank_separates_stay_per_position() -> None:
    frames = np.repeat(np.random.default_rng(2).integers(0, 5, (32, 8)), 5, axis=1)
    assert not ctc_paths(frames, 32)
    assert output_metrics({"states": frames}, "auto", samples=32, guarded=True) == {"states": "top1"}


def test_a_frame_classifier_whose_background_separates_long_events_stays_per_position() -> None:
    """A seizure detector writes logits [time, B, 4] (named so), background the class between "pre"
    and "seizure": its seizures, a median 168 half-second steps, each start and end on background,
    were read as CTC lines, and one flickering step failed a whole window. CTC's emissions are peaks
    of a few steps and its blank is the first or the last class."""
    rng = np.random.default_rng(3)
    time, batch = 200, 32
    labels = np.full((batch, time), 2)  # background
    for row in labels:
        start = int(rng.integers(10, 80))
        row[start : start + int(rng.integers(40, 110))] = 3  # a seizure
    logits = np.eye(4)[labels].transpose(1, 0, 2) * 5.0 + rng.normal(0, 0.1, (time, batch, 4))
    assert output_metrics({"logits": logits}, "auto", samples=batch) == {"logits": "top1"}
    # the same runs with the background first, as a blank: still no line, the events last
    assert not ctc_paths(np.where(labels == 2, 0, labels), batch)
    short = np.where(labels == 2, 0, labels)
    short[:, 1::2] = 0  # events cut into peaks of one step, the blank between: a recogniser's
    assert ctc_paths(short, batch)


def test_ids_all_blank_on_random_inputs_say_so() -> None:
    blank = np.zeros((2, 56), np.int64)
    why = unexercised("ids", blank)
    assert why is not None and "label 0 at every position" in why
    assert unexercised_by_both("ids", blank, blank) == why
    moved = blank.copy()
    moved[0, 3] = 7
    assert unexercised_by_both("ids", blank, moved) is None  # the candidate reads something: a change
    assert unexercised("ids", _lines()) is None


def test_labels_are_printed_as_equal_or_not() -> None:
    ids = _lines()
    line = _compare_one("ids", ids, np.where(ids == 5, 6, ids)).summary()
    assert "equal" in line and "cosine" not in line and "max_abs" not in line


def test_a_length_input_is_drawn_at_the_full_length() -> None:
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0)],
        "lines",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 1, 32, "W"]),
            helper.make_tensor_value_info("widths", TensorProto.INT64, ["B"]),
        ],
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, [])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    feed = make_inputs(proto)
    assert list(feed) == ["x", "widths"]
    assert (feed["widths"] == feed["x"].shape[-1]).all() and feed["x"].shape[-1] > 4


def test_a_confidence_per_position_gets_no_top1_in_validation() -> None:
    """trueocr's conf [B, T] printed 'top1 90.6%': the position of a line's most confident character."""
    from onnx import numpy_helper

    from onnxfold.runtime.compare import validate

    graph = helper.make_graph(
        [
            helper.make_node("ArgMax", ["x"], ["ids"], axis=-1, keepdims=0),
            helper.make_node("ReduceMax", ["x", "axes"], ["conf"], keepdims=0),
        ],
        "decoded",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 40, 31])],
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["B", 40]),
            helper.make_tensor_value_info("conf", TensorProto.FLOAT, ["B", 40]),
        ],
        [numpy_helper.from_array(np.array([-1], np.int64), "axes")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    x = np.random.default_rng(0).standard_normal((32, 40, 31)).astype(np.float32)
    x[np.arange(32)[:, None], np.arange(40)[None], _lines()] += 6  # the lines' characters win
    report = validate(proto, proto, inputs={"x": x})
    got = {m.name: m for m in report.outputs}
    assert got["ids"].fidelity_metric == "sequence" and got["ids"].top1_agreement == 1.0
    assert got["conf"].fidelity_metric == "r2" and got["conf"].top1_agreement is None
    assert "top1" not in got["conf"].summary()
