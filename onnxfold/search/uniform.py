"""Uniform rivals of the path's pick: every searched group at one sparsity.

The greedy path (:mod:`onnxfold.search.allocate`) orders channel removals by each group's loss
measured alone; where the losses do not add up (groups that feed one another, a recurrent layer and
the projection before it), one sparsity for every group can keep more at the same size. sleepecg's
sleep-staging GRU under ``--target-params 0.3 --inputs``: the path's 31.4% measured top1 0.8607 and
was refused, where ``-s 0.3`` (every group alike) removed 36.2% at 0.889 on the same nights (trial 166).

After the path's pick, a search with time left measures a few uniform candidates and keeps one that
does better: for a fidelity target where the path took a step, the largest of :data:`LEVELS` that
meets it and removes more than the pick (bisection; a level that removes no more is built, not
measured; at most :data:`MEASURED` measured); for a budget, the level whose
reduction reaches the budget (bisection on builds, which are not measured), where it measures
higher than the pick.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from onnxfold.ir.model import Model
    from onnxfold.search.allocate import AllocationPath
    from onnxfold.search.evaluate import Evaluator
    from onnxfold.search.target import Candidate
    from onnxfold.search.time_limit import PacedLimit

#: the sparsities a fidelity target's uniform rivals are sought among
LEVELS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
#: at most this many uniform candidates are measured for a fidelity target
MEASURED = 3
#: builds a budget's bisection on the sparsity takes at most
BUILDS = 6


def uniform_rival(
    path: AllocationPath,
    cap: float,
    build: Callable[[dict[str, float]], tuple[Model, dict]],
    evaluator: Evaluator,
    counted: tuple[Any, dict | None],
    chosen: Candidate,
    met: bool,
    mode: str,
    target: float,
    limit: PacedLimit,
    tried: dict[int, Candidate],
) -> Candidate | None:
    """A uniform candidate that does better than the path's pick ``chosen`` (module docstring), else
    None. ``build`` makes a candidate of an allocation, ``counted`` holds the (base statistics, input
    shapes) reductions are counted from, ``limit`` is checked before each build; every uniform
    candidate built goes into ``tried`` (keys past the path's steps)."""
    from onnxfold.search.candidates import measured, next_key

    names = [c.name for c in path.curves if not set(c.levels) <= set(c.unmeasured)]  # as the path, not
    # a group the time limit left with no level measured (ukis-csmask's carried its whole loss)

    def make(level: float) -> Candidate:  # built and counted, not measured
        allocation = {n: min(level, cap) for n in names}
        cand = measured(next_key(len(path), tried), build(allocation), None, *counted)
        cand.allocation, cand.measured = allocation, False
        return cand

    def score(cand: Candidate) -> Candidate:
        cand.fidelity, cand.outputs = limit.timed(lambda: evaluator(cand.model))
        cand.unseen = list(evaluator.last_unseen) if getattr(evaluator, "unseen", None) is not None else []
        cand.measured, tried[cand.steps] = True, cand
        return cand

    if not names:
        return None
    if mode == "min_fidelity":  # where the path took a step: a level removing no more is not measured
        if not (met and chosen.steps > 0):
            return None
        lo, hi, best, measures = -1, len(LEVELS), None, 0
        while hi - lo > 1 and measures < MEASURED and not limit.expired():
            mid = (lo + hi) // 2
            cand = make(LEVELS[mid])
            if cand.reduction <= chosen.reduction:
                lo = mid
                continue
            cand, measures = score(cand), measures + 1
            if cand.meets(target):
                lo, best = mid, cand
            else:
                hi = mid
        return best
    share = (lambda c: c.reduction) if mode == "target_params" else (lambda c: c.macs_reduction)
    lo, hi, reaching = 0.0, min(cap, 0.95), None
    for _ in range(BUILDS):
        if limit.expired():
            return None
        mid = (lo + hi) / 2
        cand = make(mid)
        if share(cand) >= target:
            hi, reaching = mid, cand
        else:
            lo = mid
    if reaching is None or limit.expired():
        return None
    reaching = score(reaching)
    return reaching if reaching.fidelity > chosen.fidelity else None
