"""A fidelity search's pick (``--min-fidelity``): the largest reduction along the allocation path whose
measured fidelity meets the target, found by bisection on the path's steps."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from onnxfold.report.table import percent
from onnxfold.search.allocate import AllocationPath
from onnxfold.search.time_limit import PacedLimit, TimeLimit

if TYPE_CHECKING:
    from onnxfold.search.target import Candidate

MAX_CANDIDATES = 24  #: most candidates built by one bisection (with its probes beyond a failure)


def bisect_candidate(
    path: AllocationPath,
    measure: Callable[[int], Candidate],
    tried: dict[int, Candidate],
    target: float,
    limit: TimeLimit | PacedLimit | None = None,
    unchanged: Callable[[], Candidate] | None = None,
    floor: int | Callable[[Candidate], int] = 0,
    reach: int | None = None,
) -> tuple[Candidate, bool]:
    """Largest measured reduction with fidelity ≥ target, by bisection on path steps (the far end
    measured first, or the longest prefix the limit affords, :func:`_affordable_end`; nothing more
    once ``limit`` has expired; an empty path or one the limit affords no step of is not searched).
    The near end, the unchanged model, is measured too while time is left; after it, ``unchanged()``
    builds it unmeasured (CRAFT's search measured it after its limit, minutes past it). ``floor``: the first step worth taking
    (``--min-gain``: a smaller reduction is discarded anyway), or a function of the measured far end
    that gives it; it is measured next, and where it misses (or lies at the far end), no step below
    it is sought (malvizv1's data-free default bisected 8 candidates down to 1% fewer parameters,
    64 s, to keep the model whole). ``reach``: the most steps worth measuring, where the path's far
    end is known to miss (:meth:`~onnxfold.search.allocate.AllocationPath.short_of_misses`); the
    bisection starts there instead (None or 0: at the far end)."""
    expired = limit.expired if limit is not None else lambda: False
    end = _affordable_end(path, limit)
    if reach:
        end = min(end, reach)
    if end == 0 and unchanged is not None:  # an empty path (every group blocked, or none measured)
        # too: a tf2onnx VGG16's 17.6 GMACs a sample measured its unchanged self for minutes
        lo = unchanged()
        return lo, lo.meets(target)
    hi = measure(end)
    if hi.meets(target):
        return hi, True
    if unchanged is not None and expired():
        lo = unchanged()
        return lo, lo.meets(target)
    lo = measure(0)
    if not lo.meets(target):
        return max((lo, hi), key=lambda c: c.fidelity), False
    a, b = 0, end
    floor = floor(hi) if callable(floor) else floor
    if floor >= end > 0:
        return lo, True
    if 0 < floor and not expired():
        if not measure(floor).meets(target):
            return lo, True
        a = floor
    while not expired():
        while b - a > 1 and len(tried) < MAX_CANDIDATES and not expired():
            mid = (a + b) // 2
            if measure(mid).meets(target):
                a = mid
            else:
                b = mid
        # fidelity need not fall monotonically along the path: probe 3 points beyond the first failure
        probes = [int(v) for v in np.linspace(b, end, 5)[1:-1] if int(v) not in tried]
        if not probes or len(tried) + len(probes) > MAX_CANDIDATES or expired():
            break
        ok = [p for p in probes if not expired() and measure(p).meets(target)]
        if not ok:
            break
        a = max(ok)
        b = min([p for p in probes if p > a] + [end])
    passing = [c for c in tried.values() if c.meets(target)]
    return max(passing, key=lambda c: (c.reduction, c.fidelity)), True


def gallop_candidate(
    path: AllocationPath,
    chosen: Candidate,
    measure: Callable[[int], Candidate],
    target: float,
    limit: TimeLimit | PacedLimit,
) -> Candidate:
    """Past ``chosen``, met at a time-starved search's estimated reach (its losses mostly a prior,
    :func:`~onnxfold.search.allocate.with_prior`): the candidate removing twice the estimated saving
    is measured, and twice that, to the first miss or the path's end, then bisection back between the
    last met and the first miss, while ``limit`` affords candidates (:data:`MAX_CANDIDATES` in all).
    Returns the largest met."""
    lo, hi, spent = chosen.steps, None, 0
    best = chosen

    def affords() -> bool:
        return spent < MAX_CANDIDATES and not limit.expired()

    def meets(s: int) -> bool:
        nonlocal best, spent
        cand, spent = measure(s), spent + 1
        if cand.meets(target) and cand.reduction >= best.reduction:
            best = cand
        return cand.meets(target)

    while hi is None and lo < len(path) and affords():
        s = min(len(path), max(lo + 1, path.steps_for(2 * path.saved[lo])))
        lo, hi = (s, None) if meets(s) else (lo, s)
    while hi is not None and hi - lo > 1 and affords():
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if meets(mid) else (lo, mid)
    return best


def beside_gain(share: float, gain: float) -> str:
    """``share`` as a percentage read beside ``--min-gain`` ``gain``: to two decimals where one would
    show it equal to the gain it falls short of or passes ("a candidate short of --min-gain 0.02, 2.0%
    fewer parameters" was 1.98%)."""
    shown = percent(share)
    return f"{share:.2%}" if shown == f"{gain:.1%}" and share != gain else shown


def below_gain(chosen: Candidate, min_gain: float, proxy: bool, macs_known: bool = True) -> str:
    """Why ``chosen``, a candidate that met its target, is too little to be worth it: it removes less
    than ``min_gain`` of the parameters and of the MACs (DeepFilterNet's encoder, 0.4% of the
    parameters and 27.6% of the MACs, was kept whole when only parameters counted); '' otherwise
    (nothing removed: nothing to keep whole). ``proxy``: measured on the data-free proxy. Without
    ``macs_known`` (dims shape inference left unresolved, taken as 1) the MACs do not count: a speech
    embedding whose Loop front end left 41 dims at 1 was folded 1.4% for "2.6% fewer MACs"."""
    if not 0.0 < chosen.reduction < min_gain or (macs_known and chosen.macs_reduction >= min_gain):
        return ""
    macs = f"{chosen.macs_reduction:.1%} fewer MACs" if macs_known else "MACs not counted reliably"
    return (
        f"the best candidate, {beside_gain(chosen.reduction, min_gain)} fewer parameters "
        f"({macs}) at fidelity {chosen.fidelity:.4f}, removes less than --min-gain {min_gain:g} of "
        f"{'either' if macs_known else 'them'}: the model is kept whole (a smaller gain is not worth a change "
        "its measurement cannot vouch for)"
        + ("; --inputs with samples as the model is used usually allow more" if proxy else "")
    )


def _affordable_end(path: AllocationPath, limit: TimeLimit | PacedLimit | None) -> int:
    """The far end the bisection measures first: the path's, or where the limit cannot afford it (a
    :class:`PacedLimit`'s estimate), its longest prefix that it can; 0 where none can."""
    affords = getattr(limit, "affords", None)
    if affords is None or affords(len(path)):
        return len(path)
    return next((s for s in range(len(path) - 1, 0, -1) if affords(s)), 0)


class GainFloor:
    """A ``floor`` for :func:`bisect_candidate` (``--min-gain``), on the data-free proxy only: on given
    samples it would change which candidates the bisection measures (LeNet-5: one more), and each
    one more that passes on a few samples is one more chance of a lucky pass; there the gain is
    checked on the result alone. The last path step whose estimated
    saving stays under ``min_gain`` of ``params`` (the step before the first that reaches it), so that
    an estimate off either way skips no candidate worth the gain (one scaled to the far end's
    measured reduction overshot: 64% for a gain of 41% on LeNet-5); the far end where no step
    reaches it, 0 without a min gain."""

    def __init__(self, saved: Sequence[float], min_gain: float, params: float) -> None:
        self.saved, self.min_gain, self.params, self.step = list(saved), min_gain, params, 0

    def __call__(self, hi: Candidate | None = None) -> int:
        if not self.min_gain or not self.params or len(self.saved) < 2:
            return 0
        reached = next((t for t, v in enumerate(self.saved) if v >= self.min_gain * self.params), None)
        self.step = len(self.saved) - 1 if reached is None else max(1, reached - 1)
        return self.step

    def missed(self, tried: dict[int, Candidate], target: float, proxy: bool = True, given: int = 0) -> str:
        """Why the model is kept whole where the step worth the gain missed, else ''; ``proxy``: measured
        on the data-free proxy, where given samples usually allow more. ``given``: the input's
        parameters, which the candidate's reduction is shown from, as the report's (GTCRN read "27.8%"
        and "3.1% fewer parameters" for one candidate, weights held twice and stored once in the first),
        beside the fold's own share that the gain is weighed by."""
        first = tried.get(self.step) if self.step else None
        if first is None or first.meets(target):
            return ""
        shown = 1.0 - first.params / given if given else first.reduction
        got = f"{beside_gain(shown, self.min_gain)} fewer parameters"
        if f"{shown:.1%}" != f"{first.reduction:.1%}":  # the share the gain is weighed by first: "short
            # of --min-gain 0.02, 2.2% fewer parameters, 1.99% by folding" read as a contradiction
            got = f"{beside_gain(first.reduction, self.min_gain)} of the parameters by folding ({percent(shown)} fewer than the model given)"
        gain = f"--min-gain {self.min_gain:g}"
        # the fidelity against the target it missed: USE's note read "already measured 0.0229", which a
        # user took for a gain
        fid = f"measured {first.fidelity:.4f}, below the target {target:g}"
        if self.step == len(self.saved) - 1 and first.reduction < self.min_gain:
            what = f"no candidate on the search's path removes {gain} (its far end: {got}, {fid})"
        elif first.reduction >= self.min_gain and self.step == 1:
            # MTCNN's PNet: "45.8% fewer" read as if smaller steps had been skipped; trial 204 stumbled on
            # "smaller ones are not sought (none exists: ...)"
            return (
                f"the search's first step (one group narrowed by one channel, or by --round-to channels "
                f"where rounded) already removes {got}, {fid}; no candidate is smaller (--round-to 1 "
                "steps finer), so the model is kept whole"
                + ("; --inputs with samples as the model is used usually allow more" if proxy else "")
            )
        elif first.reduction >= self.min_gain:
            what = f"the first candidate worth {gain}, {got}, {fid}: smaller ones are not sought"
        else:
            what = f"a candidate short of {gain}, {got}, already {fid}: larger ones are not sought"
        return (
            f"{what} (a smaller gain is not worth a change its measurement cannot vouch for), and the "
            "model is kept whole"
            + ("; --inputs with samples as the model is used usually allow more" if proxy else "")
        )


#: how many groups a fidelity search holds at their width, at most, to go on past a step that missed
DETOURS = 3
#: the most candidates the detours measure in all
DETOUR_CANDIDATES = 12


def detour_candidate(
    path: AllocationPath,
    chosen: Candidate,
    tried: dict[int, Candidate],
    measure: Callable[[AllocationPath, int], Candidate],
    target: float,
    limit: TimeLimit | PacedLimit,
) -> Candidate:
    """Past the bisection's pick ``chosen`` (``chosen.steps`` on ``path``, met): where the next step was
    measured and missed, the group it narrows is held at its width and the path goes on in the other
    groups (:meth:`~onnxfold.search.allocate.AllocationPath.without`). The detour's next step is
    measured (``measure(route, steps)``); where it holds, the search gallops on (1, 2, 4, ... steps
    further) to its first miss and bisects back between the two; where it misses, the group of that
    step is held in turn: at most :data:`DETOURS` groups, :data:`DETOUR_CANDIDATES` candidates. The
    groups' losses measured alone need not add up: AsterNet's search (trial 196) stopped at 4.0% where
    one step flipped one of 32 text lines, and every later step along the path held that flip.
    Returns the largest passing candidate found (``chosen`` where no detour holds)."""
    local = {s: c for s, c in tried.items() if s <= len(path)}  # the path's own (uniform keys lie past it)
    route, at, spent = path, chosen.steps, [0]

    def step(s: int) -> Candidate:
        if s not in local:
            local[s], spent[0] = measure(route, s), spent[0] + 1
        return local[s]

    def affords() -> bool:
        return spent[0] < DETOUR_CANDIDATES and not limit.expired()

    for _ in range(DETOURS):
        missed = local.get(at + 1)
        if missed is None or missed.meets(target) or at >= len(route) or not affords():
            break
        route = route.without(route.moves[at], at)
        local = {s: c for s, c in local.items() if s <= at}
        end = min(len(route), route.short_of_misses(target))  # a group alone measured a miss past it
        if end <= at or not step(at + 1).meets(target):
            continue
        lo, hi, stride = at + 1, None, 1
        while hi is None and lo < end and affords():
            s = min(lo + stride, end)
            lo, hi, stride = (s, None, 2 * stride) if step(s).meets(target) else (lo, s, stride)
        while hi is not None and hi - lo > 1 and affords():
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if step(mid).meets(target) else (lo, mid)
        at, chosen = lo, local[lo]
    return chosen
