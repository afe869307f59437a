"""Validation inputs are checked before any work: the original runs once on them first, symbolic dims
that do not run are retried with larger ones, and a model that cannot run fails in one line naming
--input-shape, with no onnxruntime log lines and nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

from onnxfold.cli import main


def _model(path: Path, pad: int, reshape_to: int | None = None) -> Path:
    """x [batch, sequence] → reflect Pad by ``pad`` on the sequence (needs sequence > pad) → ×W → y;
    with ``reshape_to``, y is reshaped to [1, reshape_to] first (fails unless 8·batch·sequence fits)."""
    w = nh.from_array(np.random.default_rng(0).standard_normal((1, 8)).astype(np.float32), "w")
    pads = nh.from_array(np.array([0, pad, 0, pad], np.int64), "pads")
    nodes = [
        oh.make_node("Pad", ["x", "pads"], ["p"], mode="reflect"),
        oh.make_node("Unsqueeze", ["p", "axes"], ["u"]),
        oh.make_node("MatMul", ["u", "w"], ["y0"]),
    ]
    inits = [w, pads, nh.from_array(np.array([2], np.int64), "axes")]
    out = "y0"
    if reshape_to is not None:
        inits.append(nh.from_array(np.array([1, reshape_to], np.int64), "target"))
        nodes.append(oh.make_node("Reshape", ["y0", "target"], ["y1"]))
        out = "y1"
    graph = oh.make_graph(
        nodes,
        "g",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence"])],
        [oh.make_tensor_value_info(out, TensorProto.FLOAT, None)],
        inits,
    )
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), path)
    return path


def test_symbolic_dims_that_do_not_run_are_retried_larger(tmp_path: Path, capfd) -> None:
    src = _model(tmp_path / "pad.onnx", pad=40)  # reflect padding of 40 needs a sequence above 40
    # -s 0: validation runs (a search that keeps the model whole writes it back unvalidated)
    assert main(["fold", str(src), "-o", str(tmp_path / "out.onnx"), "-s", "0"]) == 0
    captured = capfd.readouterr()
    assert "validate: symbolic input dims set to 64: the model does not run with 16" in captured.out
    assert "[E:onnxruntime" not in captured.err and "\x1b[" not in captured.err  # no onnxruntime log lines


def test_raw_audio_that_needs_a_second_of_samples_is_retried_at_16000(tmp_path: Path, capfd) -> None:
    """Google's speech-embedding CNN (tf2onnx, raw 16 kHz audio [N, S]) frames its input and runs
    only from 12,400 samples on: the default fold stopped, naming the first 16-sample try alone."""
    src = _model(tmp_path / "audio.onnx", pad=12000)  # reflect padding of 12,000 needs more samples
    assert main(["fold", str(src), "-o", str(tmp_path / "out.onnx"), "-s", "0"]) == 0
    captured = capfd.readouterr()
    assert "validate: symbolic input dims set to 16000: the model does not run with 16" in captured.out


def test_a_model_that_cannot_run_on_made_up_inputs_fails_before_folding(tmp_path: Path, capfd) -> None:
    src = _model(tmp_path / "fixed.onnx", pad=1, reshape_to=1000)  # 2·s·8 = 1000 for no s tried
    out = tmp_path / "out.onnx"
    assert main(["fold", str(src), "-o", str(out)]) == 2
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "--input-shape" in err and "x[2, 16]" in err
    assert "nor did its free dims at 64, 256, 1024, 4096, 16000" in err, err  # it said only 16
    assert "[E:onnxruntime" not in err and "\x1b[" not in err
    assert not out.exists()


def _padded_convs(path: Path) -> Path:
    """x [batch, 4, h, w] → reflect Pad 20 (needs h, w > 20) → 1×1 Conv 4→8 → Relu → 1×1 Conv 8→2."""
    rng = np.random.default_rng(0)
    inits = [
        nh.from_array(np.array([0, 0, 20, 20, 0, 0, 20, 20], np.int64), "pads"),
        nh.from_array(rng.standard_normal((8, 4, 1, 1)).astype(np.float32), "w1"),
        nh.from_array(rng.standard_normal(8).astype(np.float32), "b1"),
        nh.from_array(rng.standard_normal((2, 8, 1, 1)).astype(np.float32), "w2"),
    ]
    nodes = [
        oh.make_node("Pad", ["x", "pads"], ["p"], mode="reflect"),
        oh.make_node("Conv", ["p", "w1", "b1"], ["c"]),
        oh.make_node("Relu", ["c"], ["r"]),
        oh.make_node("Conv", ["r", "w2"], ["y"]),
    ]
    return _saved(path, nodes, inits, ["batch", 4, "rows", "cols"])


def _saved(path: Path, nodes: list, inits: list, dims: list) -> Path:
    """``nodes`` from input x (``dims``) to output y, with ``inits``, saved at ``path`` (opset 17)."""
    graph = oh.make_graph(
        nodes,
        "g",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), path)
    return path


def test_auto_measures_on_random_inputs_of_a_size_the_model_runs_at(tmp_path: Path) -> None:
    """PP-OCRv6 tiny det runs at 64 but not at 16: validation retried larger dims, while auto's
    random samples stayed at 16, failed, and it folded without measuring."""
    import onnxfold

    _, report = onnxfold.fold(_padded_convs(tmp_path / "pad.onnx"), 0.5, tmp_path / "o.onnx")
    stats = next(r for r in report.passes if r.name == "fold").stats
    assert "does not run on synthesised samples" not in stats.get("auto", "")
    assert "random" in stats["activation_samples"]


def test_named_image_sides_that_do_not_run_at_224_are_retried(tmp_path: Path, capfd) -> None:
    """LORE's table detector declares input [batch, 3, height, width]: its ×2 upsampling met a skip of
    7 by 8 at 224, and the named sides stayed 224 at every fallback size; the default fold stopped.
    Here a pool by 64 upsampled ×2 meets a pool by 32: 6 by 7 at 224, 2 by 2 at 64."""
    rng = np.random.default_rng(0)
    inits = [
        nh.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
        nh.from_array(rng.standard_normal((2, 3, 1, 1)).astype(np.float32), "w"),
    ]
    nodes = [
        oh.make_node("MaxPool", ["x"], ["a"], kernel_shape=[64, 64], strides=[64, 64]),
        oh.make_node("Resize", ["a", "", "scales"], ["up"], mode="nearest"),
        oh.make_node("MaxPool", ["x"], ["b"], kernel_shape=[32, 32], strides=[32, 32]),
        oh.make_node("Add", ["up", "b"], ["s"]),
        oh.make_node("Conv", ["s", "w"], ["y"]),
    ]
    src = _saved(tmp_path / "fpn.onnx", nodes, inits, ["batch", 3, "height", "width"])
    assert main(["fold", str(src), "-o", str(tmp_path / "out.onnx"), "-s", "0"]) == 0
    assert "validate: symbolic input dims set to 64: the model does not run with 16" in capfd.readouterr().out


def test_token_ids_are_not_tried_at_signal_lengths(tmp_path: Path, capfd) -> None:
    """4096 and 16000 are a raw signal's lengths: token ids that far would run a transformer's
    attention over 16000 tokens before the one-line error."""
    nodes = [
        oh.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT),
        oh.make_node("Reshape", ["f", "target"], ["y"]),
    ]
    inits = [nh.from_array(np.array([1, 999], np.int64), "target")]  # 2·s = 999 for no s
    graph = oh.make_graph(
        nodes,
        "g",
        [oh.make_tensor_value_info("x", TensorProto.INT64, ["batch", "sequence"])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    src = tmp_path / "ids.onnx"
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), src)
    assert main(["fold", str(src), "-o", str(tmp_path / "out.onnx")]) == 2
    err = capfd.readouterr().err
    assert "nor did its free dims at 64, 256, 1024 (" in err, err
