"""The command line, ``onnxfold``: a thin shell over :mod:`onnxfold.api`."""

from onnxfold.cli.commands import main

__all__ = ["main"]
