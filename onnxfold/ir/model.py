"""Model I/O: lazy loading of external data, self-contained atomic saving.

A :class:`Model` wraps an onnx-graphsurgeon graph plus what graphsurgeon does not keep
(IR version, opset imports with custom domains, metadata, functions) and the folder that
external data is resolved against. Tensors stored in external data stay lazy: they are read
by memory-mapping the slice of the data file, relative to the *model's* folder (never the
current directory), and only when a pass asks for their values.

Saving materialises every tensor into the output itself (inline, or into the output's own
``<name>.data``), writes to temporary files in the destination folder and renames them into
place, so a failed save leaves nothing behind and the output never references the input's data.

Models larger than memory are handled by *spilling* (:func:`spilling`): while a
:class:`SpillStore` is active, every large tensor a pass rewrites with :func:`set_values` is
appended to a scratch file and replaced by a lazy reference to it, and readers that only look
(:func:`peek_values`) never cache what they read. Peak memory is then about one group's tensors,
whatever the model's size; saving streams every tensor from wherever it lives.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import TensorProto, helper
from onnx_graphsurgeon.ir.tensor import LazyValues

#: Models whose tensors would exceed this size are saved with external data (protobuf limit is 2 GiB).
EXTERNAL_DATA_THRESHOLD = 2_000_000_000
#: Tensors smaller than this stay inline even when external data is written.
EXTERNAL_MIN_TENSOR_BYTES = 1024


class ModelError(ValueError):
    """A model file that cannot be read, is unsafe, or cannot be written. Its message is one line."""


#: Model files above this cannot be a valid protobuf (2 GiB limit); refused before reading them.
MAX_PROTO_BYTES = 2**31
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
        raise ModelError(f"external data file {location!r} is missing next to the model")
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


@dataclass
class Model:
    """A graph being transformed, plus the model-level fields graphsurgeon does not carry."""

    graph: gs.Graph
    ir_version: int
    opset_imports: list[tuple[str, int]]
    base_dir: Path
    producer_name: str = ""
    producer_version: str = ""
    domain: str = ""
    model_version: int = 0
    doc_string: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    functions: list[onnx.FunctionProto] = field(default_factory=list)
    source_path: Path | None = None
    #: per-node ``metadata_props`` (graphsurgeon drops them), restored on export by node name
    node_metadata: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    @property
    def opset(self) -> int:
        for domain, version in self.opset_imports:
            if domain in ("", "ai.onnx"):
                return version
        return 0

    def to_onnx(self) -> onnx.ModelProto:
        """Export to a ModelProto. External tensors keep their references (see :func:`materialize`)."""
        self.graph.opset = self.opset
        _drop_stale_locations(self.graph)
        proto = gs.export_onnx(self.graph, do_type_check=False)
        del proto.opset_import[:]
        for domain, version in self.opset_imports:
            proto.opset_import.append(helper.make_opsetid(domain, version))
        proto.ir_version = self.ir_version
        proto.producer_name = self.producer_name
        proto.producer_version = self.producer_version
        proto.domain = self.domain
        proto.model_version = self.model_version
        proto.doc_string = self.doc_string
        del proto.metadata_props[:]
        for key, value in self.metadata.items():
            proto.metadata_props.add(key=key, value=value)
        del proto.functions[:]
        proto.functions.extend(self.functions)
        if self.node_metadata:
            for node in proto.graph.node:
                for key, value in self.node_metadata.get(node.name, ()):
                    node.metadata_props.add(key=key, value=value)
        return proto

    def node_scopes(self) -> dict[str, str]:
        """Node name → source-module path, where the exporter recorded one (torch dynamo)."""
        scopes = {}
        for name, props in self.node_metadata.items():
            for key, value in props:
                if key == "pkg.torch.onnx.name_scopes":
                    parts = [p.strip(" '\"") for p in value.strip("[]").split(",")]
                    scopes[name] = ".".join(p for p in parts[-2:-1] if p) or value
        return scopes

    def copy(self) -> Model:
        """A deep copy of the graph (tensor values are shared until written)."""
        return Model(
            self.graph.copy(),
            self.ir_version,
            list(self.opset_imports),
            self.base_dir,
            self.producer_name,
            self.producer_version,
            self.domain,
            self.model_version,
            self.doc_string,
            dict(self.metadata),
            list(self.functions),
            self.source_path,
            dict(self.node_metadata),
        )


def _drop_stale_locations(graph: gs.Graph) -> None:
    """A constant whose external values were read into memory (``.values``) is no longer external:
    graphsurgeon would otherwise export its bytes marked EXTERNAL with no location."""
    for sub in graph.subgraphs():
        _drop_stale_locations(sub)
    consts = [t for t in graph.tensors().values() if isinstance(t, gs.Constant)]
    consts += [v for node in graph.nodes for v in node.attrs.values() if isinstance(v, gs.Constant)]
    for const in consts:
        if const.data_location == TensorProto.EXTERNAL and not isinstance(const._values, LazyValues):
            const.data_location = None


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


def _is_external(tensor: TensorProto) -> bool:
    return tensor.data_location == TensorProto.EXTERNAL


def _check_external_refs(proto: onnx.ModelProto, base_dir: Path) -> None:
    """Every tensor's data must fit its declared shape: external slices inside the model folder and the
    data file, inline data of exactly the declared size. Checked before anything is read or allocated."""
    for tensor in iter_tensors(proto.graph):
        if _is_external(tensor):
            external_slice(tensor, base_dir)
        else:
            check_tensor_size(tensor)
    for function in proto.functions:
        for node in function.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    check_tensor_size(attr.t)


def _attach_lazy_values(graph: gs.Graph, base_dir: Path) -> None:
    """Swap graphsurgeon's cwd-relative lazy loader for one resolved against the model folder."""
    for sub in graph.subgraphs():
        _attach_lazy_values(sub, base_dir)
    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Constant) and isinstance(tensor._values, LazyValues):
            proto = tensor._values.tensor
            if isinstance(proto, TensorProto) and _is_external(proto):
                tensor._values = ExternalValues(proto, base_dir)
    for node in graph.nodes:
        for value in node.attrs.values():
            if isinstance(value, gs.Constant) and isinstance(value._values, LazyValues):
                proto = value._values.tensor
                if isinstance(proto, TensorProto) and _is_external(proto):
                    value._values = ExternalValues(proto, base_dir)


