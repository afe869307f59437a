"""r2 on an output whose features lie on a later axis than 1, after axes of 1 (a channels-last export's
embedding [N, 1, 1, D]): its D features are its channels, as they are for [N, D]."""

from __future__ import annotations

import numpy as np
import pytest

from onnxfold.runtime.fidelity import model_fidelity, output_metrics
from onnxfold.runtime.r2 import r2, r2_on
from onnxfold.runtime.resample import low_value


def _features(n: int = 48, d: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features of very different scales, each moved by the same noise: the small ones lose most."""
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=(n, d)) * np.geomspace(0.05, 10.0, d)
    return ref, ref + 0.5 * rng.normal(size=(n, d))


@pytest.mark.parametrize("shape", [(1, 1, 96), (1, 96), (1, 96, 1), (96, 1, 1)])
def test_features_beside_axes_of_one_are_the_channels(shape) -> None:
    ref, cand = _features()
    per_feature = r2(ref, cand)
    pooled = r2_on(ref, cand, None)
    assert per_feature < pooled - 0.1  # the scale of the large features hides the small ones' loss
    a, b = ref.reshape((48, *shape)), cand.reshape((48, *shape))
    assert r2(a, b) == pytest.approx(per_feature, abs=1e-12)
    assert low_value("r2", a, b, 48) == pytest.approx(low_value("r2", ref, cand, 48), abs=1e-12)


def test_a_searchs_fidelity_of_a_channels_last_embedding_counts_its_features() -> None:
    ref, cand = _features(seed=1)
    reference = {"emb": ref.reshape(48, 1, 1, 96).astype(np.float32)}
    candidate = {"emb": cand.reshape(48, 1, 1, 96).astype(np.float32)}
    metrics = output_metrics(reference, samples=48)
    assert metrics == {"emb": "r2"}
    value, per = model_fidelity(reference, candidate, metrics, samples=48)
    assert value == pytest.approx(r2(ref, cand), abs=1e-6)
    assert value < r2_on(ref, cand, None) - 0.1


def test_a_map_of_one_channel_is_still_one_channel() -> None:
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(8, 1, 12, 16))
    cand = ref + 0.3 * rng.normal(size=ref.shape)
    assert r2(ref, cand) == pytest.approx(r2_on(ref, cand, 1), abs=1e-12)
