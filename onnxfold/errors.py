"""Expected errors and the one-line form every user-facing message takes.

An *expected* error is a user's mistake or an unusable input (bad path, bad option, a model
onnxfold cannot read): the command line prints it as one line ``onnxfold: error: …`` and exits
with status 2. :data:`EXPECTED_ERRORS` lists the types it treats so; anything else is a bug and
is reported as an internal error.

The error types live where they are raised (``ModelError`` in :mod:`onnxfold.ir.model`,
``PipelineError``/``PassError`` in :mod:`onnxfold.pipeline.manager`) and are re-exported here.
"""

from __future__ import annotations

from onnxfold.ir.model import ModelError
from onnxfold.pipeline.options import PassError, PipelineError


class CliError(Exception):
    """An expected failure of the command line with a one-line message."""


#: The exception types the command line reports as one line with exit status 2.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    CliError,
    ModelError,
    PipelineError,
    PassError,
    ValueError,
    OSError,
)


def one_line(exc: BaseException, limit: int = 500, *, with_type: bool = False) -> str:
    """The first line of ``str(exc)`` (the type name when the message is empty), cut to ``limit``
    characters; ``with_type`` prefixes ``"TypeName: "`` (counted in the limit)."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    if with_type:
        line = f"{type(exc).__name__}: {line}" if line else type(exc).__name__
    return (line or type(exc).__name__)[:limit]


__all__ = ["EXPECTED_ERRORS", "CliError", "ModelError", "PassError", "PipelineError", "one_line"]
