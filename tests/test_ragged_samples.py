"""Samples of different lengths (``onnxfold.runtime.ragged``): padded with 0 to the longest, a mask
input with the value that marks the padding; a difference in a dim the model fixes stays an error."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from harness import masked_tokens_proto
from onnx import TensorProto, helper, numpy_helper

from onnxfold.cli.commands import main
from onnxfold.runtime.sample_files import load_inputs
from onnxfold.runtime.session import make_session


def _token_model(path: Path, mask_type: int = TensorProto.INT64) -> Path:
    onnx.save(masked_tokens_proto(mask_type), path)
    return path


LENGTHS = (7, 5, 9)


def _sentences(folder: Path, mask_value, mask_dtype) -> list[np.ndarray]:
    folder.mkdir()
    rng = np.random.default_rng(0)
    ids = [rng.integers(1, 50, n) for n in LENGTHS]
    for i, row in enumerate(ids):
        np.savez(
            folder / f"{i}.npz",
            input_ids=row[None],
            attention_mask=np.full((1, len(row)), mask_value, mask_dtype),
        )
    return ids


@pytest.mark.parametrize(
    "mask_type, given, padding",
    [(TensorProto.INT64, 1, 0), (TensorProto.BOOL, False, True)],
    ids=["attention_mask", "key_padding_mask"],
)
def test_sentences_of_different_lengths_are_padded_with_the_mask_marking_the_padding(
    tmp_path: Path, caplog, mask_type, given, padding
) -> None:
    model = onnx.load(str(_token_model(tmp_path / "tokens.onnx", mask_type)))
    dtype = np.int64 if mask_type == TensorProto.INT64 else np.bool_
    ids = _sentences(tmp_path / "sentences", given, dtype)
    with caplog.at_level(logging.WARNING):
        got = load_inputs(tmp_path / "sentences", model)
    longest = max(LENGTHS)
    assert got["input_ids"].shape == got["attention_mask"].shape == (3, longest)
    for row, sentence in zip(got["input_ids"], ids, strict=True):
        np.testing.assert_array_equal(row[: len(sentence)], sentence)
        assert not row[len(sentence) :].any()
    for row, n in zip(got["attention_mask"], LENGTHS, strict=True):
        assert (row[:n] == given).all() and (row[n:] == padding).all()
    assert "padded at the end to the longest with 0, attention_mask marking the padding" in caplog.text
    assert "5 to 9" in caplog.text


def _conv1d(path: Path, duplicated: bool = False) -> Path:
    """Conv1d 4 -> 16 -> ReLU -> Conv1d 16 -> 2 over [batch, 4, T], T free; ``duplicated``: the 16
    channels are 8 distinct ones, each twice, the consumer's columns halved (a twin of an 8-wide net)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv1d(4, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv1d(16, 2, 1)
    )
    if duplicated:
        with torch.no_grad():
            net[0].weight[8:] = net[0].weight[:8]
            net[0].bias[8:] = net[0].bias[:8]
            net[2].weight[:, 8:] = net[2].weight[:, :8]
    x = torch.randn(1, 4, 12)
    torch.onnx.export(
        net.eval(), (x,), str(path), input_names=["signal"], output_names=["y"],
        dynamic_axes={"signal": {0: "batch", 2: "time"}, "y": {0: "batch", 2: "time"}}, dynamo=False,
    )  # fmt: skip
    return path


def _clip_folder(folder: Path, clips: list[np.ndarray], layout: str, name: str) -> Path:
    folder.mkdir()
    for i, clip in enumerate(clips):
        if layout == "npy-folder":
            np.save(folder / f"{i}.npy", clip)  # one sample without its sample axis
        else:
            np.savez(folder / f"{i}.npz", **{name: clip[None]})
    return folder


