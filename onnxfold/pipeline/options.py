"""Pass options and the errors of pipelines: declared once, read by passes, the CLI and the API.

An :class:`Option` is the single declaration of a pass setting: its name, type, default, help
and allowed values. ``onnxfold passes`` lists them, pipeline strings and files are converted
through them, and the ``onnxfold fold`` flags and :func:`onnxfold.api.fold` keywords are
derived from or checked against them (:mod:`onnxfold.cli.parser`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from onnxfold.errors import PassError, PipelineError  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class Option:
    """A typed pass option. ``type`` is one of float, int, bool, str, list (of str)."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    #: a check of the converted value that raises ValueError with the reason (a grammar, not a list)
    check: Any = None

    def convert(self, value: Any) -> Any:
        try:
            if self.type is bool:
                if isinstance(value, str):
                    low = value.strip().lower()
                    if low in ("1", "true", "yes", "on"):
                        return True
                    if low in ("0", "false", "no", "off"):
                        return False
                    raise ValueError(value)
                return bool(value)
            if self.type is list:
                if isinstance(value, str):
                    return [v for v in value.split("|") if v]
                return [str(v) for v in value]
            converted = self.type(value)
        except (TypeError, ValueError):
            raise PipelineError(
                f"option {self.name!r}: {value!r} is not a valid {self.type.__name__}{_joined(value)}"
            ) from None
        if self.choices is not None and converted not in self.choices:
            raise PipelineError(
                f"option {self.name!r}: {value!r} is not one of {', '.join(map(str, self.choices))}"
                + _joined(value)
            )
        if self.check is not None:
            try:
                self.check(converted)
            except ValueError as exc:
                raise PipelineError(f"option {self.name!r}: {exc}") from None
        return converted


def _joined(value: Any) -> str:
    """The hint for a value that holds another option (``mode=static|calibration=x.npy``: a trial
    joined two with '|')."""
    if "=" not in str(value):
        return ""
    return "; a pass's options are separated by commas, each KEY=VALUE: quantize:mode=static,calibration=FILE"
