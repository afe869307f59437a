"""Tensor data a model file declares: sizes checked against shapes, external data read safely.

An ONNX file is untrusted input. Before anything is read or allocated, every tensor's data is checked
against its declared shape (exact integers, no overflow): inline data of exactly ``prod(dims) · itemsize``
bytes (4-bit types pack two elements per byte), external slices ``[offset, offset + length)`` inside a
regular data file that lies inside the model's folder. External tensors are then read by memory-mapping
their slice, relative to the model's folder (never the current directory).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import TensorProto, helper
from onnx_graphsurgeon.ir.tensor import LazyValues

from onnxfold.ir.limits import ModelError

#: 4-bit types: two elements per byte in raw_data and per int32_data entry.
_PACKED_4BIT = {getattr(TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1") if hasattr(TensorProto, n)}
#: sub-byte types whose packing is not checked here (onnx/onnxruntime still validate them)
_UNCHECKED = {
    getattr(TensorProto, n) for n in ("FLOAT6E2M3", "FLOAT6E3M2", "INT2", "UINT2") if hasattr(TensorProto, n)
}
_COMPLEX = {TensorProto.COMPLEX64, TensorProto.COMPLEX128}


def _tensor_np_dtype(data_type: int) -> np.dtype:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(data_type))
    except (KeyError, TypeError, ValueError):
        raise ModelError(f"unknown tensor data type {data_type}") from None


def _element_count(tensor: TensorProto) -> int:
    """Number of elements the tensor declares, in exact (unbounded) integers: no int64 overflow."""
    count = 1
    for d in tensor.dims:
        if d < 0:
            raise ModelError(f"tensor {tensor.name!r}: negative dimension {d} in shape {list(tensor.dims)}")
        count *= int(d)
    return count


def _expected_bytes(tensor: TensorProto) -> int:
    """Bytes the tensor's declared shape needs in raw/external form (exact integers)."""
    count = _element_count(tensor)
    if tensor.data_type in _PACKED_4BIT:
        return (count + 1) // 2
    return count * _tensor_np_dtype(tensor.data_type).itemsize


def check_tensor_size(tensor: TensorProto) -> None:
    """Refuse an inline tensor whose stored data does not match its declared shape (nothing is allocated)."""
    if tensor.data_location == TensorProto.EXTERNAL:
        return
    count = _element_count(tensor)
    if tensor.data_type in _UNCHECKED:
        return
    if tensor.data_type == TensorProto.STRING:
        have, want, unit = len(tensor.string_data), count, "strings"
    elif tensor.HasField("raw_data"):
        have, want, unit = len(tensor.raw_data), _expected_bytes(tensor), "bytes"
    else:
        have = sum(
            len(getattr(tensor, f))
            for f in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data")
        )
        want = (
            (count + 1) // 2
            if tensor.data_type in _PACKED_4BIT
            else 2 * count
            if tensor.data_type in _COMPLEX
            else count
        )
        unit = "values"
    if have != want:
        raise ModelError(
            f"tensor {tensor.name!r}: holds {have} {unit}, its shape {list(tensor.dims)} needs {want}"
        )


def _external_info(tensor: TensorProto) -> dict[str, str]:
    return {e.key: e.value for e in tensor.external_data}


def resolve_external_path(base_dir: Path, location: str) -> Path:
    """Resolve an external-data ``location`` inside ``base_dir``; refuse anything that escapes it."""
    if "\0" in location:
        raise ModelError(f"external data location {location!r} contains a NUL byte")
    if not location or os.path.isabs(location) or location.startswith(("/", "\\")) or ":" in location:
        raise ModelError(
            f"external data location {location!r} is not a relative path inside the model folder"
        )
    parts = location.replace("\\", "/").split("/")
    if ".." in parts:
        raise ModelError(f"external data location {location!r} escapes the model folder")
    base = base_dir.resolve()
    path = (base / location).resolve()
    if base != path and base not in path.parents:
        raise ModelError(f"external data location {location!r} resolves outside the model folder (symlink?)")
    if not path.is_file():
        raise ModelError(f"external data file {location!r} is missing next to the model (no {path})")
    return path


