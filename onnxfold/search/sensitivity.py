"""Sensitivity analysis: the fidelity of the model when one foldable group alone is compressed.

For every level r, group by group, the group's assignment is computed from the original weights
(:func:`onnxfold.folding.apply.plan_folds`); only that group's plan is applied to a copy of the
model, and the copy is scored by an :class:`~onnxfold.search.evaluate.Evaluator`.
Parameters and MACs saved per removed channel come from the same copies
(:func:`onnxfold.report.fold_report.stats_of`). An untouched group (level 0, or a level that
removes no channel) has fidelity exactly 1 by definition. Widths are rounded as the fold rounds
them (``round_to``, :func:`onnxfold.folding.cluster.cluster_count`), so ``removed`` holds the
channels a fold at that level really removes; levels that give a group the same width (a group of
16 folds to 8 at every level from 0.25 with round_to 8, and stays whole below) are measured once.

``stop_below`` (the fidelity target of a ``--min-fidelity`` search): once a group alone measures
below it, its higher levels are not measured. Compressing a group further rarely brings the model
back above a target that the group alone already misses, so those levels are recorded with
fidelity 0 (listed in ``GroupCurve.unmeasured``): the allocation then takes them last, and the
search never relies on them without building and measuring the model. On a sensitive model most
groups miss at the lowest levels, which makes the analysis several times cheaper.

``limit`` (a :class:`TimeLimit`, the search's ``--time-limit``): once its ``share`` of it has passed
(:data:`~onnxfold.search.time_limit.SENSITIVITY_SHARE`, or :data:`~onnxfold.search.time_limit.STARVED_SHARE`
where most groups would get no level on given samples), no further group is planned, compressed or
measured (planning with ``auto`` judges the group, minutes a level on a 20M-parameter UNet); the levels
left are recorded like those after a miss (fidelity 0, in ``unmeasured``). The levels go lowest first
over every group, so a limit that stops the analysis part way leaves every group measured at the
lowest levels rather than some groups at none.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnxfold.analysis import analyze_graph
from onnxfold.folding.apply import matching_pattern, plan_folds
from onnxfold.folding.cluster import DEFAULT_ROUND_TO, part_cluster_count
from onnxfold.ir.model import Model, peek_values
from onnxfold.ir.shapes import infer_shapes
from onnxfold.report.fold_report import stats_of
from onnxfold.report.names import shortened
from onnxfold.report.progress import progress_bar
from onnxfold.report.stats import format_table
from onnxfold.search.time_limit import STARVED_SHARE, TimeLimit

DEFAULT_LEVELS = (0.1, 0.2, 0.3, 0.5, 0.7)


#: measurements after which the sensitivity forecasts whether its time share suffices (:func:`_forecast`)
FORECAST_AFTER = 3

log = logging.getLogger(__name__)


def _forecast(
    limit: TimeLimit,
    started: float,
    left: int,
    once: float = 0.0,
    fresh: int = 0,
    likely: tuple[int, int] | None = None,
) -> int | None:
    """Warn, early, when the ``left`` group levels will not fit in the sensitivity's share of the
    limit at the pace of the measurements between its first check (``started``) and its last: a ViT
    of 7.6 GMACs measured 11 of its 135 in a 600 s default search, and its user learnt it only from
    the report at the end. Reads no clock of its own (the last check's time is the limit's). ``once``:
    the seconds a group's first measurement spends on its shapes and size, which only ``fresh`` of the
    ``left`` pay again (a 22M-parameter CNN's forecast read 2 s a level from first levels alone, and
    its 180 levels took 76 s). ``likely``: (misses, measurements) so far where a group stops at its
    first miss, and ``left`` counts the levels expected at that rate (malvizv1's ResNet-18 forecast 50
    levels at 7.1 s; all 3 first ones missed, and 9 more were measured). Returns how many more it
    expects to measure (None where all fit)."""
    now = limit.read
    pace = (now - started) / max(1, limit.measured - 1)
    each = min(pace, once)
    need = left * (pace - each) + fresh * each
    room = limit.start + limit.share * limit.budget - now
    if need <= room:
        return None
    pace = need / max(1, left)
    enough = limit.before + (now - limit.start + left * pace) / limit.share + limit.reserve
    rate = (  # "(0 of 3)" alone read as a riddle (trial 200)
        f" (expected from the misses so far, {likely[0]} in {likely[1]} levels measured, since a group "
        "stops at its first miss)"
        if likely
        else ""
    )
    limit.enough = float(np.ceil(enough / 60) * 60)  # the report's time-limit warning repeats it
    log.warning(
        "the sensitivity may not finish: the %d group levels left%s need about %.0f s (%.1f s each) and "
        "%.0f s remain for them (%.0f%% of the time limit; the rest is for the candidates), so about %d "
        "will be measured. Levels not measured are taken last, as misses are (on given samples where most "
        "groups have none measured, a prior stands for them and candidates measure them). A group stops at its first "
        "miss, so all may still fit; --time-limit %.0f is enough for all",
        left,
        rate,
        left * pace,
        pace,
        max(0.0, room),
        100 * limit.share,
        max(0, int(room // pace)),
        limit.enough,
    )
    return max(0, int(room // pace))


def _starve(limit: TimeLimit, measurable: int, groups: int) -> None:
    """Where the sensitivity's share would measure under half of the ``groups`` even once, it stops at
    :data:`STARVED_SHARE` of the limit instead (given samples only: the search's candidates measure the
    groups it leaves, :func:`~onnxfold.search.allocate.with_prior`)."""
    if 2 * measurable < groups and limit.share > STARVED_SHARE:
        limit.share = STARVED_SHARE
        log.warning(
            "most groups would get no level measured in the sensitivity's share of the time limit, so it "
            "stops at %.0f%% of it, and the search's candidates measure the rest",
            100 * STARVED_SHARE,
        )


def _cut_postfix(limit: TimeLimit, done: int) -> str:
    """The progress bar's postfix once the limit cuts the sensitivity: its bar still runs to the end,
    so it says how little of it was measured (a trial read "135/135, 124 skipped" as complete), with
    counts that add up to the ``done`` group levels on the bar: measured, skipped, and needing no
    measurement (after a group's miss, or at a width already measured). A trial read "385/385 group
    levels, only 9 measured: 294 of 303 skipped" as two totals."""
    rest = max(0, done - limit.measured - limit.skipped)
    tail = f", {rest} not needed" if rest else ""
    return f"cut by the time limit: {limit.measured} measured, {limit.skipped} skipped{tail}"


@dataclass
class GroupCurve:
    """One group's sensitivity: ``fidelity[i]`` when it alone is compressed at ``levels[i]``."""

    name: str
    channels: int
    levels: list[float]
    fidelity: list[float]
    removed: list[int]
    params_per_channel: float = 0.0
    macs_per_channel: float = 0.0
    errors: list[str] = field(default_factory=list)
    unmeasured: list[float] = field(default_factory=list)  # levels skipped after a miss (fidelity 0)
    #: level -> how far the fold moved the outputs at all (the evaluator's ``last_moved``), where known
    moved: dict[float, float] = field(default_factory=dict)

    def loss_at(self, removed: np.ndarray | int) -> np.ndarray:
        """Estimated loss 1 − fidelity after removing ``removed`` channels: linear between measured
        points, through (0, 0), made non-decreasing."""
        xs = np.array([0] + list(self.removed), dtype=np.float64)
        ys = np.maximum.accumulate(np.array([0.0] + [1.0 - f for f in self.fidelity]))
        order = np.argsort(xs, kind="stable")
        return np.interp(np.asarray(removed, dtype=np.float64), xs[order], ys[order])

    def moved_at(self, removed: np.ndarray | int) -> np.ndarray:
        """:attr:`moved` at ``removed`` channels: linear through (0, 0) and the known levels, non-decreasing."""
        pairs = zip(self.levels, self.removed, strict=False)
        known = sorted((j, m) for lv, j in pairs if lv in self.moved and np.isfinite(m := self.moved[lv]))
        xs, ys = zip(*[(0, 0.0), *known], strict=True)
        return np.interp(np.asarray(removed, dtype=np.float64), xs, np.maximum.accumulate(ys))

    def to_dict(self) -> dict:
        return {
            "group": self.name,
            "channels": self.channels,
            "params_per_channel": self.params_per_channel,
            "macs_per_channel": self.macs_per_channel,
            "levels": list(self.levels),
            "removed": list(self.removed),
            # a level never measured is null here (the allocation counts it as a miss: fidelity 0)
            "fidelity": [
                None if lv in self.unmeasured else f
                for lv, f in zip(self.levels, self.fidelity, strict=False)
            ],
            "unmeasured": list(self.unmeasured),
            # ‖Δoutputs‖ / ‖outputs‖ per measured level, where the evaluator said
            "moved": [self.moved.get(lv) for lv in self.levels],
        }


def sensitivity(
    model: Model,
    evaluate: Callable[[Model], tuple[float, list]],
    levels: Sequence[float] = DEFAULT_LEVELS,
    *,
    ignore: Sequence[str] = (),
    round_to: int = DEFAULT_ROUND_TO,
    seed: int = 0,
    method: str = "fold",
    features: str = "raw",
    n_init: int = 10,
    cluster: str = "auto",
    skip: Callable[[str], bool] | None = None,
    stats=None,
    judge=None,
    stop_below: float | None = None,
    limit: TimeLimit | None = None,
    shapes: dict | None = None,
) -> list[GroupCurve]:
    """A :class:`GroupCurve` per foldable, not ignored group of the (canonicalized) ``model``.
    ``skip(name)`` true: the group is left out (e.g. a recipe or override fixes it). ``stop_below``,
    ``limit``: see the module docstring. ``shapes``: the input shapes MACs are counted at."""
    from onnxfold.passes.fold import (
        rewrite_model,
    )  # the fold pass imports the search: no cycle at import time

    levels = sorted(float(v) for v in levels)
    if not levels or any(not 0.0 <= v < 1.0 for v in levels):
        raise ValueError(f"levels must be in [0, 1), got {levels}")
    groups = analyze_graph(model.graph, model.node_scopes())
    tensors = model.graph.tensors()
    base = stats_of(model, shapes=shapes)
    curves: dict[str, GroupCurve] = {}
    measured: dict[tuple[str, int], float] = {}  # (group, width) -> fidelity: one measurement per width
    shifts: dict[tuple[str, int], float] = {}  # (group, width) -> how far the outputs moved
    missed: set[str] = set()  # groups that measured below stop_below: higher levels not measured
    timed_out: set[str] = set()  # groups the time limit stopped measuring

    def out_of_time() -> bool:
        return limit is not None and limit.expired(limit.share)

    by_name = {g.name: g for g in groups}
    eligible = {  # the groups a plan would compress, each measured at every level
        g.name
        for g in groups
        if g.foldable and not (skip is not None and skip(g.name)) and not matching_pattern(ignore, g)
    }

    def advance() -> None:
        bar.update(1)
        if limit is not None and limit.skipped:
            bar.set_postfix_str(_cut_postfix(limit, bar.n), refresh=False)

    def as_missed(name: str, level: float) -> None:  # the level of a group not measured at it
        advance()
        g = by_name[name]
        curve = curves.setdefault(name, GroupCurve(name, g.size, [], [], []))
        k = part_cluster_count(g.size, level, g.parts, round_to)
        curve.levels.append(level)
        curve.removed.append(max(0, g.size - k))
        if (name, k) in measured or k >= g.size:  # a measured width, or the group left whole
            curve.fidelity.append(measured.get((name, k), 1.0))
        else:
            curve.fidelity.append(0.0)
            curve.unmeasured.append(level)
            if name in timed_out:
                limit.skipped += 1
                bar.set_postfix_str(_cut_postfix(limit, bar.n), refresh=False)

    def planned(level: float) -> Iterator:
        """The plans of the groups not missed, one group at a time: planning ``auto`` judges every
        group (ukis-csmask's 40 groups took 9 minutes at the first level), so the limit is checked
        before each; it stops at the first group the limit leaves unplanned."""
        for g in groups:
            if g.name in missed:
                continue
            if g.name in eligible and out_of_time():
                return
            yield from plan_folds(
                [g],
                lambda name: peek_values(tensors[name]),
                level,
                ignore=ignore,
                round_to=round_to,
                seed=seed,
                method=method,
                features=features,
                n_init=n_init,
                graph=model.graph,
                cluster=cluster,
                stats=stats,
                judge=judge,
            )

    started: float | None = None
    sized: list[float] = []  # seconds each group's first measurement spent on its shapes and size
    # one step a group and level: ukis-csmask's "3/200 groups" had 40 groups at 5 levels
    share_left = None if limit is None or limit.seconds <= 0 else limit.share_left  # for the log's "left"
    with progress_bar(
        desc="sensitivity", total=len(eligible) * len(levels), unit="group level", deadline=share_left
    ) as bar:
        for index, level in enumerate(levels):
            if out_of_time():  # every group's level as after a miss
                timed_out |= eligible - missed
                missed |= eligible
            for name in sorted(missed):
                as_missed(name, level)
            if missed >= eligible:
                continue
            seen: set[str] = set()
            for plan in planned(level):
                seen.add(plan.group.name)
                if plan.status in ("blocked", "ignored") or (skip is not None and skip(plan.group.name)):
                    continue
                advance()
                n = plan.group.size
                curve = curves.setdefault(plan.group.name, GroupCurve(plan.group.name, n, [], [], []))
                curve.levels.append(level)
                parts = plan.group.parts
                removed = n - (
                    plan.k if plan.status == "folded" else part_cluster_count(n, level, parts, round_to)
                )
                curve.removed.append(max(0, removed))
                if plan.status != "folded":
                    curve.fidelity.append(1.0)
                    continue
                if (plan.group.name, plan.k) in measured:  # same width, same seeded clustering: same model
                    curve.fidelity.append(measured[plan.group.name, plan.k])
                    if (plan.group.name, plan.k) in shifts:
                        curve.moved[level] = shifts[plan.group.name, plan.k]
                    continue
                if out_of_time():  # the rest of this level as after a miss
                    curve.fidelity.append(0.0)
                    curve.unmeasured.append(level)
                    limit.skipped += 1
                    bar.set_postfix_str(_cut_postfix(limit, bar.n), refresh=False)
                    missed.add(plan.group.name)
                    timed_out.add(plan.group.name)
                    continue
                copy = model.copy()
                try:
                    rewrite_model(copy, [plan], shapes=False)
                    fid = _value(evaluate, copy)
                    if removed > 0 and not curve.params_per_channel:  # MACs need shapes: once per group
                        sizing = limit.clock() if limit is not None else 0.0
                        infer_shapes(copy)
                        after = stats_of(copy, shapes=shapes)
                        if limit is not None:
                            sized.append(limit.clock() - sizing)
                except Exception as exc:
                    curve.errors.append(f"{level}: {type(exc).__name__}")
                    curve.fidelity.append(0.0)
                    continue
                curve.fidelity.append(fid)
                measured[plan.group.name, plan.k] = fid
                if (shift := getattr(evaluate, "last_moved", None)) is not None:
                    curve.moved[level] = shifts[plan.group.name, plan.k] = shift
                if limit is not None:
                    limit.measured += 1
                    if limit.seconds and limit.measured == 1:
                        started = limit.read  # the check before the first measurement
                    if limit.seconds and limit.measured == FORECAST_AFTER:  # group levels not yet measured
                        this = len(eligible - missed) - len(seen - missed) + 1  # this level's, from here
                        later = len(levels) - index - 1  # levels after this one, per group still in
                        misses = len(missed) + int(stop_below is not None and fid < stop_below)
                        if stop_below is not None:  # a group stops at its first miss: at the rate so far
                            kept = (limit.measured - misses + 1) / (limit.measured + 1)  # one more kept: wary
                            later = sum(kept**k for k in range(1, later + 1))
                        ahead = this + len(eligible - missed) * later
                        once = float(np.mean(sized)) if sized else 0.0
                        likely = (misses, limit.measured) if stop_below is not None else None
                        more = _forecast(
                            limit, started, round(ahead), once, this if index == 0 else 0, likely
                        )
                        if more is not None and not getattr(evaluate, "proxy", True) and index == 0:
                            _starve(limit, limit.measured + more, len(eligible))
                if stop_below is not None and fid < stop_below:
                    missed.add(plan.group.name)
                if removed > 0 and not curve.params_per_channel:
                    curve.params_per_channel = (base.params - after.params) / removed
                    curve.macs_per_channel = (base.macs - after.macs) / removed
            left = eligible - missed - seen  # the limit passed before they were planned
            timed_out |= left
            missed |= left
            for name in sorted(left):
                as_missed(name, level)
    for curve in curves.values():  # never folded and measured (the time limit): costs from the weights
        if not curve.params_per_channel and any(curve.removed):
            curve.params_per_channel = member_params(by_name[curve.name], tensors)
            curve.macs_per_channel = (
                curve.params_per_channel * base.macs / base.params if base.params else 0.0
            )
    return [curves[g.name] for g in groups if g.name in curves]  # in graph order, however measured


def member_params(group, tensors) -> float:
    """Parameters one channel of ``group`` owns in its constant members: Σ size / dim over the member
    slices (a block of ``block`` positions per channel). The cost of a group that no copy measured: a
    time limit that ran out before the first measurement left CRAFT's 25 groups without one, and a
    ``--target-params 0.25`` search wrote the model unchanged. Its MACs per channel are taken as the
    model's MACs per parameter (the budget's measured shortfall corrects both)."""
    return sum(
        float(np.prod(t.shape)) / t.shape[m.axis] * max(1, m.block) / max(1, m.split)
        for m, t in weight_members(group, tensors)
    )


def weight_members(group, tensors) -> Iterator[tuple[Any, Any]]:
    """(member, its constant) for each weight slice of ``group``: float constants only (a Reshape
    target's entries are no weights), each (tensor, axis, offset) once."""
    import onnx_graphsurgeon as gs

    seen = set()
    for m in group.members:
        t = tensors.get(m.tensor)
        key = (m.tensor, m.axis, m.offset)
        if isinstance(t, gs.Constant) and t.shape and np.dtype(t.dtype).kind == "f" and key not in seen:
            seen.add(key)
            yield m, t


def format_sensitivity(curves: Sequence[GroupCurve], describe: str = "") -> str:
    """The table ``onnxfold analyze --sensitivity`` prints."""
    levels = sorted({v for c in curves for v in c.levels})
    rows, whole = [], False

    def cell(c: GroupCurve, v: float, by: dict, removed: dict) -> str:
        nonlocal whole
        if v in c.unmeasured:
            return "skipped"
        if v not in by:
            return "-"
        if removed.get(v) == 0:  # the rounded width is the group's own: nothing was compressed
            whole = True
            return "whole"
        if v not in removed:
            return f"{by[v]:.4f}"
        return f"{by[v]:.4f} →{c.channels - removed[v]}"  # levels that round alike read alike

    for c in curves:
        by = dict(zip(c.levels, c.fidelity, strict=True))
        removed = dict(zip(c.levels, c.removed, strict=False))
        rows.append(
            [shortened(c.name), c.channels, f"{c.params_per_channel:.0f}"]
            + [cell(c, v, by, removed) for v in levels]
        )
    head = f"sensitivity: fidelity when one group alone is compressed ({describe})\n" if describe else ""
    table = format_table(
        ["group", "channels", "params/ch"] + [f"r={v:g}" for v in levels],
        rows,
        align="lrr" + "r" * len(levels),
    )
    table += "\neach cell: the fidelity →the width the group is compressed to (rounded as the fold rounds it)"
    if whole:  # a 1.0000 there read as "safe to compress"
        table += "\nwhole: the level's rounded width is the group's own, so nothing was removed (--round-to 1: exact widths)"
    return head + table


def plot_ready(path: str) -> None:
    """Raise a one-line ValueError, before any measurement, when a plot could not be written to
    ``path``: matplotlib missing, or no folder to hold it (it failed only after the whole analysis)."""
    import importlib.util
    from pathlib import Path

    if importlib.util.find_spec("matplotlib") is None:
        raise ValueError("--plot needs matplotlib: pip install matplotlib")
    folder = Path(path).parent
    if not folder.is_dir():
        raise ValueError(f"--plot {path}: no folder {folder}")


def plot_sensitivity(curves: Sequence[GroupCurve], path: str) -> None:
    """Fidelity vs level, one line per group, written to ``path`` (needs matplotlib)."""
    plot_ready(path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c in curves:
        ax.plot([0.0] + list(c.levels), [1.0] + list(c.fidelity), marker="o", label=c.name)
    ax.set_xlabel("sparsity of the group alone")
    ax.set_ylabel("fidelity")
    ax.set_ylim(-0.02, 1.02)
    if len(curves) <= 24:
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _value(evaluate: Callable, model: Model) -> float:
    """The fidelity of ``model``; an :class:`~onnxfold.search.evaluate.Evaluator` skips the bootstrap
    lower values, which only decide whether a candidate meets a target."""
    from onnxfold.search.evaluate import Evaluator

    return (evaluate(model, bounds=False) if isinstance(evaluate, Evaluator) else evaluate(model))[0]
