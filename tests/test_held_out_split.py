"""The held-out half of a search's samples is drawn, not every other sample."""

from __future__ import annotations

import numpy as np

from onnxfold.passes.search import split_samples
from onnxfold.runtime.padding import mark_padding, marked_padding


def test_samples_given_in_turn_by_class_land_in_both_halves() -> None:
    # images of two classes given in turn: every other sample held out one class whole
    labels = np.arange(32) % 2
    x = np.repeat(labels[:, None], 5, axis=1).astype(np.float32)
    fit, held = split_samples({"x": x}, seed=0)
    assert fit is not None and held is not None
    fitted = np.setdiff1d(np.arange(32), held)
    assert len(fitted) == 16 and len(held) == 16
    np.testing.assert_array_equal(fit["x"], x[fitted])
    assert set(labels[held]) == {0, 1} and set(labels[fitted]) == {0, 1}
    # the same seed draws the same halves; another draws others
    again = split_samples({"x": x}, seed=0)[1]
    np.testing.assert_array_equal(held, again)
    assert any(not np.array_equal(held, split_samples({"x": x}, seed=s)[1]) for s in (1, 2, 3))


def test_an_odd_count_fits_on_the_larger_half_and_none_split_below_eight() -> None:
    fit, held = split_samples({"x": np.zeros((9, 2), np.float32)})
    assert len(fit["x"]) == 5 and len(held) == 4
    assert split_samples({"x": np.zeros((7, 2), np.float32)}) == (None, None)


def test_padding_onnxfold_marked_follows_the_fitting_half() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 12, size=16)
    keep = np.arange(12)[None, :] < lengths[:, None]
    ids = mark_padding(np.where(keep, 5, 0).astype(np.int64), keep)
    fit, held = split_samples({"ids": ids, "n": np.full((16, 1), 2.0, np.float32)}, seed=4)
    fitted = np.setdiff1d(np.arange(16), held)
    got = marked_padding({"ids": fit["ids"]})
    assert got is not None
    np.testing.assert_array_equal(got, keep[fitted])
