"""Models that read one example without a batch axis (onnxfold.ir.batch_view).

madmom's key CNN reads [frames, 105] and writes 24 scores [24]. The search cut its samples into
8-frame windows across clips, joined the runs' [24] outputs into one vector, and --metric top1 then
agreed at 1.0 while 27% of the keys changed. Here a model of that shape, built in the test: each
sample must be one whole input, its outputs stacked per sample, and the saved model must keep the
input's own interface.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxfold
from onnxfold.cli.commands import main
from onnxfold.ir.batch_view import add_batch_axis, remove_batch_axis, unbatched
from onnxfold.ir.model import model_from_proto, to_model_proto
from onnxfold.models import bundled_model

BANDS, CLASSES = 6, 5


def clip_model(w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, opset: int = 18) -> onnx.ModelProto:
    """[frames, BANDS] -> Transpose, Unsqueeze -> Conv(w1) -> Relu -> Conv(w2) -> mean over frames ->
    Squeeze -> [CLASSES]: one clip in, one score vector out, no batch axis anywhere. Axes are inputs
    or attributes as ``opset`` has them."""
    consts = [numpy_helper.from_array(np.array([0], np.int64), "a0")] if opset >= 13 else []
    axis0 = (["a0"], {}) if opset >= 13 else ([], {"axes": [0]})
    mean = (["a2"], {}) if opset >= 18 else ([], {"axes": [2]})
    if opset >= 18:
        consts.append(numpy_helper.from_array(np.array([2], np.int64), "a2"))
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]),
        helper.make_node("Unsqueeze", ["t", *axis0[0]], ["u"], **axis0[1]),
        helper.make_node("Conv", ["u", "w1", "b1"], ["c1"], pads=[1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"]),
        helper.make_node("ReduceMean", ["c2", *mean[0]], ["m"], keepdims=0, **mean[1]),
        helper.make_node("Squeeze", ["m", *axis0[0]], ["scores"], **axis0[1]),
    ]
    weights = [
        numpy_helper.from_array(v.astype(np.float32), k) for k, v in (("w1", w1), ("b1", b1), ("w2", w2))
    ]
    graph = helper.make_graph(
        nodes,
        "clip",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["frames", BANDS])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n_out"])],
        consts + weights,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def compact_and_wide(seed: int = 0, opset: int = 18) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """A compact model with 4 hidden channels and its wide twin with each channel twice (producer
    rows repeated, consumer columns split in two unequal parts): the same function."""
    rng = np.random.default_rng(seed)
    w1, b1 = rng.standard_normal((4, BANDS, 3)), rng.standard_normal(4)
    w2 = rng.standard_normal((CLASSES, 4, 1))
    share = rng.uniform(0.2, 0.8, size=(1, 4, 1))
    wide = (
        np.concatenate([w1, w1]),
        np.concatenate([b1, b1]),
        np.concatenate([w2 * share, w2 * (1 - share)], axis=1),
    )
    return clip_model(w1, b1, w2, opset), clip_model(*wide, opset=opset)


def clips(n: int, frames: int = 20, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, frames, BANDS)).astype(np.float32)


def run(model, clip: np.ndarray) -> np.ndarray:
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": clip})[0]


def test_recognised_only_where_no_output_carries_the_inputs_leading_dim(tmp_path: Path) -> None:
    compact, _ = compact_and_wide()
    assert unbatched(compact)
    for name in ("lenet5.onnx", "resnet18.onnx", "mlp.onnx"):  # batched exports
        assert not unbatched(str(bundled_model(name)))
    batch1 = onnx.ModelProto()
    batch1.CopyFrom(compact)  # a fixed leading dim is a batch the model fixes
    batch1.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 20
    assert not unbatched(batch1)
    keepdim = onnx.ModelProto()  # an output [1, C]: a batch-1 export, run sample by sample already
    keepdim.CopyFrom(compact)
    keepdim.graph.node[-1].op_type = "Identity"
    del keepdim.graph.node[-1].input[1:]
    assert not unbatched(keepdim)


@pytest.mark.parametrize("opset", [11, 13, 18])
def test_the_view_runs_a_sample_as_a_batch_of_one_and_comes_off_exactly(opset: int) -> None:
    compact, _ = compact_and_wide(opset=opset)
    onnx.checker.check_model(compact, full_check=True)
    model = model_from_proto(compact)
    add_batch_axis(model)
    viewed = to_model_proto(model)
    x = clips(1)[0]
    np.testing.assert_array_equal(run(viewed, x[None])[0], run(compact, x))
    remove_batch_axis(model)
    back = to_model_proto(model)
    assert [(n.op_type, list(n.input), list(n.output)) for n in back.graph.node] == [
        (n.op_type, list(n.input), list(n.output)) for n in compact.graph.node
    ]
    assert back.graph.input[0].type == compact.graph.input[0].type
    assert back.graph.output[0].type.tensor_type.shape == compact.graph.output[0].type.tensor_type.shape


def test_no_compression_is_bit_exact_and_keeps_the_interface(tmp_path: Path) -> None:
    compact, wide = compact_and_wide()
    onnx.save(wide, str(tmp_path / "wide.onnx"))
    _, report = onnxfold.fold(tmp_path / "wide.onnx", sparsity=0.0, output=tmp_path / "o.onnx")
    assert report.unbatched
    out = onnx.load(str(tmp_path / "o.onnx"))
    assert [i.name for i in out.graph.input] == ["x"] and len(
        out.graph.input[0].type.tensor_type.shape.dim
    ) == 2
    assert not any("batch_view" in n.name or any("batch_view" in t for t in n.input) for n in out.graph.node)
    for clip in clips(3):
        np.testing.assert_array_equal(run(tmp_path / "o.onnx", clip), run(wide, clip))


def test_duplicate_channels_fold_back_to_the_compact_model(tmp_path: Path) -> None:
    compact, wide = compact_and_wide()
    onnx.save(wide, str(tmp_path / "wide.onnx"))
    np.save(tmp_path / "clips.npy", clips(8))  # one more axis than the input: 8 samples
    for extra in ([], ["--inputs", str(tmp_path / "clips.npy")]):
        out = tmp_path / f"o{len(extra)}.onnx"
        argv = ["fold", str(tmp_path / "wide.onnx"), "-o", str(out), "-s", "0.5", "--round-to", "1", *extra]
        assert main(argv) == 0
        for clip in clips(4, frames=13, seed=5):
            got, want = run(out, clip), run(compact, clip)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_each_file_or_entry_is_one_whole_sample(tmp_path: Path, capsys) -> None:
    """A folder of clips and a stacked array give the same 12 samples; outputs are compared per clip."""
    _, wide = compact_and_wide()
    onnx.save(wide, str(tmp_path / "wide.onnx"))
    x = clips(12)
    (tmp_path / "folder").mkdir()
    for i, clip in enumerate(x):
        np.save(tmp_path / "folder" / f"clip{i:02d}.npy", clip)
    np.save(tmp_path / "stack.npy", x)
    seen = []
    for source in ("folder", "stack.npy"):
        report = tmp_path / f"{source}.json"
        argv = ["fold", str(tmp_path / "wide.onnx"), "-o", str(tmp_path / "o.onnx"), "--overwrite"]
        argv += ["--inputs", str(tmp_path / source), "--min-fidelity", "0.9", "--report", str(report)]
        assert main(argv) == 0
        stdout = capsys.readouterr().out
        assert "without a batch axis" in stdout
        import json

        search = json.loads(report.read_text())["search"]
        assert "12 given samples" in search["inputs"]
        assert search["metrics"] == {"scores": "top1+r2"}  # class scores [12, 5], one row per clip
        seen.append(search["fidelity"])
    assert seen[0] == seen[1]


def test_top1_counts_a_decision_per_clip_not_one_argmax_of_all(tmp_path: Path) -> None:
    """--metric top1 on the joined [runs x 24] vector took a single argmax and reported 1.0."""
    import json

    _, wide = compact_and_wide()
    onnx.save(wide, str(tmp_path / "wide.onnx"))
    x = clips(16)
    np.save(tmp_path / "s.npy", x)
    out, report = tmp_path / "o.onnx", tmp_path / "r.json"
    argv = ["fold", str(tmp_path / "wide.onnx"), "-o", str(out), "-s", "0.7", "--round-to", "1"]
    argv += ["--method", "l2", "--repair", "none", "--inputs", str(tmp_path / "s.npy"), "--metric", "top1"]
    assert main([*argv, "--report", str(report)]) == 0
    (scores,) = json.loads(report.read_text())["validation"]["outputs"]
    decisions = np.mean([run(wide, c).argmax() == run(out, c).argmax() for c in x])
    assert scores["shape"] == [16, CLASSES] and scores["top1_agreement"] == pytest.approx(decisions)
    assert decisions < 1.0  # the fold at 0.7 moves some decisions: a single argmax hid them


def test_the_proxy_says_which_shape_it_guessed(tmp_path: Path, capsys) -> None:
    """Free dims beyond the batch get a guess (16): the report names the shape measured and says so,
    and --input-shape replaces the guess (madmom's key CNN reads 105 bands, and was probed with 16)."""
    from onnxfold.search.evaluate import Evaluator

    _, wide = compact_and_wide()
    model = model_from_proto(wide)
    add_batch_axis(model)  # [1, frames, BANDS]: the frames are free
    proto = to_model_proto(model)
    guessed = Evaluator(proto, metric="r2").describe()
    assert guessed.endswith(
        f"random samples, each x [1, 16, {BANDS}] (free dims guessed: --input-shape sets them)"
    )
    given = Evaluator(proto, metric="r2", shapes={"x": (1, 20, BANDS)}).describe()
    assert given.endswith(f"random samples, each x [1, 20, {BANDS}]")


def test_macs_are_counted_at_the_given_input_shape(tmp_path: Path) -> None:
    """Free dims were taken as 1 for MACs whatever --input-shape said (madmom's CNN: 664K MACs, one
    frame, where [60, 105] costs 179M), and the leading dim of a model without a batch axis is no
    batch to divide out."""
    _, wide = compact_and_wide()
    onnx.save(wide, str(tmp_path / "wide.onnx"))
    per_frame = 8 * BANDS * 3 + CLASSES * 8 * 1  # Conv(w1) and Conv(w2) per output frame
    _, free = onnxfold.fold(tmp_path / "wide.onnx", sparsity=0.0, validate=False)
    assert free.before.macs == per_frame and "inferred from the inputs' free dims" in " ".join(
        free.before.notes
    )
    assert "unk__" not in " ".join(free.before.notes)
    for frames in (20, 37):
        _, given = onnxfold.fold(
            tmp_path / "wide.onnx", sparsity=0.0, validate=False, input_shapes={"x": (frames, BANDS)}
        )
        assert given.before.macs == given.after.macs == per_frame * frames
        assert not given.before.symbolic_dims
    _, folded = onnxfold.fold(
        tmp_path / "wide.onnx", min_fidelity=0.5, input_shapes={"x": (20, BANDS)}, inputs=clips(8)
    )
    assert folded.search.chosen.macs == folded.after.macs  # the search counts at the same shape


def test_the_speed_check_names_the_shape_the_model_reads(tmp_path: Path) -> None:
    _, wide = compact_and_wide()
    onnx.save(wide, str(tmp_path / "wide.onnx"))
    _, report = onnxfold.fold(
        tmp_path / "wide.onnx", sparsity=0.5, round_to=1, inputs=clips(4, frames=30), speed_check=True
    )
    assert report.validation.latency.inputs == {"x": (30, BANDS)}  # one clip, not the view's [1, 30, 6]
    assert f"on x[30, {BANDS}]" in report.validation.latency.summary()


def test_macs_are_counted_at_the_given_samples_shape(tmp_path: Path, capsys) -> None:
    """With --inputs and no --input-shape, free dims were still taken as 1 for MACs: RetinaFace on
    320x320 images counted 447K MACs for 265M, and its search said 16.6% fewer where 9.1% was true."""
    _, wide = compact_and_wide()
    onnx.save(wide, str(tmp_path / "wide.onnx"))
    per_frame = 8 * BANDS * 3 + CLASSES * 8 * 1
    _, given = onnxfold.fold(tmp_path / "wide.onnx", sparsity=0.0, validate=False, inputs=clips(4, frames=25))
    assert given.before.macs == given.after.macs == per_frame * 25 and given.before.pinned
    batched = bundled_model("lenet5.onnx")  # [N, 1, 8, 8]: the sample axis is not counted
    _, lenet = onnxfold.fold(batched, sparsity=0.0, validate=False, inputs=np.zeros((6, 1, 8, 8), np.float32))
    _, free = onnxfold.fold(batched, sparsity=0.0, validate=False)
    assert lenet.before.macs == free.before.macs
    _, searched = onnxfold.fold(tmp_path / "wide.onnx", min_fidelity=0.5, inputs=clips(8, frames=25))
    assert searched.search.chosen.macs == searched.after.macs  # the search counts at the same shape


def test_image_preprocess_without_inputs_is_refused(tmp_path: Path, capsys) -> None:
    argv = ["fold", str(bundled_model("lenet5.onnx")), "-o", str(tmp_path / "o.onnx"), "-s", "0.3"]
    assert main([*argv, "--image-preprocess", "caffe"]) == 2
    assert "--image-preprocess reads a folder of images given with --inputs" in capsys.readouterr().err
    assert not (tmp_path / "o.onnx").exists()


def frame_model(w1: np.ndarray, b1: np.ndarray, w2: np.ndarray) -> onnx.ModelProto:
    """[frames, BANDS] -> Transpose, Unsqueeze -> Conv(w1, no padding) -> Relu -> Conv(w2) -> Squeeze,
    Transpose -> [frames − 2, CLASSES]: scores per frame, whose count depends on the clip's (madmom's
    notes CNN: [frames, 144] in, [frames − 10, 88] out, declared of rank 1)."""
    a0 = numpy_helper.from_array(np.array([0], np.int64), "a0")
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]),
        helper.make_node("Unsqueeze", ["t", "a0"], ["u"]),
        helper.make_node("Conv", ["u", "w1", "b1"], ["c1"]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"]),
        helper.make_node("Squeeze", ["c2", "a0"], ["s"]),
        helper.make_node("Transpose", ["s"], ["scores"], perm=[1, 0]),
    ]
    weights = [
        numpy_helper.from_array(v.astype(np.float32), k) for k, v in (("w1", w1), ("b1", b1), ("w2", w2))
    ]
    graph = helper.make_graph(
        nodes,
        "frames",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["frames", BANDS])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n_out"])],
        [a0, *weights],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)


