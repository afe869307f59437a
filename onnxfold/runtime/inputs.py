"""Model inputs: their specs, random inputs for smoke runs, ``--input-shape`` parsing and the one
loader of input samples from ``.npy``/``.npz`` files and folders (:func:`load_inputs`).

The loader serves ``--inputs`` (validation), ``--calibration`` (repair mode ``data``) and the
quantize pass's ``calibration`` option; its format is documented once, in :func:`load_inputs`.
"""

from __future__ import annotations

import logging
import os
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onnxfold.errors import one_line

logger = logging.getLogger(__name__)

#: Default value for symbolic dims that look like a sequence length.
SEQUENCE_DIM = 16
#: Default value for symbolic dims that look like an image height/width.
SPATIAL_DIM = 224

_BATCH_NAMES = {"batch", "batch_size", "batchsize", "bs", "b", "n", "num_batches"}
_SEQ_WORDS = ("seq", "sequence", "len", "length", "token", "time", "step", "past", "total", "context")
_SPATIAL_WORDS = ("height", "width", "h", "w", "img", "image")


_ORT_TYPES: dict[str, np.dtype] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(uint64)": np.dtype(np.uint64),
    "tensor(uint32)": np.dtype(np.uint32),
    "tensor(uint16)": np.dtype(np.uint16),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(bool)": np.dtype(np.bool_),
}


@dataclass(frozen=True)
class InputSpec:
    """A model input: name, numpy dtype (None if not a plain tensor) and shape (symbolic dims as str/None)."""

    name: str
    dtype: np.dtype | None
    shape: tuple[int | str | None, ...]
    onnx_type: str = ""


