"""Sensitivity analysis, sensitivity-aware allocation and the fidelity/budget target search."""

from __future__ import annotations

from onnxfold.search.allocate import AllocationPath, greedy_path
from onnxfold.search.evaluate import Evaluator
from onnxfold.search.sensitivity import (
    DEFAULT_LEVELS,
    GroupCurve,
    format_sensitivity,
    plot_sensitivity,
    sensitivity,
)
from onnxfold.search.target import Candidate, SearchResult, search

__all__ = [
    "DEFAULT_LEVELS",
    "AllocationPath",
    "Candidate",
    "Evaluator",
    "GroupCurve",
    "SearchResult",
    "format_sensitivity",
    "greedy_path",
    "plot_sensitivity",
    "search",
    "sensitivity",
]
