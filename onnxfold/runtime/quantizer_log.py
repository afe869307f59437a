"""What onnxruntime's quantizer logs on the root logger, said once in the quantize pass's own words.

The quantizer warns through Python's root logger, which onnxfold prints as its own lines: a trial read
two raw "Axis 1 is out-of-range for weight '...' with rank 1" lines, and another, on a lemmatizer
whose embeddings a dynamic INT8 export had left quantized, "Please check if the model is already
quantized" and a protobuf dump of 15 lines per such tensor. :func:`held_back` keeps those records
from the log and collects what they name; :func:`quantizer_notes` says it in one line each.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator

#: per channel, on a weight of rank 1 (an unfused BatchNormalization's scale)
VECTOR_WEIGHT = re.compile(r"Axis \d+ is out-of-range for weight '(.+)' with rank 1")
#: a tensor the model already holds quantized, or of a type the quantizer does not take (a bool mask)
NOT_QUANTIZED = re.compile(r"Inference failed or unsupported type to quantize for tensor '([^']+)'")
#: a tensor whose type its inference could not tell (a skl2onnx model's one-hot block), said per run
UNTYPED = re.compile(r"failed to infer the type of tensor: (.+?)\. Skip to quantize it")
#: said once for a model that already holds quantized ops
ALREADY_QUANTIZED = "Please check if the model is already quantized"


@contextlib.contextmanager
def held_back() -> Iterator[dict[str, list[str]]]:
    """Within the block, the quantizer's records above are kept from the root logger; the dict yielded
    collects what they name: ``vectors`` (weights of rank 1), ``skipped`` (tensors it did not
    quantize), ``already`` (its already-quantized warning) and ``untyped`` (tensors whose type its
    inference could not tell)."""
    found: dict[str, list[str]] = {"vectors": [], "skipped": [], "already": [], "untyped": []}

    def keep(record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for key, pattern in (("vectors", VECTOR_WEIGHT), ("skipped", NOT_QUANTIZED), ("untyped", UNTYPED)):
            hit = pattern.search(message)
            if hit:
                found[key].append(hit.group(1))
                return False
        if ALREADY_QUANTIZED in message:
            found["already"].append(message)
            return False
        return True

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield found
    finally:
        root.removeFilter(keep)


def _some(names: list[str]) -> str:
    return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")


#: the note of a static quantization calibrated on random inputs, after their count
RANDOM_CALIBRATION = (
    "random samples: activation ranges fit noise, not real inputs (calibration=FILE, or --inputs)"
)


def add_note(stats: dict, *notes: str | None) -> None:
    """Append the non-empty ``notes`` to a pass's ``stats["note"]``, "; "-joined."""
    stats["note"] = "; ".join(filter(None, (stats.get("note"), *notes)))


def quantizer_notes(found: dict[str, list[str]]) -> list[str]:
    """One line for each kind of record :func:`held_back` collected (a requantization warns again:
    names are counted once)."""
    notes = []
    vectors = list(dict.fromkeys(found["vectors"]))
    if vectors:
        plural = "s" if len(vectors) > 1 else ""
        notes.append(
            f"{len(vectors)} one-dimensional weight{plural} ({_some(vectors)}) got one scale each: "
            "they have no channel axis"
        )
    skipped = list(dict.fromkeys(found["skipped"]))
    if skipped or found["already"]:
        what = (
            f"{len(skipped)} tensor{'s' if len(skipped) != 1 else ''} ({_some(skipped)}) " if skipped else ""
        )
        if found["already"]:
            notes.append(
                f"the model already holds quantized ops: {what}left as they are (onnxruntime's quantizer "
                "quantizes float tensors only)"
            )
        else:  # a float diacritizer's bool mask read "the model already holds quantized ops"
            notes.append(
                f"{what}left as {'they are' if len(skipped) != 1 else 'it is'}: onnxruntime's quantizer "
                "quantizes float tensors only, and its inference found another type"
            )
    untyped = list(dict.fromkeys(found.get("untyped", [])))
    if untyped:
        notes.append(
            f"{len(untyped)} tensor{'s' if len(untyped) != 1 else ''} ({_some(untyped)}) left float: "
            "onnxruntime's quantizer could not tell their type"
        )
    return notes


#: a share of the weights left in float by a quantization worth a note
FLOAT_LEFT_SHARE = 0.1


def float_left_note(graph) -> str:
    """'' or a note naming the ops whose float weights (rank ≥ 2, float32) a quantization left as they
    were, where they hold at least :data:`FLOAT_LEFT_SHARE` of the weights: onnxruntime's dynamic mode
    has no GRU kernel, and NSNet2's two GRUs, 71% of its weights, stayed float32 with nothing said."""
    import numpy as np

    from onnxfold.ir.external import constants, elements_by_type

    total = sum(elements_by_type(graph).values())
    left: dict[str, int] = {}
    for c in constants(graph):
        shape = tuple(c.shape or ())
        try:
            single = np.dtype(c.dtype) == np.float32
        except TypeError:  # a type numpy lacks (bfloat16)
            single = False
        if single and len(shape) >= 2 and c.outputs:
            key = "/".join(sorted({n.op for n in c.outputs}))
            left[key] = left.get(key, 0) + int(np.prod(shape))
    share = sum(left.values()) / total if total else 0.0
    if share < FLOAT_LEFT_SHARE:
        return ""
    ops = ", ".join(f"{op} {n:,}" for op, n in sorted(left.items(), key=lambda kv: -kv[1]))
    return (
        f"{share:.0%} of the weights stay float32, read by ops this quantization does not convert ({ops}): "
        "the file shrinks by less than 8-bit weights would make it"
    )
