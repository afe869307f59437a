"""Progress of long steps (clustering, the search's sensitivity and candidates, repair synthesis,
saving, benchmarks), drawn by tqdm.

On a terminal a bar is drawn on stderr once a step has run for :data:`DELAY_S` seconds, so quick steps
print nothing. Off a terminal (a log, a pipe, CI) a step that has run for :data:`LOG_EVERY_S`
seconds writes one plain line, then at most one line per :data:`LOG_EVERY_S` and a last one when it
ends, without the carriage returns a bar redraws with: a default fold of DNSMOS sat silent in a log
for 5 minutes. Nothing is written when the environment sets ``TQDM_DISABLE`` (to anything but ``""``,
``0`` or ``false``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")

#: A bar appears only after its step has run this many seconds.
DELAY_S = 1.0
#: Off a terminal, a step writes its first line after this many seconds, then one line at most this often.
LOG_EVERY_S = 60.0
#: The line written off a terminal: what the step is, how far it is, how long it has run, and where its
#: length is known, how long it has left at its rate so far (a trial stopped an auto fold of a YOLOX
#: at "3/67 groups [01:00]", not knowing it had 20 minutes to go)
LOG_FORMAT = "onnxfold: {desc}: {n_fmt}{total_fmt} {unit}s [{elapsed}{left}]{postfix}"
#: what :data:`LOG_FORMAT`'s ``{left}`` becomes where the length is known
LEFT = ", about {remaining} left"


def disabled_by_env() -> bool:
    """True when ``TQDM_DISABLE`` asks for no bars (read at every call, not at import)."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false")


def on_terminal() -> bool:
    """Whether stderr is a terminal (read at every call: tests and callers swap it)."""
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):
        return False


class _Lines:
    """A stream for tqdm that turns each redraw (``\\r`` + the line + padding) into one plain line."""

    def __init__(self, stream) -> None:
        self.stream, self.last = stream, ""

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line and line != self.last:  # the step's end redraws its last update
            self.stream.write(line + "\n")
            self.last = line

    def flush(self) -> None:
        getattr(self.stream, "flush", lambda: None)()


def progress_bar(
    iterable: Iterable[T] | None = None,
    desc: str = "",
    total: int | None = None,
    unit: str = "it",
    deadline: Callable[[], float] | None = None,
) -> tqdm:
    """A tqdm bar over ``iterable`` (or one updated by hand when it is None), with the rules above. A
    log line counts against the iterable's length where it has one ("26/56 groups": a trial read
    "51 groups" of a model with 30 foldable ones and took it for a miscount). ``deadline``: the seconds
    until a time limit cuts the step, which a log line gives where its rate would run past them."""
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    off = disabled_by_env()
    if off or on_terminal():
        return tqdm(
            iterable,
            desc=desc,
            total=total,
            unit=unit,
            disable=True if off else None,
            delay=DELAY_S,
        )
    bar = _LogBar(
        iterable,
        desc=desc,
        total=total,
        unit=unit,
        file=_Lines(sys.stderr),
        delay=LOG_EVERY_S,
        mininterval=LOG_EVERY_S,
        maxinterval=LOG_EVERY_S,
        miniters=1,
        ascii=True,
        bar_format=LOG_FORMAT.replace("{total_fmt}", "/{total_fmt}" if total else "").replace(
            "{left}", LEFT if total else ""
        ),
    )
    bar.deadline = deadline
    return bar


class _LogBar(tqdm):
    """tqdm whose log line leaves out the time left until a rate is known (tqdm writes "?") and once
    the step is done (a sensitivity cut short read "545/545 ... about 00:00 left, cut by the time
    limit")."""

    deadline: Callable[[], float] | None = None

    @property
    def format_dict(self) -> dict:
        found = super().format_dict
        if self.deadline is not None:
            found["cut_in"] = self.deadline()
        return found

    @staticmethod
    def format_meter(n, total, elapsed, *args, bar_format=None, cut_in=None, **kwargs) -> str:
        """``cut_in``: seconds until the time limit cuts the step; where the rate would run past them,
        the line gives them instead (a YOLOX's sensitivity read "about 1:04:36 left" with 3 minutes of
        its share to go)."""
        rate = kwargs.get("rate") or (n / elapsed if elapsed else None)
        if total and n >= total and bar_format:
            bar_format = bar_format.replace(LEFT, "")
        elif bar_format and cut_in is not None and rate and (total - n) / rate > cut_in:
            cut = tqdm.format_interval(max(0, int(cut_in)))
            bar_format = bar_format.replace(LEFT, f", about {cut} left before the time limit cuts it")
        line = tqdm.format_meter(n, total, elapsed, *args, bar_format=bar_format, **kwargs)
        return line.replace(LEFT.format(remaining="?"), "")
