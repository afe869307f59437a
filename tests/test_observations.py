"""Observations kept for auto's refit: a bounded, evenly spaced sample of the whole stream."""

from __future__ import annotations

import numpy as np
import pytest

from onnxfold.folding.sequential import Thinned


def stream(total: int, chunk: int) -> list[np.ndarray]:
    rows = np.arange(total, dtype=np.float64)[:, None] * np.ones((1, 3))
    return [rows[i : i + chunk] for i in range(0, total, chunk)]


@pytest.mark.parametrize("total,chunk", [(7, 3), (100, 7), (1000, 13), (4097, 250), (50_000, 999)])
def test_kept_rows_are_every_kth_of_the_stream_and_at_most_the_cap(total, chunk):
    cap = 100
    kept = Thinned(cap)
    largest = 0
    for part in stream(total, chunk):
        kept.add(part)
        largest = max(largest, kept.kept)
        assert kept.kept <= 2 * cap + chunk  # never more than twice the cap and one run's rows
    rows = kept.values()[:, 0].astype(int)
    assert len(rows) <= cap
    assert rows[0] == 0
    step = np.diff(rows)
    assert len(set(step.tolist())) <= 1  # evenly spaced over the whole stream
    if total <= cap:
        assert rows.tolist() == list(range(total))  # everything when it fits
    else:
        assert len(rows) >= cap // 2 and rows[-1] >= total - 2 * step[0]  # it reaches the stream's end
    assert largest <= 2 * cap + chunk


def test_memory_does_not_grow_with_the_stream():
    kept = Thinned(50)
    for part in stream(200_000, 1000):
        kept.add(part)
    assert sum(len(p) for p in kept.parts) <= 2 * 50 + 1000
    assert len(kept.values()) <= 50


@pytest.mark.parametrize("shape,axis", [((3, 6, 5, 7), 1), ((4, 9, 6), -1), ((2, 6), 1)])
def test_site_rows_come_in_bounded_slices_in_the_same_order(monkeypatch, shape, axis) -> None:
    """A site's float64 rows are made a slice of the leading axis at a time; together they are the
    rows of the whole tensor, in order (a long signal's site as float64 held gigabytes)."""
    import onnxfold.folding.moments as moments

    value = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    site = moments.Site("t", axis, 2, 2, 2)  # channels [2, 6) as 2 channels of 2 entries
    whole = np.concatenate(list(moments._observations(value, site)))
    monkeypatch.setattr(moments, "OBSERVATION_CHUNK", 4)  # at most one leading slice per part
    parts = list(moments._observations(value, site))
    leading = np.moveaxis(value, axis, -1).shape[0]
    assert len(parts) == leading and all(p.size * leading == whole.size for p in parts)
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    moved = np.moveaxis(value, axis, -1)[..., 2:6].astype(np.float64).reshape(-1, 2, 2)
    np.testing.assert_array_equal(whole, np.swapaxes(moved, 1, 2).reshape(-1, 2))
