"""Static quantization of a log-mel front end: STFT (a Conv), power, mel filterbank (a MatMul), Log.

A wake-word featurizer (wakehubert, ovos-ww-plugin-wakeforge) quantized statically kept 31% of its
wake words (81% in float): the power spectrum spans six decades, and an 8-bit range rounds quiet
bands to 0 before the Log. Leaving out the mel MatMul alone changed nothing (its input was still
quantized). The front end now stays float; the network after it is quantized."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from harness import Net, rnd

import onnxfold
from onnxfold.errors import PassError
from onnxfold.passes import QuantizePass
from onnxfold.runtime.float_kept import log_front_end_nodes
from onnxfold.runtime.session import make_session

N_FFT, HOP, BINS, MELS = 64, 32, 33, 12


def _logmel(path: Path, layers: int = 1) -> Path:
    """wave [B, 1024] -> log-mel [B, 12, frames] -> ``layers`` Conv+Relu -> mean over time -> [B, 16]."""
    rng = np.random.default_rng(0)
    t, f = np.arange(N_FFT), np.arange(BINS)[:, None]
    win = 0.5 - 0.5 * np.cos(2 * np.pi * t / N_FFT)
    basis = np.concatenate(
        [np.cos(2 * np.pi * f * t / N_FFT) * win, -np.sin(2 * np.pi * f * t / N_FFT) * win]
    )
    mel = np.abs(rng.normal(size=(MELS, BINS))) * (rng.random((MELS, BINS)) < 0.3)
    weights = {"basis": basis[:, None, :].astype(np.float32), "mel": mel.astype(np.float32)}
    weights.update({f"w{i}": rnd(rng, 16, MELS if i == 0 else 16, 3) for i in range(layers)})
    weights["out"] = rnd(rng, 16, 16)
    net = Net(weights)
    x = net.input("wave", ["B", 1024])
    spec = net("Conv", net("Unsqueeze", x, net.i64("ax", [1])), "basis", strides=[HOP])
    re = net("Slice", spec, net.i64("s0", [0]), net.i64("e0", [BINS]), net.i64("a0", [1]))
    im = net("Slice", spec, net.i64("s1", [BINS]), net.i64("e1", [2 * BINS]), net.i64("a1", [1]))
    power = net("Add", net("Pow", re, net.f("two", 2.0)), net("Pow", im, net.f("two2", 2.0)))
    h = net("Log", net("Add", net("MatMul", "mel", power), net.f("eps", 1e-6)))
    for i in range(layers):
        h = net("Relu", net("Conv", h, f"w{i}", pads=[1, 1]))
    y = net("MatMul", net("ReduceMean", h, axes=[2], keepdims=0), "out")
    onnx.save(net.model(y), str(path))
    return path


def _audio(n: int, seed: int) -> dict[str, np.ndarray]:
    """Three tones and a little noise at levels from -60 dB to 0 dB."""
    rng = np.random.default_rng(seed)
    t = np.arange(1024)
    waves = []
    for _ in range(n):
        tones = sum(
            rng.uniform(0.2, 1) * np.sin(2 * np.pi * rng.uniform(0.01, 0.45) * t + rng.uniform(0, 6))
            for _ in range(3)
        )
        waves.append(10.0 ** rng.uniform(-3, 0) * (tones + 0.01 * rng.standard_normal(1024)))
    return {"wave": np.asarray(waves, np.float32)}


def test_a_log_mel_front_end_stays_float_and_the_network_after_it_quantizes(tmp_path: Path) -> None:
    src = _logmel(tmp_path / "logmel.onnx")
    out = tmp_path / "q.onnx"
    _, report = onnxfold.run_pipeline(src, [QuantizePass(mode="static")], out, inputs=_audio(16, 1))
    stats = report.passes[0].stats
    assert stats["log_front_end_nodes_left"] >= 8 and "log spectrum" in stats["note"]
    proto = onnx.load(str(out))
    quantized = {i for n in proto.graph.node if n.op_type == "DequantizeLinear" for i in n.output}
    readers = {n.op_type for n in proto.graph.node if any(i in quantized for i in n.input)}
    assert "Conv" in readers and "MatMul" in readers  # the network's Conv and its last MatMul
    feed = _audio(32, 2)
    got = make_session(str(out)).run(None, feed)[0]
    want = make_session(str(src)).run(None, feed)[0]
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.99  # 0.85 with the front end quantized


@pytest.mark.parametrize("layers", [1, 6])
def test_only_a_log_after_few_weighted_ops_is_a_front_end(layers: int, tmp_path: Path) -> None:
    proto = onnx.load(str(_logmel(tmp_path / "m.onnx", layers)))
    ops = {n.name: n.op_type for n in proto.graph.node}
    kept = [ops[n] for n in log_front_end_nodes(proto)]
    assert kept.count("Conv") == 1 and kept.count("MatMul") == 1 and kept[-1] == "Log"
    # a Log after a whole network (the log of its scores) is not a front end
    net = Net({f"w{i}": rnd(np.random.default_rng(i), 8, 8) for i in range(layers + 4)})
    h = net.input("x", ["B", 8])
    for i in range(layers + 4):
        h = net("Relu", net("MatMul", h, f"w{i}"))
    assert log_front_end_nodes(net.model(net("Log", net("Softmax", h, axis=-1)))) == []


def test_exclude_names_a_node_the_model_has_or_the_pipeline_stops_before_it_runs(tmp_path: Path) -> None:
    # wakehubert's exclude=/student/mel/Matmul (a typo) was accepted and read as "leaving it out did not help"
    src = _logmel(tmp_path / "logmel.onnx")
    mel = next(n.name for n in onnx.load(str(src)).graph.node if n.op_type == "MatMul")
    typo = mel.upper()
    with pytest.raises(PassError, match=f"does not have: {typo} \\(did you mean {mel}\\?\\)"):
        onnxfold.run_pipeline(src, [QuantizePass(mode="static", exclude=[typo])], tmp_path / "q.onnx")
    assert not (tmp_path / "q.onnx").exists()
    onnxfold.run_pipeline(src, [QuantizePass(mode="static", exclude=[mel])], tmp_path / "q.onnx")
    assert (tmp_path / "q.onnx").exists()
