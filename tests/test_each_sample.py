"""An image-like output's r2 on each sample alone, beside the pooled figure: a terrain generator's
search read r2 0.9805 pooled over 32 terrains, whose differences fill the spread; each terrain alone
averaged 0.921 (the lowest 0.658), and a judge of new terrains read 0.761."""

from __future__ import annotations

import numpy as np
import pytest

from onnxfold.runtime.fidelity import each_sample, model_fidelity
from onnxfold.search.result_text import per_output


def _by_hand(a: np.ndarray, b: np.ndarray) -> float:
    """1 − Σ(a − b)² / Σ(a − ā)² over one single-channel sample, from the definition."""
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return max(0.0, 1 - ((a - b) ** 2).sum() / ((a - a.mean()) ** 2).sum())


def test_each_sample_alone_sees_what_the_pooled_spread_hides() -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((6, 1, 8, 8)) + 10 * np.arange(6)[:, None, None, None]  # far apart
    cand = ref + 0.5 * rng.standard_normal(ref.shape)  # half of each terrain's own spread
    _, (out,) = model_fidelity({"h": ref}, {"h": cand}, {"h": "r2"}, samples=6)
    alone = [_by_hand(ref[i], cand[i]) for i in range(6)]
    assert out.value > 0.99  # pooled: the samples' differences fill the spread
    assert out.each == pytest.approx((np.mean(alone), np.min(alone)), rel=1e-9)
    assert out.each[0] < 0.85
    assert "(each sample alone: mean" in per_output(out)
    assert each_sample(ref[:, 0], cand[:, 0], 6) == pytest.approx(out.each, rel=1e-9)  # [N, H, W] alike


def test_only_image_like_outputs_get_it() -> None:
    rng = np.random.default_rng(1)
    scores = rng.standard_normal((8, 10))
    assert each_sample(scores, scores + 0.1, 8) is None  # a vector a sample
    maps = rng.standard_normal((8, 16, 4, 4))
    assert each_sample(maps, maps + 0.1, 8) is None  # 16 channels: class maps or features
    assert each_sample(maps[:1, :1], maps[:1, :1], 1) is None  # one sample: the pooled figure is it
    assert each_sample(np.float32(1.0), np.float32(0.9), 32) is None  # a scalar output (it raised)
    scores = rng.random((8, 300, 2))  # a detector's anchors' scores: rows, not a picture (RetinaFace)
    assert each_sample(scores, scores + 0.01 * rng.standard_normal(scores.shape), 8) is None
    assert each_sample(maps[:, :1], maps[:, :1] + 0.1, 8) is None  # a 4×4 map: too small a picture


def test_a_signal_is_judged_sample_by_sample_too() -> None:
    """WaveDenoiser's seismograms [N, 3, 5700]: pooled r2 0.9777, the lowest record 0.745. A signal
    [N, C ≤ 4, T] gets each record's r2, its channels on axis 1, as an image's."""
    rng = np.random.default_rng(4)
    ref = rng.standard_normal((6, 3, 512)) * (1 + 10 * np.arange(6))[:, None, None]  # loud and quiet
    cand = ref + 0.5 * rng.standard_normal(ref.shape)  # one noise: it drowns the quiet records
    _, (out,) = model_fidelity({"s": ref}, {"s": cand}, {"s": "r2"}, samples=6)
    assert out.value > 0.99 and out.each is not None and out.each[1] < 0.9
    by_hand = [np.mean([_by_hand(ref[i, c], cand[i, c]) for c in range(3)]) for i in range(6)]
    assert out.each == pytest.approx((np.mean(by_hand), np.min(by_hand)), rel=1e-9)
    short = rng.standard_normal((6, 3, 64))  # 64 steps: rows of a few features, not a signal
    assert each_sample(short, short + 0.1, 6) is None


