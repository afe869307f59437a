"""Spilling: models larger than memory keep rewritten tensors in a scratch file.

While a :class:`SpillStore` is active (:func:`spilling`), every large tensor a pass rewrites with
:func:`set_values` is appended to a scratch file and replaced by a lazy reference to it, and readers that
only look (:func:`~onnxfold.ir.external.peek_values`) never cache what they read. Peak memory is then about
one group's tensors, whatever the model's size; saving streams every tensor from wherever it lives.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx_graphsurgeon as gs
from onnx import TensorProto, helper

from onnxfold.ir.external import ExternalValues
from onnxfold.ir.limits import ModelError
from onnxfold.report.timing import step


class SpillStore:
    """An append-only scratch file holding rewritten tensors of a model too large for memory.

    :meth:`put` writes an array (64-byte aligned, little-endian) and returns lazy values that read it
    back. Nothing is overwritten in place: an older copy of the model may still reference a slot.
    The file is deleted by :meth:`close`."""

    def __init__(self, folder: str | os.PathLike | None = None, min_bytes: int = 1 << 20):
        folder = Path(folder) if folder is not None else Path(tempfile.gettempdir())
        try:
            fd, name = tempfile.mkstemp(prefix=".onnxfold-spill-", suffix=".bin", dir=folder)
        except OSError as exc:
            raise ModelError(f"cannot create a scratch file in {folder}: {exc.strerror or exc}") from None
        self.path = Path(name).absolute()
        self.file = os.fdopen(fd, "wb")
        self.offset = 0
        self.min_bytes = min_bytes

    def put(self, name: str, array: np.ndarray) -> ExternalValues:
        with step("spill"):
            return self._put(name, array)

    def _put(self, name: str, array: np.ndarray) -> ExternalValues:
        array = np.ascontiguousarray(array)
        blob = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        pad = (-self.offset) % 64
        try:
            self.file.write(b"\0" * pad + blob)
            self.file.flush()
        except OSError as exc:
            raise ModelError(f"cannot write scratch file {self.path}: {exc.strerror or exc}") from None
        self.offset += pad
        tensor = TensorProto(
            name=name,
            data_type=helper.np_dtype_to_tensor_dtype(array.dtype),
            dims=array.shape,
            data_location=TensorProto.EXTERNAL,
        )
        for key, value in (
            ("location", self.path.name),
            ("offset", str(self.offset)),
            ("length", str(len(blob))),
        ):
            tensor.external_data.add(key=key, value=value)
        self.offset += len(blob)
        return ExternalValues(tensor, self.path.parent)

    def close(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)


_SPILL: contextvars.ContextVar[SpillStore | None] = contextvars.ContextVar("onnxfold_spill", default=None)


@contextlib.contextmanager
def spilling(folder: str | os.PathLike | None = None, min_bytes: int = 1 << 20) -> Iterator[SpillStore]:
    """While active, :func:`set_values` moves arrays of at least ``min_bytes`` to a scratch file in
    ``folder`` (default: the temporary folder). Models must be saved before the block ends."""
    store = SpillStore(folder, min_bytes)
    token = _SPILL.set(store)
    try:
        yield store
    finally:
        _SPILL.reset(token)
        store.close()


def set_values(const: gs.Constant, values: np.ndarray) -> None:
    """Give a constant new values (dropping any external-data location it was imported with). Inside
    :func:`spilling`, a large array goes to the scratch file and the constant reads it back lazily."""
    values = np.ascontiguousarray(values)
    store = _SPILL.get()
    const.values = (
        store.put(const.name, values) if store is not None and values.nbytes >= store.min_bytes else values
    )
    const.data_location = None
