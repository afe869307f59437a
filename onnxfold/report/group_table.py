"""The table ``onnxfold analyze`` prints: one row per channel group."""

from __future__ import annotations

from collections.abc import Sequence

from onnxfold.analysis import ChannelGroup
from onnxfold.analysis.groups import REASON_WIDTH, cut_reason, reasons_text
from onnxfold.report.names import shortened
from onnxfold.report.stats import format_table, human_count


def format_groups(groups: Sequence[ChannelGroup], verbose: bool = False) -> str:
    """The table ``onnxfold analyze`` prints. A group of one channel, structurally foldable, has nothing
    to merge: it reads "one channel" and is not counted foldable (a face detector's six score heads of
    one channel each were listed foldable and counted in its foldable channels)."""
    rows = []
    reasons = [reasons_text(g.blocked) for g in groups]
    for g, why in zip(groups, reasons, strict=True):
        producers = ", ".join(shortened(p) for p in g.producers[:3]) + (" …" if len(g.producers) > 3 else "")
        rows.append(
            [
                shortened(g.name),
                f"{g.size} × {g.unit}" if g.unit > 1 else g.size,  # units of heads: 6 heads × 64 channels
                len(g.members),
                ("foldable" if g.size > 1 else "one channel") if g.foldable else "blocked",
                (producers if g.size > 1 else "nothing to merge") if g.foldable else cut_reason(why),
            ]
        )
    mergeable = [g for g in groups if g.foldable and g.size > 1]
    single = sum(g.foldable for g in groups) - len(mergeable)
    head = (
        f"{len(groups)} channel groups: {len(mergeable)} foldable, {len(groups) - len(mergeable) - single} blocked"
        + (f", {single} of one channel (nothing to merge)" if single else "")
        + f"; {human_count(sum(g.size for g in mergeable))} foldable channels"
    )
    text = (
        head
        # a user read "Conv_1 32 340" and could not tell what 340 counted
        + "\n(members: the weight slices that move with a group's channels, one per position where a flatten"
        " spreads each channel over several; --members lists them)\n"
        + format_table(["group", "channels", "members", "state", "producers / reason"], rows, align="lrrll")
        + (
            "\n(a width n × u: n units of u channels that fold together, attention heads or a box's coordinates)"
            if any(g.unit > 1 for g in groups)
            else ""
        )
    )
    if any(len(why) > REASON_WIDTH for why in reasons) and not verbose:
        text += "\n(reasons cut at a line's width: --members or --json gives them whole)"
    if verbose:
        text += "\n\n" + "\n\n".join(g.describe() for g in groups)
    return text