def check_input_shapes(shapes: dict[str, tuple[int, ...]], model: str | os.PathLike) -> None:
    """One-line ValueError when ``--input-shape`` names an input the model lacks or gives it another rank
    (read from the model's header: no weight is loaded)."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    ranks = {
        i.name: len(i.type.tensor_type.shape.dim) if i.type.tensor_type.HasField("shape") else None
        for i in graph.input
        if i.name not in weights
    }
    for name, shape in shapes.items():
        if name not in ranks:
            raise ValueError(
                f"--input-shape names {name!r}, which is not an input of the model ({', '.join(ranks)})"
            )
        if ranks[name] is not None and ranks[name] != len(shape):
            raise ValueError(
                f"--input-shape {name}:{','.join(map(str, shape))} has rank {len(shape)}; "
                f"the model's input {name!r} has rank {ranks[name]}"
            )


def parse_input_shapes(items: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Parse CLI strings ``"name:1,3,224,224"`` (``"name:"`` is a scalar) into ``{name: shape}``.

    The name is everything before the LAST colon, so names like ``"input:0"`` work (``"input:0:1,3"``).
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for item in items:
        name, sep, dims_text = item.strip().rpartition(":")
        if not sep:
            raise ValueError(f"bad input shape {item!r}: expected NAME:D1,D2,... e.g. input:1,3,224,224")
        name = name.strip()
        if not name:
            raise ValueError(f"bad input shape {item!r}: the input name before ':' is empty")
        dims: list[int] = []
        text = dims_text.strip()
        for tok in text.split(",") if text else []:
            tok = tok.strip()
            try:
                dim = int(tok)
            except ValueError:
                raise ValueError(f"bad input shape {item!r}: dimension {tok!r} is not an integer") from None
            if dim < 0:
                raise ValueError(f"bad input shape {item!r}: dimension {dim} is negative")
            dims.append(dim)
        if name in shapes:
            raise ValueError(f"bad input shape {item!r}: input {name!r} given more than once")
        shapes[name] = tuple(dims)
    return shapes


def _default_dim(
    dim: int | str | None, axis: int, batch: int, default_dim: int, sequence: int = SEQUENCE_DIM
) -> int:
    """Concrete size for a (possibly symbolic) dim, guessed from its name and position."""
    if isinstance(dim, int) and dim >= 0:
        return dim
    label = dim.strip().lower() if isinstance(dim, str) else ""
    words = [w for w in re.split(r"[^a-z0-9]+", label) if w]
    if label in _BATCH_NAMES or "batch" in label:
        return batch
    if any(w.startswith(s) for w in words for s in _SEQ_WORDS):
        return sequence
    if any(w in _SPATIAL_WORDS for w in words):
        return SPATIAL_DIM
    if axis == 0:  # an otherwise anonymous leading dim is almost always the batch
        return batch
    return default_dim


def _rng_for(seed: int, name: str) -> np.random.Generator:
    # Per-input streams: adding or renaming one input does not change the others' values.
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


def _random_array(name: str, dtype: np.dtype, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    lname = name.lower()
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return np.ones(shape, dtype=dtype)
    if dtype.kind in "iu":
        if "mask" in lname:
            return np.ones(shape, dtype=dtype)
        if "token_type" in lname or "segment" in lname:
            return np.zeros(shape, dtype=dtype)
        if "position" in lname and len(shape) >= 1:
            return np.broadcast_to(np.arange(shape[-1], dtype=dtype), shape).copy()
        if "ids" in lname:
            return rng.integers(0, 100, size=shape).astype(dtype)
        if dtype == np.uint8:  # raw image bytes
            return rng.integers(0, 256, size=shape).astype(dtype)
        return rng.integers(0, 4, size=shape).astype(dtype)
    raise ValueError(f"cannot make random values for input {name!r} of dtype {dtype}")


def make_inputs(
    session: Any,
    shapes: Mapping[str, Sequence[int]] | None = None,
    batch: int = 2,
    seed: int = 0,
    default_dim: int = 16,
    sequence: int = SEQUENCE_DIM,
    id_rows: Mapping[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """Deterministic random inputs for every session input.

    Symbolic dims: batch-like names -> ``batch``; sequence-like names -> ``sequence`` (16);
    height/width-like names -> ``SPATIAL_DIM`` (224); any other dim 0 -> ``batch``; the rest -> ``default_dim``.
    ``shapes`` overrides whole input shapes. Floats ~ N(0, 1); int ``*mask*`` -> 1, ``*ids*`` -> [0, 100),
    ``token_type``/``segment`` -> 0, ``position*`` -> arange, other ints -> [0, 4); bool -> True.
    ``id_rows``: {input: rows of the embedding table it indexes}; its integer ids are taken modulo
    the rows, so that they index inside a small table (a character vocabulary of 40 symbols).
    """
    shapes = dict(shapes or {})
    specs = input_specs(session)
    unknown = set(shapes) - {s.name for s in specs}
    if unknown:
        raise ValueError(
            f"shape given for unknown input(s) {sorted(unknown)}; model inputs are {[s.name for s in specs]}"
        )
    inputs: dict[str, np.ndarray] = {}
    for spec in specs:
        if spec.dtype is None:
            raise ValueError(f"input {spec.name!r} has unsupported type {spec.onnx_type}")
        if spec.name in shapes:
            shape = tuple(int(d) for d in shapes[spec.name])
            _check_shape(spec, shape, "given shape")
        else:
            shape = tuple(_default_dim(d, i, batch, default_dim, sequence) for i, d in enumerate(spec.shape))
        inputs[spec.name] = _random_array(spec.name, spec.dtype, shape, _rng_for(seed, spec.name))
        rows = (id_rows or {}).get(spec.name)
        if rows and inputs[spec.name].dtype.kind in "iu":
            inputs[spec.name] = inputs[spec.name] % rows
    logger.debug("made inputs %s", {k: (v.dtype.name, v.shape) for k, v in inputs.items()})
    return inputs


def input_specs(model: Any) -> list[InputSpec]:
    """The inputs of ``model`` as :class:`InputSpec` s: from an onnxruntime session, an
    onnx-graphsurgeon graph, a :class:`~onnxfold.ir.model.Model` or an ``onnx.ModelProto``
    (initializers listed as graph inputs are not inputs)."""
    if hasattr(model, "get_inputs"):  # an onnxruntime session
        specs = []
        for arg in model.get_inputs():
            shape = tuple(d if isinstance(d, (int, str)) or d is None else str(d) for d in (arg.shape or ()))
            specs.append(InputSpec(arg.name, _ORT_TYPES.get(arg.type), shape, arg.type))
        return specs
    if hasattr(model, "SerializeToString"):  # an onnx.ModelProto
        import onnx

        inits = {t.name for t in model.graph.initializer}
        specs = []
        for vi in model.graph.input:
            if vi.name in inits:
                continue
            tt = vi.type.tensor_type
            try:
                dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))
            except (KeyError, TypeError, ValueError):
                dtype = None
            dims = tuple(
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim
            )
            specs.append(InputSpec(vi.name, dtype, dims))
        return specs
    import onnx_graphsurgeon as gs

    graph = getattr(model, "graph", model)
    specs = []
    for t in graph.inputs:
        if isinstance(t, gs.Constant):
            continue
        try:
            dtype = np.dtype(t.dtype) if t.dtype is not None else None
        except TypeError:
            dtype = None
        shape = tuple(t.shape) if t.shape is not None else ()
        specs.append(InputSpec(t.name, dtype, tuple(d if isinstance(d, (int, str)) else None for d in shape)))
    return specs


def _check_shape(spec: InputSpec, shape: tuple[int, ...], what: str, first: int = 0) -> None:
    """Raise a one-line ValueError when ``shape`` has another rank than ``spec`` or differs in a
    static dim at axis ``first`` or later."""
    if spec.shape and len(shape) != len(spec.shape):
        raise ValueError(
            f"{what} {shape} for input {spec.name!r} has rank {len(shape)}, the model expects "
            f"rank {len(spec.shape)} {spec.shape}"
        )
    for got, want in list(zip(shape, spec.shape, strict=False))[first:]:
        if isinstance(want, int) and want >= 0 and got != want:
            raise ValueError(
                f"{what} {shape} for input {spec.name!r} does not match the model's {spec.shape}"
            )


def _cast(arr: np.ndarray, spec: InputSpec, where: str) -> np.ndarray:
    """``arr`` in the input's dtype: within floats, within integers, and ints/bools to floats."""
    if spec.dtype is None or arr.dtype == spec.dtype:
        return arr
    have, want = arr.dtype.kind, spec.dtype.kind
    if have == want or (have in "iu" and want in "iu") or (have in "iub" and want == "f"):
        return arr.astype(spec.dtype)
    raise ValueError(f"{where}: input {spec.name!r} has dtype {arr.dtype}, the model expects {spec.dtype}")


