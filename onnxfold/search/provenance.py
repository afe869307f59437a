"""What a fidelity search kept, recorded in the model it writes, for a later command to read.

A fold searched to ``--min-fidelity F`` and quantized by a second command (``onnxfold run FOLDED
--pipeline "canonicalize,quantize,validate"``) is validated against the fold it was given, not against
the model the fold came from: pyvital's ECG classifier, folded to top1+r2 ≥ 0.95, quantized to 0.9375
of the fold's outputs, and validation passed it without a word (trial 203). The losses of the two
commands add up. So the search writes its target into the model's ``metadata_props`` (key
:data:`KEY`, a JSON object), and validation after a pass that changed such a model says what the
figures compare with, and warns where they fall under the target the fold was searched to. One
pipeline with the search and the quantize pass keeps the target itself: the search checks its pick
quantized (:mod:`onnxfold.search.requantized`).
"""

from __future__ import annotations

import json
from typing import Any

#: the metadata key of a fold's search target
KEY = "onnxfold.search"
#: the passes after which a given fold's recorded target still holds: they keep the model's function,
#: or (the search) record it anew; a pass after a search in the same pipeline keeps that search's
#: record, which validation checks against the result. Any other pass that changes the model drops
#: it (:class:`~onnxfold.pipeline.manager.PassManager`), and validation after it says so (:func:`chained_note`)
KEEPS_TARGET = ("canonicalize", "cleanup", "search", "validate")


def record(model: Any, result: Any) -> None:
    """Write ``result``'s target into ``model``'s metadata (a ``min_fidelity`` search that met it)."""
    if result.mode != "min_fidelity" or not result.met:
        return
    model.metadata[KEY] = json.dumps(
        {
            "min_fidelity": result.target,
            "fidelity": round(float(result.chosen.fidelity), 6),
            "metrics": dict(result.metrics),
            "data_free": bool(result.proxy),
        },
        sort_keys=True,
    )


def recorded(model: Any) -> dict | None:
    """The target :func:`record` wrote into ``model`` (None where there is none, or it does not parse)."""
    text = (getattr(model, "metadata", None) or {}).get(KEY)
    try:
        found = json.loads(text) if text else None
    except ValueError:
        return None
    return found if isinstance(found, dict) and "min_fidelity" in found else None


def chained_note(target: dict, outputs: list[Any], changed_by: str) -> str:
    """The validation line of a model folded to ``target`` (:func:`recorded`) that the pass
    ``changed_by`` changed since: what its figures compare with, and a warning where an output's
    fidelity (under the fold's metric for it) falls under the fold's target."""
    bar = float(target["min_fidelity"])
    where = "on a data-free proxy" if target.get("data_free") else "on its samples"
    head = (
        f"the model given was folded to fidelity >= {bar:g} of the model it came from ({where}, "
        f"{float(target.get('fidelity', bar)):.4f} measured); these figures compare the {changed_by} pass's "
        "result with that fold, not with its original, and the two losses add up"
    )
    low = [o for o in outputs if o.fidelity is not None and o.fidelity < bar]
    remedy = (
        "one pipeline from the original keeps the target through both: onnxfold run ORIGINAL -o OUT --pipeline "
        f'"canonicalize,search:min_fidelity={bar:g},fold,cleanup,{changed_by},validate" --inputs SAMPLES'
    )
    if not low:
        return f"note: {head}; {remedy}"
    worst = min(low, key=lambda o: o.fidelity)
    return (
        f"warning: {head}: {worst.name} keeps {worst.fidelity_metric} {worst.fidelity:.4f} of the fold's "
        f"outputs, under the {bar:g} it was folded to, so against the original it likely keeps less than "
        f"the target; {remedy}"
    )


__all__ = ["KEEPS_TARGET", "KEY", "chained_note", "record", "recorded"]
