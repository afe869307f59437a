"""A fidelity search past a step that missed: the group of that step is held at its width and the
path goes on in the others (:func:`onnxfold.search.bisect.detour_candidate`)."""

from __future__ import annotations

import pytest

from onnxfold.runtime.fidelity import OutputFidelity
from onnxfold.search.allocate import greedy_path
from onnxfold.search.bisect import DETOURS, bisect_candidate, detour_candidate
from onnxfold.search.candidates import Candidate
from onnxfold.search.sensitivity import GroupCurve

TARGET = 0.95


def _path():
    """Three groups of 8 channels that each hold alone at every level; a's channels weigh most, so
    the path empties a to its cap first, then b, then c."""
    curves = [
        GroupCurve(name, 8, [0.25, 0.5], [1.0, 1.0], [2, 4], per)
        for name, per in (("a", 30.0), ("b", 20.0), ("c", 10.0))
    ]
    path = greedy_path(curves, cap=0.5, target=TARGET)
    assert [path.curves[g].name for g in path.moves] == ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    return path


def _run(holds, picked: int):
    """The bisection and its detours on :func:`_path`, a candidate meeting the target where
    ``holds(sparsities)``, the bisection's pick ``picked`` steps; returns (chosen, allocations
    measured on a detour)."""
    path, tried, detoured = _path(), {}, []

    def candidate(key, allocation, detour=False):
        value = 1.0 if holds(allocation) else 0.5
        kept = sum(path.curves[i].channels * (1 - s) for i, s in enumerate(allocation.values()))
        cand = Candidate(key, value, int(kept), 0, 1 - kept / 24, 0.0, [OutputFidelity("y", "r2", value)])
        cand.allocation, cand.detour = (allocation, True) if detour else (None, False)
        tried[key] = cand
        return cand

    def measure(steps):
        return tried.get(steps) or candidate(steps, path.sparsities_at(steps))

    def measure_on(route, steps):
        detoured.append(route.sparsities_at(steps))
        return candidate(max([len(path), *tried]) + 1, route.sparsities_at(steps), detour=True)

    chosen, met = bisect_candidate(path, measure, tried, TARGET)
    assert met and chosen.steps == picked
    return detour_candidate(path, chosen, tried, measure_on, TARGET, _NoLimit()), detoured


class _NoLimit:
    def expired(self) -> bool:
        return False


def test_a_group_that_misses_in_the_whole_is_held_and_the_others_go_on() -> None:
    """b misses whenever it loses a channel (alone it measured no miss): the search holds b whole
    and still takes c to its cap, 16 of 24 channels kept instead of 20."""
    chosen, detoured = _run(lambda s: s["b"] == 0, 4)  # a at its cap; b's first step missed
    assert chosen.detour and chosen.allocation == {"a": 0.5, "b": 0.0, "c": 0.5}
    assert all(d["b"] == 0 for d in detoured)


@pytest.mark.parametrize("budget", [4, 5])
def test_where_every_further_step_misses_the_pick_stays_after_a_few_detours(budget: int) -> None:
    """Where the losses add up (at most ``budget`` channels may go, whichever group they come
    from), each detour's first step misses: at most DETOURS are measured, each one channel past
    the bisection's pick, which stays."""
    chosen, detoured = _run(lambda s: sum(8 * v for v in s.values()) <= budget, budget)
    assert not chosen.detour and chosen.steps == budget
    assert 1 <= len(detoured) <= DETOURS and all(
        sum(8 * v for v in d.values()) == budget + 1 for d in detoured
    )


def test_a_detour_gallops_from_its_first_step_and_stops_at_its_budget() -> None:
    """On a long path (40 groups of 8), one group that misses whenever it loses a channel: the detour
    goes on from the pick by 1, 2, 4, ... steps and bisects back, measuring far fewer candidates than
    steps, and never more than DETOUR_CANDIDATES."""
    from onnxfold.search.bisect import DETOUR_CANDIDATES

    curves = [GroupCurve(f"g{i:02d}", 8, [0.25, 0.5], [1.0, 1.0], [2, 4], 100.0 - i) for i in range(40)]
    path = greedy_path(curves, cap=0.5, target=TARGET)
    bad = path.curves[path.moves[10]].name  # the group of the 11th step, first narrowed at step 8
    first = path.moves.index(path.moves[10])
    holds = lambda s: s[bad] == 0 and sum(s.values()) * 8 <= 120  # noqa: E731
    tried: dict = {}
    measured = []

    def measure(steps):
        allocation = path.sparsities_at(steps)
        value = 1.0 if holds(allocation) else 0.5
        tried[steps] = Candidate(steps, value, 0, 0, steps / 160, 0.0, [OutputFidelity("y", "r2", value)])
        return tried[steps]

    def measure_on(route, steps):
        measured.append(steps)
        allocation = route.sparsities_at(steps)
        value = 1.0 if holds(allocation) else 0.5
        cand = Candidate(
            1000 + len(measured), value, 0, 0, steps / 160, 0.0, [OutputFidelity("y", "r2", value)]
        )
        cand.allocation, cand.detour = allocation, True
        return cand

    chosen, _ = bisect_candidate(path, measure, tried, TARGET)
    assert chosen.steps == first
    chosen = detour_candidate(path, chosen, tried, measure_on, TARGET, _NoLimit())
    assert chosen.allocation[bad] == 0 and sum(chosen.allocation.values()) * 8 == 120
    assert len(measured) <= DETOUR_CANDIDATES and len(set(measured)) == len(measured)
