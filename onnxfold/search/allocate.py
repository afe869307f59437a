"""Allocation: per-group sparsities from sensitivity curves, by estimated loss per cost saved.

Each group g has an estimated loss L_g(j) = −log f_g(j), f_g(j) its fidelity after removing j channels
(:meth:`~onnxfold.search.sensitivity.GroupCurve.loss_at` gives 1 − f; f is read at least
:data:`FIDELITY_FLOOR`), and a cost saved per removed channel c_g
(parameters, or MACs). A group can only take the widths the fold writes
(:func:`~onnxfold.folding.cluster.widths`): with ``round_to`` m, a group of n ≥ 2m channels steps
from n to the widest multiple of m below n and then m channels at a time, a narrower group (or any
group with m = 1) one channel at a time. The greedy path starts with nothing removed and takes one
step at a time in the group of least marginal price, where the price of group g at j removed is
min over the later points j' of its grid of (L_g(j') − L_g(j)) / ((j' − j)·c_g) (the slope to the
best later point, so that a flat stretch after a step is not hidden by the step). Losses of
independent groups add as their fidelities multiply, and a group whose fidelity nears 0 costs without
bound: as 1 − f, which stops at 1, emptying the group that breaks the outputs most looked cheap per
parameter (tests/test_saturated_losses.py). Where a decision metric reads the same at every level
(box F1 1.0), how far each fold moved the outputs breaks the tie, weighted :data:`MOVED_WEIGHT`. A
small prior
PRIOR·j/n_g is added to every estimated loss: where measured losses tie (flat curves), the group
whose channels are the larger share of the model (n_g·c_g) goes first, and a group is not emptied
for nothing. A group never goes beyond cap·n channels nor beyond its largest level measured or
counted as a miss; with ``unmeasured_whole`` (a fidelity search) a group that the time limit left
with no level measured at all stays whole (a budget takes it, its cost read from its weights). Every
prefix of the path is an allocation whose widths are exactly the ones the fold writes; its
estimated cost saved is the sum of j_g·c_g.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from onnxfold.folding.cluster import rounds, widths
from onnxfold.search.sensitivity import GroupCurve

#: the fidelity a loss −log f is read at where a group's measured one is lower (a miss counts so)
FIDELITY_FLOOR = 1e-3
#: weight of how far a group's fold moves the outputs (‖Δ‖ / ‖outputs‖), added to its loss: where a
#: decision metric reads 1 at every level measured, the group that moves the outputs least goes first
MOVED_WEIGHT = 1e-3
#: Weight of the tie-breaking prior j/n added to every estimated group loss.
PRIOR = 1e-4


@dataclass
class AllocationPath:
    """The greedy path: ``moves[t]`` is the index of the group that steps to its next width at step t,
    removing ``sizes[t]`` channels (1 without rounding)."""

    curves: list[GroupCurve]
    moves: list[int]
    saved: np.ndarray  # saved[t] = estimated cost saved after t steps (saved[0] = 0)
    loss: np.ndarray  # loss[t] = sum of estimated group losses after t steps
    sizes: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.moves)

    def removed_at(self, steps: int) -> list[int]:
        """Channels removed per group after ``steps`` steps."""
        counts = [0] * len(self.curves)
        sizes = self.sizes or [1] * len(self.moves)
        for g, size in zip(self.moves[:steps], sizes[:steps], strict=True):
            counts[g] += size
        return counts

    def unjudged_at(self, steps: int) -> int:
        """Groups whose width after ``steps`` steps the sensitivity never measured: a candidate built
        there judges (``auto``) and folds them anew, where a measured width is remembered."""
        count = 0
        for c, j in zip(self.curves, self.removed_at(steps), strict=True):
            seen = {r for lv, r in zip(c.levels, c.removed, strict=False) if lv not in c.unmeasured}
            count += int(j > 0 and j not in seen)
        return count

    def short_of_misses(self, target: float) -> int:
        """The most steps before the path takes a group to a width that alone measured below ``target``
        (or beyond it): every candidate past it holds such a group, and a bisection that measured the
        path's far end first spent 3.5 minutes of a 10-minute search on a PP-OCRv5 detector's, which
        missed as its sensitivity said. ``len(self)`` where the path takes no group there (levels a
        time limit left unmeasured are no miss: only a candidate can tell)."""
        first = [_first_miss(c, target) for c in self.curves]
        counts = [0] * len(self.curves)
        for t, (g, size) in enumerate(zip(self.moves, self.sizes or [1] * len(self.moves), strict=True)):
            counts[g] += size
            if counts[g] >= first[g]:
                return t
        return len(self.moves)

    def estimated_reach(self, target: float) -> int:
        """The most steps whose estimated fidelity exp(−loss) stays at least ``target`` (every group's
        measured loss added; a level the time limit left unmeasured counts as a miss): where a search
        the time limit starves measures first. A YOLOv8 whose sensitivity measured 50 of 295 levels
        measured its path's far end first, 84.3% fewer parameters at 0.0069, and had no time left."""
        below = np.flatnonzero(np.exp(-self.loss) < target)
        return int(below[0]) - 1 if below.size else len(self.moves)

    def sparsities_at(self, steps: int) -> dict[str, float]:
        """{group name: sparsity} after ``steps`` steps (groups with nothing removed included, at 0)."""
        return {c.name: j / c.channels for c, j in zip(self.curves, self.removed_at(steps), strict=True)}

    def without(self, group: int, start: int) -> AllocationPath:
        """The path with every step of ``group`` from ``start`` on left out (that group held at its
        width after ``start`` steps), the other groups' steps in their order: a detour around a step
        whose candidate missed although every group's estimate said it would hold
        (:func:`~onnxfold.search.bisect.detour_candidate`)."""
        keep = [t for t, g in enumerate(self.moves) if t < start or g != group]
        sizes = self.sizes or [1] * len(self.moves)
        return AllocationPath(
            self.curves,
            [self.moves[t] for t in keep],
            np.concatenate([[0.0], np.cumsum(np.diff(self.saved)[keep])]),
            np.concatenate([[0.0], np.cumsum(np.diff(self.loss)[keep])]),
            [sizes[t] for t in keep],
        )

    def steps_for(self, saved: float) -> int:
        """The fewest steps whose estimated cost saved is at least ``saved`` (all steps if none)."""
        return int(min(len(self.moves), np.searchsorted(self.saved, saved, side="left")))


