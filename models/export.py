"""Export torch models to ONNX in the three styles the tests and benchmarks use.

- ``"legacy"``: TorchScript exporter (``dynamo=False``), eval mode, opset 17, constant folding on, so every
  BatchNormalization is fused into the preceding Conv (W' = γ/σ·W, b' = γ/σ·(b − μ) + β, σ = sqrt(var + eps)).
- ``"legacy-bn"``: TorchScript exporter with ``TrainingMode.PRESERVE`` and no constant folding on a model in
  eval mode: BatchNormalization nodes stay, with the running statistics as inputs and ``training_mode=0``.
- ``"dynamo"``: the torch.export-based exporter at opset 20 with its defaults (onnxscript optimiser on, which also
  fuses BN into Conv) and the weights in the external data file ``<file>.onnx.data``.

All styles name the input ``input`` and the output ``logits`` and make axis 0 a dynamic ``batch`` axis.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

__all__ = ["EXPORT_STYLES", "export_onnx"]

EXPORT_STYLES: tuple[str, ...] = ("legacy", "legacy-bn", "dynamo")
LEGACY_OPSET = 17
DYNAMO_OPSET = 20
_NOISY_LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence warnings, exporter progress prints and chatty loggers for the duration of an export."""
    loggers = [logging.getLogger(n) for n in _NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    sink = io.StringIO()
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_onnx(
    model: nn.Module, path: str | os.PathLike[str], example_input: torch.Tensor, style: str = "legacy"
) -> Path:
    """Export ``model`` (set to eval mode) to ``path`` in ``style``; returns the path of the .onnx file.

    The dynamo style also writes ``<path>.data``; tensors the exporter deems tiny may stay inline.
    """
    if style not in EXPORT_STYLES:
        raise ValueError(f"unknown export style {style!r}; expected one of {EXPORT_STYLES}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    names = {"input_names": ["input"], "output_names": ["logits"]}
    with _quiet(), torch.no_grad():
        if style == "dynamo":
            _export_dynamo(model, path, example_input, names)
        else:
            extra = {}
            if style == "legacy-bn":
                extra = {"training": torch.onnx.TrainingMode.PRESERVE, "do_constant_folding": False}
            torch.onnx.export(
                model,
                (example_input,),
                str(path),
                dynamo=False,
                opset_version=LEGACY_OPSET,
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                **names,
                **extra,
            )
    return path


def _export_dynamo(model: nn.Module, path: Path, example_input: torch.Tensor, names: dict) -> None:
    """torch.export-based export with a dynamic batch axis and all large weights in ``<path>.data``."""
    if example_input.shape[0] < 2:  # a batch of 1 would be specialised to a constant
        example_input = example_input.expand(2, *example_input.shape[1:]).contiguous()
    data = path.with_name(path.name + ".data")
    if data.exists():  # start from a clean data file, never a stale one
        data.unlink()
    torch.onnx.export(
        model,
        (example_input,),
        str(path),
        dynamo=True,
        opset_version=DYNAMO_OPSET,
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        external_data=True,
        verbose=False,
        **names,
    )
