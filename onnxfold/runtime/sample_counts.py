"""Inputs that hold different numbers of samples, found where the model fixes every dim but the
samples': a streaming VAD's audio [32, 576] beside its state h [1, 30, 128] (the model reads [1, 576]
and [1, 1, 128]) read "array of shape (32, 576) does not match the model's (1, 576); give a multiple of
1 samples (e.g. 32)", which blamed the right array for the wrong reason."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def uneven_samples(specs: Sequence, arrays: Mapping[str, np.ndarray]) -> str:
    """ "the inputs hold different numbers of samples: a 32 (axis 0), h 30 (axis 1)" where each of
    two or more inputs differs from its static shape on exactly one axis (the samples') and those
    counts differ; '' otherwise."""
    counts = {}
    for spec in specs:
        arr = arrays.get(spec.name)
        shape = tuple(spec.shape or ())
        if arr is None or np.ndim(arr) != len(shape) or not shape:
            return ""
        differ = [i for i, (d, n) in enumerate(zip(shape, np.shape(arr), strict=True)) if d != n]
        if len(differ) != 1 or not isinstance(shape[differ[0]], (int, np.integer)):
            return ""
        counts[spec.name] = (int(np.shape(arr)[differ[0]]), differ[0])
    if len(counts) < 2 or len({n for n, _ in counts.values()}) < 2:
        return ""
    held = ", ".join(f"{name} {n} (axis {axis})" for name, (n, axis) in counts.items())
    return f"the inputs hold different numbers of samples: {held}; give every input the same samples"


__all__ = ["uneven_samples"]
