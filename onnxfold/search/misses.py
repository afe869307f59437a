"""Why a search's candidate misses its fidelity target: the reasons its report and its error give."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np


def shortfall(candidate: Any, target: float, advice: bool = True) -> str:
    """Why a candidate at or above ``target`` on every output still misses it: too many samples
    disagree (the rule of succession), or a continuous metric rests on a few samples (its bootstrap
    lower value), or the held-out half alone stays below it; '' otherwise. ``advice``: say what would
    help (more samples, or a lower target)."""
    for o in candidate.outputs:
        if o.value >= target and not o.meets(target) and o.samples:
            k = round(o.value * o.samples)
            more = _samples_allowing(o, o.samples - k, target)
            return (
                f"{o.name}: {k} of {o.samples} agree, and {o.samples} samples allow {o.allowed_misses(target)} "
                f"misses" + (f" ({more} would allow {o.samples - k})" if more else "")
            )
        if o.value >= target and o.each is not None and o.each[0] < target:
            return (
                f"{o.name}: {o.metric} {o.value:.4f} pooled over the samples, {o.each[0]:.4f} on each sample "
                "alone (mean)"
            )
        if o.value >= target and not o.meets(target) and o.low is not None:
            return (
                f"{o.name}: {o.metric} {o.value:.4f} rests on a few samples (on resamples of them, "
                f"1 in 5 gives below {o.low:.4f})" + (": more samples, or a lower target" if advice else "")
            )
    low = [u for u in getattr(candidate, "unseen", []) if u.value < target]
    if low and candidate.fidelity >= target:
        return f"on the held-out half alone {low[0].name} reaches only {low[0].value:.4f}"
    return ""


def _samples_allowing(output: Any, misses: int, target: float) -> int | None:
    """The fewest samples whose count of ``output`` allows ``misses`` at ``target``
    (:meth:`~onnxfold.runtime.fidelity.OutputFidelity.allowed_misses`, which grow by about 1 − target a
    sample, from the closed form's estimate); None at a target of 1 (trial 126: "31 of 32 agree, and 32
    samples allow 0 misses" did not say that 38 would allow one)."""
    if target >= 1:
        return None
    n = max(1, int(np.ceil((misses - 1 + 2 * target) / (1 - target) - 1e-9)))
    while replace(output, samples=n).allowed_misses(target) < misses:
        n += 1
    return n


def missed_by(candidate: Any, target: float) -> str:
    """Why ``candidate`` misses ``target``: :func:`shortfall` (no advice), else its lowest output's figure."""
    if why := shortfall(candidate, target, advice=False):
        return why
    worst = min(candidate.outputs, key=lambda o: o.value, default=None)
    return f"{worst.name} {worst.metric} {worst.value:.4f}" if worst else f"fidelity {candidate.fidelity:.4f}"


def next_missed(result: Any) -> Any:
    """The measured candidate of a met fidelity search nearest above the chosen one in reduction that
    misses the target; None when none was measured there (or the chosen one misses it too)."""
    chosen = result.chosen
    if result.mode != "min_fidelity" or not result.met or not chosen.measured:
        return None
    above = [
        c
        for c in result.candidates
        if c.measured and c.reduction > chosen.reduction and not c.meets(result.target)
    ]
    return min(above, key=lambda c: c.reduction, default=None)


def next_missed_lines(result: Any) -> list[str]:
    """The report's line on why the search stopped where it did: a trial saw it stop at 46.4% fewer
    parameters and r2 0.9997 under a 0.95 target, and only the JSON report showed that the 57.8%
    candidate had missed on its held-out half."""
    nearest = next_missed(result)
    if nearest is None:
        return []
    # from the input's parameters, as the headline counts (g2p-id's BERT read "37.7% fewer" beside a
    # next candidate "9.7% fewer", counted after the duplicated weights were stored once)
    shown = 1.0 - nearest.params / result.input_params if result.input_params else nearest.reduction
    chosen = result.param_reduction()
    # 88.8% beside 88.8%: both to two digits (3.19% alone read smaller than the headline's 3.2%)
    close = f" (the chosen one: {chosen:.2%})" if f"{shown:.1%}" == f"{chosen:.1%}" else ""
    return [
        f"note: the next candidate measured that removes more, {shown:.{2 if close else 1}%} fewer parameters{close}, "
        f"missed the target: {missed_by(nearest, result.target)}"
    ]
