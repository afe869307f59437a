"""Progress bars for long steps (clustering, repair synthesis, saving, benchmarks), drawn by tqdm.

A bar is drawn on stderr only when stderr is a terminal (tqdm's ``disable=None``), never when the
environment sets ``TQDM_DISABLE`` (to anything but ``""``, ``0`` or ``false``), and only once a step has
run for :data:`DELAY_S` seconds, so quick steps print nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")

#: A bar appears only after its step has run this many seconds.
DELAY_S = 1.0


def disabled_by_env() -> bool:
    """True when ``TQDM_DISABLE`` asks for no bars (read at every call, not at import)."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false")


def progress_bar(
    iterable: Iterable[T] | None = None, desc: str = "", total: int | None = None, unit: str = "it"
) -> tqdm:
    """A tqdm bar over ``iterable`` (or one updated by hand when it is None), with the rules above."""
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        unit=unit,
        disable=True if disabled_by_env() else None,
        delay=DELAY_S,
    )
