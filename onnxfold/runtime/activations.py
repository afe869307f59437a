"""Calibration data and per-channel activation statistics measured with onnxruntime.

``load_calibration`` reads what a user passes as ``--calibration``: a ``.npy`` (single-input model,
samples on axis 0), a ``.npz`` (one array per input name), or a folder holding either
``<input_name>.npy`` files or, for a single-input model, any number of ``.npy`` files whose
samples are concatenated in name order (a file may hold one sample, without the batch axis).

``channel_moments`` exposes intermediate tensors as graph outputs, runs the model in chunks and
returns, per tensor, the mean and the (biased) variance of every channel over all other axes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxfold.ir.model import Model, to_model_proto

Feeds = dict[str, np.ndarray]


def _input_specs(graph: gs.Graph) -> list[tuple[str, np.dtype | None, tuple | None]]:
    specs = []
    for t in graph.inputs:
        dtype = np.dtype(t.dtype) if t.dtype is not None else None
        specs.append((t.name, dtype, tuple(t.shape) if t.shape is not None else None))
    return specs


def _cast(name: str, arr: np.ndarray, dtype: np.dtype | None, shape: tuple | None) -> np.ndarray:
    arr = np.asarray(arr)
    if dtype is not None and arr.dtype != dtype:
        if arr.dtype.kind != dtype.kind and not (arr.dtype.kind in "iuf" and dtype.kind in "iuf"):
            raise ValueError(f"calibration input {name!r} has dtype {arr.dtype}, the model expects {dtype}")
        arr = arr.astype(dtype)
    if shape is not None and arr.ndim == len(shape) - 1:
        arr = arr[None]  # one sample without its batch axis
    if shape is not None and arr.ndim != len(shape):
        raise ValueError(
            f"calibration input {name!r} has shape {arr.shape}, the model expects rank {len(shape)}"
        )
    if shape is not None:
        for got, want in zip(arr.shape[1:], shape[1:], strict=True):
            if isinstance(want, (int, np.integer)) and want >= 0 and got != want:
                raise ValueError(
                    f"calibration input {name!r} has shape {arr.shape}, the model expects {shape}"
                )
    return arr


def as_feeds(data: np.ndarray | Mapping[str, np.ndarray], graph: gs.Graph) -> Feeds:
    """Calibration arrays keyed by input name (a bare array is the single input's samples)."""
    specs = _input_specs(graph)
    names = [s[0] for s in specs]
    if not isinstance(data, Mapping):
        if len(names) != 1:
            raise ValueError(
                f"a single calibration array only works for single-input models; inputs are {names}"
            )
        data = {names[0]: data}
    missing = [n for n in names if n not in data]
    extra = sorted(set(data) - set(names))
    if missing or extra:
        raise ValueError(
            f"calibration data does not match the model inputs {names}: missing {missing}, unexpected {extra}"
        )
    feeds = {name: _cast(name, data[name], dtype, shape) for name, dtype, shape in specs}
    counts = {len(v) for v in feeds.values()}
    if len(counts) != 1 or 0 in counts:
        raise ValueError("calibration inputs must hold the same, non-zero number of samples")
    return feeds


def load_calibration(path: str | os.PathLike, graph: gs.Graph) -> Feeds:
    """Read calibration samples from ``path`` (see the module docstring)."""
    path = Path(path)
    names = [t.name for t in graph.inputs]
    if path.is_dir():
        files = sorted(path.glob("*.npy"))
        if not files:
            raise ValueError(f"calibration folder {path} contains no .npy files")
        stems = {f.stem for f in files}
        if set(names) <= stems:
            return as_feeds({f.stem: np.load(f, allow_pickle=False) for f in files if f.stem in names}, graph)
        if len(names) != 1:
            raise ValueError(f"calibration folder {path} must hold <input_name>.npy files for inputs {names}")
        spec = _input_specs(graph)[0]
        parts = [_cast(names[0], np.load(f, allow_pickle=False), spec[1], spec[2]) for f in files]
        return as_feeds(np.concatenate(parts, axis=0), graph)
    if not path.is_file():
        raise ValueError(f"calibration data {path}: no such file or folder")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return as_feeds({k: data[k] for k in data.files}, graph)
    if path.suffix == ".npy":
        return as_feeds(np.load(path, allow_pickle=False), graph)
    raise ValueError(f"calibration data {path}: expected a .npy or .npz file or a folder of .npy files")


def _with_outputs(model: Model, tensors: Mapping[str, int]) -> onnx.ModelProto:
    proto = to_model_proto(model)
    del proto.graph.value_info[:]  # shapes may be stale after a rewrite; runtime infers them
    existing = {o.name for o in proto.graph.output}
    known = model.graph.tensors()
    for name in tensors:
        if name in existing:
            continue
        dtype = getattr(known.get(name), "dtype", None)
        elem = (
            onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
            if dtype is not None
            else onnx.TensorProto.FLOAT
        )
        proto.graph.output.append(onnx.helper.make_tensor_value_info(name, elem, None))
    return proto


def channel_moments(
    model: Model, tensors: Mapping[str, int], feeds: Feeds, batch_size: int = 64
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per tensor name → (mean, biased variance) of each channel on axis ``tensors[name]`` over the
    calibration samples and every other axis (float64)."""
    if not tensors:
        return {}
    from onnxfold.runtime.validate import make_session

    # graph optimisations may fuse away an exposed intermediate (seen with Conv+Add), so run them off
    session = make_session(_with_outputs(model, tensors).SerializeToString(), optimize=False)
    names = list(tensors)
    count: dict[str, float] = dict.fromkeys(names, 0.0)
    shift: dict[str, np.ndarray] = {}  # the first chunk's means: sums of shifted values stay well conditioned
    sums: dict[str, np.ndarray] = {}
    squares: dict[str, np.ndarray] = {}
    total = len(next(iter(feeds.values())))
    for start in range(0, total, max(1, batch_size)):
        chunk = {k: v[start : start + batch_size] for k, v in feeds.items()}
        for name, value in zip(names, session.run(names, chunk), strict=True):
            axis = tensors[name] % value.ndim
            flat = np.moveaxis(value.astype(np.float64), axis, 0).reshape(value.shape[axis], -1)
            if name not in sums:
                shift[name] = flat.mean(axis=1) if flat.shape[1] else np.zeros(flat.shape[0])
                sums[name] = np.zeros(flat.shape[0])
                squares[name] = np.zeros(flat.shape[0])
            flat = flat - shift[name][:, None]
            sums[name] += flat.sum(axis=1)
            squares[name] += np.einsum("cd,cd->c", flat, flat)
            count[name] += flat.shape[1]
    out = {}
    for name in names:
        mean = sums[name] / count[name]
        out[name] = (shift[name] + mean, np.maximum(squares[name] / count[name] - mean * mean, 0.0))
    return out
