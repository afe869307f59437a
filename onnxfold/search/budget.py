"""A budget search's pick (``--target-params`` / ``--target-macs``): the shortest prefix of the allocation
path whose measured reduction reaches the budget, within one step past it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from onnxfold.search.allocate import AllocationPath, largest_step
from onnxfold.search.time_limit import PacedLimit, TimeLimit

if TYPE_CHECKING:
    from onnxfold.search.target import Candidate


def budget_candidate(
    path: AllocationPath,
    measure: Callable[[int], Candidate],
    total: float,
    target: float,
    mode: str,
    round_to: int = 1,
    limit: TimeLimit | PacedLimit | None = None,
    saved: Callable[[int], float] | None = None,
) -> tuple[Candidate, bool]:
    """The shortest path prefix whose measured reduction reaches ``target`` (a fraction of ``total``
    parameters or MACs), and whether one does: a budget is a floor (a digit CNN's user asked for half
    the MACs and was written 45.6%, "within one step"). Estimated first, then corrected by the measured
    miss and narrowed between the longest prefix short of it and the shortest one past it (5
    measurements at most, none more once ``limit`` has expired, when one step short reads as met); met
    within half a tenth of a percent.
    ``saved(steps)``: the parameters a prefix removes, counted (:func:`params_saved`) where the path's
    sum of per-channel costs counts twice a weight both of whose axes fold: a table-line segmenter's
    first candidate for 30% removed 24.7%, and a time limit left no room to correct it."""
    tolerance = tolerance_of(path, total, mode, round_to)

    def reduction(c: Candidate) -> float:
        return c.reduction if mode == "target_params" else c.macs_reduction

    want = target * total
    short: Candidate | None = None  # the longest prefix measured short of the target
    past: Candidate | None = None  # the shortest prefix measured at or past it
    steps = _counted_steps(path, saved, want) if saved is not None and mode == "target_params" else None
    for _ in range(5):
        steps = path.steps_for(want) if steps is None else steps
        lo, hi = (short.steps if short else -1), (past.steps if past else len(path) + 1)
        steps = min(max(steps, lo + 1), hi - 1)  # strictly between what was measured on either side
        cand = measure(steps)
        gap = reduction(cand) - target
        if gap >= -REACHED:
            past = cand if past is None or cand.steps < past.steps else past
        else:
            short = cand if short is None or cand.steps > short.steps else short
        lo, hi = (short.steps if short else -1), (past.steps if past else len(path) + 1)
        if hi - lo <= 1 or (past is not None and reduction(past) - target <= tolerance):
            break
        if past is None and cand.steps >= len(path):
            break
        if limit is not None and limit.expired():
            break
        want -= gap * total
        steps = None
    if past is not None:
        return past, True
    assert short is not None  # a time limit may stop the corrections a step short: read as reached
    cut = limit is not None and limit.expired() and short.steps < len(path)
    return short, cut and target - reduction(short) <= tolerance


REACHED = 0.0005  # a reduction this close under the budget reads as it, to the tenth of a percent


def _counted_steps(path: AllocationPath, saved: Callable[[int], float], want: float) -> int:
    """The fewest steps whose counted saving reaches ``want`` (it grows with the steps: bisection)."""
    lo, hi = 0, len(path)
    if saved(hi) < want:
        return hi
    while lo < hi:
        mid = (lo + hi) // 2
        if saved(mid) >= want:
            hi = mid
        else:
            lo = mid + 1
    return lo


def params_saved(groups: Sequence, tensors: dict, removed: dict[str, int]) -> float:
    """Parameters removed from the weights when each group ``removed`` names loses that many
    channels: every weight's size recounted from its shrunk axes (a Conv weight whose output and
    input channels both fold loses (a·in + b·out − a·b), not a·in + b·out)."""
    from onnxfold.search.sensitivity import weight_members

    dims: dict[str, list[float]] = {}
    sizes: dict[str, float] = {}
    for g in groups:
        r = removed.get(g.name, 0)
        if not r:
            continue
        for m, t in weight_members(g, tensors):
            shape = dims.setdefault(m.tensor, [float(d) for d in t.shape])
            sizes[m.tensor] = float(np.prod(t.shape))
            shape[m.axis] -= r * max(1, m.block) / max(1, m.split)
    return sum(sizes[name] - float(np.prod(np.maximum(shape, 0.0))) for name, shape in dims.items())


def tolerance_of(path: AllocationPath, total: float, mode: str, round_to: int = 1) -> float:
    """One step's worth of the budget: the largest cost of one step of the path (a channel, or
    ``round_to`` channels of a rounded group), as a fraction of ``total``."""
    per = [
        (c.params_per_channel if mode == "target_params" else c.macs_per_channel)
        * largest_step(c.channels, round_to)
        for c in path.curves
    ]
    return (max(per) / total) if per and total else 0.0


def budget_note(got: float, target: float, steps: int) -> list[str]:
    """A line where a met budget reached ``got`` against the asked ``target`` (a trial read 27.4% as a
    miss): with nothing folded (``steps`` 0), the model's weights held twice and stored once did it."""
    if not steps and got > target:
        return [
            f"note: {got:.1%} against the asked {target:.0%}, with nothing folded (what the cleanup "
            "saves: weights held twice stored once, unused ones dropped)"
        ]
    if abs(got - target) < 0.005:
        return []
    if got < target:
        return [
            f"note: {got:.1%} against the asked {target:.0%}: one of the search's steps short of it, where "
            "its time limit stopped the corrections (a longer --time-limit reaches it)"
        ]
    return [
        f"note: {got:.1%} against the asked {target:.0%}: the first of the search's steps to reach it (each "
        "moves one group by a channel, or by --round-to channels where it is rounded; --round-to 1 steps finer)"
    ]


def compute_note(mode: str, params: float, macs: float) -> list[str]:
    """A line where a search that did not aim at MACs removed far more parameters than MACs (at least
    5% of the parameters, under a third of that share of the MACs; a tf2onnx speech embedding's
    default search removed 34.1% of its parameters and 9.2% of its MACs, 1.08x faster, where
    --target-params 0.3 removed 39.4% of the MACs at the same r2): SFace's 20% budget folded its
    flatten head, 20.0% fewer parameters and 2.6% fewer MACs, and its user wanted speed. The cause is
    given as kinds of layer: FaceBoxesV2's note named "a flatten head's Gemm", and it has none (its
    fold narrowed a late 256-channel Conv). ``params``: the fold's own share (weights held twice and
    stored once save no MACs either: GTCRN read "25.5% fewer parameters but 0.0% fewer MACs: the fold
    took most ..." with nothing folded)."""
    if mode == "target_macs" or params < 0.05 or macs >= params / 3:
        return []
    return [
        f"note: {params:.1%} fewer parameters but {macs:.1%} fewer MACs: the fold took most from layers "
        "that hold many weights and compute little (such as a Gemm over flattened features or a "
        "convolution on a small, late feature map); for speed, --target-macs R "
        "aims at the compute"
    ]
