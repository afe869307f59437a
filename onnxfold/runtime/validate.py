"""Run an original and a compressed ONNX model with onnxruntime and measure how closely they agree.

Metrics per output, with a = reference and b = candidate (flattened, computed in float64):

* ``max_abs``  = max |a - b|
* ``max_rel``  = max |a - b| / max(max |a|, tiny)
* ``mean_abs`` = mean |a - b|
* ``cosine``   = <a, b> / (|a| |b|)  (1.0 when both are all-zero, 0.0 when exactly one is)
* ``top1_agreement`` = fraction of rows i with argmax_j a[i, j] == argmax_j b[i, j]
  (only for float outputs of rank 2 whose last dim is > 1, i.e. class scores)
* ``exact`` = the two arrays have the same dtype, shape and bytes.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import math
import os
import re
import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

logger = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"

#: ``max |a|`` below this is treated as zero when computing ``max_rel``.
TINY = 1e-12

#: Default value for symbolic dims that look like a sequence length.
SEQUENCE_DIM = 16
#: Default value for symbolic dims that look like an image height/width.
SPATIAL_DIM = 224

_BATCH_NAMES = {"batch", "batch_size", "batchsize", "bs", "b", "n", "num_batches"}
_SEQ_WORDS = ("seq", "sequence", "len", "length", "token", "time", "step", "past", "total", "context")
_SPATIAL_WORDS = ("height", "width", "h", "w", "img", "image")

# Distributions that install the ``onnxruntime`` package folder (they overwrite each other).
_ORT_DISTRIBUTIONS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-directml",
    "onnxruntime-openvino",
    "onnxruntime-training",
    "ort-nightly",
    "ort-nightly-gpu",
)

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


# --------------------------------------------------------------------------- runtime detection


def _normalize_dist(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.lru_cache(maxsize=1)
def _installed_ort_distributions() -> tuple[tuple[str, str], ...]:
    """(name, version) of every installed distribution that provides the ``onnxruntime`` package."""
    wanted = set(_ORT_DISTRIBUTIONS)
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata.get("Name")
        if name and _normalize_dist(name) in wanted:
            found[_normalize_dist(name)] = dist.version
    result = tuple(sorted(found.items()))
    if len(result) > 1:
        logger.warning(
            "several onnxruntime distributions are installed (%s); they share one package folder, "
            "so the one installed last wins. Uninstall all but one.",
            ", ".join(f"{n}=={v}" for n, v in result),
        )
    return result


def _tiny_model_bytes() -> bytes:
    """A one-node Identity model, used to probe whether an execution provider really loads."""
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def _cuda_probe() -> str | None:
    """None when a session really gets CUDA, else why not."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # a failed CUDA load otherwise logs a long error
    try:
        with warnings.catch_warnings():  # "provider not in available provider names"
            warnings.simplefilter("ignore")
            sess = ort.InferenceSession(_tiny_model_bytes(), sess_options=opts, providers=[CUDA, CPU])
        sess.run(None, {"x": np.zeros(1, np.float32)})
    except Exception as exc:  # any failure means "not usable"
        return f"CUDA session failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    if CUDA not in sess.get_providers():
        return "CUDA libraries could not be loaded (onnxruntime fell back to CPU)"
    return None


@functools.lru_cache(maxsize=1)
def _cuda_status() -> tuple[bool, str]:
    """(usable, reason). CUDA is usable when ORT offers it AND a session actually gets it.

    If the first try fails, ``onnxruntime.preload_dlls()`` (ORT >= 1.21) is called once, which loads
    CUDA/cuDNN from PyTorch or the ``nvidia-*`` pip packages, and the probe is repeated.
    """
    import onnxruntime as ort

    if CUDA not in ort.get_available_providers():
        return False, "CUDAExecutionProvider not offered by this onnxruntime build"
    reason = _cuda_probe()
    if reason is not None and hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()
        except Exception as exc:
            logger.debug("onnxruntime.preload_dlls() failed: %s", exc)
        else:
            reason = _cuda_probe()
    return (True, "ok") if reason is None else (False, reason)


def available_providers(prefer_gpu: bool = True) -> list[str]:
    """Execution providers to use: ``[CUDA, CPU]`` when CUDA is offered and usable, else ``[CPU]``."""
    _installed_ort_distributions()  # warns when CPU and GPU builds are both installed
    if prefer_gpu:
        usable, reason = _cuda_status()
        if usable:
            return [CUDA, CPU]
        logger.debug("not using CUDA: %s", reason)
    return [CPU]


