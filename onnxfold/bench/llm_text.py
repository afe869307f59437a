"""The fixed English text of ``onnxfold bench llm`` and how it is cut into evaluation windows and
fitting samples.

The text is the GNU General Public License version 3, which many installed packages carry as a
license file (numpy and scipy append it to theirs). :func:`find_text` searches the site-packages
folders for files named COPYING*/LICENSE*/LICENCE* holding "GNU GENERAL PUBLIC LICENSE" followed by
"Version 3, 29 June 2007", cuts each copy from that heading to "END OF TERMS AND CONDITIONS"
inclusive and normalises its layout (lines stripped, runs of blank lines made one). Copies differ in
line wrapping and URLs, so the pick is deterministic: the normalised text held by the most files,
ties broken by the smaller SHA-256; its first path (sorted) is recorded. Without any copy the bench
falls back to :data:`FALLBACK`, a short text shipped here (then the windows shrink, see
:func:`eval_windows`).

:func:`eval_windows` takes the first tokens as evaluation windows; :func:`fit_samples` takes the
short fitting samples of the activation-aware methods from the tokens *after* them, so the methods
never see the text they are judged on.
"""

from __future__ import annotations

import hashlib
import os
import re
import site
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_NAME = re.compile(r"^(COPYING|LICEN[CS]E)", re.IGNORECASE)
_START = re.compile(r"GNU GENERAL PUBLIC LICENSE\s+Version 3, 29 June 2007")
_END = "END OF TERMS AND CONDITIONS"
#: License files larger than this are not read.
MAX_BYTES = 1 << 20

#: The text the bench ships, used when no GPL-3 copy is installed (written for this bench).
FALLBACK = """A river does not cut its valley in a single season. Each spring the snow on the high slopes melts,
the water gathers in small channels, and the channels join until a stream carries sand and pebbles
down towards the plain. Over thousands of years that slow work removes whole hillsides. Where the
rock is soft the valley grows wide and gentle; where it is hard the water can only saw a narrow
gorge, and the walls stand steep on either side.

People have always settled near rivers. A river gives water for drinking and for fields, fish for
food, and a road for boats long before anyone built a paved road. Towns grew at the places where a
river could be crossed, at fords and later at bridges, and many of them still carry the old word for
a crossing in their names. Mills were placed where the current was strong, and the turning wheels
ground grain, sawed timber and later drove the first machines of the factories.

Floods are the price of living so close to the water. After heavy rain the river rises over its
banks and spreads across the low ground, leaving a layer of fine mud behind. That mud is one reason
the land near rivers is so fertile, but the same water can ruin a harvest or wash away a house in a
night. Engineers raise embankments, dig side channels and build dams to hold the water back. Each
of these helps in one place and often moves the trouble somewhere else, because the water that is
not allowed to spread out here must go further down the valley.

A careful observer can read the history of a valley from its shape. Flat terraces high above the
present stream show where the river flowed when it was larger. Round stones in a field far from any
water tell of an old channel that has since moved. Curves in the river grow wider each year as the
outer bank is eaten away and the inner bank gains sand, until one day a flood cuts straight across
the neck of a loop and leaves a quiet, curved lake behind.

Today many rivers are measured every hour. Gauges record the height of the water, and the numbers
are sent to offices where forecasters compare them with the rain expected in the coming days. When
the figures rise too fast, warnings go out to the towns downstream, and people have time to move
their cars, their animals and their valuables to higher ground. The river has not changed its
habits, but we have learned to listen to it a little earlier.
"""


@dataclass(frozen=True)
class Text:
    """The evaluation text and where it came from: ``source`` a file path or ``"shipped"``,
    ``sha256`` of the normalised text, ``copies`` how many files held it."""

    text: str
    source: str
    sha256: str
    copies: int

    def describe(self) -> dict:
        return {"source": self.source, "sha256": self.sha256, "copies": self.copies, "chars": len(self.text)}


def normalise(text: str) -> str:
    """Lines stripped of surrounding blanks, runs of blank lines made one, no blank ends."""
    out: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()


def gpl3_part(text: str) -> str | None:
    """The GPL-3 inside ``text`` (from its heading to the end of its terms), normalised; None if absent."""
    start = _START.search(text)
    if start is None:
        return None
    end = text.find(_END, start.end())
    return normalise(text[start.start() : end + len(_END) if end >= 0 else len(text)])


def site_roots() -> list[Path]:
    """The folders packages are installed in: this interpreter's purelib/platlib and site-packages."""
    roots = {sysconfig.get_paths().get(k) for k in ("purelib", "platlib")}
    try:
        roots.update(site.getsitepackages())
    except AttributeError:  # some embedded interpreters have no getsitepackages
        pass
    return sorted(Path(r) for r in roots if r and Path(r).is_dir())


def _license_files(roots: Iterable[Path]) -> Iterable[Path]:
    for root in roots:
        for folder, _dirs, files in os.walk(root):
            for name in files:
                if _NAME.match(name):
                    yield Path(folder) / name


def find_text(roots: Iterable[Path] | None = None) -> Text:
    """The GPL-3 text installed under ``roots`` (default :func:`site_roots`), picked as the module
    docstring says, or :data:`FALLBACK` when no file holds one."""
    copies: dict[str, list[str]] = {}
    texts: dict[str, str] = {}
    for path in _license_files(site_roots() if roots is None else roots):
        try:
            if path.stat().st_size > MAX_BYTES:
                continue
            part = gpl3_part(path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
        if part:
            digest = hashlib.sha256(part.encode()).hexdigest()
            copies.setdefault(digest, []).append(str(path))
            texts[digest] = part
    if not copies:
        text = normalise(FALLBACK)
        return Text(text, "shipped", hashlib.sha256(text.encode()).hexdigest(), 0)
    digest = min(copies, key=lambda d: (-len(copies[d]), d))
    return Text(texts[digest], sorted(copies[digest])[0], digest, len(copies[digest]))


def eval_windows(ids: np.ndarray, window: int, windows: int, reserve: int) -> np.ndarray:
    """The first ``windows`` windows of ``window`` tokens, shape [windows, window], leaving at least
    ``reserve`` tokens after them for the fitting samples. A short text gets fewer windows, then one
    shorter window (at least half of the tokens stay for the fitting samples); fewer than 32 tokens
    for it is a ValueError."""
    ids = np.asarray(ids, dtype=np.int64).ravel()
    room = len(ids) - reserve
    if room >= window:
        count = min(windows, room // window)
        return ids[: count * window].reshape(count, window)
    size = min(window, max(room, len(ids) // 2))
    if size < 32:
        raise ValueError(f"bench llm: the text has {len(ids)} tokens, too few for an evaluation window")
    return ids[:size].reshape(1, size)


def fit_samples(rest: np.ndarray, count: int, length: int) -> np.ndarray:
    """``count`` samples of ``length`` tokens spread evenly over ``rest`` (the tokens after the
    evaluation windows), shape [count, length]; shorter when ``rest`` is (at least 2 tokens)."""
    rest = np.asarray(rest, dtype=np.int64).ravel()
    length = min(length, len(rest))
    if length < 2 or count < 1:
        raise ValueError(f"bench llm: {len(rest)} tokens left for {count} fitting samples")
    starts = np.linspace(0, len(rest) - length, count).round().astype(int)
    return np.stack([rest[s : s + length] for s in starts])
