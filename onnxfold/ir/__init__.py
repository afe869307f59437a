"""The model in memory and on disk: loading with lazy external data, atomic saving, spilling, graph edits.

``Model`` (:mod:`~onnxfold.ir.model`) is what every pass transforms; :func:`load_model` and
:func:`save_model` read and write it; :class:`ModelError` is their one-line error.
"""

from __future__ import annotations

from onnxfold.ir.limits import ModelError
from onnxfold.ir.model import Model, load_model, save_model

__all__ = ["Model", "ModelError", "load_model", "save_model"]