def test_a_target_is_met_on_each_sample_alone_too() -> None:
    """The gate: pooled r2 above the target no longer passes an image-like output whose samples alone
    average below it, and the miss says which figure fell short."""
    from onnxfold.search.misses import shortfall

    rng = np.random.default_rng(2)
    ref = rng.standard_normal((6, 1, 8, 8)) + 10 * np.arange(6)[:, None, None, None]
    cand = ref + 0.5 * rng.standard_normal(ref.shape)
    _, (out,) = model_fidelity({"h": ref}, {"h": cand}, {"h": "r2"}, samples=6)
    assert out.value >= 0.99 and out.each[0] < 0.9
    assert not out.meets(0.95)
    assert out.meets(min(out.each[0], out.value) - 1e-9)

    class Candidate:  # what shortfall reads of a search's candidate
        outputs, unseen, fidelity = [out], [], out.value

    why = shortfall(Candidate(), 0.95)
    assert f"{out.value:.4f} pooled" in why and f"{out.each[0]:.4f} on each sample alone" in why
    close = ref + 0.05 * rng.standard_normal(ref.shape)  # a fold that keeps each sample: it passes
    _, (kept,) = model_fidelity({"h": ref}, {"h": close}, {"h": "r2"}, samples=6)
    assert kept.each[0] > 0.99 and kept.meets(0.99)


def test_a_map_judged_by_its_regions_keeps_the_pooled_guard() -> None:
    """PP-OCRv4's detector map is judged by mask+r2: gated on each page alone its search kept 44.1% at
    box F1 0.997 where the pooled guard kept 65.7% at 0.994. Only an image judged by r2 alone is
    gated sample by sample."""
    rng = np.random.default_rng(3)
    ref = 1 / (
        1 + np.exp(-(rng.standard_normal((6, 1, 8, 8)) * 3 + 4 * np.arange(6)[:, None, None, None] - 10))
    )
    cand = np.clip(ref + 0.05 * rng.standard_normal(ref.shape), 0, 1)
    _, parts = model_fidelity({"h": ref}, {"h": cand}, {"h": "mask+r2"}, samples=6)
    assert [o.metric for o in parts] == ["mask", "r2"] and all(o.each is None for o in parts)
    _, (alone,) = model_fidelity({"h": ref}, {"h": cand}, {"h": "r2"}, samples=6)
    assert alone.each is not None


def test_a_channels_last_map_is_read_by_its_channels_and_sample_by_sample() -> None:
    """s2super's [N, 64, 64, 2] (a sharpened band, and its confidence at a tenth of the spread; a
    tf2onnx export keeps channels last): r2 took its 64 rows as channels, each pooling both bands, and
    read 0.9799 for a fold that kept R² 0.795 of the confidence (trial 200). Its channels are now the
    last axis, each judged alone (r2 the mean of the two, by hand), each sample alone too, and the
    default target of a search on such outputs is the regression's 0.99."""
    from onnxfold.runtime.r2 import channels_last_map, r2
    from onnxfold.search.regression import value_outputs, value_shape

    rng = np.random.default_rng(0)
    band = rng.normal(0.3, 0.1, (8, 64, 64))
    confidence = rng.normal(0.5, 0.01, (8, 64, 64))
    ref = np.stack([band, confidence], axis=-1)
    cand = ref.copy()
    cand[..., 1] = rng.normal(0.5, 0.01, (8, 64, 64))  # the confidence lost, the band kept
    assert channels_last_map(ref.shape) and not channels_last_map((8, 2, 64, 64))
    assert not channels_last_map((8, 256, 4, 4)) and not channels_last_map((8, 3, 64, 3))
    by_hand = np.mean([_by_hand(ref[..., c], cand[..., c]) for c in range(2)])
    assert r2(ref, cand) == pytest.approx(by_hand, abs=1e-9) and r2(ref, cand) < 0.55
    first = np.moveaxis(ref, 3, 1), np.moveaxis(cand, 3, 1)
    assert each_sample(ref, cand, 8) == pytest.approx(each_sample(*first, 8))
    _, (out,) = model_fidelity({"y": ref}, {"y": cand}, {"y": "r2"}, samples=8)
    assert out.value == pytest.approx(by_hand, abs=1e-9) and out.each is not None
    assert value_shape((32, 64, 64, 2)) and value_outputs({"y": "r2"}, {"y": ref}) == ["y"]
