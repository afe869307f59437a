"""Several independent decisions per sample ([N, C] logits: RivaGAN's 32 watermark bits). ``--metric
tags`` read one argmax per sample there and reported 32 of 32 samples kept where 10 of them had a bit
changed; it now counts the samples whose every decision agrees, the metrics of classes per position
(sequence, margin) refuse a rank-2 output, and ``binary`` counts each decision."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from harness import Net, rnd

from onnxfold.cli.commands import main
from onnxfold.runtime.fidelity import fidelity_value


def test_per_position_metrics_refuse_one_argmax_per_sample() -> None:
    rng = np.random.default_rng(0)
    bits = rng.standard_normal((32, 32))
    moved = bits.copy()
    moved[:10, 5] = -moved[:10, 5]  # one bit flipped in 10 samples, the argmax mostly not
    for metric in ("sequence", "margin"):
        with pytest.raises(
            ValueError, match=r"one argmax per sample, which is top1, .* binary per value, tags"
        ):
            fidelity_value(metric, bits, moved, 32)
    assert fidelity_value("binary", bits, moved) == pytest.approx(1 - 10 / (32 * 32))
    assert fidelity_value("tags", bits, moved, 32) == pytest.approx(22 / 32)  # samples with every bit kept
    probabilities = 1 / (1 + np.exp(-bits))  # decided at 0.5, as the logits at 0
    assert fidelity_value("tags", probabilities, 1 / (1 + np.exp(-moved)), 32) == pytest.approx(22 / 32)
    scores = rng.standard_normal((4, 6, 5))  # [N, L, C]: tags per position, as before
    assert fidelity_value("tags", scores, scores.copy(), 4) == 1.0


def test_a_fold_asked_for_sequences_on_bits_stops_before_it_runs(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(1)
    net = Net({"w1": rnd(rng, 16, 24), "w2": rnd(rng, 24, 32)})
    x = net.input("x", ["N", 16])
    onnx.save(
        net.model(net("MatMul", net("Relu", net("MatMul", x, "w1")), "w2")), str(tmp_path / "bits.onnx")
    )
    np.save(tmp_path / "x.npy", rng.standard_normal((32, 16)).astype(np.float32))
    argv = [
        "fold",
        str(tmp_path / "bits.onnx"),
        "-o",
        str(tmp_path / "o.onnx"),
        "--inputs",
        str(tmp_path / "x.npy"),
    ]
    assert main([*argv, "--metric", "sequence"]) == 2
    err = capsys.readouterr().err
    assert "one argmax per sample" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o.onnx").exists()
    assert main([*argv, "--metric", "binary", "-s", "0.25"]) == 0


def test_the_validation_line_prints_top1_only_where_argmaxes_are_read() -> None:
    """A segmenter's [N, L] boundary logits judged by binary printed "top1 0.0%" on its validation
    line (the argmax over a sentence's characters, which nothing reads) beside binary 0.9619."""
    from onnxfold.runtime.compare import OutputMetrics

    line = dict(name="logits", shape=(32, 111), candidate_shape=(32, 111), dtype="float32", shape_match=True)
    figures = dict(exact=False, max_abs=1.0, max_rel=0.1, cosine=0.99, top1_agreement=0.0, fidelity=0.96)
    assert "top1" not in OutputMetrics(**line, **figures, fidelity_metric="binary").summary()
    assert "top1 0.0%" in OutputMetrics(**line, **figures, fidelity_metric="top1+r2").summary()
    assert "top1 0.0%" in OutputMetrics(**line, **figures).summary()  # no metric asked: every figure