@pytest.mark.parametrize("layout", ["npy-folder", "npz-folder"])
def test_float_signals_of_different_lengths_are_padded_with_zeros_at_the_end(
    tmp_path: Path, caplog, layout: str
) -> None:
    model = onnx.load(str(_conv1d(tmp_path / "c.onnx")))
    rng = np.random.default_rng(2)
    clips = [rng.standard_normal((4, n)).astype(np.float32) for n in (12, 20, 16)]
    folder = _clip_folder(tmp_path / "clips", clips, layout, "signal")
    with caplog.at_level(logging.WARNING):
        got = load_inputs(folder, model)
    np.testing.assert_array_equal(
        got["signal"], np.stack([np.pad(c, [(0, 0), (0, 20 - c.shape[1])]) for c in clips])
    )
    assert "padded at the end to the longest with 0, as a batch" in caplog.text and "12 to 20" in caplog.text


def _ids_model(path: Path) -> Path:
    """hidden = E[ids], ids [1, seq] (batch 1, no mask: run one sentence at a time)."""
    table = np.random.default_rng(1).standard_normal((50, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["E", "ids"], ["hidden"])],
        "ids",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, "seq"])],
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, [1, "seq", 8])],
        [numpy_helper.from_array(table, "E")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("layout", ["npy-folder", "npz-folder"])
def test_ids_of_different_lengths_without_a_mask_are_padded_with_0(
    tmp_path: Path, caplog, layout: str
) -> None:
    """0, the pad id of most vocabularies: cut to the shortest instead, a morpheme segmenter was
    measured on 7-character prefixes of its words (0.9955 of the tags, 35 of 96 new words kept)."""
    model = onnx.load(str(_ids_model(tmp_path / "ids.onnx")))
    rng = np.random.default_rng(2)
    sentences = [rng.integers(1, 50, (1, n)) for n in (12, 20, 16)]
    folder = tmp_path / "sentences"
    folder.mkdir()
    for i, ids in enumerate(sentences):
        if layout == "npy-folder":
            np.save(folder / f"{i}.npy", ids)
        else:
            np.savez(folder / f"{i}.npz", ids=ids)
    with caplog.at_level(logging.WARNING):
        got = load_inputs(folder, model)
    np.testing.assert_array_equal(
        got["ids"], np.concatenate([np.pad(ids, [(0, 0), (0, 20 - ids.shape[1])]) for ids in sentences])
    )
    assert "padded at the end to the longest with 0, as a batch" in caplog.text and "12 to 20" in caplog.text


def test_a_difference_in_a_dim_the_model_fixes_stays_one_error_line(tmp_path: Path, capsys) -> None:
    src = _conv1d(tmp_path / "c.onnx")
    folder = tmp_path / "clips"
    folder.mkdir()
    rng = np.random.default_rng(3)
    np.savez(folder / "0.npz", signal=rng.standard_normal((1, 4, 12)).astype(np.float32))
    np.savez(folder / "1.npz", signal=rng.standard_normal((1, 3, 16)).astype(np.float32))
    out = tmp_path / "o.onnx"
    assert main(["fold", str(src), "-o", str(out), "--min-fidelity", "0.9", "--inputs", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1.npz holds signal[1, 3, 16]" in err[0], err
    assert err[0].endswith("the model fixes signal dim 1 at 4: pad or cut every sample to 4"), err
    assert not out.exists()


def _clips(folder: Path, seed: int) -> list[np.ndarray]:
    folder.mkdir()
    rng = np.random.default_rng(seed)
    clips = [rng.standard_normal((1, 4, 10 + i)).astype(np.float32) for i in range(16)]
    for i, clip in enumerate(clips):
        np.save(folder / f"{i:02d}.npy", clip)
    return clips


def test_a_fold_on_clips_of_different_lengths_gives_a_twin_back_exactly(tmp_path: Path, caplog) -> None:
    """The duplicate oracle through a ragged folder: ``auto`` judges and compensates on the padded
    clips, folds the twin's 16 channels to its 8 distinct ones, and the written model reproduces the
    original on clips of any length."""
    src = _conv1d(tmp_path / "twin.onnx", duplicated=True)
    _clips(tmp_path / "clips", 4)
    out = tmp_path / "small.onnx"
    argv = [
        "fold",
        str(src),
        "-o",
        str(out),
        "-s",
        "0.5",
        "--inputs",
        str(tmp_path / "clips"),
        "--round-to",
        "1",
    ]
    with caplog.at_level(logging.WARNING):
        assert main(argv) == 0
    assert "padded at the end to the longest with 0" in caplog.text
    widths = [numpy_helper.to_array(t).shape for t in onnx.load(str(out)).graph.initializer]
    assert (8, 4, 3) in widths and (2, 8, 1) in widths, widths
    original, folded = make_session(src), make_session(out)
    rng = np.random.default_rng(5)
    for n in (10, 33):
        x = rng.standard_normal((2, 4, n)).astype(np.float32)
        a, b = original.run(None, {"signal": x})[0], folded.run(None, {"signal": x})[0]
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


def test_a_search_on_clips_of_different_lengths_meets_its_target_on_the_padded_clips(tmp_path: Path) -> None:
    """A fidelity target searched on a ragged folder holds on the clips as the search padded them
    (r2 computed here, over every output value of the 16 clips, each padded with 0 to 25)."""
    src = _conv1d(tmp_path / "twin.onnx", duplicated=True)
    clips = _clips(tmp_path / "clips", 6)
    out = tmp_path / "small.onnx"
    argv = ["fold", str(src), "-o", str(out), "--min-fidelity", "0.99", "--inputs", str(tmp_path / "clips")]
    assert main([*argv, "--round-to", "1"]) == 0

    def params(path: Path) -> int:
        return sum(int(np.prod(t.dims)) for t in onnx.load(str(path)).graph.initializer)

    assert params(out) <= params(src) // 2  # at least the twin's duplicates folded
    x = np.concatenate([np.pad(c, [(0, 0), (0, 0), (0, 25 - c.shape[2])]) for c in clips])
    a = make_session(src).run(None, {"signal": x})[0].astype(np.float64)
    b = make_session(out).run(None, {"signal": x})[0].astype(np.float64)
    r2 = 1 - ((a - b) ** 2).sum() / ((a - a.mean()) ** 2).sum()
    assert r2 >= 0.99, r2


def test_the_warning_reads_as_the_tools_own_lines(tmp_path: Path) -> None:
    """A trial read 'WARNING onnxfold.runtime.ragged: ...' beside the tool's 'onnxfold: error: ...'."""
    import subprocess
    import sys

    src = _ids_model(tmp_path / "ids.onnx")
    folder = tmp_path / "sentences"
    folder.mkdir()
    for i, n in enumerate((5, 9)):
        np.save(folder / f"{i}.npy", np.arange(1, n + 1)[None])
    argv = ["run", str(src), "-o", str(tmp_path / "o.onnx"), "--pipeline", "canonicalize,validate"]
    done = subprocess.run(
        [sys.executable, "-m", "onnxfold", *argv, "--inputs", str(folder)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    (line,) = [x for x in done.stderr.splitlines() if "differ in length" in x]
    assert line.startswith(f"onnxfold: warning: {folder}: the samples differ in length (ids: 5 to 9)"), line
    from onnxfold.cli.commands import _ToolFormatter

    record = logging.LogRecord("onnxfold.runtime.ragged", logging.WARNING, "", 0, "padded", None, None)
    assert _ToolFormatter(verbose=True).format(record) == "WARNING onnxfold.runtime.ragged: padded"  # -v


def test_images_of_different_heights_and_widths_are_padded_on_both(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "W"], ["y"], pads=[1, 1, 1, 1])],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, "h", "w"])],
        [numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    rng = np.random.default_rng(7)
    images = [rng.standard_normal((3, h, w)).astype(np.float32) for h, w in ((8, 12), (10, 6), (9, 9))]
    folder = _clip_folder(tmp_path / "images", images, "npy-folder", "x")
    got = load_inputs(folder, model)
    assert got["x"].shape == (3, 3, 10, 12)
    for padded, image in zip(got["x"], images, strict=True):
        h, w = image.shape[1:]
        np.testing.assert_array_equal(padded[:, :h, :w], image)
        assert not padded[:, h:, :].any() and not padded[:, :, w:].any()


def _last_step_model(path: Path) -> Path:
    """scores = signal[:, :, -1] @ W over [batch, 4, T], T free: read at the last step, as a GRU
    encoder's final state is; padding at the end replaces that step with zeros."""
    w = np.random.default_rng(3).standard_normal((4, 5)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["signal", "last"], ["step"], axis=2),
            helper.make_node("MatMul", ["step", "W"], ["scores"]),
        ],
        "last_step",
        [helper.make_tensor_value_info("signal", TensorProto.FLOAT, ["batch", 4, "time"])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 5])],
        [numpy_helper.from_array(np.array(-1, np.int64), "last"), numpy_helper.from_array(w, "W")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("layout", ["npy-folder", "npz-folder"])
def test_samples_whose_padding_changes_the_answers_are_refused(
    tmp_path: Path, capsys, caplog, layout: str
) -> None:
    """A French lemmatizer's GRU read the padding of a folder of words as letters: its word types
    changed on 81% of them, and its search measured 1.0 on the padded words where the types, run one
    word at a time as its package runs them, changed on 7%. Such samples are refused with the reason;
    the same clips cut to one length are taken."""
    src = _last_step_model(tmp_path / "last.onnx")
    rng = np.random.default_rng(4)
    clips = [rng.standard_normal((4, n)).astype(np.float32) for n in [*range(10, 26), 12, 12]]
    folder = _clip_folder(tmp_path / "clips", clips, layout, "signal")
    with pytest.raises(
        ValueError, match=r"its answers change on 1\d of 16 files checked .*of one length"
    ) as got:
        load_inputs(folder, onnx.load(str(src)))
    assert "3 of these 18 files hold signal [" in str(got.value), got.value  # the length to keep
    out = tmp_path / "small.onnx"
    with caplog.at_level(logging.WARNING):
        assert main(["fold", str(src), "-o", str(out), "-s", "0.3", "--inputs", str(folder)]) != 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("onnxfold: error")]
    assert len(err) == 1 and "scores's argmax moved" in err[0], err
    assert "padded at the end" not in caplog.text  # no warning of a padding it then refuses
    assert not out.exists()
    even = _clip_folder(tmp_path / "even", [c[:, :10] for c in clips], layout, "signal")
    assert load_inputs(even, onnx.load(str(src)))["signal"].shape == (18, 4, 10)


