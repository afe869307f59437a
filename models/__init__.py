"""Reference architectures, exporters and bundled models, importable as ``onnxfold.models``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

#: the bundled model ``onnxfold demo`` folds
DEMO_MODEL = "resnet18.onnx"


def bundled_model(name: str = DEMO_MODEL) -> Path:
    """Path of a model of the bundled digits zoo (``models/zoo``), installed with the package."""
    path = Path(str(resources.files("onnxfold.models") / "zoo" / name))
    if not path.is_file():
        raise FileNotFoundError(f"bundled model {name} is missing from the installation")
    return path
