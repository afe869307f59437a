"""Models that read their batch rows together (ICLabel: every component as four blocks of rows,
averaged) are run whole, never cut into runs, held-out halves or leading samples."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxfold
from onnxfold.runtime.coupled import coupled_rows

COPIES = 4  # rows per sample, as blocks of N rows: rows i, i + N, i + 2N, i + 3N are one sample


def _model(coupling: str) -> onnx.ModelProto:
    """x [B, 6] -> MatMul 6x16 -> Relu -> MatMul 16x16 -> Relu -> MatMul 16x5 -> y, then:
    ``blocks``: y [4N, 5] -> Reshape [4, N, 5] -> ReduceMean over the blocks -> Softmax -> [N, 5];
    ``centred``: y minus its mean over the batch (rows mixed, as BN in training mode mixes them);
    ``none``: Softmax of y."""
    rng = np.random.default_rng(0)
    w = [rng.standard_normal(s).astype(np.float32) for s in ((6, 16), (16, 16), (16, 5))]
    inits = [numpy_helper.from_array(a, f"w{i}") for i, a in enumerate(w)]
    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["h0"]),
        helper.make_node("Relu", ["h0"], ["r0"]),
        helper.make_node("MatMul", ["r0", "w1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["r1"]),
        helper.make_node("MatMul", ["r1", "w2"], ["logits"]),
    ]
    if coupling == "blocks":
        inits.append(numpy_helper.from_array(np.array([COPIES, -1, 5], np.int64), "blocks"))
        nodes += [
            helper.make_node("Reshape", ["logits", "blocks"], ["split"]),
            helper.make_node("ReduceMean", ["split"], ["mean"], axes=[0], keepdims=0),
            helper.make_node("Softmax", ["mean"], ["probs"], axis=-1),
        ]
    elif coupling == "centred":
        nodes += [
            helper.make_node("ReduceMean", ["logits"], ["centre"], axes=[0], keepdims=1),
            helper.make_node("Sub", ["logits", "centre"], ["centred"]),
            helper.make_node("Softmax", ["centred"], ["probs"], axis=-1),
        ]
    else:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=-1))
    graph = helper.make_graph(
        nodes,
        "coupled",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", 6])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["out_rows", 5])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _samples(count: int, seed: int = 1) -> np.ndarray:
    """``count`` samples in the blocks layout: each sample's 4 views, as 4 blocks of ``count`` rows."""
    base = np.random.default_rng(seed).standard_normal((count, 6)).astype(np.float32)
    views = [base, -base, base[:, ::-1], -base[:, ::-1]]
    return np.concatenate(views).astype(np.float32)


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(
    ("coupling", "why"),
    [
        ("blocks", "a run of its first 2 samples alone fails"),
        ("centred", "its output 'probs' for the first sample changes when a second sample runs beside it"),
        ("none", ""),
    ],
)
def test_coupled_rows_are_found_by_running_the_first_samples(coupling: str, why: str) -> None:
    model = _model(coupling)
    feed = {"x": _samples(8)}
    found = coupled_rows(_session(model), ["probs"], feed)
    assert found.startswith(why) if why else found == ""


def test_a_model_that_reads_rows_together_is_searched_on_its_whole_feed(monkeypatch, tmp_path) -> None:
    """ICLabel with 32 components (128 rows): the MAC limit cut the feed into runs of 98 rows and
    the search failed before its first candidate ("requested shape {4,-1}")."""
    from onnxfold.folding import samples

    per_row = 6 * 16 + 16 * 16 + 16 * 5
    monkeypatch.setattr(samples, "RUN_MACS", per_row * 50)  # a run holds 50 of the 128 rows
    model = _model("blocks")
    fitting = _samples(32)
    out = tmp_path / "folded.onnx"
    _, report = onnxfold.fold(model, output=str(out), inputs={"x": fitting}, min_fidelity=0.5, round_to=1)
    search = report.search
    assert "run whole: the model's batch rows are not independent samples" in search.inputs
    assert search.chosen.reduction > 0  # it folds
    judged = _samples(16, seed=7)
    ref = _session(model).run(None, {"x": judged})[0]
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": judged})[0]
    assert got.shape == ref.shape == (16, 5)
    # counted on the output's 32 rows, one per component, not on the 128 input rows
    assert all(o.samples in (None, 32) for o in search.chosen.outputs)


