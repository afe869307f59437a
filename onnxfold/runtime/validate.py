"""Former home of sessions, inputs and output comparison; kept so that ``from
onnxfold.runtime.validate import make_session`` (used across the tests and the benches) still works.

New code imports from :mod:`onnxfold.runtime.session`, :mod:`onnxfold.runtime.inputs` and
:mod:`onnxfold.runtime.compare`.
"""

from __future__ import annotations

from onnxfold.runtime.compare import OutputMetrics, ValidationReport, compare_outputs, validate
from onnxfold.runtime.inputs import InputSpec, input_specs, load_inputs, make_inputs, parse_input_shapes
from onnxfold.runtime.session import CPU, CUDA, available_providers, make_session, runtime_description

__all__ = [
    "CPU",
    "CUDA",
    "InputSpec",
    "OutputMetrics",
    "ValidationReport",
    "available_providers",
    "compare_outputs",
    "input_specs",
    "load_inputs",
    "make_inputs",
    "make_session",
    "parse_input_shapes",
    "runtime_description",
    "validate",
]
