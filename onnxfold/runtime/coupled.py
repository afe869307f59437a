"""Whether a model's batch rows are independent samples, so that a feed may be cut into runs.

onnxfold cuts a feed of many samples into runs (a heavy model's MAC limit), takes its leading
samples for a sensitivity estimate and holds every other one out. That is right only where each
row of the batch is one sample that the model reads alone. Some models read rows together: ICLabel
(mne-icalabel) takes every EEG component four times, as four blocks of N rows, and averages rows i,
i + N, i + 2N and i + 3N, so a run of 98 of its 128 rows failed and any cut pairs the wrong rows; a
BatchNormalization left in training mode mixes every row into every other. Such a feed is run whole.

The test runs the first two samples together and the first alone: the rows are coupled when the
pair fails to run, or when an output that holds the samples on its leading axis in both runs gives
the first sample other values in the pair than alone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: Tolerance of "the same values" for the first sample alone and in a pair, relative to the largest
#: value of that output: kernels may pick another blocking for another batch size, so float results
#: differ in their last bits, and not in proportion to each value: afis's LEADER fingerprint model
#: writes directions in radians (largest π) that moved by 3.1e-4 near 0, and was run whole as coupled
#: (5 GB, 72 of 73 sensitivity levels skipped). Rows read together move by much more: ICLabel's
#: averaged blocks, a batch's mean taken out.
RTOL = 1e-3
ATOL = 1e-5


def coupled_rows(session: Any, names: Sequence[str], feed: Mapping[str, np.ndarray]) -> str:
    """Why the samples of ``feed`` cannot be run apart by ``session`` ('' when they can, when the
    feed holds fewer than two samples or cannot be cut at all, or when the model fixes its batch)."""
    from onnxfold.folding.samples import fixed_batch, sample_count, splittable, take

    if fixed_batch(session) or not splittable(feed) or sample_count(feed) < 2:
        return ""  # a fixed batch (a batch-of-one view of a model without a batch axis) runs batch by batch
    try:
        pair = session.run(list(names), take(feed, slice(0, 2)))
    except Exception as exc:
        logger.debug("a run of 2 samples: %s", exc)
        return "a run of its first 2 samples alone fails"
    try:
        alone = session.run(list(names), take(feed, slice(0, 1)))
    except Exception as exc:
        logger.debug("a run of 1 sample: %s", exc)
        return "a run of its first sample alone fails"
    for name, two, one in zip(names, pair, alone, strict=True):
        two, one = np.asarray(two), np.asarray(one)
        if two.ndim == 0 or one.ndim == 0 or two.shape[0] != 2 or one.shape[0] != 1:
            continue  # no leading sample axis here (a detector's boxes, a state [layers, batch, ...])
        if two.shape[1:] != one.shape[1:] or two.dtype.kind not in "fc":
            continue
        finite = np.isfinite(one)
        scale = float(np.max(np.abs(one[finite]))) if finite.any() else 0.0
        moved = np.abs(two[:1].astype(np.float64) - one)
        moved = np.where(np.isnan(two[:1]) & np.isnan(one), 0.0, moved)  # NaN in both is the same
        if not np.all(moved <= RTOL * scale + ATOL):  # NaN in one only fails too
            return f"its output {name!r} for the first sample changes when a second sample runs beside it"
    return ""


def feed_runs(
    model: Any, session: Any, names: Sequence[str], feed: Mapping[str, np.ndarray], cut: bool = False
) -> tuple[int | None, str]:
    """How ``session`` runs ``feed`` of ``model``: (samples per run, None for the feed whole; why its
    rows are coupled, '' when they are not). A heavy model's feed is cut into runs of
    :func:`~onnxfold.folding.samples.run_limit` samples unless its rows are coupled; the test runs
    only where the feed would be cut, by that limit or, with ``cut``, by the caller (a held-out
    half, one timed sample)."""
    from onnxfold.folding.samples import run_limit

    most = run_limit(model, feed)
    if not (most or cut):
        return most, ""
    why = coupled_rows(session, names, feed)
    return (None if why else most), why
