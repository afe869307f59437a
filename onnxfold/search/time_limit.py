"""A search's ``--time-limit``: the clock every stage of the search reads between measurements.

The limit covers the command, not only the search: the validation that follows a search runs the
original and the result on every sample, and on a heavy model that took 54 s after a 582 s search
of a "600 s" limit (a Conv-TasNet denoiser). So the search keeps a
``reserve`` for it, :data:`AFTER_SEARCH_RUNS` times what one whole run of the original on the
samples took (:attr:`~onnxfold.search.evaluate.Evaluator.whole_seconds`), and its stages read the
``budget`` that is left, ``seconds - reserve``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

#: the share of a search's time limit the sensitivity may take: the rest is left to the candidates.
#: Without it the analysis of PicoDet (layout) took the whole of a 600 s limit, and the search
#: could only measure the two ends of its path (0% fewer parameters, 902 s in all).
SENSITIVITY_SHARE = 0.5
#: ... and where, on given samples, it would leave most groups with no level measured anyway: the
#: candidates measure them (:func:`~onnxfold.search.allocate.with_prior`), and get the time. A YOLOX's
#: 274 s measured 16 of its 319 levels
STARVED_SHARE = 0.2
#: whole runs of the model on the samples after a search: validation runs the original and the
#: result (and remeasures a result that a pass after the search changed), each in a session of its own
AFTER_SEARCH_RUNS = 3
#: the most of a limit kept for what follows the search, however slow a run is
MAX_RESERVE_SHARE = 0.25


class TimeLimit:
    """A search's time limit: :meth:`expired` once its :attr:`budget` (``seconds`` less the
    ``reserve`` kept for the work after the search) has passed since it was made (never when
    ``seconds`` is 0); ``skipped`` counts the measurements it cut, ``measured`` those made."""

    def __init__(self, seconds: float = 0.0, clock: Callable[[], float] = time.perf_counter) -> None:
        self.seconds, self.clock = float(seconds), clock
        self.start = clock()
        self.skipped = self.measured = 0
        self.read = self.start  # the clock at the last check
        self.reserve = 0.0
        self.enough = 0.0  # a limit the sensitivity's forecast found enough for all of it (0: none made)
        self.before = 0.0  # seconds of the user's limit spent before this one began (:meth:`rest`)
        self.given = self.seconds  # the user's limit
        #: the share of the budget the sensitivity may take (less where it starves: :data:`STARVED_SHARE`)
        self.share = SENSITIVITY_SHARE

    def keep(self, seconds: float) -> None:
        """Keep ``seconds`` of the limit for the work after the search, at most
        :data:`MAX_RESERVE_SHARE` of it (nothing without a limit)."""
        if self.seconds > 0:
            self.reserve = min(max(0.0, float(seconds)), MAX_RESERVE_SHARE * self.seconds)

    @property
    def budget(self) -> float:
        """The search's own seconds: the limit less its reserve."""
        return self.seconds - self.reserve

    def expired(self, share: float = 1.0) -> bool:
        """Whether ``share`` of the budget has passed (the sensitivity stops at
        :data:`SENSITIVITY_SHARE` of it, leaving the rest to the candidates)."""
        if self.seconds <= 0:
            return False
        self.read = self.clock()
        return self.read - self.start >= share * self.budget

    def share_left(self) -> float:
        """Seconds until the sensitivity's :attr:`share` of the budget has passed."""
        return self.share * self.budget - (self.clock() - self.start)

    def left(self) -> float:
        """Seconds left of the budget (infinite without a limit)."""
        return self.budget - (self.clock() - self.start) if self.seconds > 0 else float("inf")

    def rest(self) -> TimeLimit:
        """A fresh limit over what is left of this one, its reserve kept (a second search's:
        :mod:`onnxfold.search.exact_widths`); no limit where this one has none."""
        rest = TimeLimit(max(0.0, self.left()) + self.reserve if self.seconds > 0 else 0.0, self.clock)
        rest.reserve = self.reserve if self.seconds > 0 else 0.0
        rest.before = self.before + (self.clock() - self.start if self.seconds > 0 else 0.0)
        rest.given = self.given
        return rest

    def told(self) -> str:
        """The limit as the user gave it, and where a second search runs on the :meth:`rest`, what it
        had of it: trial 204's 300 s read "the time limit (172.414 s) cut the search short"."""
        if not self.before:
            return f"{self.seconds:g} s"
        return f"{self.given:g} s, {self.seconds:.0f} s of it left for the search at exact widths"


class PacedLimit:
    """A :class:`TimeLimit` that also expires when less time is left than a typical candidate takes
    (the median of the ``durations`` seen so far): a candidate started just before the limit ran
    past it by as long as a candidate takes. CRAFT (20.8M parameters, a minute or more per
    candidate) searched 679 s of its 600 s."""

    def __init__(self, limit: TimeLimit, estimate: Callable[[int], float] | None = None) -> None:
        self.limit, self.durations, self.estimate = limit, [], estimate

    def timed(self, run: Callable[[], Any]) -> Any:
        """``run()``, its duration recorded on the limit's clock."""
        start = self.limit.clock()
        try:
            return run()
        finally:
            self.durations.append(self.limit.clock() - start)

    def expired(self) -> bool:
        if self.limit.expired():
            return True
        return bool(self.durations) and self.limit.left() < float(np.median(self.durations))

    def affords(self, steps: int) -> bool:
        """Whether the candidate at ``steps`` path steps is likely to end within the limit: by the
        candidates timed so far, or before the first by ``estimate(steps)`` (SCRFD's far end, whose
        widths the sensitivity had not measured, took 196 s of the 166 left, and measured 0)."""
        if self.limit.seconds <= 0:
            return True
        if self.durations or self.estimate is None:
            return not self.expired()
        return self.limit.left() >= self.estimate(steps)


#: what a time-starved search on given samples did (:func:`~onnxfold.search.allocate.mostly_unmeasured`), in the
#: time-limit warning
STARVED = (
    "most groups had no level measured, so the path estimated them (fidelity 1 - (j/n)^2, j of n channels "
    "removed) and whole candidates measured them, each group's method chosen by its estimated error"
)


#: what makes a starved search faster, on given samples and on the data-free proxy
FASTER = {False: "fewer --inputs samples", True: "--input-shape at the size the model is used"}


def sensitivity_cut_notes(limit: TimeLimit, skipped: int, prepared_s: float = 0.0) -> list[str]:
    """The time-limit warning's words for a sensitivity the limit cut (none when it measured every
    level): its share, the measurements skipped, and what the preparation took where it took a
    fifth or more of the limit (the original's runs on every sample, the judge's statistics): a
    spindle detector's search with ``--time-limit 120`` measured nothing and the report said
    nothing of where its 84 s went."""
    if not skipped:
        return []
    before = (
        f"preparing the measurements (the original on every sample, the judge's statistics) took "
        f"{prepared_s:.0f} s of it, and "
        if limit.seconds > 0 and prepared_s >= 0.2 * limit.seconds
        else ""
    )
    return [
        f"{before}the sensitivity stopped at its share ({limit.budget * limit.share:g} s): {skipped} of "
        f"{skipped + limit.measured} measurements skipped (those groups are folded last and judged only within whole candidates)"
        # trial 186 read "a longer --time-limit" at the end; the figure was only in the warning above
        + (f"; --time-limit {limit.enough:.0f} was forecast enough for all of them" if limit.enough else "")
    ]
