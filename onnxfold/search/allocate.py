"""Allocation: per-group sparsities from sensitivity curves, by estimated loss per cost saved.

Each group g has an estimated loss L_g(j) = 1 − fidelity after removing j channels
(:meth:`~onnxfold.search.sensitivity.GroupCurve.loss_at`) and a cost saved per removed channel c_g
(parameters, or MACs). The greedy path starts with nothing removed and removes one channel at a
time from the group of least marginal price, where the price of group g at j removed is
min over j' > j of (L_g(j') − L_g(j)) / ((j' − j)·c_g) (the slope to the best later point, so that
a flat stretch after a step is not hidden by the step). A small prior PRIOR·j/n_g is added to every
estimated loss: where measured losses tie (flat curves), the group whose channels are the larger
share of the model (n_g·c_g) goes first, and a group is not emptied for nothing. A group never goes beyond
cap·n channels nor beyond its largest measured level. Every prefix of the path is an allocation;
its estimated cost saved is the sum of j_g·c_g.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from onnxfold.search.sensitivity import GroupCurve

#: Weight of the tie-breaking prior j/n added to every estimated group loss.
PRIOR = 1e-4


@dataclass
class AllocationPath:
    """The greedy path: ``moves[t]`` is the index of the group that loses a channel at step t."""

    curves: list[GroupCurve]
    moves: list[int]
    saved: np.ndarray  # saved[t] = estimated cost saved after t steps (saved[0] = 0)
    loss: np.ndarray  # loss[t] = sum of estimated group losses after t steps

    def __len__(self) -> int:
        return len(self.moves)

    def removed_at(self, steps: int) -> list[int]:
        """Channels removed per group after ``steps`` steps."""
        counts = np.bincount(np.asarray(self.moves[:steps], dtype=np.int64), minlength=len(self.curves))
        return [int(v) for v in counts]

    def sparsities_at(self, steps: int) -> dict[str, float]:
        """{group name: sparsity} after ``steps`` steps (groups with nothing removed included, at 0)."""
        return {c.name: j / c.channels for c, j in zip(self.curves, self.removed_at(steps), strict=True)}

    def steps_for(self, saved: float) -> int:
        """The fewest steps whose estimated cost saved is at least ``saved`` (all steps if none)."""
        return int(min(len(self.moves), np.searchsorted(self.saved, saved, side="left")))


def _price(loss: np.ndarray, j: int, jmax: int, cost: float) -> float:
    if j >= jmax:
        return np.inf
    later = np.arange(j + 1, jmax + 1)
    return float(np.min((loss[j + 1 : jmax + 1] - loss[j]) / ((later - j) * cost)))


def greedy_path(curves: Sequence[GroupCurve], cap: float = 0.7, by: str = "params") -> AllocationPath:
    """The greedy allocation path over ``curves`` (``by`` params or macs; see the module docstring)."""
    curves = [c for c in curves if c.channels > 1]
    costs, losses, jmax = [], [], []
    for c in curves:
        per = c.params_per_channel if by == "params" else c.macs_per_channel
        top = max((j for j in c.removed), default=0)
        limit = min(top, int(np.floor(cap * c.channels + 1e-9)), c.channels - 1)
        costs.append(max(float(per), 1e-12))
        j = np.arange(c.channels)
        losses.append(c.loss_at(j) + PRIOR * j / c.channels)
        jmax.append(limit if per > 0 else 0)
    j = [0] * len(curves)
    prices = [_price(losses[g], 0, jmax[g], costs[g]) for g in range(len(curves))]
    moves: list[int] = []
    saved, total = [0.0], [0.0]
    while prices and np.isfinite(min(prices)):
        g = int(np.argmin(prices))
        j[g] += 1
        moves.append(g)
        saved.append(saved[-1] + costs[g])
        total.append(total[-1] + losses[g][j[g]] - losses[g][j[g] - 1])
        prices[g] = _price(losses[g], j[g], jmax[g], costs[g])
    return AllocationPath(list(curves), moves, np.asarray(saved), np.asarray(total))
