"""Run a model once in a child process: onnxruntime may crash on a model, and with it the caller.

A static INT8 model of brainmaze-eeg-models' spindle detector made onnxruntime 1.32 crash (SIGSEGV)
with its default session options, where it fuses the QDQ pairs around Add and Mul into integer
kernels and runs them on several threads (one thread, or no graph optimisation, ran it). In process,
that crash took the whole pipeline with it, after minutes of folding, and left no output and no
message. :func:`crash` runs the model as a user's default session would, in a child process, and says
how it failed.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

#: a child that runs longer than this is left to the caller's own run (slow is not a crash)
PROBE_SECONDS = 600

_PROBE = (
    "import sys, numpy as np, onnxruntime as ort\n"
    "feed = np.load(sys.argv[2])\n"
    "session = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n"
    "text = lambda a: a.astype(object) if a.dtype.kind == 'U' else a  # strings went as unicode\n"
    "session.run(None, {name: text(feed[name]) for name in feed.files})\n"
)


def _saveable(value) -> np.ndarray:
    v = np.asarray(value)
    return v.astype(str) if v.dtype == object else v


def crash(path: str | Path, feed: Mapping[str, np.ndarray], seconds: float = PROBE_SECONDS) -> str | None:
    """How onnxruntime, with its default session options, fails to run the model at ``path`` on
    ``feed`` in a child process: ``"crashed (SIGSEGV)"`` for a signal, ``"failed: <last line>"`` for
    an error; None when it runs (or runs past ``seconds``)."""
    with tempfile.TemporaryDirectory(prefix="onnxfold-probe-") as tmp:
        npz = Path(tmp) / "feed.npz"
        # strings as unicode: object arrays load only through pickle (a skl2onnx model's categories)
        np.savez(npz, **{name: _saveable(v) for name, v in feed.items()})
        try:
            done = subprocess.run(
                [sys.executable, "-c", _PROBE, str(path), str(npz)],
                capture_output=True,
                text=True,
                timeout=seconds,
            )
        except subprocess.TimeoutExpired:
            return None
    if done.returncode < 0:
        try:
            name = signal.Signals(-done.returncode).name
        except ValueError:
            name = f"signal {-done.returncode}"
        return f"crashed ({name})"
    if done.returncode:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        last = lines[-1] if lines else f"exit status {done.returncode}"
        # onnxruntime names the cause at the end of a long line ("... Unrecognized attribute: axis ...")
        return f"failed: {last if len(last) <= 300 else f'{last[:90]} … {last[-200:]}'}"
    return None
