"""Atomic, self-contained saving.

Saving materialises every tensor into the output itself (inline, or into the output's own
``<name>.data``, streamed one tensor at a time), so the output never references the input's data. Files
are written under temporary names in the destination folder and renamed into place; the model file is
renamed last. When an existing output is replaced, its old data file is first renamed aside and is put
back if any later step fails, so a failed save leaves the old output (both files) as it was and no
temporary file behind. (A process killed between the renames can still leave the old data file aside
under a hidden ``.<name>.data.*.old`` name.)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import onnx
from onnx import TensorProto

from onnxfold.ir.external import (
    data_dirs,
    external_slice,
    is_external,
    iter_tensors,
    materialize,
    tensor_bytes,
    tensor_nbytes,
)
from onnxfold.ir.limits import EXTERNAL_MIN_TENSOR_BYTES, PROTO_LIMIT, ModelError

if TYPE_CHECKING:
    from onnxfold.ir.model import Model


def save_model(
    model: Model | onnx.ModelProto,
    path: str | os.PathLike,
    external_data: bool | None = None,
    base_dir: Path | None = None,
    overwrite_input: bool = False,
    verbatim: Path | None = None,
) -> Path:
    """Write ``model`` to ``path`` atomically and self-contained.

    ``external_data``: True writes every tensor of at least 1 KiB to ``<path>.data``; None does so
    only when the model would exceed 2 GB; False never. The data file is streamed one tensor at a time.
    A :class:`Model` whose source held no ``value_info`` is written without (:func:`write_recorded_shapes`).
    ``verbatim``: the file ``model`` was loaded from and is unchanged from: its bytes are written
    instead, where it holds every weight itself and no data file is asked for.
    """
    path = Path(path)
    dirs: dict[str, Path] = {}
    if isinstance(model, onnx.ModelProto):
        proto = model
        base_dir = base_dir or Path(".")
        source = None
    else:
        from onnxfold.ir.model import write_recorded_shapes  # model imports this module

        proto = model.to_onnx(restore=True)
        write_recorded_shapes(proto, model)  # runtimes infer them; the source did not record them either
        base_dir = model.base_dir
        source = model.source_path
        dirs = data_dirs(model.graph)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ModelError(f"output folder {folder} does not exist")
    if source is not None and path.exists() and path.resolve() == source.resolve() and not overwrite_input:
        raise ModelError(f"output {path} is the input model; choose another path")
    tensors = list(iter_tensors(proto.graph))
    if external_data is None:
        external_data = sum(tensor_nbytes(t) for t in tensors) > PROTO_LIMIT
    data_name = path.name + ".data"
    data_path = folder / data_name
    # Never replace a file the model still reads its weights from (whatever the output's name).
    sources = {external_slice(t, dirs.get(t.name, base_dir))[0].resolve() for t in tensors if is_external(t)}
    if path.exists() and path.resolve() in sources:
        raise ModelError(f"output {path} is a data file of the input model; choose another path")
    if external_data and data_path.exists() and data_path.resolve() in sources:
        raise ModelError(f"output data file {data_path} is the input's data file; choose another path")

    # (asked before materialize brings external weights inline: a source with a data file is re-written)
    copied = verbatim is not None and not external_data and not any(is_external(t) for t in tensors)
    copied = copied and _same_interface(onnx.load(str(verbatim), load_external_data=False), proto)
    mode = _file_mode()
    tmp_files: list[Path] = []
    try:
        if external_data:
            tmp_files.append(_temp_file(folder, f".{data_name}.", mode))
            with open(tmp_files[0], "wb") as out:
                _write_data_file(out, tensors, data_name, dirs, base_dir)
        else:
            materialize(proto, base_dir, dirs)
        tmp_files.append(_temp_file(folder, f".{path.name}.", mode))
        with open(tmp_files[-1], "wb") as out:
            out.write(Path(verbatim).read_bytes() if copied else proto.SerializeToString())
        problem = "" if copied or external_data or source is None else _invalid(tmp_files[-1], source)
        if problem:
            raise ModelError(f"the model to write is not valid ONNX ({problem}); nothing written to {path}")
        _put_in_place(tmp_files[-1], path, tmp_files[0] if external_data else None, data_path)
        tmp_files.clear()
    except ModelError:
        raise
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot write {path}: {exc}") from None
    finally:
        for tmp in tmp_files:
            tmp.unlink(missing_ok=True)
    return path


def _invalid(path: Path, source: Path) -> str:
    """The checker's complaint about the model file at ``path``, in one line, where onnx's checker
    rejects it, onnxruntime cannot load it, and onnxruntime loads the ``source`` it was made from:
    a rewrite broke a model that ran. Else '' (a model with custom ops that neither knows is written as
    it came). A dequantized diacritizer whose Loop bodies read a constant the rewrite had dropped was
    written with exit 0, and neither accepted it."""
    try:
        onnx.checker.check_model(str(path))
        return ""
    except Exception as exc:  # noqa: BLE001 (any complaint: onnxruntime has the last word)
        complaint = " ".join(str(exc).split())[:240]
    return complaint if not _loads(path) and source.is_file() and _loads(source) else ""


def _loads(path: Path) -> bool:
    """Whether onnxruntime makes a CPU session of the model file at ``path``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # its refusal is not logged: the checker's complaint is reported
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return True
    except Exception:  # noqa: BLE001
        return False


