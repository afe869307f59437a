"""The search again at exact widths, where the default rounding left it nothing to fold.

Folded widths are rounded to multiples of 8 by default, for speed: onnxruntime's blocked convolution
kernels take channels by eights, and odd widths made a folded model 1.6x slower than its original.
Rounded, a group of 16 channels has one step (to 8, half of it) and one of 32 steps by a quarter. A
compact model built for phones (MediaPipe's face mesh: residual groups of 16, 16, 32 and 64 channels)
then misses the target at every group's first step, and the default search keeps it whole, where at
exact widths it keeps the target at 12.9% fewer parameters, its landmarks within 1.1% of the eye
distance of the original's (trial 154).

So where the widths were rounded by default (no ``--round-to`` given), a fidelity search that kept the
model whole, with time left and at least one group rounded, runs again at exact widths
(:func:`retry_exact`). Validation then times both models: widths off the multiples of 8 can be slower.
"""

from __future__ import annotations

from typing import Any

from onnxfold.folding.cluster import rounds

#: the least time a retry needs left of the search's budget, in seconds
RETRY_LEFT_S = 10.0


def retry_exact(result: Any, round_to: int, given: bool, left_s: float) -> bool:
    """Whether ``result`` (a :class:`~onnxfold.search.target.SearchResult` at widths rounded to
    ``round_to``) calls for the search at exact widths: the rounding was the default (``given``
    False), the fidelity search met its target by keeping the model whole while it could see the folds
    and had time (``left_s`` seconds) left, and some group searched was wide enough to be rounded."""
    return (
        not given
        and round_to > 1
        and result.mode == "min_fidelity"
        and result.met
        and not result.chosen.steps
        and not result.blind
        and not result.cut_short
        and left_s >= RETRY_LEFT_S
        and any(rounds(c.channels, round_to) for c in result.curves)
    )


def unrounded_reason(rounded: Any, exact: Any, round_to: int) -> str:
    """Why the widths written are exact: the rounded search (``rounded``) kept the model whole where
    the exact one (``exact``) folded, with the coarsest first step of a rounded group."""
    steps = [
        (c.channels, min(r for r in c.removed if r > 0))
        for c in rounded.curves
        if rounds(c.channels, round_to) and any(r > 0 for r in c.removed)
    ]
    n, first = max(steps, key=lambda s: s[1] / s[0]) if steps else (0, 0)
    coarse = f" (a {n}-channel group's first step removed {first} of them)" if steps else ""
    return (
        f"at multiples of {round_to} the search kept the model whole{coarse}; at exact widths "
        f"{exact.param_reduction():.1%} fewer parameters met the target; --round-to {round_to} keeps them rounded"
    )


def better_exact(rounded: Any, exact: Any, round_to: int, input_params: int) -> Any:
    """The search result to keep: ``exact`` (counted against the input's ``input_params``) where it
    folded and met the target, its :attr:`unrounded` saying why; else ``rounded``, whose report says
    what the exact widths found where their best met the target but removed under ``--min-gain``
    (trial 168: progress read "best meeting it 0.1%" beside "no group folds within the target")."""
    exact.input_params = input_params
    if exact.met and exact.chosen.steps:
        exact.unrounded = unrounded_reason(rounded, exact, round_to)
        return exact
    if exact.kept_whole and rounded.kept_whole:  # its own reason, not a second one like it (trial 170)
        rounded.kept_whole += f"; a second search at exact widths (--round-to 1), not multiples of {round_to}, kept it whole too"
    elif exact.kept_whole:
        rounded.kept_whole = (
            f"at multiples of {round_to} the model was kept whole; at exact widths {exact.kept_whole}"
        )
    elif not exact.chosen.steps:  # what the second search found: a trial could not tell it ran (185)
        from onnxfold.search.misses import missed_by

        missed = [c for c in exact.candidates if c.measured and c.steps and not c.meets(exact.target)]
        if missed:
            first = min(missed, key=lambda c: c.reduction)
            rounded.exact_missed = (
                f"at exact widths (--round-to 1) too no fold kept the target: the smallest measured, "
                f"{first.reduction:.1%} fewer parameters, missed it: {missed_by(first, exact.target)}"
            )
    return rounded


__all__ = ["RETRY_LEFT_S", "better_exact", "retry_exact", "unrounded_reason"]
