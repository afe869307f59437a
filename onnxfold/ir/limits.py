"""The error type of model I/O and the size limits every module compares against."""

from __future__ import annotations

from onnxfold.errors import ModelError  # noqa: F401  (re-exported: raised by the I/O layer)

#: Protobuf refuses a message above 2 GiB: a model *file* larger than this cannot be read, and is refused
#: before reading it.
MAX_PROTO_BYTES = 2**31
#: The 2 GB limit for a whole model in one protobuf. A model whose tensors hold more bytes than this is
#: saved with external data, and is not serialised in memory for ``onnx.checker``, fold verification or
#: validation. It stays ~7 % under :data:`MAX_PROTO_BYTES` to leave room for the graph itself.
PROTO_LIMIT = 2_000_000_000
#: Tensors smaller than this stay inline even when external data is written.
EXTERNAL_MIN_TENSOR_BYTES = 1024