def _same_interface(source: onnx.ModelProto, written: onnx.ModelProto) -> bool:
    """Whether ``written`` keeps the source's graph inputs, outputs, opset imports and IR version: a
    file written verbatim must not undo what export normalises (weights listed as graph inputs, a
    domain imported twice, which onnxruntime's quantizer refused)."""

    def face(m: onnx.ModelProto) -> tuple:
        return (
            [i.name for i in m.graph.input],
            [o.name for o in m.graph.output],
            [(o.domain, o.version) for o in m.opset_import],
            m.ir_version,
        )

    return face(source) == face(written)


def _write_data_file(
    out, tensors: list[TensorProto], data_name: str, dirs: dict[str, Path], base_dir: Path
) -> None:
    """Stream every tensor of at least 1 KiB into ``out`` (64-byte aligned) and point it there; smaller
    external tensors are brought inline. String tensors stay inline (ONNX forbids external strings).
    A progress bar counts the tensors written (on a terminal, for saves longer than a second)."""
    # imported here: ir is the bottom layer and loads nothing above it
    from onnxfold.report.progress import progress_bar

    offset = 0
    bar = progress_bar(tensors, f"saving {data_name}", unit="tensor")
    for tensor in bar:
        if tensor.data_type == TensorProto.STRING:
            continue
        blob = tensor_bytes(tensor, dirs.get(tensor.name, base_dir))
        if len(blob) < EXTERNAL_MIN_TENSOR_BYTES:
            if is_external(tensor):
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
        for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(len(blob)))):
            tensor.external_data.add(key=key, value=value)
        offset += len(blob)


def _put_in_place(tmp_model: Path, path: Path, tmp_data: Path | None, data_path: Path) -> None:
    """Rename the written files into place, the model file last. An existing data file is renamed aside
    first and put back if a later rename fails; a data file that did not exist before is removed again.
    Only after the model's rename succeeded is the old data file deleted."""
    aside: Path | None = None
    moved_aside = placed = False
    try:
        if tmp_data is not None:
            if data_path.exists():
                aside = _temp_file(data_path.parent, f".{data_path.name}.", None, suffix=".old")
                os.replace(data_path, aside)
                moved_aside = True
            os.replace(tmp_data, data_path)
            placed = True
        os.replace(tmp_model, path)
    except BaseException:
        with contextlib.suppress(OSError):  # the first error is the one to report
            if moved_aside:
                os.replace(aside, data_path)
            elif placed:
                data_path.unlink(missing_ok=True)
        if aside is not None and not moved_aside:
            aside.unlink(missing_ok=True)
        raise
    if aside is not None:
        aside.unlink(missing_ok=True)


def _temp_file(folder: Path, prefix: str, mode: int | None, suffix: str = ".tmp") -> Path:
    """Create a new empty file with a unique name in ``folder`` (permissions ``mode`` if given)."""
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return Path(name)


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
