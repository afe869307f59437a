"""A fidelity search does not measure first a far end its sensitivity already says misses."""

from __future__ import annotations

import logging
import re

import numpy as np

import onnxfold
from onnxfold.models import bundled_model
from onnxfold.search.allocate import AllocationPath, greedy_path
from onnxfold.search.bisect import bisect_candidate
from onnxfold.search.sensitivity import GroupCurve
from onnxfold.search.target import Candidate


def _curves() -> list[GroupCurve]:
    # a alone: fine at 1 and 2 removed, below 0.95 at 3; b: fine at every level measured, its last
    # level left unmeasured by a time limit (fidelity 0 in the curve, but no miss was measured)
    a = GroupCurve("a", 8, [0.1, 0.2, 0.4], [1.0, 0.99, 0.6], [1, 2, 3], params_per_channel=10.0)
    b = GroupCurve("b", 8, [0.1, 0.2, 0.4], [1.0, 0.999, 0.0], [1, 2, 3], params_per_channel=10.0)
    b.unmeasured.append(0.4)
    return [a, b]


def test_the_path_is_cut_before_the_first_width_that_alone_missed() -> None:
    path = greedy_path(_curves(), cap=0.5)
    reach = path.short_of_misses(0.95)
    removed = path.removed_at(reach)
    assert removed[0] <= 2  # a never at its missed width within reach
    assert path.removed_at(reach + 1)[0] == 3  # the next step takes it there
    assert reach < len(path)
    # every later prefix holds a at its miss: the cut is the last one that does not
    assert all(path.removed_at(t)[0] >= 3 for t in range(reach + 1, len(path) + 1))
    # a lower target counts 0.6 as no miss; the unmeasured level of b is never one
    assert path.short_of_misses(0.5) == len(path)


def test_a_fidelity_search_path_stops_each_group_short_of_its_miss_and_goes_on_in_the_others() -> None:
    """a's channels are cheaper per parameter than b's, so the path takes a to its miss first; with the
    target, a stops at 2 removed and the path goes on in b (a Keras digit CNN stopped at its first
    step, its Dense layer never tried)."""
    a, b = _curves()
    a.params_per_channel, b.params_per_channel = 100.0, 1.0
    b.unmeasured.clear()
    b.fidelity[2] = 0.98
    blind = greedy_path([a, b], cap=0.5)
    assert blind.removed_at(blind.short_of_misses(0.95))[1] < 3  # the old path's reach: b short of 3
    path = greedy_path([a, b], cap=0.5, target=0.95)
    reach = path.short_of_misses(0.95)
    assert path.removed_at(reach) == [2, 3]  # every step of b before a's miss
    assert path.removed_at(len(path)) == blind.removed_at(len(blind)) == [3, 3]  # the same far end
    assert sorted(path.moves) == sorted(blind.moves) and np.all(np.diff(path.saved) > 0)


def test_a_level_only_a_time_limit_left_unmeasured_does_not_cut_the_path() -> None:
    _, b = _curves()
    path = greedy_path([b], cap=0.5)
    assert path.removed_at(len(path)) == [3] and path.short_of_misses(0.99) == len(path)


def _measure(order: list[int], tried: dict, passing: int):
    def measure(steps: int) -> Candidate:
        order.append(steps)
        tried[steps] = Candidate(steps, 1.0 if steps <= passing else 0.5, 100 - steps, 0, steps / 100, 0.0)
        return tried[steps]

    return measure


def test_the_bisection_starts_at_the_reach_instead_of_the_far_end() -> None:
    path = AllocationPath([], [0] * 40, np.arange(41.0), np.zeros(41))
    order: list[int] = []
    tried: dict[int, Candidate] = {}
    chosen, met = bisect_candidate(path, _measure(order, tried, 12), tried, 0.99, reach=20)
    assert order[:2] == [20, 0] and 40 not in order
    assert met and chosen.steps == 12 and max(order) == 20
    order.clear()
    tried.clear()
    chosen, met = bisect_candidate(path, _measure(order, tried, 30), tried, 0.99, reach=20)
    assert order == [20] and chosen.steps == 20  # within reach, all of it passes
    order.clear()
    tried.clear()
    chosen, _ = bisect_candidate(path, _measure(order, tried, 12), tried, 0.99)  # no reach: the far end
    assert order[0] == 40 and chosen.steps == 12


