"""Why a fold changed nothing, in a few words, for the report's "nothing folded" line."""

from __future__ import annotations


def nothing_folded_reason(
    plans, otherwise: str = "the sparsity leaves every foldable group at its width", graph=None
) -> str:
    """Why a fold changed nothing, in a few words; ``otherwise`` where some group could have folded
    (a search says that none folds within its target). ``graph``: where no group was found, says how
    much of it subgraph bodies read (:mod:`onnxfold.analysis.subgraphs`)."""
    counted = [p for p in plans if p.group.size > 1 or p.status != "unchanged"]  # one channel: nothing
    # to merge (crema's chord CNN, all else blocked, read "the sparsity leaves every foldable group at
    # its width", trial 199)
    states = {p.status for p in counted}
    if not counted or states == {"blocked"}:
        hint = ""
        if graph is not None:
            from onnxfold.analysis.subgraphs import subgraph_note

            hint = subgraph_note(graph)
        if not plans:
            return "the analysis found no channel groups" + (
                f": {hint}" if hint else " (onnxfold analyze shows why)"
            )
        if not counted:
            return "every channel group has one channel (nothing to merge)" + (f"; {hint}" if hint else "")
        single = " or of one channel" if len(counted) < len(plans) else ""
        return f"every channel group is blocked{single} (see the reasons above, or onnxfold analyze)" + (
            f"; {hint}" if hint else ""
        )
    if states <= {"ignored", "blocked"}:
        return "every foldable group matches --ignore"
    return otherwise