def _first_miss(curve: GroupCurve, target: float) -> float:
    """The fewest channels removed at which ``curve``'s group alone measured below ``target`` (inf where
    it never did; a level left unmeasured is not one)."""
    misses = [
        j
        for lv, j, f in zip(curve.levels, curve.removed, curve.fidelity, strict=False)
        if lv not in curve.unmeasured and j > 0 and f < target
    ]
    return float(min(misses, default=np.inf))


def _price(loss: np.ndarray, grid: Sequence[int], at: int, cost: float) -> float:
    """Price of group g standing at ``grid[at]`` removed channels (see the module docstring)."""
    if at >= len(grid) - 1:
        return np.inf
    j = grid[at]
    later = np.asarray(grid[at + 1 :])
    return float(np.min((loss[later] - loss[j]) / ((later - j) * cost)))


def removal_grid(channels: int, round_to: int, limit: int) -> list[int]:
    """The channel counts a group may lose, ascending from 0, at most ``limit``: n − w for every
    width w the fold can write (:func:`~onnxfold.folding.cluster.widths`)."""
    return [0] + [channels - w for w in widths(channels, round_to) if channels - w <= limit]


def largest_step(channels: int, round_to: int) -> int:
    """The most channels one step of the path removes from a group: m when it is rounded, else 1."""
    return round_to if rounds(channels, round_to) else 1


def greedy_path(
    curves: Sequence[GroupCurve],
    cap: float = 0.7,
    by: str = "params",
    round_to: int = 1,
    unmeasured_whole: bool = False,
    target: float | None = None,
) -> AllocationPath:
    """The greedy allocation path over ``curves`` (``by`` params or macs; ``round_to`` the fold's;
    ``unmeasured_whole``: see the module docstring). ``target`` (a fidelity search's): the steps that
    take a group to a width that alone measured below it come after every other step, so the path
    short of its misses (:meth:`AllocationPath.short_of_misses`) goes on in the other groups: in
    price order alone, a Keras digit CNN's search stopped at 24.9% after one candidate, its Conv's
    second step missing alone and every step of its Dense layer, priced after it, never tried."""
    curves = [c for c in curves if c.channels > 1]
    costs, losses, grids = [], [], []
    for c in curves:
        per = c.params_per_channel if by == "params" else c.macs_per_channel
        top = max((j for j in c.removed), default=0)
        removing = {lv for lv, j in zip(c.levels, c.removed, strict=True) if j > 0}
        if unmeasured_whole and removing and removing <= set(c.unmeasured):
            top = 0  # never measured (ukis-csmask: two groups folded 272 -> 88 and 256 -> 80 unseen)
        limit = min(top, int(np.floor(cap * c.channels + 1e-9)), c.channels - 1)
        costs.append(max(float(per), 1e-12))
        j = np.arange(c.channels)
        kept = np.clip(1.0 - c.loss_at(j), FIDELITY_FLOOR, 1.0)
        losses.append(-np.log(kept) + PRIOR * j / c.channels + MOVED_WEIGHT * c.moved_at(j))
        grids.append(removal_grid(c.channels, round_to, limit) if per > 0 else [0])
    at = [0] * len(curves)
    moves: list[int] = []
    sizes: list[int] = []
    saved, total = [0.0], [0.0]
    phases = [grids]
    if target is not None:  # first every step short of the misses, then the rest
        misses = [_first_miss(c, target) for c in curves]
        phases.insert(0, [[j for j in grid if j < miss] for grid, miss in zip(grids, misses, strict=True)])
    for phase in phases:
        prices = [_price(losses[g], phase[g], at[g], costs[g]) for g in range(len(curves))]
        while prices and np.isfinite(min(prices)):
            g = int(np.argmin(prices))
            before, after = grids[g][at[g]], grids[g][at[g] + 1]
            at[g] += 1
            moves.append(g)
            sizes.append(after - before)
            saved.append(saved[-1] + costs[g] * (after - before))
            total.append(total[-1] + losses[g][after] - losses[g][before])
            prices[g] = _price(losses[g], phase[g], at[g], costs[g])
    return AllocationPath(list(curves), moves, np.asarray(saved), np.asarray(total), sizes)