def test_a_search_whose_sensitivity_saw_a_miss_measures_short_of_it_first(caplog) -> None:
    from onnxfold.models.digits import load_digits_split

    search_x = load_digits_split()[2][:32]
    caplog.set_level(logging.INFO, logger="onnxfold")
    _, report = onnxfold.fold(
        bundled_model("resnet18.onnx"), min_fidelity=0.99, inputs={"input": search_x}, max_sparsity=0.9
    )
    text = caplog.text
    path = int(re.search(r"path of (\d+) channel steps", text).group(1))
    first = int(re.search(r"search: (\d+) steps -> fidelity", text).group(1))
    curves = report.to_dict()["search"]["sensitivity"]
    missed = any(
        f is not None and f < 0.99 and j > 0
        for c in curves
        for f, j in zip(c["fidelity"], c["removed"], strict=True)
    )
    assert missed  # at 0.9 some group alone misses 0.99 on these samples
    assert 0 < first < path
    assert report.search.chosen.fidelity >= 0.99
    chosen = report.to_dict()["search"]["allocation"]
    for c in curves:  # no group at a width that alone missed, nor beyond
        miss = min(
            (
                j
                for f, j in zip(c["fidelity"], c["removed"], strict=True)
                if f is not None and f < 0.99 and j > 0
            ),
            default=None,
        )
        assert miss is None or round(chosen[c["group"]] * c["channels"]) < miss


def test_a_mac_target_s_progress_counts_macs(monkeypatch) -> None:
    """A PP-OCRv6 detector's --target-macs 0.3 showed "tried 30.6% fewer params: 0.9761" and then failed
    at 6.6% fewer MACs: the bar of a MAC target counts MACs."""
    from contextlib import contextmanager

    from onnxfold.models.digits import load_digits_split
    from onnxfold.search import target

    shown: list[str] = []

    class Bar:
        def update(self, n: int) -> None:
            pass

        def set_postfix_str(self, text: str, refresh: bool = True) -> None:
            shown.append(text)

    @contextmanager
    def bar(**kwargs):
        yield Bar()

    monkeypatch.setattr(target, "progress_bar", bar)
    x = load_digits_split()[2][:32]
    _, report = onnxfold.fold(bundled_model("lenet5.onnx"), target_macs=0.3, inputs={"input": x}, force=True)
    candidates = [s for s in shown if s.startswith("tried ")]
    assert candidates and all(re.match(r"tried \d+\.\d% fewer MACs: ", s) for s in candidates), shown
    shown.clear()
    onnxfold.fold(bundled_model("lenet5.onnx"), target_params=0.3, inputs={"input": x}, force=True)
    assert all(re.match(r"tried \d+\.\d% fewer params: ", s) for s in shown if s.startswith("tried ")), shown


def test_a_summary_says_the_candidates_it_measured_missed_before_the_unchanged_model_was_taken() -> None:
    """A PP-OCRv6 detector's data-free default read "1 candidate measured, ..., the unchanged model
    taken unmeasured" beside "fidelity not measured": which was it? The one measured missed."""
    import dataclasses

    from onnxfold.models.digits import load_digits_split

    x = load_digits_split()[2][:16]
    _, report = onnxfold.fold(bundled_model("lenet5.onnx"), min_fidelity=0.9, inputs={"input": x})
    result = report.search
    far = max(result.candidates, key=lambda c: c.steps)
    whole = dataclasses.replace(result.chosen, steps=0, measured=False, outputs=[])
    missed_one = dataclasses.replace(result, chosen=whole, candidates=[far, whole], cut_short="cut")
    assert "1 candidate measured, " in missed_one.summary()
    assert " s in all (it missed), the unchanged model taken unmeasured" in missed_one.summary()
    none = dataclasses.replace(result, chosen=whole, candidates=[whole], cut_short="cut")
    assert " s in all, the unchanged model taken unmeasured" in none.summary()


def test_the_estimated_reach_is_the_last_step_whose_added_losses_keep_the_target() -> None:
    """Where the time limit starves a search, it measures first where the losses say the target holds:
    a YOLOv8 whose sensitivity measured 50 of 295 levels measured its far end, 84.3% fewer parameters
    at 0.0069, and had no time for another."""
    loss = -np.log(np.array([1.0, 0.999, 0.99, 0.97, 0.9, 0.5, 0.01]))
    path = AllocationPath([], [0] * 6, np.arange(7.0), loss)
    assert path.estimated_reach(0.95) == 3 and path.estimated_reach(0.99) == 2
    assert path.estimated_reach(0.001) == 6  # every step keeps it: the whole path
    assert path.estimated_reach(0.9999) == 0  # none: the unchanged model
    order: list[int] = []
    tried: dict[int, Candidate] = {}
    chosen, met = bisect_candidate(
        path, _measure(order, tried, 3), tried, 0.99, reach=path.estimated_reach(0.95)
    )
    assert order[0] == 3 and met and chosen.steps == 3


def test_a_gain_counts_macs_only_where_they_are_counted_reliably() -> None:
    """A speech embedding whose Loop front end left 41 dims at 1 was folded 1.4% of its parameters for
    "2.6% fewer MACs" and changed 5% of its keyword choices; where every dim resolved, the MACs count
    (DeepFilterNet's encoder: 0.4% of the parameters, 27.6% of the MACs)."""
    from onnxfold.search.bisect import below_gain

    small = Candidate(3, 1.0, 986, 974, 0.014, 0.026)
    assert small.reduction == 0.014 and small.macs_reduction == 0.026
    assert below_gain(small, 0.02, True) == ""  # the MACs pass the gain
    said = below_gain(small, 0.02, True, macs_known=False)
    assert said.startswith("the best candidate, 1.4% fewer parameters (MACs not counted reliably)")
    assert "kept whole" in said
    assert below_gain(Candidate(3, 1.0, 900, 900, 0.1, 0.0), 0.02, True, macs_known=False) == ""


