"""Random token types are drawn inside the table they index, wherever onnxfold draws random inputs
(a trial's ALBERT tagger: its ``input.3`` indexes a 2-row table, and [0, 4) crashed ``bench speed``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _tagger(path: Path) -> Path:
    """Token ids [1, S] into a 30-row table, token types into a 2-row one, then a MatMul: the types
    index only rows 0 and 1 (a legacy ALBERT tagger's ``input.3``)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["words", "ids"], ["w"]),
            helper.make_node("Gather", ["types", "kinds"], ["t"]),
            helper.make_node("Add", ["w", "t"], ["e"]),
            helper.make_node("MatMul", ["e", "W"], ["y"]),
        ],
        "tagger",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 12]),
            helper.make_tensor_value_info("kinds", TensorProto.INT64, [1, 12]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [
            numpy_helper.from_array(rng.standard_normal((30, 8)).astype(np.float32), "words"),
            numpy_helper.from_array(rng.standard_normal((2, 8)).astype(np.float32), "types"),
            numpy_helper.from_array(rng.standard_normal((8, 5)).astype(np.float32), "W"),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_bench_speed_draws_token_types_inside_their_table(tmp_path: Path, capsys) -> None:
    """A trial's `bench speed --files` on a tagger drew token types from [0, 4) where fold draws them
    from the 2-row table they index, and ended in onnxruntime's traceback."""
    from onnxfold.cli.commands import main

    path = _tagger(tmp_path / "tagger.onnx")
    argv = ["bench", "speed", "--files", str(path), str(path), "--batches", "1"]
    assert main([*argv, "--budget", "0.01", "--no-memory"]) == 0, capsys.readouterr().err


def test_a_bench_that_onnxruntime_cannot_run_fails_in_one_line(tmp_path: Path, capsys) -> None:
    """The benches that parse their own arguments report errors as the other commands do."""
    from onnxfold.cli.commands import main

    path = _tagger(tmp_path / "tagger.onnx")
    bad = tmp_path / "ids.npz"
    np.savez(bad, ids=np.zeros((1, 12), np.int64), kinds=np.full((1, 12), 7, np.int64))
    argv = ["bench", "speed", "--files", str(path), str(path), "--batches", "1", "--inputs", str(bad)]
    assert main([*argv, "--budget", "0.01", "--no-memory"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("onnxfold: error: onnxruntime cannot run the model") and len(err.splitlines()) == 1


def test_fold_verification_runs_a_tagger_on_types_its_table_holds(tmp_path: Path) -> None:
    """The fold's own check (one onnxruntime run of the source) drew token types from [0, 4) too: the
    source did not run, so no folded model of it was ever run before being written."""
    from onnxfold.folding.verify import Verifier
    from onnxfold.ir.model import load_model

    verifier = Verifier(load_model(_tagger(tmp_path / "tagger.onnx")))
    assert verifier.ort and verifier.shapes == {"y": (1, 12, 5)}


def test_bench_speed_samples_that_cannot_be_cut_fail_in_one_line(tmp_path: Path, capsys) -> None:
    """Piper's voice reads `scales` [3] beside its batch: `bench speed --inputs` ended in an internal
    error (exit 3) where `fold --inputs` had taken the same file (trial 197)."""
    import onnx
    from onnx import TensorProto
    from onnx import helper as oh
    from onnx import numpy_helper as nh

    from onnxfold.cli.commands import main

    nodes = [
        oh.make_node("MatMul", ["x", "w"], ["h"]),
        oh.make_node("Gather", ["scales", "zero"], ["s0"], axis=0),
        oh.make_node("Mul", ["h", "s0"], ["y"]),
    ]
    graph = oh.make_graph(
        nodes,
        "scaled",
        [
            oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
            oh.make_tensor_value_info("scales", TensorProto.FLOAT, [3]),
        ],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        [nh.from_array(np.ones((4, 5), np.float32), "w"), nh.from_array(np.array(0, np.int64), "zero")],
    )
    path = tmp_path / "scaled.onnx"
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8), path)
    feed = tmp_path / "feed.npz"
    np.savez(feed, x=np.ones((4, 4), np.float32), scales=np.array([0.5, 1.0, 0.5], np.float32))
    argv = ["bench", "speed", "--files", str(path), str(path), "--batches", "1", "--inputs", str(feed)]
    assert main([*argv, "--budget", "0.01", "--no-memory"]) == 2
    err = capsys.readouterr().err
    assert "cannot be cut into batches" in err and len(err.splitlines()) == 1, err