def params_ceiling(
    groups: Sequence, tensors: dict, cap: float, whole: set[str], copies: frozenset = frozenset()
) -> int:
    """The parameters a search can remove at most, before any measurement: every foldable group at
    ``cap`` (a group in ``whole``, fixed by an override or a recipe, at all but one channel), counted
    per weight (:func:`_removal`); what ``onnxfold analyze`` prints. NSNet2's 35% (its GRUs hold 54% of the
    parameters and stay whole) was found only after a 116 s search for 50%; a bound that counted a
    Conv cut on two axes twice read 18.0% on madmom's notes CNN, whose fold at the cap removes 12.7%.
    ``copies``: weights counted elsewhere as copies stored once, left out (fracast's stages held once per
    use read a bound of 105.9%)."""

    def removed(g) -> int:
        return g.size - 1 if g.name in whole else min(int(np.floor(cap * g.size + 1e-9)), g.size - 1)

    return _removal(groups, tensors, removed, copies)


def _removal(groups: Sequence, tensors: dict, removed, copies: frozenset = frozenset()) -> int:
    """The parameters removed with ``removed(g)`` channels out of every foldable group g: per weight,
    the share of each axis its groups' removed channels take (a block of positions per channel;
    slabs of a split tensor), multiplied over its axes, so a Conv cut in both its groups counts once
    (a bound that counted it in both read 100% on a plain CNN)."""
    from onnxfold.search.sensitivity import weight_members

    cut: dict[tuple[str, int], float] = {}
    for g in groups:
        if not (g.foldable and g.size >= 2):
            continue
        j = removed(g)
        for m, _ in weight_members(g, tensors):
            length = j * max(1, m.block) / max(1, m.split)
            cut[m.tensor, m.axis] = cut.get((m.tensor, m.axis), 0.0) + length
    kept: dict[str, float] = {}
    for (name, axis), length in cut.items():
        dim = tensors[name].shape[axis]
        kept[name] = kept.get(name, 1.0) * max(0.0, 1.0 - length / dim)
    return int(
        round(sum(float(np.prod(tensors[n].shape)) * (1.0 - k) for n, k in kept.items() if n not in copies))
    )


def mostly_unmeasured(curves: Sequence[GroupCurve]) -> bool:
    """Whether the time limit left most of the searched groups (two channels or more) with no level
    measured: a time-starved fidelity search (:func:`with_prior`). Trial 198's YOLOX, 25.9 s a level on a
    2-core machine, measured 8 of its 319 levels in 600 s; its path held the 6 groups measured, the others
    whole, and the search wrote 0.4% where ``--target-params 0.3`` wrote 30.1% with the task kept."""
    searched = [c for c in curves if c.channels > 1 and any(c.removed)]  # a group no level narrows: none
    blank = [
        c
        for c in searched
        if all(lv in c.unmeasured for lv, j in zip(c.levels, c.removed, strict=False) if j > 0)
    ]
    return 2 * len(blank) > len(searched)


def with_prior(curves: Sequence[GroupCurve], target: float) -> list[GroupCurve]:
    """Copies of ``curves`` where each level the time limit left unmeasured reads the prior fidelity
    1 − (j/n)² (j of n channels removed) instead of a miss, in groups that measured no miss below
    ``target``: a time-starved search's path then narrows every group a little before any much, the
    groups holding more parameters per channel first, and its candidates measure what the sensitivity
    could not. A level measured keeps its figure (a measured group's losses are mostly smaller, so
    it goes first); the levels past a measured miss stay misses."""
    out = []
    for c in curves:
        if c.channels < 2 or _first_miss(c, target) < np.inf or not c.unmeasured:
            out.append(c)
            continue
        fidelity = [
            1.0 - (j / c.channels) ** 2 if lv in c.unmeasured else f
            for lv, j, f in zip(c.levels, c.removed, c.fidelity, strict=False)
        ]
        out.append(replace(c, fidelity=fidelity, unmeasured=list(c.unmeasured)))
    return out


def fixed_groups(groups: Sequence[Any], overrides: Sequence[tuple[str, float]], recipe: Any) -> set[str]:
    """Names of the groups whose sparsity a recipe or an override fixes (never searched)."""
    fixed = set()
    for g in groups:
        names = [g.name] + list(g.producers)
        if recipe is not None and recipe.sparsity(g) is not None:
            fixed.add(g.name)
        elif any(re.search(pat, n) for pat, _ in overrides for n in names):
            fixed.add(g.name)
    return fixed
