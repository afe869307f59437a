"""Why a fold changed nothing, in a few words, for the report's "nothing folded" line."""

from __future__ import annotations


def nothing_folded_reason(
    plans, otherwise: str = "the sparsity leaves every foldable group at its width", graph=None
) -> str:
    """Why a fold changed nothing, in a few words; ``otherwise`` where some group could have folded
    (a search says that none folds within its target). ``graph``: where no group was found, says how
    much of it subgraph bodies read (:mod:`onnxfold.analysis.subgraphs`)."""
    states = {p.status for p in plans}
    if not plans or states == {"blocked"}:
        hint = ""
        if graph is not None:
            from onnxfold.analysis.subgraphs import subgraph_note

            hint = subgraph_note(graph)
        if not plans:
            return "the analysis found no channel groups" + (
                f": {hint}" if hint else " (onnxfold analyze shows why)"
            )
        return "every channel group is blocked (see the reasons above, or onnxfold analyze)" + (
            f"; {hint}" if hint else ""
        )
    if states <= {"ignored", "blocked"}:
        return "every foldable group matches --ignore"
    return otherwise