def _load_array(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"{path}: cannot read it as a .npy array: {one_line(exc)}") from None


def load_inputs(
    source: str | os.PathLike | np.ndarray | Mapping[str, np.ndarray],
    model: Any,
    *,
    chunked: bool = False,
    image_preprocess: str | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, np.ndarray]:
    """Input samples for ``model`` (a session, graph, Model or ModelProto; see :func:`input_specs`).

    Format of ``--inputs``, ``--calibration`` and the quantize pass's ``calibration``:

    - ``FILE.npy``: one array, for a model with a single input; its first axis is the sample (batch) axis.
    - ``FILE.npz``: one array per model input, stored under the input's name.
    - a folder holding ``<input_name>.npy`` for every model input (and no other ``.npy`` file).
    - a folder of ``.npy`` files, for a model with a single input only: each file holds one or more
      samples (a file of one sample may leave out the sample axis); the files are concatenated on
      axis 0 in file-name order.
    - a folder of ``.npz`` files (and no ``.npy`` file), each with one array per input holding one or
      more samples, joined along each input's sample axis in file-name order (:func:`_read_npz_folder`).
    - a folder of images (and no ``.npy`` or ``.npz`` file), for a model with a single image input, read as
      ``image_preprocess`` says (:mod:`onnxfold.runtime.images`; ``shapes`` may give their height
      and width).

    Arrays are cast to the input's dtype within floats, within integers (signed or unsigned) and
    from integers or booleans to floats; any other dtype is an error. Every array must have the
    input's rank and match each static dim of the model's input, the sample axis too unless
    ``chunked`` (callers that run the samples in chunks, as calibration does, take any number of
    samples; then every input must hold the same, non-zero number) or the samples run in batches
    of a batch the model fixes (a multiple of it in every input: validation and the search run them
    so). Errors are one-line ``ValueError`` s that name the file and the input.

    ``source`` may also be arrays already in memory: one array (single-input model) or a mapping
    from input name to array, checked the same way.
    """
    specs = input_specs(model)
    names = [s.name for s in specs]
    arrays: dict[str, tuple[np.ndarray, str]] = {}
    if isinstance(source, Mapping):
        arrays = {k: (np.asarray(v), "the given arrays") for k, v in source.items()}
    elif not isinstance(source, (str, os.PathLike)):
        source = np.asarray(source)
        if len(names) != 1:
            raise ValueError(
                f"a single array only works for single-input models; this model has inputs {names}"
            )
        arrays = {names[0]: (source, "the given array")}
    else:
        arrays = _read_source(Path(source), specs, image_preprocess, shapes)
    missing = [n for n in names if n not in arrays]
    extra = sorted(set(arrays) - set(names))
    if missing or extra:
        where = str(source) if isinstance(source, (str, os.PathLike)) else "the given arrays"
        raise ValueError(
            f"{where}: the arrays do not match the model inputs {names}: missing {missing}, unexpected {extra}"
        )
    out = {spec.name: _cast(np.asarray(arrays[spec.name][0]), spec, arrays[spec.name][1]) for spec in specs}
    batched = chunked or _runs_in_batches(specs, out)
    for spec in specs:
        _check_shape(
            spec, out[spec.name].shape, f"{arrays[spec.name][1]}: array of shape", first=int(batched)
        )
    if chunked:
        where = source if isinstance(source, (str, os.PathLike)) else "the given arrays"
        counts = {int(v.shape[0]) if v.ndim else 1 for v in out.values()}
        if len(counts) != 1 or 0 in counts:
            raise ValueError(
                f"{where}: inputs must hold the same, non-zero number of samples, got {sorted(counts)}"
            )
    return out


