"""A minimal dependency-free text progress bar on stderr."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

#: Set this environment variable (to anything but "" or "0") to turn progress bars off.
ENV_DISABLE = "ONNXFOLD_NO_PROGRESS"

_MIN_INTERVAL_S = 0.1


def _env_disabled() -> bool:
    return os.environ.get(ENV_DISABLE, "").strip() not in ("", "0")


def _should_show(enabled: bool | None) -> bool:
    if enabled is False or _env_disabled():
        return False
    if enabled is True:
        return True
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # closed or replaced stream
        return False


def _fmt_time(seconds: float) -> str:
    seconds = int(round(seconds))
    m, s = divmod(seconds, 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _render(desc: str, done: int, total: int | None, elapsed: float, width: int) -> str:
    head = f"{desc}: " if desc else ""
    if total is None or total <= 0:
        return f"{head}{done} it  {_fmt_time(elapsed)}"
    frac = min(done / total, 1.0)
    eta = elapsed / done * (total - done) if done else 0.0
    tail = f" {done}/{total} {100 * frac:3.0f}%  {_fmt_time(elapsed)}<{_fmt_time(eta)}"
    bar_w = max(10, min(40, width - len(head) - len(tail) - 3))
    filled = int(bar_w * frac)
    return f"{head}[{'#' * filled}{'.' * (bar_w - filled)}]{tail}"


def progress(
    iterable: Iterable[T], total: int | None = None, desc: str = "", enabled: bool | None = None
) -> Iterator[T]:
    """Yield the items of ``iterable`` while drawing a ``\\r`` progress bar on stderr.

    Shown when ``enabled`` is True, or when it is None and stderr is a TTY; never when ``enabled`` is
    False or ``ONNXFOLD_NO_PROGRESS`` is set. ``total`` defaults to ``len(iterable)`` when available.
    """
    if not _should_show(enabled):
        yield from iterable
        return
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    stream = sys.stderr
    width = shutil.get_terminal_size((80, 20)).columns
    start = last = time.monotonic()
    done = 0
    last_len = 0

    def draw() -> None:
        nonlocal last_len
        text = _render(desc, done, total, time.monotonic() - start, width)
        stream.write("\r" + text + " " * max(0, last_len - len(text)))
        stream.flush()
        last_len = len(text)

    draw()
    try:
        for item in iterable:
            yield item
            done += 1
            now = time.monotonic()
            if now - last >= _MIN_INTERVAL_S:
                last = now
                draw()
    finally:
        draw()
        stream.write("\n")
        stream.flush()
