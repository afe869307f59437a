"""onnxruntime sessions: which execution providers to use, and the one factory that makes sessions.

:func:`available_providers` returns ``[CUDA, CPU]`` only when CUDA is offered by the installed
onnxruntime build AND a probe session on a one-node model really gets it (after one try of
``onnxruntime.preload_dlls()``), else ``[CPU]``. :func:`make_session` is the only place in the
library that creates an ``onnxruntime.InferenceSession``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import logging
import os
import re
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxfold.errors import one_line

logger = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"

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
        return f"CUDA session failed: {one_line(exc)}"
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


_measure = {"threads": 0}


def measure_threads() -> int:
    """onnxruntime's intra-op threads for the runs a fold measures on (judge, search, activation
    statistics, synthesis, verification): every core this process may use (:func:`usable_cores`)
    unless :func:`measuring_threads` says otherwise (a fold's and a search's ``threads`` option). One
    thread made a search use half of a 2-core machine: a spindle detector's 16 samples ran in 4.8 s
    on one thread, 2.7 s on two."""
    return _measure["threads"] or usable_cores()


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def measurement_session(
    model: bytes | onnx.ModelProto | Any, optimize: bool = True, providers: Sequence[str] | None = None
) -> Any:
    """A session for runs a fold measures on (``model``: serialized bytes, a ModelProto or an IR
    Model) with :func:`measure_threads` threads, on ``providers`` (default: every available one)."""
    if not isinstance(model, (bytes, onnx.ModelProto)):
        from onnxfold.ir.model import to_model_proto

        model = to_model_proto(model)
    threads = measure_threads()  # idle threads do not spin: a machine shared with other jobs loses nothing
    return make_session(
        model,
        providers=providers,
        optimize=optimize,
        threads=threads,
        arena=False,
        arrays=True,
        spinning=threads == 1,
    )


@contextlib.contextmanager
def measuring_threads(threads: int):
    """Within the block, measurement runs use ``threads`` threads (0 or -1: every core this process
    may use, :func:`usable_cores`). onnxruntime's CPU kernels gave bit-identical outputs at 1, 2 and
    4 threads on PicoDet, YOLOX, SVTR and ResNet-18 exports; where two candidates' errors tie to the
    last bits a choice may still differ."""
    previous = _measure["threads"]
    _measure["threads"] = 0 if threads in (0, -1) else max(1, int(threads))
    try:
        yield
    finally:
        _measure["threads"] = previous


def make_session(
    model: str | os.PathLike | bytes | onnx.ModelProto,
    providers: Sequence[str] | None = None,
    optimize: bool = True,
    threads: int | None = None,
    spinning: bool = True,
    arena: bool = True,
    arrays: bool = False,
) -> Any:
    """Create an ``onnxruntime.InferenceSession`` from a path (external data loads) or serialized bytes.

    ``arrays``: every output comes back as an array (:class:`TensorOutputs`), as what is measured needs;
    without it outputs are what onnxruntime gives (a constant fold must keep strings strings).

    ``optimize=False`` sets ``ORT_DISABLE_ALL`` (no graph rewrites, for bit-exactness checks);
    ``threads`` sets the intra-op thread count and then runs nodes sequentially on one inter-op
    thread (what latency measurements need); ``spinning=False`` stops idle worker threads from
    busy-waiting between runs; ``arena=False`` returns each run's CPU buffers to the system instead of
    keeping them in onnxruntime's memory arena.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    opts.log_severity_level = 4  # errors reach the caller as exceptions; no coloured log lines
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if not arena:
        opts.enable_cpu_mem_arena = False
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    elif isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        model = str(path)
    elif not isinstance(model, (bytes, bytearray)):
        raise TypeError(f"model must be a path, bytes or ModelProto, got {type(model).__name__}")
    session = ort.InferenceSession(
        model, sess_options=opts, providers=list(providers) if providers else available_providers()
    )
    if any(any(not isinstance(d, int) for d in (i.shape or ())[1:]) for i in session.get_inputs()):
        session.reader_dims = _reader_dims(source)
    if arrays and any(
        o.type.startswith(("seq(", "map(")) or o.type == "tensor(string)" for o in session.get_outputs()
    ):
        return TensorOutputs(session)
    return session


def _reader_dims(model: str | os.PathLike | bytes | onnx.ModelProto) -> dict[str, dict[int, int]]:
    """The free input dims that the model's readers fix (:mod:`onnxfold.runtime.reader_dims`): what
    random inputs for the session must take (its weights not loaded for a path)."""
    from onnxfold.runtime.reader_dims import proto_reader_dims

    try:
        if isinstance(model, (bytes, bytearray)):
            model = onnx.load_from_string(bytes(model))
        elif not isinstance(model, onnx.ModelProto):
            model = onnx.load(str(model), load_external_data=False)
        return proto_reader_dims(model)
    except Exception:  # noqa: BLE001 - a model onnxruntime loaded but onnx cannot read: dims as declared
        return {}


class TensorOutputs:
    """An onnxruntime session whose non-tensor outputs come back as arrays: a sequence of maps (a
    ZipMap's {class: probability} per sample, as skl2onnx writes a classifier's probabilities) as
    [samples, classes] in the keys' sorted order, a sequence of equal tensors stacked, strings (its
    class names) as int64 codes (CRC-32 of their UTF-8 bytes: equal names, equal codes). Every figure
    onnxfold measures is on arrays (a scikit-learn MLP's search failed on "float() argument ... not
    'dict'"); anything else passes to the session as it is."""

    def __init__(self, session: Any) -> None:
        self._session = session

    def run(self, output_names, input_feed, *args, **kwargs) -> list:
        return [as_array(o) for o in self._session.run(output_names, input_feed, *args, **kwargs)]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def as_array(value: Any) -> Any:
    """``value`` as :class:`TensorOutputs` returns it (unchanged where it is an array already)."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "OSU":
        codes = [zlib.crc32(v if isinstance(v, bytes) else str(v).encode()) for v in value.ravel()]
        return np.array(codes, dtype=np.int64).reshape(value.shape)
    if not isinstance(value, list) or not value:
        return value
    if all(isinstance(v, dict) for v in value):
        keys = sorted(value[0])
        return np.array([[float(v[k]) for k in keys] for v in value], dtype=np.float32)
    if all(isinstance(v, np.ndarray) for v in value) and len({v.shape for v in value}) == 1:
        return np.stack(value)
    return value
