"""A search whose pick a later quantization loses falls back to the largest fold that keeps the target
once quantized (onnxfold.search.requantized; trial 187: a requantized BiLSTM's 68 s search wrote
nothing)."""

from __future__ import annotations

from types import SimpleNamespace

from onnxfold.runtime.fidelity import OutputFidelity
from onnxfold.search.requantized import requantized_pick
from onnxfold.search.target import Candidate


def _output(value: float) -> OutputFidelity:
    return OutputFidelity("y", "cosine", value)


def _search(reductions: list[float]) -> SimpleNamespace:
    """Candidates at these reductions, all meeting 0.99 in float; the largest chosen (its model held)."""
    cands = [
        Candidate(i + 1, 0.995, 100 - round(100 * r), 0, r, r, [_output(0.995)], sparsities={"g": r})
        for i, r in enumerate(reductions)
    ]
    chosen = max(cands, key=lambda c: c.reduction)
    chosen.model = "chosen-model"
    return SimpleNamespace(target=0.99, chosen=chosen, candidates=cands, input_params=100)


def _quantized_keeps_up_to(limit: float, calls: list):
    """A quantized measurement that keeps 0.99 where the fold removes at most ``limit``."""

    def measure(model):
        calls.append(model)
        value = 0.995 if model["r"] <= limit + 1e-9 else 0.95
        return value, [_output(value)]

    return measure


def _build(sparsities):
    return {"r": sparsities["g"]}, {"built": True}


def test_the_largest_fold_that_keeps_the_target_once_quantized_is_taken() -> None:
    result = _search([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    result.chosen.model = {"r": 0.6}
    calls: list = []
    note = requantized_pick(result, _build, _quantized_keeps_up_to(0.3, calls), lambda: "unchanged")
    assert result.chosen.reduction == 0.3 and result.chosen.model == {"r": 0.3}
    assert result.chosen.fidelity == 0.995 and result.chosen.data == {"built": True}
    assert "60.0% fewer parameters kept 0.9950 in float and 0.9500 quantized (below 0.99)" in note
    assert "30.0% fewer parameters" in note and len(calls) < 6  # by bisection, not one by one


def test_a_pick_that_keeps_the_target_quantized_stays_with_its_quantized_figure() -> None:
    result = _search([0.1, 0.2, 0.3])
    result.chosen.model = {"r": 0.3}
    chosen, calls = result.chosen, []
    assert requantized_pick(result, _build, _quantized_keeps_up_to(0.5, calls), lambda: "unchanged") == ""
    assert result.chosen is chosen and len(calls) == 1


def test_no_fold_that_keeps_the_target_once_quantized_keeps_the_model_whole() -> None:
    result = _search([0.1, 0.2])
    result.chosen.model = {"r": 0.2}
    note = requantized_pick(result, _build, _quantized_keeps_up_to(0.05, []), lambda: "unchanged")
    assert result.chosen == "unchanged" and "the model is kept whole" in note


def test_a_lost_target_after_dynamic_quantization_does_not_suggest_dynamic_mode() -> None:
    """Trial 187 was told "--requantize dynamic often keeps more than static" after dynamic mode lost it."""
    from onnxfold.passes.validate import _lost_by

    def record(mode: str) -> SimpleNamespace:
        return SimpleNamespace(name="quantize", stats={"mode": mode})

    assert "--requantize dynamic often keeps more" not in _lost_by("quantize", [record("dynamic")])
    assert "--requantize dynamic often keeps more" in _lost_by("quantize", [record("static")])


def test_a_time_limit_stops_the_quantized_checks_at_a_fold_known_to_keep_the_target() -> None:
    result = _search([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    result.chosen.model = {"r": 0.6}
    calls: list = []
    measure = _quantized_keeps_up_to(0.3, calls)
    note = requantized_pick(result, _build, measure, lambda: "unchanged", expired=lambda: len(calls) >= 2)
    assert len(calls) == 2 and "the time limit stopped the checks" in note
    assert result.chosen != "unchanged" and result.chosen.reduction <= 0.3  # one that kept it quantized
    result = _search([0.1, 0.2])
    result.chosen.model = {"r": 0.2}
    note = requantized_pick(
        result, _build, _quantized_keeps_up_to(0.0, []), lambda: "unchanged", lambda: True
    )
    assert result.chosen == "unchanged" and "stopped the checks before a fold that keeps it" in note
