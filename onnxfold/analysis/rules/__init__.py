"""The channel rules of the built-in ops, one module per op family; importing this package registers
them (and their MAC, attribute-fix and weight-layout hooks) in :mod:`onnxfold.analysis.registry`."""

from __future__ import annotations

from onnxfold.analysis.rules import (  # noqa: F401  (imported to register the rules)
    attention,
    elementwise,
    joins,
    layout,
    normalization,
    producers,
    reductions,
)
