"""How a search's figures read in its report: the target in words, a lower bound, one output's fidelity."""

from __future__ import annotations

import math

from onnxfold.runtime.fidelity import OutputFidelity


def goal(mode: str, target: float) -> str:
    """What a search mode asks for, in words: ``fidelity 0.95``, ``25% fewer parameters``, ``30% fewer MACs``."""
    if mode == "min_fidelity":
        return f"fidelity {target:g}"
    return f"{target:.0%} fewer {'parameters' if mode == 'target_params' else 'MACs'}"


def bound_text(bound: float) -> str:
    """A lower bound as printed: rounded down, never up (2073 of 2073 rows bound an agreement to
    0.9982, which read "1.00" beside a target of 0.999), to 2 decimals, or 4 from 0.99 on."""
    digits = 4 if bound >= 0.99 else 2
    return f"{math.floor(bound * 10**digits + 1e-9) / 10**digits:.{digits}f}"


#: after a top-1 of positions: a stress placer's "top1 0.8965" kept 42% of its phrases (trial 180)
OF_POSITIONS = " (of positions, not whole samples; --metric tags counts whole ones)"


def per_outputs(outputs) -> str:
    """:func:`per_output` of each, an output judged by two metrics (``mask+r2``) named once:
    ``map mask 1.0000, r2 0.9981; box r2 0.9950`` (U²-Net's seven maps read 14 named entries)."""
    parts: list[list[str]] = []
    last = None
    for o in outputs:
        text = per_output(o)
        if o.name == last:
            parts[-1].append(text[len(o.name) + 1 :])
        else:
            parts.append([text])
        last = o.name
    return "; ".join(", ".join(p) for p in parts)


def per_output(o: OutputFidelity) -> str:
    """e.g. ``probs sequence 0.9688 (31 of 32 samples, 95% lower bound 0.84)``."""
    text = f"{o.name} {o.metric} {o.value:.4f}"
    if o.low is not None:
        text += f" (bootstrap 80% lower value {o.low:.4f})"
    if o.each is not None:  # a terrain generator's pooled 0.9805 was 0.921 a terrain, the lowest 0.658
        text += f" (each sample alone: mean {o.each[0]:.4f}, lowest {o.each[1]:.4f})"
    if o.samples:
        text += f" ({round(o.value * o.samples)} of {o.samples} samples, 95% lower bound {bound_text(o.lower_bound())})"
    elif o.metric == "top1":  # a diacritizer's 0.9922 of positions kept 83.6% of its sentences whole
        text += OF_POSITIONS
    return text
