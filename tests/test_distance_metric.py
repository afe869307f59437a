"""``--metric distance``: how well the cosine distances between an output's vectors are kept.

Google's speech-embedding CNN is compared by DTW over its frames against enrolled keywords at a fixed
threshold: folds that kept cosine 0.992 and r2 0.9925 to the original shrank its distances, and a
wake-word judge's false accepts rose from 20% to 37–80%. Cosine to the original cannot see a shift
that every vector shares; the distances between vectors can."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from onnxfold.cli.commands import main
from onnxfold.models import bundled_model
from onnxfold.runtime.embeddings import MOST_ROWS, distance_agreement
from onnxfold.runtime.fidelity import fidelity_value, parse_metric

LENET = bundled_model("lenet5.onnx")


def _pairwise(v: np.ndarray) -> np.ndarray:
    """1 − cos between rows, written here from the definition (loops, no matrix product)."""
    n = len(v)
    d = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                d[i, j] = 1 - v[i] @ v[j] / (np.linalg.norm(v[i]) * np.linalg.norm(v[j]))
    return d


def test_a_shared_shift_keeps_the_cosine_and_loses_the_distances() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((40, 16)) + 4.0  # vectors around a common direction, as frame embeddings
    b = a + 0.8 * a.mean(axis=0)  # every vector pulled further along it: all distances shrink
    da, db = _pairwise(a), _pairwise(b)
    expected = 1 - np.linalg.norm(db - da) / np.linalg.norm(da)
    assert fidelity_value("distance", a, b) == pytest.approx(expected, rel=1e-9)
    assert expected < 0.8 and fidelity_value("cosine", a, b) > 0.99  # what cosine does not see
    assert fidelity_value("distance", a, a.copy()) == 1.0
    assert fidelity_value("distance", a, 3.0 * a) == pytest.approx(1.0)  # a scale is no distance


def test_frames_are_vectors_and_many_are_spaced_evenly() -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((4, 3, 1, 8))  # [N, T, 1, D]: 12 frame vectors
    b = a + 0.1 * rng.standard_normal(a.shape)
    rows_a, rows_b = a.reshape(-1, 8), b.reshape(-1, 8)
    expected = 1 - np.linalg.norm(_pairwise(rows_b) - _pairwise(rows_a)) / np.linalg.norm(_pairwise(rows_a))
    assert distance_agreement(a, b) == pytest.approx(expected, rel=1e-9)
    many = rng.standard_normal((MOST_ROWS * 2 - 1, 4))
    picked = many[::2]  # 0, 2, … 2·MOST_ROWS − 2: MOST_ROWS of them evenly spaced, both ends
    noisy = many + 0.05 * rng.standard_normal(many.shape)
    expected = 1 - np.linalg.norm(_pairwise(noisy[::2]) - _pairwise(picked)) / np.linalg.norm(
        _pairwise(picked)
    )
    assert distance_agreement(many, noisy) == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="at least two values"):
        distance_agreement(np.ones((4, 1)), np.ones((4, 1)))
    assert parse_metric("distance") == ("distance", {})


def test_a_search_on_distance_writes_a_model_that_keeps_them(tmp_path: Path, capsys) -> None:
    from onnxfold.models.digits import load_digits_split

    x = tmp_path / "x.npy"
    samples = load_digits_split()[2][:32]
    np.save(x, samples)
    out = tmp_path / "o.onnx"
    asked = "--metric distance --min-fidelity 0.97 --inputs".split()
    assert main(["fold", str(LENET), "-o", str(out), *asked, str(x)]) == 0
    text = capsys.readouterr().out
    assert "distance" in text.split("fidelity per output:")[1].splitlines()[0], text

    def logits(path: Path) -> np.ndarray:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return np.concatenate([session.run(None, {name: samples[i : i + 1]})[0] for i in range(len(samples))])

    ref, got = logits(LENET), logits(out)
    kept = 1 - np.linalg.norm(_pairwise(got) - _pairwise(ref)) / np.linalg.norm(_pairwise(ref))
    assert kept >= 0.97, kept


def test_one_value_a_sample_is_judged_by_r2_as_a_count_would_be() -> None:
    """A [B, 1] output holds no vectors to measure distances between: --metric distance stopped the
    search with "pass 'search' failed: ValueError"; it takes r2 there, as top1 does."""
    from onnxfold.runtime.fidelity import output_metrics

    reference = {"y": np.ones((8, 1), np.float32), "e": np.ones((8, 16), np.float32)}
    assert output_metrics(reference, "distance") == {"y": "r2", "e": "distance"}
    assert output_metrics(reference, "auto,y=distance")["y"] == "r2"