def test_padding_that_makes_the_outputs_nan_is_refused(tmp_path: Path) -> None:
    """chython's reaction mapper reads a distance of 0 as its -inf padding row: zero-padded, 31 of 32
    samples came out NaN in the original too, which the check read as unchanged (a NaN cosine is not
    below 0.99) and the search measured r2 on what was left. Outputs made NaN or inf count as changed."""
    graph = helper.make_graph(  # 1 / signal, summed over time: a padded 0 gives inf
        [
            helper.make_node("Reciprocal", ["signal"], ["inv"]),
            helper.make_node("ReduceSum", ["inv", "time_axis"], ["total"], keepdims=0),
        ],
        "reciprocal",
        [helper.make_tensor_value_info("signal", TensorProto.FLOAT, ["batch", 4, "time"])],
        [helper.make_tensor_value_info("total", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(np.array([2], np.int64), "time_axis")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    rng = np.random.default_rng(4)
    clips = [rng.uniform(1.0, 2.0, (4, n)).astype(np.float32) for n in range(10, 26)]
    folder = _clip_folder(tmp_path / "clips", clips, "npy-folder", "signal")
    with pytest.raises(ValueError, match=r"its answers change on 15 of 16 files .*total holds NaN or inf"):
        load_inputs(folder, model)


def test_a_length_input_marks_the_padding_of_samples_padded_to_the_longest(tmp_path: Path, caplog) -> None:
    """libtashkeel's diacritizer reads input_lengths [N] beside its characters [N, L]: 32 sentences
    padded to the longest were judged on their padded positions too, as if no mask said which hold
    characters."""
    from onnxfold.runtime.padding import length_mask, padding_mask

    table = np.random.default_rng(1).standard_normal((50, 8)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["E", "ids"], ["hidden"]),
            helper.make_node("Cast", ["input_lengths"], ["n"], to=TensorProto.FLOAT),
        ],
        "ids",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", "seq"]),
            helper.make_tensor_value_info("input_lengths", TensorProto.INT64, ["N"]),
        ],
        [
            helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["N", "seq", 8]),
            helper.make_tensor_value_info("n", TensorProto.FLOAT, ["N"]),
        ],
        [numpy_helper.from_array(table, "E")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folder = tmp_path / "sentences"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i, n in enumerate((12, 20, 16)):
        np.savez(folder / f"{i}.npz", ids=rng.integers(1, 50, (1, n)), input_lengths=np.array([n]))
    with caplog.at_level(logging.WARNING):
        got = load_inputs(folder, model)
    assert "input_lengths holding each sample's length" in caplog.text
    assert "outputs per token are measured on the tokens alone" in caplog.text
    want = np.arange(20)[None, :] < np.array([12, 20, 16])[:, None]
    np.testing.assert_array_equal(padding_mask(got), want)
    # no mask where no sample is padded, nor where no input is as long as the longest length
    assert length_mask({"ids": got["ids"][1:2], "input_lengths": np.array([20])}) is None
    assert length_mask({"ids": got["ids"][:, :16], "input_lengths": np.array([12, 20, 16])}) is None


def _tagger(path: Path, pad_row: float) -> Path:
    """scores = E[ids] [N, seq, 8], no mask: ``pad_row`` fills E's row 0 (the pad id), so two taggers
    that differ in it answer alike on every sample's own characters and apart on the padding."""
    table = np.random.default_rng(1).standard_normal((50, 8)).astype(np.float32)
    table[0] = pad_row * np.arange(8)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["E", "ids"], ["scores"])],
        "tagger",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", "seq"])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", "seq", 8])],
        [numpy_helper.from_array(table, "E")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_padding_added_without_a_mask_is_left_out_of_the_figures(tmp_path: Path) -> None:
    """A BiLSTM tagger (khmertagger) reads no mask: its 48 sentences, padded to 172 characters, were
    judged on the padding too, and a quantized copy read "tags 0.0417" where 95% of its sentences,
    run one at a time, kept every tag. onnxfold knows where it padded: the positions it added are not
    measured, in the samples loaded, in a search's half of them and in runs of a few."""
    from onnxfold.folding.samples import chunked, take
    from onnxfold.runtime.compare import validate
    from onnxfold.runtime.padding import padding_mask

    original, changed = _tagger(tmp_path / "a.onnx", 1.0), _tagger(tmp_path / "b.onnx", -1.0)
    lengths = [12, 20, 16, 7, 20, 9, 14, 11]
    folder = tmp_path / "sentences"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i, n in enumerate(lengths):
        np.savez(folder / f"{i}.npz", ids=rng.integers(1, 50, (1, n)))
    got = load_inputs(folder, onnx.load(str(original)))
    want = np.arange(20)[None, :] < np.array(lengths)[:, None]
    np.testing.assert_array_equal(padding_mask(got), want)
    np.testing.assert_array_equal(padding_mask(take(got, slice(0, None, 2))), want[::2])
    np.testing.assert_array_equal(padding_mask(take(got, slice(1, None, 2))), want[1::2])
    assert [padding_mask(c).shape for c in chunked(got, 3)] == [(3, 20), (3, 20), (2, 20)]
    np.testing.assert_array_equal(padding_mask(chunked(got, 3)[1]), want[3:6])
    (scores,) = validate(original, changed, inputs=got).outputs
    assert scores.fidelity == 1.0, scores.summary()
    # the same arrays given in memory were not padded by onnxfold: their padding is the model's input
    (scores,) = validate(original, changed, inputs={"ids": np.array(got["ids"])}).outputs
    assert scores.fidelity == sum(lengths) / (8 * 20), scores.summary()  # the padding counted as lost
