"""A run that folds nothing says so and why; an already quantized model is named as such, with what to do."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnxruntime.quantization import QuantType, quantize_dynamic

from onnxfold.cli import main
from onnxfold.models import bundled_model


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("q") / "mlp-int8.onnx"
    quantize_dynamic(str(bundled_model("mlp.onnx")), str(path), weight_type=QuantType.QInt8)
    return path


def test_folding_a_quantized_model_says_what_it_is_and_writes_nothing(
    quantized: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out.onnx"
    assert main(["fold", str(quantized), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "already quantized" in err and "MatMulInteger" in err and "quantize" in err
    assert not out.exists()


def test_analyze_names_a_quantized_model(quantized: Path, capsys) -> None:
    assert main(["analyze", str(quantized)]) == 0
    said = capsys.readouterr().out
    assert "already quantized" in said and "onnxfold analyze --dequantize lists" in said  # trial 82
    # with --json too, on stderr: stdout stays one JSON document (it printed [] and nothing else)
    assert main(["analyze", str(quantized), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == [] and "already quantized" in err


@pytest.mark.parametrize(
    "args, why",
    [
        (["--ignore", ".*"], "every foldable group matches --ignore"),
        (["-s", "0"], "the sparsity leaves every foldable group at its width"),
    ],
)
def test_a_fold_that_folds_nothing_says_why(tmp_path: Path, capsys, args: list[str], why: str) -> None:
    out = tmp_path / "out.onnx"
    assert main(["fold", str(bundled_model("lenet5.onnx")), "-o", str(out), "--no-validate", *args]) == 0
    said = capsys.readouterr().out
    assert f"nothing folded: {why}" in said
    assert "widths:" not in said  # no width was rounded (a trial read "rounded to multiples of 8")
    assert out.exists()


def test_a_fold_that_folds_something_does_not_say_nothing_folded(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.onnx"
    assert main(["fold", str(bundled_model("lenet5.onnx")), "-o", str(out), "--no-validate"]) == 0
    said = capsys.readouterr().out
    assert "nothing folded" not in said and "widths: rounded to multiples of 8" in said


@pytest.mark.parametrize(
    "args, message",
    [
        (["--override", "layer[=0.5"], "invalid regular expression 'layer['"),
        (["--ignore", "(conv"], "ignore: invalid regular expression '(conv'"),
        (["--input-shape", "pixels:1,1,28,28"], "'pixels', which is not an input of the model (input)"),
        (["--input-shape", "input:1,784"], "has rank 2; the model's input 'input' has rank 4"),
        # CenterFace exported at 32x32 was refused only once its inputs were drawn, with no way out
        (["--input-shape", "input:4,1,16,16"], "changes dims the model fixes (input:?,1,8,8)"),
        (["--input-shape", "input:4,1,16,16"], "make those dims free first"),
    ],
)
def test_bad_options_are_refused_before_any_work(
    tmp_path: Path, capsys, args: list[str], message: str
) -> None:
    out = tmp_path / "out.onnx"
    assert main(["fold", str(bundled_model("lenet5.onnx")), "-o", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert list(tmp_path.iterdir()) == []


def test_nothing_folded_but_simplified_says_so(tmp_path: Path, capsys) -> None:
    """A romanizer's decoder read "nothing folded" beside 127 -> 60 nodes and a file unlike its own."""
    import numpy as np
    import onnx
    from onnx import TensorProto
    from onnx import helper as oh
    from onnx import numpy_helper as nh

    graph = oh.make_graph(
        [oh.make_node("Identity", ["x"], ["i"]), oh.make_node("MatMul", ["i", "w"], ["y"])],
        "g",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        [nh.from_array(np.ones((4, 2), np.float32), "w")],
    )
    path = tmp_path / "in.onnx"
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), path)
    assert main(["fold", str(path), "-o", str(tmp_path / "out.onnx"), "-s", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "nothing folded: " in out and "written simplified (2 -> 1 nodes" in out, out
    assert (
        main(["fold", str(bundled_model("lenet5.onnx")), "-o", str(tmp_path / "l.onnx"), "--ignore", ".*"])
        == 0
    )
    assert "written simplified" not in capsys.readouterr().out


def test_a_model_without_foldable_groups_says_nothing_of_how_auto_chose(tmp_path: Path, capsys) -> None:
    """A model whose only group is blocked read "auto … chose among fold, fold+ar and l2 pruning":
    nothing was chosen, and no samples should be synthesised to choose it."""
    import numpy as np
    import onnx
    from onnx import TensorProto
    from onnx import helper as oh
    from onnx import numpy_helper as nh

    graph = oh.make_graph(
        [oh.make_node("Conv", ["x", "w"], ["y"])],
        "g",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 6, 6])],
        [nh.from_array(np.ones((4, 3, 3, 3), np.float32), "w")],
    )
    path = tmp_path / "in.onnx"
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), path)
    report = tmp_path / "r.json"
    assert (
        main(["fold", str(path), "-o", str(tmp_path / "out.onnx"), "-s", "0.3", "--report", str(report)]) == 0
    )
    out = capsys.readouterr().out
    assert "nothing folded: every channel group is blocked" in out, out
    assert "chose among" not in out and "auto folded" not in out, out
    import json

    fold_stats = next(p for p in json.loads(report.read_text())["passes"] if p["name"] == "fold")["stats"]
    assert "auto" not in fold_stats and "activation_samples" not in fold_stats, fold_stats