def test_the_speed_check_times_a_whole_feed_of_rows_read_together() -> None:
    """The speed check timed the first row alone, which ICLabel cannot run: the finished fold was
    thrown away with onnxruntime's Reshape error."""
    from onnxfold.runtime.compare import validate

    model = _model("blocks")
    report = validate(model, model, shapes={"x": [8, 6]}, speed_budget=0.05)
    assert report.latency is not None and report.latency.inputs == {"x": (8, 6)}
    plain = validate(_model("none"), _model("none"), shapes={"x": [8, 6]}, speed_budget=0.05)
    assert plain.latency.inputs == {"x": (1, 6)}  # one sample, as a deployed model mostly runs


def test_random_inputs_take_a_batch_the_model_runs_on(tmp_path) -> None:
    """ICLabel runs only on a multiple of 4 rows: validation's 2 random samples failed before the
    fold, with "give the input shapes with --input-shape"."""
    model = _model("blocks")
    _, report = onnxfold.fold(model, 0.3, tmp_path / "folded.onnx", round_to=1)
    assert report.validation.inputs == {"x": (4, 6)}
    validate = next(p for p in report.passes if p.name == "validate")
    assert validate.stats["note"] == (
        "compared on a batch of 4 random samples: the model fails on a batch of 2 "
        "(a fixed batch, rows it reads together, or inputs whose sizes must agree, as a graph network's "
        "nodes and edges)"
    )
    _, plain = onnxfold.fold(_model("none"), 0.3, tmp_path / "plain.onnx", round_to=1)
    # the asked batch where it runs, no multiple of 4; its 2 samples both read class 4, which says
    # nothing of its decisions, so validation drew 16 (compare.DECISIVE_BATCH), which read 3 classes
    assert plain.validation.inputs == {"x": (16, 6)}
    assert "note" not in next(p for p in plain.passes if p.name == "validate").stats


def test_the_data_free_proxy_draws_as_many_output_rows_as_samples(tmp_path) -> None:
    """ICLabel's data-free search measured 32 random rows, which are 8 components: "8 of 8 samples"
    beside "32 random samples". It now draws 4 rows per output row: 32 of 32."""
    _, report = onnxfold.fold(
        _model("blocks"), output=str(tmp_path / "free.onnx"), min_fidelity=0.5, round_to=1
    )
    search = report.search
    assert search.proxy and "128 random samples" in search.inputs
    assert "every output row reads 4 input rows" in search.inputs
    assert [o.samples for o in search.chosen.outputs if o.metric == "top1"] == [32]
    _, plain = onnxfold.fold(
        _model("none"), output=str(tmp_path / "plain.onnx"), min_fidelity=0.5, round_to=1
    )
    assert "32 random samples" in plain.search.inputs and "run whole" not in plain.search.inputs


def test_the_proxy_redraws_random_samples_but_keeps_fitted_ones() -> None:
    """Samples fitted to the model (DeepInversion's) cost minutes to make: the proxy keeps them as
    they are, where it draws random ones again in as many rows as it measures. The kind travels with
    the samples; it was read from their description."""
    from onnxfold.search.evaluate import Evaluator

    rows = np.random.default_rng(3).standard_normal((8, 6)).astype(np.float32)
    fitted = Evaluator(
        _model("blocks"), {"x": rows}, synthetic="8 samples fitted to the statistics", redrawable=False
    )
    assert fitted.proxy and fitted.feed["x"].shape == (8, 6)
    drawn = Evaluator(_model("blocks"), {"x": rows}, synthetic="8 random samples", redrawable=True)
    assert drawn.proxy and drawn.feed["x"].shape == (128, 6)


class _Batched:
    """A session whose first row, run beside a second, moves by ``moved`` (as float kernels blocked
    for another batch size do, or as rows read together do), over outputs of largest value ``scale``."""

    def __init__(self, moved: float, scale: float = np.pi) -> None:
        self.moved, self.scale = moved, scale

    def get_inputs(self):
        return [type("Arg", (), {"name": "x", "shape": ["N", 4], "type": "tensor(float)"})()]

    def get_outputs(self):
        return [type("Arg", (), {"name": "angle", "shape": ["N", 4], "type": "tensor(float)"})()]

    def run(self, names, feed):
        n = feed["x"].shape[0]
        out = np.tile(np.array([[0.0, 1e-3, self.scale, -self.scale / 2]], np.float32), (n, 1))
        if n > 1:
            out[0, 1] += self.moved  # a value near 0 moves
        return [out]


def test_a_row_moved_within_float_noise_of_its_output_s_scale_is_not_coupled() -> None:
    """afis's LEADER writes directions in radians (up to π); run beside another print, one moved by
    3.1e-4 near 0, which an element-wise relative tolerance read as rows read together."""
    feed = {"x": np.zeros((4, 4), np.float32)}
    assert coupled_rows(_Batched(3.1e-4), ["angle"], feed) == ""
    assert coupled_rows(_Batched(0.05), ["angle"], feed).startswith("its output 'angle'")