def fixed_batches(specs: Sequence[InputSpec]) -> list[int]:
    """The leading dims that inputs fix (an export at batch 1 fixes 1); symbolic ones are left out, and
    so is a recurrent state [layers, batch, hidden] whose batch is symbolic beside other non-scalar
    inputs (silero-vad's [2, batch, 128] fixes no batch of 2; an audio model's [1, T, 80] beside a
    scalar sample rate still fixes batch 1)."""
    inputs = [s for s in specs if s.shape and not _state_layout(s.shape)] or list(specs)
    return [
        int(s.shape[0])
        for s in inputs
        if s.shape and isinstance(s.shape[0], (int, np.integer)) and s.shape[0] > 0
    ]


def _state_layout(shape) -> bool:
    """A declared [layers, batch, ...] shape: rank 3 or more, a fixed leading dim, a symbolic second."""
    return (
        shape is not None
        and len(shape) >= 3
        and isinstance(shape[0], (int, np.integer))
        and not isinstance(shape[1], (int, np.integer))
    )


def _runs_in_batches(specs: list[InputSpec], arrays: Mapping[str, np.ndarray]) -> bool:
    """Whether ``arrays`` hold samples that run in batches of the size a model exported at a fixed
    batch takes (every non-scalar array has the same leading dim, a multiple of each fixed one), as
    validation and the search run them: 32 images for a batch-1 detector."""
    leading = {a.shape[0] for a in arrays.values() if a.ndim}
    if len(leading) != 1:
        return False
    n = leading.pop()
    fixed = fixed_batches(specs)
    return bool(fixed) and n > 0 and all(n % d == 0 for d in fixed)


def _read_images(
    path: Path,
    specs: list[InputSpec],
    image_preprocess: str | None,
    shapes: Mapping[str, Sequence[int]] | None,
) -> np.ndarray:
    """The images of a folder without .npy files as the single input's samples."""
    from onnxfold.runtime.images import ImagePreprocess, image_files, load_images

    if not image_files(path):
        raise ValueError(f"{path}: the folder contains no .npy or .npz files and no images")
    if len(specs) != 1:
        raise ValueError(
            f"{path}: a folder of images only works for single-input models; inputs {[s.name for s in specs]}"
        )
    if not image_preprocess:
        raise ValueError(
            f"{path}: a folder of images needs --image-preprocess (unit, pm1, imagenet or raw, optionally "
            "',bgr'): the normalisation the model was trained with"
        )
    spec = specs[0]
    given = (shapes or {}).get(spec.name)
    size = None
    if given is not None and len(given) == 4:
        size = (int(given[2]), int(given[3])) if given[1] in (1, 3) else (int(given[1]), int(given[2]))
    return load_images(path, spec.name, spec.shape, ImagePreprocess.parse(image_preprocess), size)


