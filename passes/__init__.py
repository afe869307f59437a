"""Graph passes of onnxfold, importable as ``onnxfold.passes``. ``REGISTRY`` maps names to pass classes."""

from __future__ import annotations

from onnxfold.passes.canonicalize import CanonicalizePass
from onnxfold.passes.cleanup import CleanupPass
from onnxfold.passes.dequantize import DequantizePass
from onnxfold.passes.float16 import Float16Pass
from onnxfold.passes.fold import FoldPass
from onnxfold.passes.quantize import QuantizePass
from onnxfold.passes.repair import RepairPass
from onnxfold.passes.search import SearchPass
from onnxfold.passes.validate import ValidatePass
from onnxfold.pipeline.manager import Pass

REGISTRY: dict[str, type[Pass]] = {
    p.name: p
    for p in (
        CanonicalizePass,
        FoldPass,
        SearchPass,
        RepairPass,
        CleanupPass,
        ValidatePass,
        QuantizePass,
        Float16Pass,
        DequantizePass,
    )
}

__all__ = [
    "REGISTRY",
    "CanonicalizePass",
    "FoldPass",
    "RepairPass",
    "SearchPass",
    "CleanupPass",
    "ValidatePass",
    "QuantizePass",
    "Float16Pass",
    "DequantizePass",
]
