"""Whether an output's argmax is one class nearly everywhere: then counting agreeing argmaxes cannot
see a change until everything flips (:mod:`onnxfold.runtime.fidelity` takes r2 there, and
:mod:`onnxfold.runtime.exercised` says the inputs exercised none of its decisions)."""

from __future__ import annotations

import numpy as np

#: share of the positions from which one argmax class counts as "one class everywhere"
ONE_CLASS_SHARE = 0.99


def dominant_class(ref: np.ndarray) -> tuple[int, float]:
    """(the class most often the argmax, the share of positions where it is)."""
    top = np.asarray(ref).argmax(axis=-1).ravel()
    counts = np.bincount(top)
    return int(counts.argmax()), float(counts.max() / top.size)


def one_class(ref: np.ndarray) -> bool:
    """Whether the reference's argmax is one class at every position, or at all but fewer than 1% of
    them (:data:`ONE_CLASS_SHARE`): then agreement of argmaxes cannot see a change until everything
    flips, and ``auto`` takes r2 instead. Random inputs make a recogniser read blank lines and a
    classifier often answer one class: PP-OCRv4's recogniser read noise as blank at 99.8% of its
    1,280 positions, every line of a fold agreed, and the fold kept 0.906 of real lines (32 class-score
    samples are one class only when all 32 agree, as before)."""
    ref = np.asarray(ref)
    if ref.ndim < 1 or ref.size <= ref.shape[-1]:  # one position or none
        return False
    return dominant_class(ref)[1] >= ONE_CLASS_SHARE