def set_values(const: gs.Constant, values: np.ndarray) -> None:
    """Give a constant new values (dropping any external-data location it was imported with). Inside
    :func:`spilling`, a large array goes to the scratch file and the constant reads it back lazily."""
    values = np.ascontiguousarray(values)
    store = _SPILL.get()
    const.values = (
        store.put(const.name, values) if store is not None and values.nbytes >= store.min_bytes else values
    )
    const.data_location = None


def data_dirs(graph: gs.Graph) -> dict[str, Path]:
    """Constant name → folder its lazy external data resolves against, for every lazy constant (the
    model's folder, or a scratch folder for spilled tensors)."""
    dirs: dict[str, Path] = {}
    for sub in [graph, *graph.subgraphs(recursive=True)]:
        for tensor in sub.tensors().values():
            if isinstance(tensor, gs.Constant) and isinstance(tensor._values, ExternalValues):
                dirs[tensor.name] = tensor._values.base_dir
    return dirs


def load_model(path: str | os.PathLike) -> Model:
    """Load ``path`` with external data kept lazy. Raises :class:`ModelError` with a one-line message."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    if not path.is_file():
        raise ModelError(f"{path}: not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise ModelError(f"{path}: empty file, not an ONNX model")
    if size > MAX_PROTO_BYTES:
        raise ModelError(
            f"{path}: {size} bytes, larger than the 2 GiB protobuf limit (weights belong in external data)"
        )
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError, RuntimeWarning, ...
        raise ModelError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    if not proto.graph.node and not proto.graph.output:
        raise ModelError(f"{path}: not an ONNX model (no graph)")
    if not proto.opset_import:
        raise ModelError(f"{path}: not an ONNX model (no opset import)")
    # Absolute, so that lazy external data still resolves after the current directory changes.
    model = model_from_proto(proto, path.parent.absolute())
    model.source_path = path.absolute()
    return model


def model_from_proto(proto: onnx.ModelProto, base_dir: str | os.PathLike = ".") -> Model:
    """Wrap an in-memory ModelProto; external references are resolved against ``base_dir``."""
    base_dir = Path(base_dir)
    _check_external_refs(proto, base_dir)
    try:
        graph = gs.import_onnx(proto)
    except Exception as exc:
        raise ModelError(
            f"graph could not be imported ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        ) from None
    _attach_lazy_values(graph, base_dir)
    return Model(
        graph=graph,
        ir_version=proto.ir_version,
        opset_imports=[(o.domain, o.version) for o in proto.opset_import],
        base_dir=base_dir,
        producer_name=proto.producer_name,
        producer_version=proto.producer_version,
        domain=proto.domain,
        model_version=proto.model_version,
        doc_string=proto.doc_string,
        metadata={p.key: p.value for p in proto.metadata_props},
        functions=list(proto.functions),
        node_metadata={
            n.name: [(p.key, p.value) for p in n.metadata_props]
            for n in proto.graph.node
            if n.name and len(n.metadata_props)
        },
    )


def _tensor_nbytes(tensor: TensorProto) -> int:
    if _is_external(tensor):
        info = _external_info(tensor)
        return int(info.get("length", "0"))
    return tensor.ByteSize()


def materialize(proto: onnx.ModelProto, base_dir: Path, dirs: dict[str, Path] | None = None) -> None:
    """Replace every external reference in ``proto`` by the tensor's bytes (inline raw_data); a tensor
    named in ``dirs`` resolves against that folder instead of ``base_dir``."""
    dirs = dirs or {}
    for tensor in iter_tensors(proto.graph):
        if _is_external(tensor):
            array = read_external(tensor, dirs.get(tensor.name, base_dir))
            _set_raw(tensor, array)


def _set_raw(tensor: TensorProto, array: np.ndarray) -> None:
    del tensor.external_data[:]
    tensor.data_location = TensorProto.DEFAULT
    tensor.raw_data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


def _tensor_bytes(tensor: TensorProto, base_dir: Path) -> bytes:
    if _is_external(tensor):
        path, offset, length = external_slice(tensor, base_dir)
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(length)
    if tensor.HasField("raw_data"):
        return tensor.raw_data
    array = onnx.numpy_helper.to_array(tensor)
    return np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


def to_model_proto(model: Model) -> onnx.ModelProto:
    """A self-contained in-memory ModelProto (all external data materialised)."""
    proto = model.to_onnx()
    materialize(proto, model.base_dir, data_dirs(model.graph))
    return proto


def save_model(
    model: Model | onnx.ModelProto,
    path: str | os.PathLike,
    external_data: bool | None = None,
    base_dir: Path | None = None,
    overwrite_input: bool = False,
) -> Path:
    """Write ``model`` to ``path`` atomically and self-contained.

    ``external_data``: True writes every tensor of at least 1 KiB to ``<path>.data``; None does so
    only when the model would exceed 2 GB; False never. The data file is streamed one tensor at a time.
    """
    path = Path(path)
    dirs: dict[str, Path] = {}
    if isinstance(model, Model):
        proto = model.to_onnx()
        base_dir = model.base_dir
        source = model.source_path
        dirs = data_dirs(model.graph)
    else:
        proto = model
        base_dir = base_dir or Path(".")
        source = None
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ModelError(f"output folder {folder} does not exist")
    if source is not None and path.exists() and path.resolve() == source.resolve() and not overwrite_input:
        raise ModelError(f"output {path} is the input model; choose another path")
    tensors = list(iter_tensors(proto.graph))
    if external_data is None:
        external_data = sum(_tensor_nbytes(t) for t in tensors) > EXTERNAL_DATA_THRESHOLD
    data_name = path.name + ".data"
    data_path = folder / data_name
    # Never replace a file the model still reads its weights from (whatever the output's name).
    sources = {external_slice(t, dirs.get(t.name, base_dir))[0].resolve() for t in tensors if _is_external(t)}
    if path.exists() and path.resolve() in sources:
        raise ModelError(f"output {path} is a data file of the input model; choose another path")
    if external_data and data_path.exists() and data_path.resolve() in sources:
        raise ModelError(f"output data file {data_path} is the input's data file; choose another path")

    mode = _file_mode()
    tmp_files: list[Path] = []
    data_written = False
    try:
        if external_data:
            fd, tmp_data = tempfile.mkstemp(prefix=f".{data_name}.", suffix=".tmp", dir=folder)
            tmp_files.append(Path(tmp_data))
            os.fchmod(fd, mode)
            with os.fdopen(fd, "wb") as out:
                offset = 0
                for tensor in tensors:
                    if tensor.data_type == TensorProto.STRING:
                        continue  # ONNX forbids external data for strings: they stay inline
                    blob = _tensor_bytes(tensor, dirs.get(tensor.name, base_dir))
                    if len(blob) < EXTERNAL_MIN_TENSOR_BYTES:
                        if _is_external(tensor):
                            tensor.data_location = TensorProto.DEFAULT
                            del tensor.external_data[:]
                            tensor.raw_data = blob
                        continue
                    pad = (-offset) % 64
                    out.write(b"\0" * pad)
                    offset += pad
                    out.write(blob)
                    _clear_data_fields(tensor)
                    tensor.data_location = TensorProto.EXTERNAL
                    for key, value in (
                        ("location", data_name),
                        ("offset", str(offset)),
                        ("length", str(len(blob))),
                    ):
                        tensor.external_data.add(key=key, value=value)
                    offset += len(blob)
        else:
            materialize(proto, base_dir, dirs)
        fd, tmp_model = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        tmp_files.append(Path(tmp_model))
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(proto.SerializeToString())
        if external_data:
            os.replace(tmp_files[0], data_path)
            data_written = True
        os.replace(tmp_files[-1], path)
        tmp_files.clear()
        data_written = False
    except ModelError:
        raise
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot write {path}: {exc}") from None
    finally:
        for tmp in tmp_files:
            tmp.unlink(missing_ok=True)
        if data_written:  # the model could not be put in place: drop the data file written for it
            data_path.unlink(missing_ok=True)
    return path


def _file_mode() -> int:
    """The mode a newly created file gets (0o666 less the umask); mkstemp alone would give 0o600."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _clear_data_fields(tensor: TensorProto) -> None:
    for name in (
        "raw_data",
        "float_data",
        "int32_data",
        "int64_data",
        "double_data",
        "uint64_data",
        "string_data",
    ):
        tensor.ClearField(name)
    del tensor.external_data[:]