def _read_npz_folder(
    path: Path, files: list[Path], specs: list[InputSpec]
) -> dict[str, tuple[np.ndarray, str]]:
    """A folder of ``.npz`` files, each one array per input holding one or more samples (a file of one
    sample may leave out the sample axis), joined along each input's sample axis in file-name order
    (a scalar input taken once). The files must agree on every other dim: token sequences of
    different lengths must be padded to one length first, as the application pads them."""
    from onnxfold.folding.samples import merged_feeds, sample_axes

    runs = []
    for f in files:
        held = _read_source(f, specs)
        extra = sorted(set(held) - {s.name for s in specs})
        missing = [s.name for s in specs if s.name not in held]
        if missing or extra:
            raise ValueError(
                f"{f}: the arrays do not match the model inputs: missing {missing}, unexpected {extra}"
            )
        run = {}
        for spec in specs:
            arr = _cast(np.asarray(held[spec.name][0]), spec, str(f))
            if spec.shape and arr.ndim == len(spec.shape) - 1:
                arr = arr[None]  # one sample without its sample axis
            run[spec.name] = arr
        runs.append(run)
    try:
        joined = merged_feeds(runs)
    except ValueError:
        joined = None
    if joined is None:

        def dims(run: dict) -> dict:
            layout = sample_axes(run)
            axes = layout[1] if layout else {}
            return {k: [d for i, d in enumerate(v.shape) if i != axes.get(k, 0)] for k, v in run.items()}

        bad = next((i for i, r in enumerate(runs) if dims(r) != dims(runs[0])), len(runs) - 1)
        shown = ", ".join(f"{k}{list(v.shape)}" for k, v in runs[bad].items())
        first = ", ".join(f"{k}{list(v.shape)}" for k, v in runs[0].items())
        raise ValueError(
            f"{path}: {files[bad].name} holds {shown} but {files[0].name} holds {first}: the files' samples "
            "must agree on every dim but the sample axis (pad sequences to one length, as the application does)"
        )
    return {k: (v, str(path)) for k, v in joined.items()}


def _read_source(
    path: Path,
    specs: list[InputSpec],
    image_preprocess: str | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, tuple[np.ndarray, str]]:
    """The arrays a path holds by input name, each with the file it came from (see :func:`load_inputs`)."""
    names = [s.name for s in specs]
    if path.is_dir():
        files = sorted(path.glob("*.npy"))
        if not files and sorted(path.glob("*.npz")):
            return _read_npz_folder(path, sorted(path.glob("*.npz")), specs)
        if not files:
            return {specs[0].name: (_read_images(path, specs, image_preprocess, shapes), str(path))}
        stems = {f.stem: f for f in files}
        if set(names) <= set(stems):
            others = sorted(f.name for f in files if f.stem not in names)
            if others:
                raise ValueError(f"{path}: the folder holds <input>.npy files for {names} and also {others}")
            return {n: (_load_array(stems[n]), str(stems[n])) for n in names}
        if len(names) != 1:
            missing = [n for n in names if n not in stems]
            raise ValueError(
                f"{path}: the folder must hold <input_name>.npy for each input {names}; missing {missing}"
            )
        spec = specs[0]
        parts = []
        for f in files:
            arr = _cast(_load_array(f), spec, str(f))
            if spec.shape and arr.ndim == len(spec.shape) - 1:
                arr = arr[None]  # one sample without its sample axis
            _check_shape(spec, arr.shape, f"{f}: array of shape", first=1)
            parts.append(arr)
        try:
            return {spec.name: (np.concatenate(parts, axis=0), str(path))}
        except ValueError as exc:
            raise ValueError(f"{path}: the files' samples differ in shape: {one_line(exc)}") from None
    if not path.is_file():
        raise ValueError(f"{path}: no such file or folder")
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: (data[k], f"{path}[{k}]") for k in data.files}
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read it as a .npz archive: {one_line(exc)}") from None
    if path.suffix == ".npy":
        if len(names) != 1:
            raise ValueError(
                f"{path}: a single .npy file only works for single-input models; this model has inputs "
                f"{names}: use a .npz or a folder of <input_name>.npy files"
            )
        return {names[0]: (_load_array(path), str(path))}
    raise ValueError(f"{path}: expected a .npy or .npz file or a folder of .npy or .npz files")
