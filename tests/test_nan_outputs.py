"""Outputs with holes: a value the original writes as NaN holds nothing (caustic-nmr's shift model
writes NaN for a residue without the atom). Such positions are left out of continuous fidelities
and of validation's figures; a candidate that writes NaN where the original has a value fails."""

from __future__ import annotations

import numpy as np

from onnxfold.runtime.compare import _compare_one
from onnxfold.runtime.fidelity import auto_metric, fidelity_value, output_metrics
from onnxfold.runtime.resample import low_value


def _shifts(seed: int = 0) -> np.ndarray:
    """[residues, 6] chemical shifts: H, HA, N, CA, CB, C' in ppm, NaN where an atom is missing."""
    rng = np.random.default_rng(seed)
    centre = np.array([8.3, 4.4, 120.0, 56.0, 38.0, 175.0])
    out = centre + rng.standard_normal((64, 6)) * np.array([0.5, 0.4, 4.0, 2.0, 3.0, 1.5])
    out[rng.random((64, 6)) < 0.1] = np.nan
    return out.astype(np.float32)


def test_shifts_with_holes_are_not_class_scores() -> None:
    ref = _shifts()
    assert auto_metric("pred_mean", ref) == "r2"
    assert output_metrics({"pred_mean": ref}, samples=64) == {"pred_mean": "r2"}


def test_holes_are_left_out_and_a_lost_value_fails() -> None:
    ref = _shifts()
    assert fidelity_value("r2", ref, ref.copy(), 64) == 1.0
    rng = np.random.default_rng(1)
    noisy = ref + rng.standard_normal(ref.shape).astype(np.float32) * np.array(
        [0.25, 0.2, 2, 1, 1.5, 0.75], np.float32
    )
    for metric in ("r2", "cosine", "relerr"):
        value = fidelity_value(metric, ref, noisy, 64)
        assert np.isfinite(value) and 0.0 <= value < 1.0, (metric, value)
        low = low_value(metric, ref, noisy, 64)
        assert low is not None and value - 0.2 < low <= value + 1e-9, (metric, low, value)
    assert 0.55 < fidelity_value("r2", ref, noisy, 64) < 0.9  # noise at half each column's spread: 0.75
    lost = ref.copy()
    lost[np.isfinite(ref).nonzero()[0][0], np.isfinite(ref).nonzero()[1][0]] = np.nan
    assert fidelity_value("r2", ref, lost, 64) == 0.0
    assert low_value("r2", ref, lost, 64) == 0.0


def test_validation_figures_leave_common_holes_out() -> None:
    ref = _shifts()
    m = _compare_one("pred_mean", ref, ref + np.float32(0.01))
    assert np.isfinite(m.max_abs) and abs(m.max_abs - 0.01) < 1e-3 and m.cosine > 0.999
    assert m.top1_agreement is None  # no class scores


def test_an_output_that_is_nan_everywhere_in_both_bounds_nothing() -> None:
    """A model with a NaN weight writes NaN everywhere: its fidelity read 1 (nothing to compare) while
    its bootstrap lower value read 0, and the search refused even the unchanged model ("1 in 5 gives
    below 0.0000"). With no value left, there is nothing to bound."""
    ref = np.full((32, 4), np.nan, np.float32)
    assert fidelity_value("r2", ref, ref.copy(), samples=32) == 1.0
    assert low_value("r2", ref, ref.copy(), 32) is None
    assert low_value("cosine", ref, ref.copy(), 32) is None
    partly = _shifts()
    assert low_value("r2", partly, partly + 0.01, 64) is not None  # holes in part: still bounded


def test_nan_from_the_original_on_given_samples_is_said(caplog) -> None:
    """A fold on samples for which the original itself gives NaN (chython's mapper on samples padded
    into its -inf row: 31 of 32) measured what was left without a word; the search now says on how
    many samples, and that those values are left out."""
    import logging

    import onnx
    from harness import Net, rnd

    import onnxfold
    from onnxfold.runtime.exercised import holes_note

    rng = np.random.default_rng(0)
    net = Net({"w1": rnd(rng, 4, 16), "w2": rnd(rng, 16, 3)})
    x = net.input("x", ["N", 4])
    y = net("MatMul", net("Relu", net("MatMul", x, "w1")), "w2")
    model = net.model(y, net("Log", x))
    samples = rng.uniform(0.5, 2.0, (32, 4)).astype(np.float32)
    samples[:5, 1] = -1.0  # Log(-1): NaN on 5 samples
    with caplog.at_level(logging.WARNING):
        onnxfold.fold(onnx.load_from_string(model.SerializeToString()), inputs=samples, round_to=1)
    said = [r.getMessage() for r in caplog.records if "NaN or inf" in r.getMessage()]
    assert any("on 5 of 32 samples: those values are left out" in m for m in said), said
    assert holes_note("y", np.ones((4, 3)), 4) == ""
    assert "everywhere" in holes_note("y", np.full((4, 3), np.nan), 4)
    assert "at 50.0% of its values" in holes_note("y", np.array([1.0, np.nan]), None)
