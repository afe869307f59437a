"""Whether inputs exercised an output's decisions: a fidelity measured where they did not says little.

Random inputs often leave a model's decisions untouched: a text detector's probability map on noise
stays near 0, a recogniser reads noise as blank lines. The report and the data-free search say so
instead of trusting the figure.
"""

from __future__ import annotations

import numpy as np

from onnxfold.runtime.compare import BOUNDING_OPS, narrow_span
from onnxfold.runtime.fidelity import auto_metric, dominant_class, one_class, probabilities


def unexercised(
    name: str,
    ref: np.ndarray,
    producer_op: str | None = None,
    token_inputs: bool = False,
    samples: int | None = None,
) -> str | None:
    """How the inputs ``ref`` came from left an output's decisions unexercised, or None: a bounded
    output (Sigmoid, HardSigmoid, Tanh) whose values barely moved
    (:func:`~onnxfold.runtime.compare.narrow_span`: a detector's probability map on noise, all near
    0), or class or sequence probabilities whose argmax is one class at (nearly) every position (a
    recogniser reading noise as blank lines: :func:`~onnxfold.runtime.fidelity.probabilities`). A
    fidelity measured on such inputs says little about the task."""
    span = narrow_span(ref, producer_op)
    if span is not None:
        lo, hi = BOUNDING_OPS[producer_op]
        return (
            f"moved this {producer_op} output only between {span[0]:.3g} and {span[1]:.3g} of its "
            f"range [{lo:g}, {hi:g}]"
        )
    ref = np.asarray(ref)
    if (
        ref.dtype.kind == "f"
        and ref.ndim >= 2
        and ref.shape[-1] > 1
        and probabilities(ref, producer_op)
        and auto_metric(name, ref, producer_op, token_inputs, samples) in ("top1", "sequence")
        and one_class(ref)
    ):
        cls, share = dominant_class(ref)
        where = "every position" if share == 1.0 else f"{share:.1%} of the positions"
        return f"made its argmax class {cls} at {where}"
    return None


def unexercised_by_both(
    name: str,
    ref: np.ndarray,
    cand: np.ndarray,
    producer_op: str | None = None,
    token_inputs: bool = False,
    samples: int | None = None,
) -> str | None:
    """:func:`unexercised` of the reference, when the candidate leaves the decisions unexercised
    too: its bounded values in the same narrow band, its argmax the same one class everywhere. Where the
    original made no decision and the candidate makes some, it has changed whatever the metric
    says (PP-OCRv4's recogniser folded at 0.05 no longer reads noise as blank lines, and no longer
    reads text)."""
    why = unexercised(name, ref, producer_op, token_inputs, samples)
    if why is None:
        return None
    if producer_op in BOUNDING_OPS:  # both models' values together within the narrow band
        both = np.concatenate([np.asarray(ref, np.float64).ravel(), np.asarray(cand, np.float64).ravel()])
        return why if narrow_span(both, producer_op) is not None else None
    cand = np.asarray(cand)
    same = cand.shape == np.shape(ref) and np.array_equal(
        cand.argmax(axis=-1), np.asarray(ref).argmax(axis=-1)
    )
    return why if same else None
