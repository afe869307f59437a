"""A data-free search on a model whose output is an ArgMax's labels, which random inputs leave one
class everywhere, judges the scores the ArgMax reads (wired-table-rec's line segmenter: every pixel of
random inputs background, a default fold read 1.0000 at 66.6% fewer parameters and changed the cells
of half the tables)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from harness import Net, rnd

from onnxfold.cli.commands import main
from onnxfold.folding.judge import with_outputs


def _segmenter(path: Path) -> Path:
    """x [N, 3, 8, 8] -> Conv 3->24 -> Relu -> Conv 24->3 -> Softmax -> ArgMax over the classes; class
    0's bias of 22 makes it win at every pixel of random inputs, at probabilities that still vary."""
    rng = np.random.default_rng(0)
    bias = np.zeros(3, np.float32)
    bias[0] = 22.0
    net = Net(
        {
            "w1": rnd(rng, 24, 3, 3, 3),
            "b1": rnd(rng, 24),
            "w2": rnd(rng, 3, 24, 1, 1),
            "b2": bias,
        }
    )
    h = net("Relu", net("Conv", net.input("x", ["N", 3, 8, 8]), "w1", "b1", pads=[1, 1, 1, 1]))
    probs = net("Softmax", net("Conv", h, "w2", "b2"), axis=1)
    proto = net.model(net("ArgMax", probs, axis=1, keepdims=0))
    proto.graph.output[0].type.tensor_type.elem_type = onnx.TensorProto.INT64
    onnx.save(proto, path)
    return path


def _scores(path: Path, x: np.ndarray) -> np.ndarray:
    """The Softmax the ArgMax reads, run as an output of its own."""
    proto = onnx.load(str(path))
    argmax = next(n for n in proto.graph.node if n.op_type == "ArgMax")
    name = argmax.input[0]
    sess = ort.InferenceSession(
        with_outputs(proto, [name]).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return sess.run([name], {"x": x})[0]


def test_labels_one_class_on_the_proxy_are_judged_by_their_scores(tmp_path: Path, capsys) -> None:
    """Judged by the labels alone, no fold moves the measurement: the search called it blind and kept
    the model whole here, and where a time limit left the sensitivity short of that test (the
    segmenter's 38 of 256 levels), it folded two thirds of the parameters at "fidelity 1.0000"."""
    src = _segmenter(tmp_path / "seg.onnx")
    out, report = tmp_path / "o.onnx", tmp_path / "o.json"
    argv = ["fold", str(src), "-o", str(out), "--report", str(report), "--min-fidelity", "0.9"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    search = json.loads(report.read_text())["search"]
    assert not search["blind"], text
    assert search["metrics"].get("softmax_3_y") == "r2" and "are judged by r2 too" in text
    assert any(f is not None and f < 0.9 for c in search["sensitivity"] for f in c["fidelity"]), text
    x = np.random.default_rng(7).standard_normal((32, 3, 8, 8)).astype(np.float32)
    want, got = _scores(src, x), _scores(out, x)
    assert (want.argmax(1) == 0).all()  # the labels show nothing on these inputs either
    ss_res = ((want - got) ** 2).sum(axis=(0, 2, 3))
    ss_tot = ((want - want.mean(axis=(0, 2, 3), keepdims=True)) ** 2).sum(axis=(0, 2, 3))
    assert (1.0 - ss_res / ss_tot).min() > 0.7, text  # r2 per class on new random inputs


def _saturating(scale: float) -> onnx.ModelProto:
    """x [N, 6] -> Relu(MatMul 6->16) -> MatMul 16->4 (times ``scale``) -> Softmax: at scale 60 its
    margins run to hundreds of nats, and most rows' probabilities read exact 0s and a 1."""
    rng = np.random.default_rng(2)
    net = Net({"w1": rnd(rng, 6, 16), "w2": (scale * rnd(rng, 16, 4)).astype(np.float32)})
    h = net("Relu", net("MatMul", net.input("x", ["N", 6]), "w1"))
    return net.model(net("Softmax", net("MatMul", h, "w2"), axis=1))


def test_probabilities_that_saturate_are_judged_by_their_logits_too() -> None:
    """MEGnet's ICA labeller (trial 204) read probabilities of exactly 0 and 1: a fold measured "top1
    1.0000, r2 1.0000" on 32 samples and changed 7-12% of new components' labels. Where a Softmax's
    probabilities underflow to 0 in half of the rows, the logits it reads are judged by r2 too."""
    from onnxfold.search import Evaluator
    from onnxfold.search.label_scores import saturated, softmax_logits

    x = {"x": np.random.default_rng(3).standard_normal((32, 6)).astype(np.float32)}
    model = _saturating(60.0)
    (out,) = [o.name for o in model.graph.output]
    (logits,) = [n.input[0] for n in model.graph.node if n.op_type == "Softmax"]
    assert softmax_logits(model) == {out: logits}
    probs = ort.InferenceSession(model.SerializeToString()).run(None, x)[0]
    assert saturated(probs) and not saturated(
        ort.InferenceSession(_saturating(1.0).SerializeToString()).run(None, x)[0]
    )
    evaluator = Evaluator(model, x)
    assert evaluator.scores == {out: logits} and evaluator.metrics[logits] == "r2"
    assert (
        f"{out}'s probabilities saturate (exact 0s), so its logits {logits} are judged"
        in evaluator.describe()
    )
    shrunk = _saturating(42.0)  # every margin 0.7 times as wide: no label moves, no probability shows it
    got = ort.InferenceSession(shrunk.SerializeToString()).run(None, x)[0]
    assert (got.argmax(1) == probs.argmax(1)).all()
    fidelity, outputs = evaluator(shrunk)
    by_name = {o.name: o.value for o in outputs}
    assert by_name[out] > 0.99 and by_name[logits] < 0.95 and fidelity == by_name[logits]
    masked = probs.copy()  # zeros a mask of -inf makes: no r2 reads such logits
    assert not saturated(masked, np.where(masked == 0, -np.inf, 1.0)) and saturated(
        masked, np.zeros_like(masked)
    )
    tame = Evaluator(_saturating(1.0), x)  # probabilities that keep their margins: judged as before
    assert tame.scores == {} and logits not in tame.metrics and "saturate" not in tame.describe()