def runtime_description() -> str:
    """One line naming the installed onnxruntime build, e.g. ``onnxruntime 1.32.0 (CPU)``."""
    import onnxruntime as ort

    dists = _installed_ort_distributions()
    names = ", ".join(n for n, _ in dists) or "onnxruntime"
    usable, _ = _cuda_status()
    if usable:
        kind = "CUDA"
    elif CUDA in ort.get_available_providers():
        kind = "CPU; CUDA offered but not usable"
    else:
        kind = "CPU"
    return f"{names} {ort.__version__} ({kind})"


# --------------------------------------------------------------------------- sessions and inputs


def make_session(
    model: str | os.PathLike | bytes | onnx.ModelProto,
    providers: Sequence[str] | None = None,
    optimize: bool = True,
    threads: int | None = None,
) -> Any:
    """Create an ``onnxruntime.InferenceSession`` from a path (external data loads) or serialized bytes.

    ``optimize=False`` sets ``ORT_DISABLE_ALL`` (no graph rewrites, for bit-exactness checks);
    ``threads`` sets the intra-op thread count.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    opts.log_severity_level = 3
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        opts.intra_op_num_threads = threads
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    elif isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        model = str(path)
    elif not isinstance(model, (bytes, bytearray)):
        raise TypeError(f"model must be a path, bytes or ModelProto, got {type(model).__name__}")
    return ort.InferenceSession(
        model, sess_options=opts, providers=list(providers) if providers else available_providers()
    )


@dataclass(frozen=True)
class InputSpec:
    """A model input: name, numpy dtype (None if not a plain tensor) and shape (symbolic dims as str/None)."""

    name: str
    dtype: np.dtype | None
    shape: tuple[int | str | None, ...]
    onnx_type: str = ""


def input_specs(session: Any) -> list[InputSpec]:
    """The inputs of an onnxruntime session as :class:`InputSpec` s."""
    specs = []
    for arg in session.get_inputs():
        shape = tuple(d if isinstance(d, (int, str)) or d is None else str(d) for d in (arg.shape or ()))
        specs.append(InputSpec(arg.name, _ORT_TYPES.get(arg.type), shape, arg.type))
    return specs


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


def _default_dim(dim: int | str | None, axis: int, batch: int, default_dim: int) -> int:
    """Concrete size for a (possibly symbolic) dim, guessed from its name and position."""
    if isinstance(dim, int) and dim >= 0:
        return dim
    label = dim.strip().lower() if isinstance(dim, str) else ""
    words = [w for w in re.split(r"[^a-z0-9]+", label) if w]
    if label in _BATCH_NAMES or "batch" in label:
        return batch
    if any(w.startswith(s) for w in words for s in _SEQ_WORDS):
        return SEQUENCE_DIM
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
) -> dict[str, np.ndarray]:
    """Deterministic random inputs for every session input.

    Symbolic dims: batch-like names -> ``batch``; sequence-like names -> ``SEQUENCE_DIM`` (16);
    height/width-like names -> ``SPATIAL_DIM`` (224); any other dim 0 -> ``batch``; the rest -> ``default_dim``.
    ``shapes`` overrides whole input shapes. Floats ~ N(0, 1); int ``*mask*`` -> 1, ``*ids*`` -> [0, 100),
    ``token_type``/``segment`` -> 0, ``position*`` -> arange, other ints -> [0, 4); bool -> True.
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
            shape = tuple(_default_dim(d, i, batch, default_dim) for i, d in enumerate(spec.shape))
        inputs[spec.name] = _random_array(spec.name, spec.dtype, shape, _rng_for(seed, spec.name))
    logger.debug("made inputs %s", {k: (v.dtype.name, v.shape) for k, v in inputs.items()})
    return inputs


def _check_shape(spec: InputSpec, shape: tuple[int, ...], what: str) -> None:
    if spec.shape and len(shape) != len(spec.shape):
        raise ValueError(
            f"{what} {shape} for input {spec.name!r} has rank {len(shape)}, the model expects "
            f"rank {len(spec.shape)} {spec.shape}"
        )
    for got, want in zip(shape, spec.shape, strict=False):
        if isinstance(want, int) and want >= 0 and got != want:
            raise ValueError(
                f"{what} {shape} for input {spec.name!r} does not match the model's {spec.shape}"
            )