def external_slice(tensor: TensorProto, base_dir: Path) -> tuple[Path, int, int]:
    """Return (path, offset, length) of an external tensor after checking it fits the data file."""
    info = _external_info(tensor)
    path = resolve_external_path(base_dir, info.get("location", ""))
    try:
        offset = int(info.get("offset", "0"))
        size = path.stat().st_size
        length = int(info["length"]) if "length" in info else size - offset
    except ValueError:
        raise ModelError(f"tensor {tensor.name!r}: bad external data offset/length") from None
    if tensor.data_type == TensorProto.STRING:
        raise ModelError(f"tensor {tensor.name!r}: string tensors cannot use external data")
    expected = _expected_bytes(tensor)
    if offset < 0 or length < 0 or offset + length > size:
        raise ModelError(
            f"tensor {tensor.name!r}: external data range [{offset}, {offset + length}) "
            f"does not fit {path.name} ({size} bytes)"
        )
    if length != expected:
        raise ModelError(
            f"tensor {tensor.name!r}: external data holds {length} bytes, shape needs {expected}"
        )
    return path, offset, length


def read_external(tensor: TensorProto, base_dir: Path, copy: bool = True) -> np.ndarray:
    """Read one external tensor by memory-mapping its slice of the data file (``copy=False``: the
    read-only map itself, whose pages are read only where it is used)."""
    path, offset, _ = external_slice(tensor, base_dir)
    dtype = _tensor_np_dtype(tensor.data_type).newbyteorder("<")
    shape = tuple(int(d) for d in tensor.dims)
    if _element_count(tensor) == 0:
        return np.zeros(shape, dtype=dtype)
    mm = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
    return np.array(mm, dtype=dtype.newbyteorder("=")) if copy else mm


class ExternalValues(LazyValues):
    """Lazy values of a tensor in external data, resolved against ``base_dir`` (the model's folder,
    or a :class:`SpillStore`'s)."""

    def __init__(self, tensor: TensorProto, base_dir: Path):
        super().__init__(tensor)
        self.base_dir = base_dir

    def load(self) -> np.ndarray:
        return read_external(self.tensor, self.base_dir)

    def view(self) -> np.ndarray:
        return read_external(self.tensor, self.base_dir, copy=False)


def peek_values(const: gs.Constant) -> np.ndarray:
    """The values of ``const`` without caching them in the graph: a lazy external tensor is returned as
    a read-only memory map and stays lazy (``const.values`` would keep a copy in memory for good)."""
    if isinstance(const._values, ExternalValues):
        return const._values.view()
    return np.asarray(const.values)


def inline_values(const: gs.Constant) -> np.ndarray | None:
    """The values of ``const`` where the file holds them inline, read without caching them (unlike
    :func:`peek_values`, which keeps inline values once read); None for values in external data, which
    are not read at all (a whole-model check would load every weight)."""
    values = const._values
    if isinstance(values, LazyValues):
        return None if is_external(values.tensor) else values.load()
    return values if isinstance(values, np.ndarray) else None


