"""Plain-text tables and human-readable counts and sizes, for every report and benchmark."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

_NUMERIC = re.compile(r"^[-+]?(\d[\d,]*\.?\d*|\.\d+)(e[-+]?\d+)?\s*(%|x|[KMGT]i?B|B|[KMGT])?$", re.IGNORECASE)


def _is_numeric(cell: Any) -> bool:
    if isinstance(cell, bool):
        return False
    if isinstance(cell, (int, float)):
        return True
    return bool(_NUMERIC.match(str(cell).strip()))


def _cell_text(cell: Any) -> str:
    if cell is None:
        return "-"
    if isinstance(cell, float):
        return f"{cell:.4g}"
    return str(cell)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """Aligned plain-text table with a dashed rule under the headers.

    A column is right-aligned when all its cells are numbers or number-like strings ("1.2M", "-3.5%",
    "0.50x", "12 KiB"; "-" and None are ignored). ``align`` ("l"/"r" per column) overrides.
    """
    ncol = len(headers)
    for r in rows:
        if len(r) != ncol:
            raise ValueError(f"row {list(r)!r} has {len(r)} cells, expected {ncol}")
    text = [[_cell_text(c) for c in r] for r in rows]
    if align is None:
        align = ""
        for j in range(ncol):
            cells = [r[j] for r in rows if r[j] is not None and str(r[j]).strip() not in ("", "-")]
            align += "r" if cells and all(_is_numeric(c) for c in cells) else "l"
    elif len(align) != ncol or set(align) - {"l", "r"}:
        raise ValueError(f"align must be {ncol} characters of 'l'/'r', got {align!r}")
    widths = [max([len(str(headers[j]))] + [len(r[j]) for r in text]) for j in range(ncol)]

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(cells, widths, align, strict=True)]
        return "  ".join(parts).rstrip()

    out = [line([str(h) for h in headers]), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in text)
    return "\n".join(out)


def _scaled(value: float, base: float, units: Sequence[str]) -> tuple[float, str]:
    v, unit = float(value), units[0]
    for u in units[1:]:
        if abs(v) < base * 0.9995:  # keeps 999.96 from printing as "1000K"
            break
        v, unit = v / base, u
    return v, unit


def _three_digits(v: float) -> str:
    a = abs(v)
    return f"{v:.2f}" if a < 10 else f"{v:.1f}" if a < 100 else f"{v:.0f}"


def human_count(n: float | None) -> str:
    """Count with SI suffix and ~3 significant digits: 950, 1.23K, 45.6M, 7.89G."""
    if n is None:
        return "-"
    if abs(n) < 1000:
        return str(int(n)) if float(n).is_integer() else f"{n:.3g}"
    v, unit = _scaled(n, 1000.0, ("", "K", "M", "G", "T", "P"))
    return f"{_three_digits(v)}{unit}"


def count_change(before: int, after: int) -> str:
    """``1.06M -> 980K``, or every digit where the rounded counts read the same (``1,058,312 ->
    1,058,056``: trueocr's recogniser read "1.06M -> 1.06M parameters")."""
    b, a = human_count(before), human_count(after)
    return f"{b} -> {a}" if b != a or before == after else f"{int(before):,} -> {int(after):,}"


def human_bytes(n: float | None) -> str:
    """Byte size in binary units: 512 B, 1.50 KiB, 23.4 MiB, 1.02 GiB."""
    if n is None:
        return "-"
    if abs(n) < 1024:
        return f"{int(n)} B"
    v, unit = _scaled(n, 1024.0, ("B", "KiB", "MiB", "GiB", "TiB", "PiB"))
    return f"{_three_digits(v)} {unit}"


def percent(share: float) -> str:
    """``share`` as a percentage to one decimal, or to one significant digit where that would read
    0.0% of something removed: a fold of 173 of a denoiser's 466K parameters read "parameter sparsity
    0.0%" beside its r2 warning, and a note read "0.0% fewer parameters, measured 0.4936"."""
    shown = f"{share:.1%}"
    if share and shown in ("0.0%", "-0.0%"):
        return f"{share * 100:.1g}%"
    return shown