def load_npy_inputs(
    paths_or_dir: str | os.PathLike | Sequence[str | os.PathLike], session: Any
) -> dict[str, np.ndarray]:
    """Load inputs from a ``.npy`` (single-input model), a ``.npz`` (one array per input name),
    a directory of ``<input_name>.npy`` files, or a list of ``<input_name>.npy`` paths.

    Arrays are cast to the model's dtype when the kind matches (e.g. float64 -> float32).
    """
    specs = input_specs(session)
    names = [s.name for s in specs]
    if isinstance(paths_or_dir, (str, os.PathLike)):
        paths = [Path(paths_or_dir)]
    else:
        paths = [Path(p) for p in paths_or_dir]
    if not paths:
        raise ValueError("no input files given")
    arrays: dict[str, np.ndarray] = {}
    if len(paths) == 1 and paths[0].is_dir():
        files = sorted(paths[0].glob("*.npy"))
        if not files:
            raise ValueError(f"directory {paths[0]} contains no .npy files")
        arrays = {f.stem: np.load(f, allow_pickle=False) for f in files}
    elif len(paths) == 1 and paths[0].suffix == ".npz":
        with np.load(paths[0], allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    elif len(paths) == 1 and paths[0].suffix == ".npy":
        if len(names) != 1:
            raise ValueError(
                f"a single .npy file only works for single-input models; this model has inputs {names}: "
                "use a .npz or a directory of <input_name>.npy files"
            )
        arrays = {names[0]: np.load(paths[0], allow_pickle=False)}
    else:
        for p in paths:
            if p.suffix != ".npy" or not p.is_file():
                raise ValueError(f"{p}: expected an existing .npy file, a .npz file or a directory")
            arrays[p.stem] = np.load(p, allow_pickle=False)
    missing = [n for n in names if n not in arrays]
    extra = sorted(set(arrays) - set(names))
    if missing or extra:
        raise ValueError(
            f"input files do not match the model inputs {names}: missing {missing}, unexpected {extra}"
        )
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        arr = np.asarray(arrays[spec.name])
        if spec.dtype is not None and arr.dtype != spec.dtype:
            if arr.dtype.kind != spec.dtype.kind and not (arr.dtype.kind in "iu" and spec.dtype.kind in "iu"):
                raise ValueError(
                    f"input {spec.name!r}: file has dtype {arr.dtype}, the model expects {spec.dtype}"
                )
            arr = arr.astype(spec.dtype)
        _check_shape(spec, arr.shape, "file array of shape")
        out[spec.name] = arr
    return out


# --------------------------------------------------------------------------- comparison


@dataclass
class OutputMetrics:
    """Agreement of one output between the reference and the candidate model (see module docstring)."""

    name: str
    shape: tuple[int, ...]
    candidate_shape: tuple[int, ...]
    dtype: str
    shape_match: bool
    exact: bool
    max_abs: float | None = None
    max_rel: float | None = None
    mean_abs: float | None = None
    cosine: float | None = None
    top1_agreement: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (non-finite floats become None)."""

        def num(v: float | None) -> float | None:
            return float(v) if v is not None and math.isfinite(v) else None

        return {
            "name": self.name,
            "shape": [int(d) for d in self.shape],
            "candidate_shape": [int(d) for d in self.candidate_shape],
            "dtype": self.dtype,
            "shape_match": bool(self.shape_match),
            "exact": bool(self.exact),
            "max_abs": num(self.max_abs),
            "max_rel": num(self.max_rel),
            "mean_abs": num(self.mean_abs),
            "cosine": num(self.cosine),
            "top1_agreement": num(self.top1_agreement),
        }

    def summary(self, name_width: int = 0) -> str:
        """One line, e.g. ``logits: max_abs 1.2e-06  max_rel 3.4e-07  cosine 1.000000  top1 100.0%``."""
        head = f"{self.name + ':':<{name_width + 1}}"
        if not self.shape_match:
            return f"{head} SHAPE MISMATCH {self.shape} vs {self.candidate_shape}"
        parts = [
            f"max_abs {self.max_abs:.1e}",
            f"max_rel {self.max_rel:.1e}",
            f"cosine {self.cosine:.6f}",
        ]
        if self.top1_agreement is not None:
            parts.append(f"top1 {100.0 * self.top1_agreement:.1f}%")
        if self.exact:
            parts.append("(exact)")
        return head + " " + "  ".join(parts)


def _is_class_scores(a: np.ndarray) -> bool:
    return a.dtype.kind == "f" and a.ndim == 2 and a.shape[-1] > 1


def _compare_one(name: str, ref: np.ndarray, cand: np.ndarray) -> OutputMetrics:
    ref, cand = np.asarray(ref), np.asarray(cand)
    if ref.dtype == object or cand.dtype == object:
        raise ValueError(f"output {name!r} is not a numeric tensor (dtype object); cannot compare it")
    shape_match = ref.shape == cand.shape
    exact = (
        shape_match
        and ref.dtype == cand.dtype
        and np.ascontiguousarray(ref).tobytes() == np.ascontiguousarray(cand).tobytes()
    )
    m = OutputMetrics(name, tuple(ref.shape), tuple(cand.shape), str(ref.dtype), shape_match, exact)
    if not shape_match:
        return m
    a = ref.astype(np.float64, copy=False).ravel()
    b = cand.astype(np.float64, copy=False).ravel()
    if a.size == 0:
        m.max_abs = m.max_rel = m.mean_abs = 0.0
        m.cosine = 1.0
    else:
        diff = np.abs(a - b)
        m.max_abs = float(diff.max())
        m.mean_abs = float(diff.mean())
        m.max_rel = m.max_abs / max(float(np.abs(a).max()), TINY)
        na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
        if na == 0.0 and nb == 0.0:
            m.cosine = 1.0
        elif na == 0.0 or nb == 0.0:
            m.cosine = 0.0
        else:
            m.cosine = float(np.clip(np.dot(a, b) / (na * nb), -1.0, 1.0))
    if _is_class_scores(ref) and ref.shape[0] > 0:
        m.top1_agreement = float(np.mean(ref.argmax(axis=-1) == cand.argmax(axis=-1)))
    return m


def compare_outputs(
    reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]
) -> list[OutputMetrics]:
    """Per-output metrics, in the reference's order. Both dicts must have the same names."""
    missing = [k for k in reference if k not in candidate]
    extra = [k for k in candidate if k not in reference]
    if missing or extra:
        raise ValueError(f"output names differ: candidate lacks {missing}, has extra {extra}")
    return [_compare_one(name, reference[name], candidate[name]) for name in reference]


# --------------------------------------------------------------------------- end to end


@dataclass
class ValidationReport:
    """Result of :func:`validate`."""

    provider: str
    inputs: dict[str, tuple[int, ...]]
    outputs: list[OutputMetrics]
    runtime: str = ""
    seed: int | None = None

    @property
    def exact(self) -> bool:
        """True when every output is bitwise identical."""
        return all(o.exact for o in self.outputs)

    @property
    def min_cosine(self) -> float | None:
        """Smallest cosine over outputs (None if no output could be compared)."""
        vals = [o.cosine for o in self.outputs if o.cosine is not None]
        return min(vals) if vals else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of plain Python types."""
        return {
            "provider": self.provider,
            "runtime": self.runtime,
            "seed": self.seed,
            "inputs": {k: [int(d) for d in v] for k, v in self.inputs.items()},
            "exact": self.exact,
            "outputs": [o.to_dict() for o in self.outputs],
        }

    def summary(self) -> str:
        """One line per output."""
        width = max((len(o.name) for o in self.outputs), default=0)
        return "\n".join(o.summary(width) for o in self.outputs)


def _run(session: Any, which: str, outputs: list[str], feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    try:
        return session.run(outputs, dict(feed))
    except Exception as exc:
        shapes = ", ".join(f"{k}{list(np.shape(v))}" for k, v in feed.items())
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RuntimeError(
            f"onnxruntime could not run the {which} model on inputs {shapes}: {msg} "
            "(if the export fixed some dims, pass explicit input shapes, e.g. batch 1)"
        ) from exc


def validate(
    original: str | os.PathLike | bytes | onnx.ModelProto,
    candidate: str | os.PathLike | bytes | onnx.ModelProto,
    inputs: Mapping[str, np.ndarray] | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
    providers: Sequence[str] | None = None,
    seed: int = 0,
    batch: int = 2,
    optimize: bool = True,
) -> ValidationReport:
    """Run both models on the same inputs (random from the ORIGINAL's inputs unless given) and compare."""
    providers = list(providers) if providers else available_providers()
    ref_sess = make_session(original, providers=providers, optimize=optimize)
    cand_sess = make_session(candidate, providers=providers, optimize=optimize)
    ref_in = [i.name for i in ref_sess.get_inputs()]
    cand_in = [i.name for i in cand_sess.get_inputs()]
    ref_out = [o.name for o in ref_sess.get_outputs()]
    cand_out = [o.name for o in cand_sess.get_outputs()]
    if sorted(ref_in) != sorted(cand_in):
        raise ValueError(f"input names differ: original has {ref_in}, candidate has {cand_in}")
    if sorted(ref_out) != sorted(cand_out):
        raise ValueError(f"output names differ: original has {ref_out}, candidate has {cand_out}")
    if inputs is None:
        feed = make_inputs(ref_sess, shapes=shapes, batch=batch, seed=seed)
    else:
        feed = dict(inputs)
        if sorted(feed) != sorted(ref_in):
            raise ValueError(f"given inputs {sorted(feed)} do not match the model inputs {ref_in}")
    ref_vals = _run(ref_sess, "original", ref_out, feed)
    cand_vals = _run(cand_sess, "candidate", ref_out, feed)
    metrics = compare_outputs(
        dict(zip(ref_out, ref_vals, strict=True)), dict(zip(ref_out, cand_vals, strict=True))
    )
    report = ValidationReport(
        provider=ref_sess.get_providers()[0],
        inputs={k: tuple(int(d) for d in np.shape(v)) for k, v in feed.items()},
        outputs=metrics,
        runtime=runtime_description(),
        seed=seed if inputs is None else None,
    )
    logger.info("validation on %s:\n%s", report.provider, report.summary())
    return report
