"""Uniform rivals of a search's pick (onnxfold.search.uniform).

sleepecg's staging GRU under --target-params 0.3 --inputs: the path's 31.4% measured top1 0.8607,
where every group at 0.3 removed 36.2% at 0.889. A uniform candidate that does better is taken."""

from __future__ import annotations

import numpy as np
import pytest

import onnxfold
import onnxfold.search.candidates as candidates
from onnxfold.models import bundled_model
from onnxfold.search.sensitivity import GroupCurve
from onnxfold.search.target import Candidate
from onnxfold.search.uniform import MEASURED, uniform_rival


class _Path:
    def __init__(self, curves: list[GroupCurve]) -> None:
        self.curves = curves

    def __len__(self) -> int:
        return 10


class _Limit:
    def __init__(self) -> None:
        self.runs = 0

    def timed(self, run):
        self.runs += 1
        return run()

    def expired(self) -> bool:
        return False


def _curves() -> list[GroupCurve]:
    a = GroupCurve("a", 8, [0.1, 0.2], [1.0, 0.99], [1, 2], params_per_channel=10.0)
    b = GroupCurve("b", 8, [0.1, 0.2], [1.0, 0.99], [1, 2], params_per_channel=10.0)
    never = GroupCurve("never", 8, [0.1, 0.2], [0.0, 0.0], [1, 2], params_per_channel=10.0)
    never.unmeasured.extend([0.1, 0.2])  # the time limit left it without a level measured
    return [a, b, never]


def _fake(monkeypatch, fidelity_at, built: list) -> None:
    """measured(): a candidate removing as much as its sparsity, the model standing for its allocation."""

    def measured(steps, pair, evaluator, base, shapes=None):
        allocation = pair[0]
        built.append(allocation)
        level = max(allocation.values())
        return Candidate(steps, 1.0, 100, 100, level, level, model=allocation)

    monkeypatch.setattr(candidates, "measured", measured)

    class Evaluator:
        last_unseen: list = []

        def __call__(self, allocation):
            return fidelity_at(max(allocation.values())), []

    return Evaluator()


def _rival(evaluator, chosen: Candidate, mode: str, target: float, cap: float = 0.5, limit=None, tried=None):
    """uniform_rival on :func:`_curves`, every build the allocation itself."""
    limit = limit if limit is not None else _Limit()
    tried = tried if tried is not None else {}
    args = (lambda alloc: (alloc, {}), evaluator, (None, None), chosen, True, mode, target, limit, tried)
    return uniform_rival(_Path(_curves()), cap, *args)


def test_a_fidelity_target_takes_the_largest_uniform_level_that_meets_it(monkeypatch) -> None:
    built: list = []
    evaluator = _fake(monkeypatch, lambda s: 1.0 - s / 4.5, built)  # meets 0.9 up to 0.45
    chosen = Candidate(4, 0.93, 100, 100, 0.32, 0.1)
    limit, tried = _Limit(), {}
    rival = _rival(evaluator, chosen, "min_fidelity", 0.9, limit=limit, tried=tried)
    assert rival is not None and rival.reduction == pytest.approx(0.4) and rival.meets(0.9)
    assert rival.allocation == {"a": 0.4, "b": 0.4}  # the group never measured stays whole
    assert limit.runs <= MEASURED and all(c.measured for c in tried.values())
    measured = [max(c.allocation.values()) for c in tried.values()]
    assert all(level > chosen.reduction for level in measured)  # levels removing no more: built alone
    assert any(max(a.values()) <= chosen.reduction for a in built)  # ... and built they were
    capped = _rival(evaluator, Candidate(4, 0.93, 100, 100, 0.12, 0.1), "min_fidelity", 0.9, cap=0.2)
    assert capped is not None and max(capped.allocation.values()) == 0.2  # no group past its cap


def test_no_uniform_rival_where_none_meets_or_the_path_took_no_step(monkeypatch) -> None:
    chosen = Candidate(4, 0.93, 100, 100, 0.12, 0.1)
    assert _rival(_fake(monkeypatch, lambda s: 0.5, []), chosen, "min_fidelity", 0.9) is None
    whole, limit = Candidate(0, 1.0, 100, 100, 0.0, 0.0), _Limit()
    assert _rival(_fake(monkeypatch, lambda s: 1.0, []), whole, "min_fidelity", 0.9, limit=limit) is None
    assert limit.runs == 0


@pytest.mark.parametrize("uniform_fidelity,taken", [(0.889, True), (0.80, False)])
def test_a_budget_takes_the_uniform_level_reaching_it_where_it_measures_higher(
    monkeypatch, uniform_fidelity: float, taken: bool
) -> None:
    chosen, limit = Candidate(7, 0.8607, 100, 100, 0.314, 0.2), _Limit()
    rival = _rival(
        _fake(monkeypatch, lambda s: uniform_fidelity, []), chosen, "target_params", 0.3, 0.9, limit
    )
    assert limit.runs == 1  # one measurement: the level reaching the budget
    if taken:
        assert rival is not None and rival.reduction >= 0.3 and rival.fidelity == uniform_fidelity
    else:
        assert rival is None


def test_the_search_reports_the_uniform_allocation_it_took(monkeypatch) -> None:
    import onnxfold.search.target as target

    samples = np.random.default_rng(0).standard_normal((16, 1, 8, 8)).astype(np.float32)
    seen = {}

    def rival(path, cap, build, evaluator, counted, chosen, met, mode, goal, limit, tried):
        allocation = {c.name: 0.25 for c in path.curves}
        cand = candidates.measured(99, build(allocation), evaluator, *counted)
        cand.allocation = allocation
        seen["cand"] = cand
        return cand

    monkeypatch.setattr(target, "uniform_rival", rival)
    _, report = onnxfold.fold(
        str(bundled_model("lenet5.onnx")),
        inputs={"input": samples},
        target_params=0.2,
        method="fold",
        repair="none",
        round_to=1,
        validate=False,
        force=True,
    )
    assert report.search.chosen is seen["cand"]
    assert set(report.search.allocation.values()) == {0.25}
    assert report.search.chosen.to_dict()["uniform"] == 0.25