def iter_tensors(graph: onnx.GraphProto) -> Iterator[TensorProto]:
    """Every TensorProto of a graph: initializers, Constant/attribute tensors, subgraphs, recursively."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t
            elif attr.type == onnx.AttributeProto.TENSORS:
                yield from attr.tensors
            elif attr.type == onnx.AttributeProto.GRAPH:
                yield from iter_tensors(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from iter_tensors(sub)


def is_external(tensor: TensorProto) -> bool:
    return tensor.data_location == TensorProto.EXTERNAL


def check_external_refs(proto: onnx.ModelProto, base_dir: Path) -> None:
    """Every tensor's data must fit its declared shape: external slices inside the model folder and the
    data file, inline data of exactly the declared size. Checked before anything is read or allocated."""
    for tensor in iter_tensors(proto.graph):
        if is_external(tensor):
            external_slice(tensor, base_dir)
        else:
            check_tensor_size(tensor)
    for function in proto.functions:
        for node in function.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    check_tensor_size(attr.t)


def tensor_nbytes(tensor: TensorProto) -> int:
    if is_external(tensor):
        info = _external_info(tensor)
        return int(info.get("length", "0"))
    return tensor.ByteSize()


def materialize(proto: onnx.ModelProto, base_dir: Path, dirs: dict[str, Path] | None = None) -> None:
    """Replace every external reference in ``proto`` by the tensor's bytes (inline raw_data); a tensor
    named in ``dirs`` resolves against that folder instead of ``base_dir``."""
    dirs = dirs or {}
    for tensor in iter_tensors(proto.graph):
        if is_external(tensor):
            array = read_external(tensor, dirs.get(tensor.name, base_dir))
            _set_raw(tensor, array)


def _set_raw(tensor: TensorProto, array: np.ndarray) -> None:
    del tensor.external_data[:]
    tensor.data_location = TensorProto.DEFAULT
    tensor.raw_data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


def tensor_bytes(tensor: TensorProto, base_dir: Path) -> bytes:
    if is_external(tensor):
        path, offset, length = external_slice(tensor, base_dir)
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(length)
    if tensor.HasField("raw_data"):
        return tensor.raw_data
    array = onnx.numpy_helper.to_array(tensor)
    return np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


def data_dirs(graph: gs.Graph) -> dict[str, Path]:
    """Constant name → folder its lazy external data resolves against, for every lazy constant (the
    model's folder, or a scratch folder for spilled tensors)."""
    dirs: dict[str, Path] = {}
    for sub in [graph, *graph.subgraphs(recursive=True)]:
        for tensor in sub.tensors().values():
            if isinstance(tensor, gs.Constant) and isinstance(tensor._values, ExternalValues):
                dirs[tensor.name] = tensor._values.base_dir
    return dirs


def constants(graph: gs.Graph):
    """Every constant of ``graph`` and its subgraphs: initializers and Constant-node tensors."""
    for sub in [graph, *graph.subgraphs(recursive=True)]:
        yield from (t for t in sub.tensors().values() if isinstance(t, gs.Constant))
        yield from (v for node in sub.nodes for v in node.attrs.values() if isinstance(v, gs.Constant))


def _count(const: gs.Constant) -> int:
    count = 1
    for d in const.shape:
        count *= int(d)
    return count


def _dtype(const: gs.Constant) -> np.dtype | None:
    """The constant's numpy dtype, None for a type numpy lacks (bfloat16, float8)."""
    try:
        return np.dtype(const.dtype)
    except TypeError:
        return None


def weight_bytes(graph: gs.Graph) -> int:
    """Bytes of every constant of ``graph`` and its subgraphs (initializers and Constant-node tensors),
    ``prod(shape) · itemsize`` from declared shapes and dtypes: no lazy value is read, nothing serialised."""
    return sum(_count(c) * (d.itemsize if (d := _dtype(c)) is not None else 1) for c in constants(graph))


def elements_by_type(graph: gs.Graph) -> dict[str, int]:
    """Elements of the constants of ``graph`` and its subgraphs per ONNX type name (``float32``,
    ``float16``, ``bfloat16``, ...; graphsurgeon keeps a type numpy lacks as TensorProto's number),
    from declared shapes: nothing is read."""
    counts: dict[str, int] = {}
    for c in constants(graph):
        d = _dtype(c)
        name = d.name if d is not None else TensorProto.DataType.Name(int(c.dtype)).lower()
        counts[name] = counts.get(name, 0) + _count(c)
    return counts


def float_elements(graph: gs.Graph) -> int:
    """Elements of the floating-point constants (the weights; a type numpy lacks counts as one), from
    declared shapes: nothing is read."""
    return sum(_count(c) for c in constants(graph) if (d := _dtype(c)) is None or d.kind == "f")
