"""Building and measuring a search's candidates (:mod:`onnxfold.search.target`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxfold.ir.model import Model
from onnxfold.report.counted import counted_stats
from onnxfold.search.evaluate import Evaluator

if TYPE_CHECKING:
    from onnxfold.search.target import Candidate


def measured(
    steps: int, built: tuple[Model, dict], evaluator: Evaluator | None, base, shapes: dict | None = None
) -> Candidate:
    """The candidate of a built (model, pass data) pair: its fidelity, size and reductions from ``base``
    (MACs at ``shapes``). ``evaluator`` None: the unchanged model, fidelity 1 without a measurement."""
    model, data = built
    fid, per = evaluator(model) if evaluator is not None else (1.0, [])
    unseen = list(evaluator.last_unseen) if getattr(evaluator, "unseen", None) is not None else []
    st = counted_stats(model, shapes)  # MACs counted as the base's are, on the canonical graph
    from onnxfold.search.target import Candidate

    return Candidate(
        steps,
        fid,
        st.params,
        st.macs,
        1.0 - st.params / base.params if base.params else 0.0,
        1.0 - st.macs / base.macs if base.macs else 0.0,
        per,
        model,
        data,
        unseen,
        measured=evaluator is not None,
    )


def refined(
    chosen: Candidate, built: tuple[Model, dict], evaluator: Evaluator, base, shapes: dict | None = None
) -> Candidate | None:
    """The refined build as a candidate when it measures at least as well as ``chosen`` with no more
    parameters, else None."""
    cand = measured(chosen.steps, built, evaluator, base, shapes)
    if cand.fidelity < chosen.fidelity or cand.params > chosen.params:
        return None
    cand.data = {**cand.data, "refined_from": chosen.fidelity}  # the first fit's, which progress showed
    cand.allocation = chosen.allocation
    return cand
