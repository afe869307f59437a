"""The report's line on how folded widths were rounded to a multiple of ``round_to``."""

from __future__ import annotations

from collections.abc import Sequence

from onnxfold.folding.apply import FoldPlan
from onnxfold.folding.cluster import rounds


def rounding_line(plans: Sequence[FoldPlan], round_to: int | None, unrounded: str = "") -> str:
    """How the folded widths were rounded, in one line: ``round_to`` m (None or 1: not rounded, and
    ``unrounded`` why, where a search gave up the default rounding: :mod:`onnxfold.search.exact_widths`),
    the folded groups narrower than 2m that keep their exact count, and those rounding took 0.1 or more
    past the sparsity asked."""
    m = round_to
    if m is None or m <= 1:
        return f"widths: not rounded: {unrounded}" if unrounded else "widths: not rounded (round_to 1)"
    folded = [p for p in plans if p.status == "folded"]
    narrow = [p for p in folded if not rounds(p.group.size, m)]  # not rounded: fewer than 2m channels
    groups = "group narrower than" if len(narrow) == 1 else "groups narrower than"
    keep = "keeps its" if len(narrow) == 1 else "keep their"
    note = f"; {len(narrow)} folded {groups} {2 * m} {keep} exact count" if narrow else ""
    # DeepFilterNet's 10 -> 8 at -s 0.1 read as an exact count: 4 of 5 in each convolution group
    parted = [p for p in narrow if p.group.parts > 1]
    if parted:
        e, parts = parted[0], parted[0].group.parts
        note += f" within each convolution group ({e.group.size} -> {e.k}: {e.k // parts} of {e.group.size // parts} in each of {parts})"
    # U²-Net-P's 16 channels went to 8 at -s 0.3 unsaid; a narrow 2 -> 1 is no rounding (PP-LCNet)
    over = [p for p in folded if rounds(p.group.size, m) and 1 - p.k / p.group.size >= p.sparsity + 0.1]
    if over:
        e = max(over, key=lambda p: p.group.size * (1 - p.sparsity) - p.k)
        note += (
            f"; rounding took {len(over)} of the folded groups 0.1 or more past the sparsity asked "
            f"({e.group.size} -> {e.k}: {1 - e.k / e.group.size:.2g} for {e.sparsity:.2g}); "
            "--round-to 1 folds them to the width asked"
        )
    return f"widths: rounded to multiples of {m} (round_to {m}; --round-to 1 turns it off){note}"
