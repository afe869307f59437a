"""onnxfold: data-free model folding for exported ONNX models.

>>> import onnxfold
>>> model, report = onnxfold.fold("model.onnx", sparsity=0.5, output="small.onnx")   # doctest: +SKIP
>>> groups = onnxfold.analyze("model.onnx")                                          # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "analyze", "fold", "run_pipeline", "load_model", "save_model", "register_rule"]


def __getattr__(name: str):
    """Import the API lazily so that ``import onnxfold`` stays cheap."""
    if name in ("analyze", "fold", "run_pipeline"):
        from onnxfold import api

        return getattr(api, name)
    if name == "register_rule":
        from onnxfold.analysis import register_rule

        return register_rule
    if name in ("load_model", "save_model"):
        from onnxfold.ir import model as io

        return getattr(io, name)
    raise AttributeError(f"module 'onnxfold' has no attribute {name!r}")