def test_outputs_per_frame_do_not_hide_that_the_leading_axis_is_time(tmp_path: Path, capsys) -> None:
    """madmom's notes CNN writes [frames − 10, 88]: no output is static, and its 91-frame clips were cut
    into 8-frame windows, too short for its convolutions ("Conv node 'conv_31': Invalid input shape")."""
    rng = np.random.default_rng(2)
    w1, b1, w2 = (
        rng.standard_normal((4, BANDS, 3)),
        rng.standard_normal(4),
        rng.standard_normal((CLASSES, 4, 1)),
    )
    share = rng.uniform(0.2, 0.8, size=(1, 4, 1))
    compact = frame_model(w1, b1, w2)
    wide = frame_model(
        np.concatenate([w1, w1]), np.concatenate([b1, b1]), np.concatenate([w2 * share, w2 * (1 - share)], 1)
    )
    assert unbatched(compact) and unbatched(wide)
    onnx.save(wide, str(tmp_path / "wide.onnx"))
    (tmp_path / "clips").mkdir()
    for i, clip in enumerate(clips(12, frames=9)):
        np.save(tmp_path / "clips" / f"clip{i:02d}.npy", clip)
    out = tmp_path / "o.onnx"
    argv = ["fold", str(tmp_path / "wide.onnx"), "-o", str(out), "-s", "0.5", "--round-to", "1"]
    assert main([*argv, "--inputs", str(tmp_path / "clips"), "--method", "fold", "--repair", "none"]) == 0
    assert "without a batch axis" in capsys.readouterr().out
    for clip in clips(3, frames=14, seed=7):
        np.testing.assert_allclose(run(out, clip), run(compact, clip), rtol=1e-5, atol=1e-5)
