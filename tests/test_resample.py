"""The bootstrap lower value of a continuous fidelity (onnxfold.runtime.resample)."""

from __future__ import annotations

import numpy as np
import pytest

from onnxfold.runtime.fidelity import OutputFidelity, fidelity_value, model_fidelity
from onnxfold.runtime.r2 import template_spread
from onnxfold.runtime.resample import MIN_SAMPLES, draw_weights, low_value, resampled

LAYOUTS = [
    ((32, 5), 32),  # class scores or features [B, C]
    ((32, 7, 6), 32),  # [B, tokens, hidden]
    ((7, 32, 6), 32),  # time major [T, B, C]
    ((64, 3), 32),  # blocks: a fixed-batch model run sample by sample
    ((32,), 32),
    ((32, 1), 32),  # one unit
    ((32, 3, 8), 32),  # a map of 3 channels over 8 positions, each position offset alike: a template
]


def _pair(shape, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=shape) + 3 * rng.normal(size=shape[-1:])
    return a.astype(np.float32), (a + 0.3 * rng.normal(size=shape)).astype(np.float32)


def _rows(x: np.ndarray, index: np.ndarray, shape, n: int) -> np.ndarray:
    """The samples ``index`` (with repeats) of an output in one of :data:`LAYOUTS`."""
    if len(shape) == 3 and shape[1] == n and shape[0] != n:
        return x[:, index]
    if shape[0] != n:
        return x.reshape(n, shape[0] // n, *shape[1:])[index].reshape(-1, *shape[1:])
    return x[index]


@pytest.mark.parametrize("metric", ["r2", "cosine", "relerr"])
@pytest.mark.parametrize("shape,n", LAYOUTS)
def test_every_resample_is_the_metric_of_the_resampled_outputs(metric: str, shape, n: int) -> None:
    """Exactly, but for r2 around a template ([B, 3, 8] with an offset per position): a resample keeps
    the template of every sample (its own mean would take a pass per draw over the output's
    positions), which moves its r2 by a few thousandths."""
    a, b = _pair(shape)
    ones = np.ones((1, n))
    assert resampled(metric, a, b, n, ones)[0] == pytest.approx(fidelity_value(metric, a, b, n), abs=1e-9)
    weights = draw_weights(n, 6, seed=3)
    got = resampled(metric, a, b, n, weights)
    channels_first = len(shape) == 3 and shape[0] == n and shape[2] >= shape[1]  # as r2 takes templates
    rows = np.moveaxis(a, 1, 0).reshape(shape[1], -1) if channels_first else None
    template = rows is not None and not np.isnan(template_spread(rows.astype(np.float64), n)).all()
    assert template == (shape == (32, 3, 8))  # the one layout whose channels hold a template
    for w, value in zip(weights, got, strict=True):
        index = np.repeat(np.arange(n), w.astype(int))  # a sample drawn twice appears twice
        want = fidelity_value(metric, _rows(a, index, shape, n), _rows(b, index, shape, n), n)
        assert value == pytest.approx(want, abs=5e-3 if template and metric == "r2" else 1e-9)


@pytest.mark.parametrize("metric", ["r2", "cosine", "relerr"])
def test_zero_and_constant_outputs_resample_as_the_metric_scores_them(metric: str) -> None:
    zero, one = np.zeros((16, 3)), np.ones((16, 3))
    for a, b in ((zero, zero), (zero, one), (one, zero), (one, one)):
        want = fidelity_value(metric, a, b)
        assert resampled(metric, a, b, 16, draw_weights(16, 5)) == pytest.approx([want] * 5)
    moved = one.copy()
    moved[:4] = 0.2  # a saturated score moved on 4 samples: r2 reads the constant channel's relative error
    weights = draw_weights(16, 6, seed=1)
    for w, value in zip(weights, resampled(metric, one, moved, 16, weights), strict=True):
        index = np.repeat(np.arange(16), w.astype(int))
        assert value == pytest.approx(fidelity_value(metric, one[index], moved[index], 16), abs=1e-9)


def test_a_fidelity_that_rests_on_one_sample_has_a_low_bootstrap_value() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(32, 4))
    spread = a + rng.normal(size=a.shape) * 0.17  # the error on every sample alike
    one = a.copy()
    one[5] += 0.17 * np.sqrt(32) * np.array([1, -1, 1, -1])  # as much error, all of it on one sample
    for cand in (spread, one):
        assert 0.96 <= fidelity_value("r2", a, cand) <= 0.98
    low_spread, low_one = low_value("r2", a, spread, 32), low_value("r2", a, one, 32)
    assert low_spread >= 0.955 and low_one < 0.95
    assert OutputFidelity("y", "r2", fidelity_value("r2", a, spread), None, low_spread).meets(0.95)
    assert not OutputFidelity("y", "r2", fidelity_value("r2", a, one), None, low_one).meets(0.95)
    _, (out,) = model_fidelity({"y": a}, {"y": one}, {"y": "r2"}, 32)
    assert out.low == pytest.approx(low_one) and not out.meets(0.95)
    assert out.to_dict()["bootstrap_low"] == pytest.approx(low_one)


def test_counts_and_few_samples_are_not_resampled() -> None:
    a, b = _pair((32, 5))
    assert low_value("top1", a, b, 32) is None  # counts: the rule of succession instead
    few = MIN_SAMPLES - 1
    assert low_value("r2", a[:few], b[:few], few) is None
    assert low_value("r2", a, b, None) is None
    assert low_value("r2", a, b, 32) <= fidelity_value("r2", a, b) + 1e-12
    assert low_value("r2", a, a, 32) == 1.0  # an exact candidate is exact on every resample


def test_a_miss_on_the_bootstrap_says_why() -> None:
    from onnxfold.search.refusals import misses_text as _misses
    from onnxfold.search.target import Candidate

    shaky = Candidate(3, 0.96, 90, 0, 0.1, 0.0, [OutputFidelity("y", "r2", 0.96, None, 0.91)])
    assert not shaky.meets(0.95)
    assert _misses(shaky, 0.95) == (
        "; y: r2 0.9600 rests on a few samples (on resamples of them, 1 in 5 gives below 0.9100): "
        "more samples, or a lower target"
    )
    assert Candidate(3, 0.96, 90, 0, 0.1, 0.0, [OutputFidelity("y", "r2", 0.96, None, 0.955)]).meets(0.95)
