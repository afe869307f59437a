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
