"""The positions a task reads, given beside the samples (``onnxfold_positions`` in a ``.npz``).

g2pM's polyphone tagger writes a pinyin class at every character and its package reads the class at
the polyphonic ones: counted everywhere, a fold that kept 92.6% of the polyphones' readings measured
top1 0.5449. The positions given are the only ones measured."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxfold.runtime.compare import validate
from onnxfold.runtime.measured_positions import POSITIONS
from onnxfold.runtime.padding import padding_mask
from onnxfold.runtime.sample_files import load_inputs
from onnxfold.search.evaluate import Evaluator

N, L, VOCAB = 16, 9, 50


def _tagger(moved_rows: range = range(0)):
    """ids [N, L] -> tags [N, L, 5] = T[ids]; the rows ``moved_rows`` of T answer another class."""
    tags = np.random.default_rng(1).standard_normal((VOCAB, 5)) * 3
    for r in moved_rows:
        tags[r] = np.roll(tags[r], 1)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["T", "ids"], ["tags"])],
        "tagger",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("tags", TensorProto.FLOAT, ["batch", "seq", 5])],
        [numpy_helper.from_array(tags.astype(np.float32), "T")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _samples() -> tuple[np.ndarray, np.ndarray]:
    """(ids, positions): the task reads 2 positions a sample, which hold ids 25..49; the rest 1..24."""
    rng = np.random.default_rng(2)
    ids = rng.integers(1, 25, (N, L))
    read = np.zeros((N, L), bool)
    for row in range(N):
        cols = rng.choice(L, 2, replace=False)
        read[row, cols] = True
        ids[row, cols] = rng.integers(25, VOCAB, 2)
    return ids.astype(np.int64), read


def test_only_the_positions_given_are_measured(tmp_path: Path) -> None:
    ids, read = _samples()
    path = tmp_path / "samples.npz"
    np.savez(path, ids=ids, **{POSITIONS: read.astype(np.uint8)})
    original, elsewhere, there = _tagger(), _tagger(range(1, 25)), _tagger(range(25, 30))
    plain = Evaluator(original, {"ids": ids})
    assert plain(elsewhere)[0] < 0.5  # counted everywhere, the unread positions sink it
    feed = load_inputs(path, original)
    assert list(feed) == ["ids"] and np.array_equal(padding_mask(feed), read)
    evaluator = Evaluator(original, feed)
    assert evaluator(elsewhere)[0] == 1.0
    assert evaluator(there)[0] < 1.0  # a change at a position read is still seen
    report = validate(original, elsewhere, inputs=feed)
    assert [m.fidelity for m in report.outputs] == [1.0]


def test_positions_beside_a_padded_batch_keep_the_padding_out(tmp_path: Path) -> None:
    """Beside an attention mask, the positions measured are those both mark."""
    ids, read = _samples()
    mask = np.ones((N, L), np.int64)
    mask[1:, -3:] = 0
    read[:, 0] = True
    proto = _tagger()
    proto.graph.input.append(
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])
    )
    path = tmp_path / "samples.npz"
    np.savez(path, ids=ids, attention_mask=mask, **{POSITIONS: read})
    feed = load_inputs(path, proto)
    assert np.array_equal(padding_mask(feed), read & (mask != 0))


@pytest.mark.parametrize(
    "positions,message",
    [
        (np.ones((N, L + 1), bool), "matches no input's samples and positions"),
        (np.zeros((N, L), bool), f"marks no position in {N} of its {N} samples"),
        (np.ones((N, L), np.float32), "must be booleans or integers"),
    ],
)
def test_positions_that_fit_no_input_are_a_one_line_error(tmp_path: Path, positions, message: str) -> None:
    ids, _ = _samples()
    path = tmp_path / "samples.npz"
    np.savez(path, ids=ids, **{POSITIONS: positions})
    with pytest.raises(ValueError, match=message) as err:
        load_inputs(path, _tagger())
    assert "\n" not in str(err.value) and POSITIONS in str(err.value)


def test_a_model_input_of_that_name_is_an_input() -> None:
    proto = _tagger()
    proto.graph.input[0].name = POSITIONS
    proto.graph.node[0].input[1] = POSITIONS
    ids, _ = _samples()
    feed = load_inputs({POSITIONS: ids}, proto)
    assert list(feed) == [POSITIONS] and padding_mask(feed) is None
