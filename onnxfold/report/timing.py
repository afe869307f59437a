"""Where a fold's time goes: wall seconds per named step (reading weights, features, PCA, clustering,
rewrite, spill, save), collected without threading anything through the call chain.

:func:`collecting` makes a :class:`StepTimes` current (a context variable, so each thread or worker
process collects its own); :func:`step` adds the wall time of its block to the current one, or does
nothing when none is current. Steps nest and are *exclusive*: a step's time excludes the steps run
inside it, so the buckets of one collection add up to the wall time spent inside any of them.

Each collection also holds the CPU time of the same steps (``StepTimes.cpu``, the thread's own CPU
seconds, ``time.thread_time``): on a machine whose cores are shared, wall times grow with the load and
CPU times barely do, so CPU times are what two runs on a busy machine can be compared by."""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterable, Iterator


class StepTimes(dict):
    """Exclusive wall seconds by step name (a plain dict, JSON as it is); ``cpu``: the same steps' CPU
    seconds (a plain dict)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cpu: dict[str, float] = {}

    def add(self, other: dict[str, float], cpu: dict[str, float] | None = None) -> StepTimes:
        """Add every step of ``other`` (and of ``cpu`` to :attr:`cpu`) to this one; returns self."""
        for name, seconds in other.items():
            self[name] = self.get(name, 0.0) + seconds
        for name, seconds in (cpu if cpu is not None else getattr(other, "cpu", {})).items():
            self.cpu[name] = self.cpu.get(name, 0.0) + seconds
        return self

    def line(self) -> str:
        """``read 12.3 s, reduce 4.5 s, …``, longest first."""
        return ", ".join(
            f"{name} {seconds:.1f} s" for name, seconds in sorted(self.items(), key=lambda i: -i[1])
        )


_CURRENT: contextvars.ContextVar[tuple[StepTimes, list[list[float]]] | None] = contextvars.ContextVar(
    "onnxfold_step_times", default=None
)


@contextlib.contextmanager
def collecting(propagate: bool = True) -> Iterator[StepTimes]:
    """Collect the steps run inside the block into a new :class:`StepTimes`; at the end they are also
    added to the collection around it, if any and ``propagate`` (so a pass's own steps also count in
    the whole run's)."""
    times = StepTimes()
    token = _CURRENT.set((times, []))
    try:
        yield times
    finally:
        _CURRENT.reset(token)
        if propagate:
            record(times)


def record(times: dict[str, float], cpu: dict[str, float] | None = None) -> None:
    """Add steps measured elsewhere (a worker's: wall ``times`` and ``cpu`` times) to the current
    collection, if any."""
    current = _CURRENT.get()
    if current is not None:
        current[0].add(times, cpu)


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """Add the block's wall time, less that of the steps nested in it, to step ``name``."""
    current = _CURRENT.get()
    if current is None:
        yield
        return
    times, nested = current
    nested.append([0.0, 0.0])  # wall and CPU time of the steps run inside this one
    start, start_cpu = time.perf_counter(), time.thread_time()
    try:
        yield
    finally:
        elapsed, elapsed_cpu = time.perf_counter() - start, time.thread_time() - start_cpu
        inner, inner_cpu = nested.pop()
        times[name] = times.get(name, 0.0) + elapsed - inner
        times.cpu[name] = times.cpu.get(name, 0.0) + elapsed_cpu - inner_cpu
        if nested:
            nested[-1][0] += elapsed
            nested[-1][1] += elapsed_cpu


def total(times: Iterable[dict[str, float]]) -> StepTimes:
    """The sum of several collections, step by step."""
    out = StepTimes()
    for t in times:
        out.add(t)
    return out


def rounded(times: dict[str, float], digits: int = 3) -> dict[str, float]:
    """A plain dict of the steps, rounded, for JSON."""
    return {name: round(float(s), digits) for name, s in times.items()}
