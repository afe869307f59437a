"""A budget search's pick (``--target-params`` / ``--target-macs``): the prefix of the allocation path whose
measured reduction is closest to the budget, within one step."""

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
    """The path prefix whose measured reduction is closest to ``target`` (a fraction of ``total``
    parameters or MACs): estimated first, then corrected by the measured shortfall (4 times at most,
    none once ``limit`` has expired). ``saved(steps)``: the parameters a prefix removes, counted
    (:func:`params_saved`) where the path's sum of per-channel costs counts twice a weight both of
    whose axes fold: a table-line segmenter's first candidate for 30% removed 24.7%, and a time
    limit left no room to correct it."""
    tolerance = tolerance_of(path, total, mode, round_to)

    def reduction(c: Candidate) -> float:
        return c.reduction if mode == "target_params" else c.macs_reduction

    want = target * total
    best: Candidate | None = None
    first = _counted_steps(path, saved, want) if saved is not None and mode == "target_params" else None
    for _ in range(5):
        cand = measure(first if first is not None else path.steps_for(want))
        first = None
        if best is None or abs(reduction(cand) - target) < abs(reduction(best) - target):
            best = cand
        miss = (target - reduction(cand)) * total
        if abs(miss) <= tolerance * total or (miss > 0 and cand.steps >= len(path)):
            break
        if limit is not None and limit.expired():
            break
        want += miss
    assert best is not None
    return best, reduction(best) >= target - tolerance


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
    return [
        f"note: {got:.1%} against the asked {target:.0%}: within one of the search's steps (each moves one "
        "group by a channel, or by --round-to channels where it is rounded; --round-to 1 steps finer)"
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
