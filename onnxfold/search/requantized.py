"""A ``--min-fidelity`` search whose result is quantized after it (``--requantize``, or a ``quantize``
pass later in the pipeline): its pick checked once quantized, and where quantizing loses the target,
the candidate that removes the most of those that keep it once quantized.

The search measures float folds; quantizing one adds its own error. A dequantized BiLSTM word
splitter (trial 187) kept every tag (1.0000) at 9.9% fewer parameters in float and 0.9688 once
requantized, under the target 0.95 by the rule that 32 samples allow: validation then failed the run
and wrote nothing after a 68 s search, although smaller folds kept the target once quantized. The
candidates that met the target in float are tried quantized, from the one that removes the most,
by bisection (folds that remove more lose more); none keeping it leaves the model whole, which
``--dequantize`` writes as the INT8 model given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def requantized_pick(
    result: Any,
    build: Callable[[dict[str, float]], tuple[Any, dict]],
    quantized: Callable[[Any], tuple[float, list]],
    unchanged: Callable[[], Any],
    expired: Callable[[], bool] = lambda: False,
) -> str:
    """Replace ``result.chosen`` by the candidate that removes the most among those that met the target
    in float and still meet it once quantized; returns a note ("" where the search's pick kept it).
    ``build(sparsities)``: a candidate's float model rebuilt from its sparsities; ``quantized(model)``:
    the model quantized as the pipeline will, measured as the search measures (fidelity, outputs);
    ``unchanged()``: the unchanged model's candidate, chosen where none keeps the target; ``expired()``:
    the search's time limit has passed, and the bisection stops at the largest fold known to keep it."""
    target, first = result.target, result.chosen
    met = sorted(
        (c for c in result.candidates if c.steps and c.meets(target) and c.sparsities is not None),
        key=lambda c: -c.reduction,
    )
    if first.steps and first not in met:
        met.insert(0, first)
    checked: dict[int, tuple[bool, Any, tuple[float, list]]] = {}

    def keeps(i: int) -> bool:
        if i not in checked:
            cand = met[i]
            model, data = (cand.model, cand.data) if cand.model is not None else build(cand.sparsities)
            fidelity, outputs = quantized(model)
            ok = all(o.meets(target) for o in outputs)
            log.info("search: %.1f%% fewer params quantized -> %.4f", 100 * cand.reduction, fidelity)
            checked[i] = (ok, (model, data), (fidelity, outputs))
        return checked[i][0]

    if not met or keeps(0):
        if met:
            first.fidelity, first.outputs = checked[0][2]
        return ""
    lo, hi = 0, len(met)  # met[lo] misses; met[hi] (past the end: the unchanged model) is taken to keep it
    while hi - lo > 1 and not expired():
        mid = (lo + hi) // 2
        if keeps(mid):
            hi = mid
        else:
            lo = mid
    lost = (
        f"{fewer(result, first):.1%} fewer parameters kept {first.fidelity:.4f} in float and "
        f"{missed(checked[0][2], target)}"
    )
    if hi == len(met):
        result.chosen = unchanged()
        if hi - lo > 1:  # the smaller folds left unchecked
            return (
                f"quantizing lost the target on the search's pick ({lost}), and the time limit stopped the "
                "checks before a fold that keeps it was found: the model is kept whole"
            )
        return f"quantizing lost the target on every fold the search found ({lost}): the model is kept whole"
    cut = " (the time limit stopped the checks)" if hi - lo > 1 else ""
    pick = met[hi]
    _, (pick.model, pick.data), (pick.fidelity, pick.outputs) = checked[hi]
    result.chosen = pick
    return (
        f"quantizing lost the target on the search's pick ({lost}): the largest fold that keeps it "
        f"quantized is taken, {fewer(result, pick):.1%} fewer parameters ({len(checked)} folds quantized{cut})"
    )


def fewer(result: Any, cand: Any) -> float:
    """The candidate's fewer parameters, of the input's as the report counts them."""
    return 1.0 - cand.params / result.input_params if result.input_params else cand.reduction


def missed(measured: tuple[float, list], target: float) -> str:
    """A quantized measurement that misses ``target``, with why where its figure is at or above it
    (31 of 32 samples agreeing read "0.9688, below 0.95")."""
    from types import SimpleNamespace

    from onnxfold.search.misses import shortfall

    fidelity, outputs = measured
    why = shortfall(SimpleNamespace(outputs=outputs, unseen=[], fidelity=fidelity), target, advice=False)
    return f"{fidelity:.4f} quantized ({why})" if why else f"{fidelity:.4f} quantized (below {target:g})"


__all__ = ["fewer", "missed", "requantized_pick"]
