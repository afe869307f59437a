"""The runs a feed of samples takes on a model, and their outputs joined again: a model exported at
a fixed batch runs its samples batch by batch; any model at most so many samples a run."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def batch_runs(
    feed: Mapping[str, np.ndarray], fixed: int | None, most: int | None = None
) -> list[dict[str, np.ndarray]]:
    """The runs ``feed`` takes on a model exported at batch ``fixed`` (None: a free batch): batch by
    batch when it holds more samples than that; on a free batch runs of at most ``most`` samples
    (None: the feed whole)."""
    from onnxfold.folding.samples import chunked, sample_count, splittable

    size = fixed or most
    if size and splittable(feed) and sample_count(feed) > size:
        return chunked(feed, size)
    return [dict(feed)]


def joined_runs(outputs: list[list[np.ndarray]], fixed: int | None) -> list[np.ndarray]:
    """The outputs of the :func:`batch_runs` of a feed (per run, per output), joined per output."""
    if len(outputs) == 1:
        return outputs[0]
    return [_joined([run[i] for run in outputs], fixed) for i in range(len(outputs[0]))]


def _joined(parts: list[np.ndarray], batch: int) -> np.ndarray:
    """One output of runs of ``batch`` samples each (the last may hold fewer), joined along its sample
    axis: the second for a time-major or [layers, batch, hidden] output (rank 3 or more, the same
    shape in every run; or runs whose shapes differ in that axis alone), else the leading one (a
    detector's [boxes, ...] differs from run to run)."""
    from onnxfold.runtime.sequences import sample_axis

    first = np.shape(parts[0])
    if all(np.shape(p) == first for p in parts):
        second = len(first) >= 3 and sample_axis(first, batch) == "second"
    else:  # runs of unequal size (32 samples as 20 + 12): the axis where the shapes differ

        def only(axis: int) -> bool:
            rest = first[:axis] + first[axis + 1 :]
            return all(
                len(np.shape(p)) == len(first) and np.shape(p)[:axis] + np.shape(p)[axis + 1 :] == rest
                for p in parts
            )

        second = len(first) >= 2 and not only(0) and only(1)
    return np.concatenate(parts, axis=1 if second else 0)