def test_a_data_free_search_that_folds_nothing_names_the_remedy(tmp_path: Path, capsys) -> None:
    """malvizv1's ResNet-18: the data-free default folded nothing, and nothing said that 32 of the
    user's files would have let it fold 19.9% (96.6% of its verdicts kept)."""
    import numpy as np
    import onnx
    from harness import Net

    rng = np.random.default_rng(0)
    net = Net(
        {
            "W1": rng.standard_normal((16, 32)).astype(np.float32),
            "W2": rng.standard_normal((32, 4)).astype(np.float32),
        }
    )
    h = net("Relu", net("MatMul", net.input("x", ["N", 16]), "W1", name="mm1"))
    path = tmp_path / "mlp.onnx"
    onnx.save(net.model(net("MatMul", h, "W2", name="mm2")), path)
    # --round-to 8 asked: at exact widths 1 of the 32 channels goes at top1 32 of 32 (test_exact_widths)
    args = [
        "fold",
        str(path),
        "-o",
        str(tmp_path / "out.onnx"),
        "--min-fidelity",
        "0.999999",
        "--round-to",
        "8",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "nothing folded: no group folds within the target" in out
    assert "on a data-free proxy: --inputs (samples as the model is used)" in out
    x = tmp_path / "x.npy"
    np.save(x, rng.standard_normal((16, 16)).astype(np.float32))
    assert main([*args, "--inputs", str(x), "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert "nothing folded: no group folds within the target" in out
    assert "on a data-free proxy: --inputs" not in out  # measured on given samples: no such advice


def _loop_rnn(path: Path, start_from_input: bool) -> Path:
    """A tanh RNN written as a Loop, as tf2onnx writes a Keras LSTM: the input matrix W is passed in
    as loop-carried state, the recurrent matrix R is captured from the outer graph by name. Its state
    starts as an input (no channel group at all) or as x·Z (a group, blocked at the Loop)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((6, 16)).astype(np.float32), "W")
    r = numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32) * 0.2, "R")
    trips = numpy_helper.from_array(np.array(3, dtype=np.int64), "trips")
    f = TensorProto.FLOAT
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Identity", ["w_in"], ["w_out"]),
            helper.make_node("MatMul", ["x", "w_in"], ["xw"]),
            helper.make_node("MatMul", ["h_in", "R"], ["hr"]),
            helper.make_node("Add", ["xw", "hr"], ["s"]),
            helper.make_node("Tanh", ["s"], ["h_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("w_in", f, [6, 16]),
            helper.make_tensor_value_info("h_in", f, ["N", 16]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("w_out", f, [6, 16]),
            helper.make_tensor_value_info("h_out", f, ["N", 16]),
        ],
    )
    nodes = [helper.make_node("Loop", ["trips", "", "W", "h0"], ["w_last", "h"], body=body)]
    inputs = [helper.make_tensor_value_info("x", f, ["N", 6])]
    weights = [w, r, trips]
    if start_from_input:
        inputs.append(helper.make_tensor_value_info("h0", f, ["N", 16]))
    else:
        nodes.insert(0, helper.make_node("MatMul", ["x", "Z"], ["h0"]))  # zeros [N, 16]
        weights.append(numpy_helper.from_array(np.zeros((6, 16), np.float32), "Z"))
    graph = helper.make_graph(
        nodes, "loop_rnn", inputs, [helper.make_tensor_value_info("h", f, ["N", 16])], weights
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize(
    "start_from_input, total, why",
    [
        (True, 352, "the analysis found no channel groups: "),
        (False, 448, "every channel group is blocked (see the reasons above, or onnxfold analyze); "),
    ],
)
def test_weights_read_inside_loop_bodies_are_named_where_nothing_folds(
    tmp_path: Path, capsys, start_from_input: bool, total: int, why: str
) -> None:
    from onnxfold.analysis.subgraphs import subgraph_hint, subgraph_weights
    from onnxfold.ir.model import load_model

    model = _loop_rnn(tmp_path / "loop.onnx", start_from_input)
    counts = subgraph_weights(load_model(model).graph)
    assert counts == {"Loop": 6 * 16 + 16 * 16}  # W passed in, R captured; the trip count is no weight
    assert subgraph_hint(counts, 200 * sum(counts.values())) == ""  # 0.5% of a model: no line

    assert main(["analyze", str(model)]) == 0
    out = capsys.readouterr().out
    share = f"352 of the {total} parameters ({352 / total:.0%}) are read inside Loop bodies"
    assert share in out
    assert "(exported as an LSTM, GRU or RNN node instead" in out  # its state flows through R

    assert main(["analyze", str(model), "--sensitivity"]) == 0
    out = capsys.readouterr().out
    assert f"no group can fold, so none was measured: {share}" in out
    assert "params/ch" not in out  # no empty table's header (trial 137)
    # the method asked beside the one planned (khmertagger's header read "method fold" under auto)
    assert "(method auto, planned as fold;" in out, out

    out_path = tmp_path / "out.onnx"
    assert main(["fold", str(model), "-o", str(out_path), "-s", "0.3", "--no-validate"]) == 0
    assert f"nothing folded: {why}{share}" in capsys.readouterr().out

    assert main(["fold", str(model), "-o", str(tmp_path / "t.onnx"), "--target-params", "0.3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "read inside Loop bodies" in err
    assert not (tmp_path / "t.onnx").exists()


def test_a_loop_over_frames_is_not_called_a_recurrent_layer(tmp_path: Path, capsys) -> None:
    """Google's speech-embedding model (tf2onnx) computes its spectrogram in a tf.map_fn Loop: it
    carries only counters and gathers each frame by one, then multiplies it by a DFT basis. analyze
    advised exporting it as an LSTM node; a loop without a float state through a matrix is no RNN."""
    from onnx import TensorProto, helper, numpy_helper

    from onnxfold.analysis.subgraphs import has_recurrent_body
    from onnxfold.ir.model import load_model

    rng = np.random.default_rng(0)
    basis = numpy_helper.from_array(rng.standard_normal((8, 40)).astype(np.float32), "basis")
    trips = numpy_helper.from_array(np.array(5, dtype=np.int64), "trips")
    one = numpy_helper.from_array(np.array(1, dtype=np.int64), "one")
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["k_in", "one"], ["k_out"]),  # a counter, carried
            helper.make_node("Gather", ["x", "k_in"], ["frame"], axis=0),  # the frame it indexes
            helper.make_node("MatMul", ["frame", "basis"], ["spec"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("k_in", TensorProto.INT64, []),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("k_out", TensorProto.INT64, []),
            helper.make_tensor_value_info("spec", TensorProto.FLOAT, [40]),
        ],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trips", "", "zero"], ["k_last", "y"], body=body)],
        "frames",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, 40])],
        [basis, trips, one, numpy_helper.from_array(np.array(0, dtype=np.int64), "zero")],
    )
    path = tmp_path / "frames.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert not has_recurrent_body(load_model(path).graph)
    assert has_recurrent_body(load_model(_loop_rnn(tmp_path / "rnn.onnx", True)).graph)
    assert main(["analyze", str(path)]) == 0
    out = capsys.readouterr().out
    assert "320 of the 320 parameters (100%) are read inside Loop bodies" in out, out
    assert "LSTM" not in out and "a loop over frames or items" in out


def test_a_budget_on_a_model_whose_groups_are_all_blocked_says_so(tmp_path: Path) -> None:
    """Trial 66 (an LSTM speaker embedder): "folding can remove at most 0.0% ... at sparsity 0.7
    (--max-sparsity, --levels; ...)" sent the user to options that cannot help."""
    import onnx
    from harness import Net, rnd

    import onnxfold
    from onnxfold.errors import PipelineError

    net = Net({"w": rnd(np.random.default_rng(0), 8, 4)})
    src = tmp_path / "one.onnx"
    onnx.save(net.model(net("MatMul", net.input("x", ["N", 8]), "w")), str(src))  # reaches the output
    with pytest.raises(PipelineError, match="no channel group can fold, so folding removes nothing"):
        onnxfold.fold(src, output=tmp_path / "o.onnx", target_params=0.2, validate=False)
    assert not (tmp_path / "o.onnx").exists()


def test_bench_speed_says_its_macs_count_a_loop_body_once(tmp_path: Path, capsys) -> None:
    """chars2vec's two LSTM Loops over 12 steps: `bench speed --files` printed 1.15M MACs where about
    13.8M run, with none of the note `fold` gives."""
    model = _loop_rnn(tmp_path / "loop.onnx", start_from_input=True)
    argv = ["bench", "speed", "--files", str(model), str(model), "--budget", "0.01", "--no-memory"]
    assert main([*argv, "--input-shape", "x:2,6", "--input-shape", "h0:2,16"]) == 0
    out = capsys.readouterr().out
    assert "note: MACs count each Loop body once" in out
    # and that its time can differ by what a decoder decodes (SLANet's table decoder, trial 94)
    assert "note: a Loop may run as many iterations as its inputs' values decide" in out


def test_quantize_names_the_weights_inside_loop_bodies_when_it_quantizes_nothing(
    tmp_path: Path, caplog
) -> None:
    """chars2vec (tf2onnx, every weight inside two Loop bodies): the quantize pass said only that
    onnxruntime quantized no node, not why."""
    model = _loop_rnn(tmp_path / "loop.onnx", start_from_input=True)
    out = tmp_path / "q.onnx"
    assert main(["run", str(model), "-o", str(out), "--pipeline", "quantize:mode=dynamic"]) == 0
    err = caplog.text
    assert "quantized no node of this model (352 of its weights are read inside Loop bodies" in err


@pytest.mark.parametrize("argv", [[], ["-s", "0"], ["-s", "0.5"]])
def test_a_model_kept_whole_is_written_byte_for_byte(tmp_path: Path, argv: list[str]) -> None:
    """chars2vec (every weight inside Loop bodies) was "kept whole" and written re-exported, 75 bytes
    off its own file: a user's cmp said it changed. Where nothing folds and nothing is simplified, the
    file written is the file given."""
    model = _loop_rnn(tmp_path / "loop.onnx", start_from_input=True)
    out = tmp_path / "out.onnx"
    assert main(["fold", str(model), "-o", str(out), *argv]) == 0
    assert out.read_bytes() == model.read_bytes()


def test_a_fold_at_zero_writes_the_model_given_and_a_real_fold_does_not(tmp_path: Path) -> None:
    src = bundled_model("lenet5.onnx")
    same, folded = tmp_path / "same.onnx", tmp_path / "folded.onnx"
    assert main(["fold", str(src), "-o", str(same), "-s", "0", "--no-validate"]) == 0
    assert same.read_bytes() == Path(src).read_bytes()
    assert main(["fold", str(src), "-o", str(folded), "-s", "0.5", "--no-validate"]) == 0
    assert folded.read_bytes() != Path(src).read_bytes()


def test_a_model_kept_whole_from_external_data_is_written_self_contained(tmp_path: Path) -> None:
    import onnxruntime as ort

    src = _loop_rnn(tmp_path / "inline.onnx", start_from_input=True)
    proto = onnx.load(str(src))
    split = tmp_path / "split" / "loop.onnx"
    split.parent.mkdir()
    onnx.save(proto, str(split), save_as_external_data=True, all_tensors_to_one_file=True, size_threshold=0)
    out = tmp_path / "out.onnx"
    assert main(["fold", str(split), "-o", str(out), "-s", "0", "--no-validate"]) == 0
    for f in split.parent.iterdir():
        f.unlink()
    feed = {"x": np.ones((2, 6), np.float32), "h0": np.zeros((2, 16), np.float32)}
    want = ort.InferenceSession(str(src)).run(None, feed)[0]
    assert np.array_equal(ort.InferenceSession(str(out)).run(None, feed)[0], want)


def test_a_model_whose_only_unblocked_group_has_one_channel_says_every_group_is_blocked(
    tmp_path: Path, capsys
) -> None:
    """A Conv of one output channel (nothing to merge) feeding a Gemm whose outputs a Softmax
    normalises (blocked): no foldable group, so no sparsity is to blame (crema's chord CNN read "the
    sparsity leaves every foldable group at its width", trial 199)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(1, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(size=(16, 5)).astype(np.float32), "g"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("Flatten", ["c"], ["f"]),
        helper.make_node("Gemm", ["f", "g"], ["z"]),
        helper.make_node("Softmax", ["z"], ["y"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
        inits,
    )
    src = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), src)
    out = tmp_path / "out.onnx"
    assert main(["fold", str(src), "-o", str(out), "-s", "0.3", "--no-validate"]) == 0
    said = capsys.readouterr().out
    assert "nothing folded: every channel group is blocked or of one channel" in said
