"""Random values for one model input, by its dtype and name: the draws validation, the data-free proxy and
calibration make where the user gave no samples (:func:`~onnxfold.runtime.inputs.make_inputs` sizes them)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class FixedValue(NamedTuple):
    """One value for every element of an input's random samples (``--input-value NAME=V``)."""

    value: float

    def draw(
        self, dtype: np.dtype, shape: tuple[int, ...], rng: np.random.Generator | None = None
    ) -> np.ndarray:
        return np.full(shape, self.value, dtype=dtype)


class ValueRange(NamedTuple):
    """Values drawn uniformly in [low, high] for an input's random samples (``--input-value
    NAME=LO..HI``): the range the model reads (log-mel features about -10..3, pixels 0..1), where
    N(0, 1) draws lie outside it. A pitch estimator's log-mels, at mean -4.9, read N(0, 1) as another
    signal: its data-free first step measured 0.92 and a fold its judge kept at 0.99 was warned of."""

    low: float
    high: float

    def draw(self, dtype: np.dtype, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        if np.dtype(dtype).kind in "iu":
            return rng.integers(int(np.ceil(self.low)), int(np.floor(self.high)) + 1, size=shape).astype(
                dtype
            )
        return rng.uniform(self.low, self.high, size=shape).astype(dtype)


def value_draw(value: float | tuple[float, float]) -> FixedValue | ValueRange:
    """The draw ``--input-value`` gives: one value, or a range (low, high)."""
    return ValueRange(*map(float, value)) if isinstance(value, (tuple, list)) else FixedValue(float(value))


#: the spread of random int16 audio: a tenth of full scale. Drawn in [0, 4) as other integers,
#: MarbleNet's int16 audio was digital silence, and no fold of its voice detector could be judged
PCM_SCALE = 3276.7


def random_array(name: str, dtype: np.dtype, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Floats ~ N(0, 1), a float ``*mask*`` [N, L] 1; booleans a padding mask (:func:`prefix_mask`); integers by name: ``*mask*`` 1,
    ``token_type``/``segment`` 0, ``position*`` 0…L−1, ``*ids*`` [0, 100), uint8 image bytes [0, 256),
    int16 PCM audio ~ N(0, :data:`PCM_SCALE`), others [0, 4); strings random lowercase words."""
    lname = name.lower()
    if dtype.kind == "f" and "mask" in lname and len(shape) == 2:  # a float padding mask [N, L]: 1 a
        return np.ones(shape, dtype=dtype)  # token (natasha's NER tagger read N(0, 1) there, trial 201)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return prefix_mask(shape, rng)
    if dtype.kind in "iu":
        if "mask" in lname:
            return np.ones(shape, dtype=dtype)
        if "token_type" in lname or "segment" in lname:
            return np.zeros(shape, dtype=dtype)
        if "position" in lname and len(shape) >= 1:
            return np.broadcast_to(np.arange(shape[-1], dtype=dtype), shape).copy()
        if "ids" in lname:
            return rng.integers(0, 100, size=shape).astype(dtype)
        if dtype == np.uint8:  # raw image bytes
            return rng.integers(0, 256, size=shape).astype(dtype)
        if dtype == np.int16:  # PCM audio samples, at a tenth of full scale (about -20 dBFS, as speech)
            return np.clip(rng.normal(0.0, PCM_SCALE, size=shape), -32768, 32767).astype(dtype)
        return rng.integers(0, 4, size=shape).astype(dtype)
    if dtype.kind in "OUS":  # a string input read by no op that lists its strings
        from onnxfold.runtime.string_inputs import random_words

        return random_words(shape, rng)
    raise ValueError(f"cannot make random values for input {name!r} of dtype {dtype}")


def prefix_mask(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A boolean input as a padding mask: along the last axis, True for a random number k of leading
    positions (1 ≤ k < n) and False after them, so that some positions are valid under either
    convention (True = keep, or True = padding, as torch's key_padding_mask). All True, as before,
    masked every position of a romanizer's encoder under the second: its output did not depend on
    the weights, and a fold that changed 6.7% of its results measured exact."""
    if not shape or shape[-1] < 2:
        return np.ones(shape, dtype=bool)
    n = shape[-1]
    k = rng.integers(1, n, size=shape[:-1])
    return np.arange(n) < k[..., None]


def set_input_values(model, values: dict[str, float | tuple[float, float]] | None) -> None:
    """``model.input_values`` from ``values`` (``--input-value``: a value, or a range (low, high);
    None or {}: as they are); a one-line ValueError for a name the model's inputs lack."""
    from onnxfold.runtime.inputs import input_specs

    if not values:
        return
    names = [s.name for s in input_specs(model)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"--input-value names {unknown}, not inputs of the model (its inputs: {names})")
    model.input_values = {
        k: tuple(map(float, v)) if isinstance(v, (tuple, list)) else float(v) for k, v in values.items()
    }
