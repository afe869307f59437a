"""A model that reads its samples on a later axis than the first, as its declared shapes name it
(onnxfold.runtime.batch_axes): torch's LSTM and Transformer read time major, and a grapheme-to-phoneme
model exported so reads src [30, batch]. Its 30 positions were taken for 30 samples: the search held out
15 and onnxruntime refused the run, and a folder of 32 words was scored as 960 samples."""

from __future__ import annotations

import numpy as np
from harness import run_ort
from onnx import TensorProto, helper, numpy_helper

import onnxfold
from onnxfold.folding.samples import sample_axes, take
from onnxfold.runtime.batch_axes import declared_layout
from onnxfold.runtime.inputs import fixed_batches, input_specs

T, IN, HID, OUT, N = 6, 4, 8, 3, 32


def _model(w1: np.ndarray, w2: np.ndarray, batch: str = "batch"):
    """x [T, batch, IN] → MatMul → Relu → MatMul → y [T, batch, OUT], the positions fixed at T."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
            helper.make_node("Relu", ["h"], ["r"], name="relu"),
            helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2"),
        ],
        "time_major",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [T, batch, IN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [T, batch, OUT])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _weights(seed: int = 0, half: bool = False):
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((IN, HID // 2 if half else HID)).astype(np.float32)
    w2 = rng.standard_normal((HID // 2 if half else HID, OUT)).astype(np.float32)
    return w1, w2


def _samples(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((T, N, IN)).astype(np.float32)


def test_the_declared_batch_axis_holds_the_samples() -> None:
    model = _model(*_weights())
    feed = {"x": _samples()}
    assert sample_axes(feed) == (T, {"x": 0})  # from shapes alone: the positions
    with declared_layout(model) as found:
        assert found == {"x": (1, 3)}
        assert sample_axes(feed) == (N, {"x": 1})
        assert take(feed, slice(0, 5))["x"].shape == (T, 5, IN)
        assert fixed_batches(input_specs(model)) == []  # T is no batch the model fixes
    assert sample_axes(feed) == (T, {"x": 0})  # the layout is the model's, only while it is measured
    with declared_layout(_model(*_weights(), batch="N")) as found:  # no axis named a batch: as before
        assert found == {} and sample_axes(feed) == (T, {"x": 0})
    # a batch-1 export's length named batch_size (Conv-TasNet's audio [1, 1, batch_size]), and a name no
    # output carries, are no batch
    from onnxfold.runtime.batch_axes import later_batch_axes
    from onnxfold.runtime.inputs import InputSpec

    audio = InputSpec("audio", np.dtype(np.float32), (1, 1, "batch_size"))
    frames = InputSpec("y", np.dtype(np.float32), (1, 8, "frames"))
    assert later_batch_axes([audio], [frames]) == {} and later_batch_axes([audio]) == {}
    seq = InputSpec("src", np.dtype(np.int64), (30, "batch"))
    assert later_batch_axes([seq], [frames]) == {}
    assert later_batch_axes([seq], [InputSpec("logits", None, (30, "batch", 33))]) == {"src": (1, 2)}


def test_a_search_on_time_major_samples_runs_and_counts_them() -> None:
    model = _model(*_weights())
    folded, report = onnxfold.fold(model, min_fidelity=0.5, inputs={"x": _samples()}, validate=True)
    search = report.search
    assert search.held_out == N // 2  # half of the 32 samples, not half of the 6 positions
    assert all(o.samples in (None, N) for o in search.chosen.outputs if hasattr(o, "samples"))
    got = run_ort(folded.to_onnx(), {"x": _samples(2)})[0]
    assert got.shape == (T, N, OUT)


def test_duplicated_units_of_a_time_major_model_fold_back_exactly_on_its_samples() -> None:
    w1, w2 = _weights(half=True)
    compact = _model(w1, w2)
    wide = _model(np.concatenate([w1, w1], axis=1), np.concatenate([w2, w2], axis=0) / 2)
    x = _samples(3)
    folded, report = onnxfold.fold(wide, sparsity=0.5, round_to=1, inputs={"x": x})
    assert any(p.status == "folded" and p.k == HID // 2 for p in report.plans)
    want = run_ort(compact, {"x": x})[0]
    got = run_ort(folded.to_onnx(), {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_validation_on_random_inputs_counts_the_samples_on_the_declared_axis(tmp_path, capsys) -> None:
    import onnx

    from onnxfold.cli import main

    src = tmp_path / "tm.onnx"
    onnx.save(_model(*_weights()), src)
    assert main(["fold", str(src), "-o", str(tmp_path / "o.onnx"), "-s", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "(random inputs, 2 of them" in out or "(random inputs, 16 of them" in out  # not the 6 positions
    assert f"(random inputs, {T} of them" not in out


def test_the_command_line_reads_time_major_samples_in_the_model_s_own_layout(tmp_path) -> None:
    import onnx

    from onnxfold.cli import main

    src, out = tmp_path / "tm.onnx", tmp_path / "out.onnx"
    onnx.save(_model(*_weights()), src)
    np.save(tmp_path / "x.npy", _samples())
    argv = ["fold", str(src), "-o", str(out), "--min-fidelity", "0.5", "--inputs", str(tmp_path / "x.npy")]
    assert main(argv) == 0 and out.exists()
    np.save(tmp_path / "first.npy", np.moveaxis(_samples(), 1, 0))  # batch first: not the model's layout
    assert main([*argv[:3], str(tmp_path / "o2.onnx"), *argv[4:-1], str(tmp_path / "first.npy")]) == 2
