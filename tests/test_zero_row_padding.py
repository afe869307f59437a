"""Token samples the user padded: trailing ids of the embedding table's one all-zero row (torch's
``padding_idx``) are padding, left out of the outputs per position (onnxfold.runtime.padding). AttaCut's
character CNN given sentences padded with id 0 measured binary 0.9637 for a fold that kept 0.932 of the
real characters' boundaries: every fold agrees on the padding."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxfold.api import as_model
from onnxfold.runtime.fidelity import fidelity_value
from onnxfold.runtime.padding import padding_mask, token_positions
from onnxfold.runtime.sample_files import load_inputs

N, L, V = 12, 9, 20


def _proto(zero_row: int | None = 0, mask_input: bool = False, shift: float = 0.0):
    """ids [N, L] → Gather(E) [N, L, 4] → MatMul(w) [N, L, 1] → Reshape [N, L] logits, plus ``shift``
    added where the ids are 0 (a change that lands on the padding alone)."""
    rng = np.random.default_rng(0)
    table = rng.standard_normal((V, 4)).astype(np.float32)
    if zero_row is not None:
        table[zero_row] = 0.0
    inits = [
        numpy_helper.from_array(table, "E"),
        numpy_helper.from_array(rng.standard_normal((4, 1)).astype(np.float32), "w"),
        numpy_helper.from_array(np.array([0, -1], np.int64), "shape"),
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        numpy_helper.from_array(np.array(shift, np.float32), "shift"),
    ]
    nodes = [
        helper.make_node("Gather", ["E", "ids"], ["rows"]),
        helper.make_node("MatMul", ["rows", "w"], ["col"]),
        helper.make_node("Reshape", ["col", "shape"], ["raw"]),
        helper.make_node("Equal", ["ids", "zero"], ["is_pad"]),
        helper.make_node("Cast", ["is_pad"], ["pad"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["pad", "shift"], ["moved"]),
        helper.make_node("Add", ["raw", "moved"], ["logits"]),
    ]
    inputs = [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "length"])]
    if mask_input:
        inputs.append(helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "length"]))
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "length"])]
    graph = helper.make_graph(nodes, "chars", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _padded() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    lengths = rng.integers(2, L + 1, N)
    lengths[0] = L
    keep = np.arange(L)[None] < lengths[:, None]
    return np.where(keep, rng.integers(1, V, (N, L)), 0).astype(np.int64), keep


def test_trailing_ids_of_the_zero_row_are_padding(caplog) -> None:
    ids, keep = _padded()
    with caplog.at_level(logging.WARNING):
        got = load_inputs(ids, as_model(_proto()))
    assert np.array_equal(padding_mask(got), keep)
    assert f"{int((~keep).any(axis=1).sum())} of {N} samples end in id 0" in caplog.text
    ref = np.random.default_rng(2).standard_normal((N, L))
    cand = np.where(keep, ref, -ref)  # differs on the padding alone
    mask = token_positions(ref, padding_mask(got))
    assert fidelity_value("binary", ref, cand, N, mask) == 1.0
    assert fidelity_value("binary", ref, cand, N) < 0.9


@pytest.mark.parametrize(
    "case",
    ["row not zero", "another id zero", "a row all padding", "nothing padded", "a mask input"],
)
def test_no_padding_is_read_where_the_ids_do_not_say_so(case: str) -> None:
    ids, _ = _padded()
    proto = _proto()
    feed: dict[str, np.ndarray] = {"ids": ids}
    if case == "row not zero":
        proto = _proto(zero_row=None)
    elif case == "another id zero":
        proto = _proto(zero_row=3)  # id 0 ends the rows but its row holds values
    elif case == "a row all padding":
        ids[1] = 0
    elif case == "nothing padded":
        feed["ids"] = np.random.default_rng(3).integers(1, V, (N, L))
    else:
        proto = _proto(mask_input=True)
        feed["attention_mask"] = (ids != 0).astype(np.int64)
    got = load_inputs(feed, as_model(proto))
    mask = padding_mask(got)
    if case == "a mask input":
        assert np.array_equal(mask, ids != 0)  # the model's own mask, as before
    else:
        assert mask is None


def test_a_search_on_padded_ids_is_not_flattered_by_the_padding(tmp_path) -> None:
    """End to end: a candidate that moves only the padding's logits keeps fidelity 1 in validation."""
    from onnxfold.runtime.compare import validate

    ids, _ = _padded()
    model = as_model(_proto())
    got = load_inputs(ids, model)
    report = validate(_proto(), _proto(shift=5.0), inputs=got)
    assert [o.fidelity for o in report.outputs] == [1.0]
    report = validate(_proto(), _proto(shift=5.0), inputs={"ids": ids.copy()})
    assert report.outputs[0].fidelity < 1.0