def test_a_starved_search_gallops_past_a_met_reach_by_doubling_the_saving_then_bisects_back() -> None:
    from onnxfold.search.bisect import gallop_candidate
    from onnxfold.search.time_limit import TimeLimit

    path = AllocationPath([], [0] * 100, np.arange(101.0), np.zeros(101))  # one unit saved a step
    order: list[int] = []
    tried: dict[int, Candidate] = {}
    measure = _measure(order, tried, 37)
    chosen = gallop_candidate(path, measure(5), measure, 0.99, TimeLimit())
    assert order[:4] == [5, 10, 20, 40]  # twice the saving each time, to the first miss
    assert chosen.steps == 37 and order[4:] == [30, 35, 37, 38]  # then back between 20 and 40
    order.clear()
    measure = _measure(order, {}, 60)
    assert gallop_candidate(path, measure(60), measure, 0.99, TimeLimit()).steps == 60  # none further
    assert order == [60, 100, 80, 70, 65, 62, 61]
    order.clear()
    spent = TimeLimit(1e-9)
    assert gallop_candidate(path, tried[5], measure, 0.99, spent).steps == 5 and order == []


def test_a_prior_stands_for_the_levels_the_limit_left_unmeasured_in_groups_with_no_miss() -> None:
    from onnxfold.search.allocate import mostly_unmeasured, with_prior

    levels = [0.25, 0.5, 0.75]
    blank = GroupCurve("blank", 8, levels, [0.0, 0.0, 0.0], [2, 4, 6], 10.0, unmeasured=list(levels))
    once = GroupCurve("once", 8, levels, [0.99, 0.0, 0.0], [2, 4, 6], 10.0, unmeasured=levels[1:])
    missed = GroupCurve("missed", 8, levels, [0.5, 0.0, 0.0], [2, 4, 6], 10.0, unmeasured=levels[1:])
    got = {c.name: c for c in with_prior([blank, once, missed], 0.95)}
    assert got["blank"].fidelity == [1 - (2 / 8) ** 2, 1 - (4 / 8) ** 2, 1 - (6 / 8) ** 2]
    assert got["once"].fidelity == [0.99, 0.75, 1 - (6 / 8) ** 2]  # its measured figure kept
    assert got["missed"] is missed and blank.fidelity == [0.0, 0.0, 0.0]  # a miss stays; copies
    assert mostly_unmeasured([blank, blank, once]) and not mostly_unmeasured([blank, once, missed])
    whole = GroupCurve("whole", 4, levels, [1.0, 1.0, 1.0], [0, 0, 0], 10.0)  # no level narrows it
    assert not mostly_unmeasured([blank, once, whole, whole])
    path = greedy_path(with_prior([blank, once], 0.95), cap=0.75)
    assert path.removed_at(len(path)) == [6, 6] and len(path) > 0


def test_a_refit_that_loses_one_sample_of_a_count_but_gains_every_continuous_figure_counts_as_well() -> None:
    """Trial 202: a FER CNN's refit read top1 31 of 32 beside r2 0.9848 (0.9821 first) and was dropped;
    on 500 faces it kept 99.4% of the labels, the first fit 94.6%."""
    from onnxfold.runtime.fidelity import OutputFidelity
    from onnxfold.search.candidates import as_well

    def cand(top1: int, r2: float, mask: float = 1.0) -> Candidate:
        outputs = [
            OutputFidelity("s", "top1", top1 / 32, samples=32),
            OutputFidelity("s", "mask", mask),
            OutputFidelity("s", "r2", r2),
        ]
        return Candidate(3, min(o.value for o in outputs), 10, 0, 0.4, 0.0, outputs)

    first = cand(32, 0.9821)
    assert as_well(cand(31, 0.9848), first)  # one sample of 32, every continuous figure higher
    assert not as_well(cand(30, 0.9848), first)  # two samples: a loss
    assert not as_well(cand(31, 0.9800), first)  # a continuous figure lower
    assert not as_well(cand(31, 0.9848, mask=0.99), first)
    assert as_well(cand(32, 0.9830), first) and not as_well(cand(32, 0.9810), first)
    counts = Candidate(3, 31 / 32, 10, 0, 0.4, 0.0, [OutputFidelity("s", "top1", 31 / 32, samples=32)])
    assert not as_well(counts, cand(32, 1.0)) and not as_well(
        counts, Candidate(3, 1.0, 10, 0, 0.4, 0.0, [OutputFidelity("s", "top1", 1.0, samples=32)])
    )
