"""Measurements of ``onnxfold bench speed``: median latency over round-robin runs in one process, and
peak memory of a fresh child process per model (see :mod:`onnxfold.bench.speed`)."""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxfold.bench.speed_variants import Variant
from onnxfold.runtime.session import CPU, make_session

log = logging.getLogger(__name__)


def make_bench_session(path: Path, threads: int, spinning: bool = False) -> Any:
    """A CPU session with ``threads`` intra-op threads, one inter-op thread, full graph optimisation."""
    return make_session(path, providers=[CPU], threads=threads, spinning=spinning)


def time_variants(
    variants: Sequence[Variant],
    feeds: dict[int, dict[str, np.ndarray]],
    threads: int,
    budget_s: float,
    rounds: int = 20,
    min_runs: int = 20,
    max_runs: int = 400,
    spinning: bool = False,
) -> None:
    """Median latency per variant and batch. The runs of each variant are spread over ``rounds``
    round-robin passes over all variants (order reversed every other pass)."""
    sessions = {id(v): make_bench_session(v.path, threads, spinning) for v in variants}
    for batch, feed in feeds.items():
        per_round: dict[int, int] = {}
        for v in variants:
            sess = sessions[id(v)]
            for _ in range(2):
                sess.run(None, feed)  # warm-up (first runs allocate buffers and pack weights)
            start = time.perf_counter()
            sess.run(None, feed)
            once = max(time.perf_counter() - start, 1e-5)
            per_round[id(v)] = max(1, int(np.clip(budget_s / once, min_runs, max_runs)) // rounds)
        samples: dict[int, list[float]] = {id(v): [] for v in variants}
        for r in range(rounds):
            for v in variants if r % 2 == 0 else list(reversed(variants)):
                sess = sessions[id(v)]
                for _ in range(per_round[id(v)]):
                    start = time.perf_counter()
                    sess.run(None, feed)
                    samples[id(v)].append(time.perf_counter() - start)
        for v in variants:
            ts = np.array(samples[id(v)]) * 1000.0
            v.latency_ms[batch] = float(np.median(ts))
            v.latency_p10_ms[batch] = float(np.percentile(ts, 10))
            v.latency_min_ms[batch] = float(ts.min())
            v.runs[batch] = len(ts)


# The child builds its session with onnxruntime alone, not make_session: importing onnxfold (and
# numpy/onnx through it) would add its own memory to the peak that is being measured.
_RSS_CHILD = r"""
import json, sys
import numpy as np
import onnxruntime as ort


def hwm_kib():
    # VmHWM: peak RSS of this process image (ru_maxrss would carry the parent's peak over fork+exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


path, threads, feeds = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
arrays = []
for f in feeds:
    with np.load(f) as data:
        arrays.append({k: data[k] for k in data.files})
before = hwm_kib()
opts = ort.SessionOptions()
opts.intra_op_num_threads = threads
opts.inter_op_num_threads = 1
opts.log_severity_level = 3
sess = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
for feed in arrays:
    sess.run(None, feed)
print(json.dumps({"before_kib": before, "peak_kib": hwm_kib()}))
"""


def measure_memory(variant: Variant, feed_files: Sequence[Path], threads: int) -> None:
    """Peak RSS of a fresh process that creates the session and runs every feed once."""
    cmd = [sys.executable, "-c", _RSS_CHILD, str(variant.path), str(threads), *map(str, feed_files)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
        data = json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as exc:
        log.warning("memory of %s not measured: %s", variant.name, exc)
        return
    variant.peak_rss_mib = data["peak_kib"] / 1024.0
    variant.session_rss_mib = (data["peak_kib"] - data["before_kib"]) / 1024.0


def environment(threads: int) -> dict[str, Any]:
    import onnxruntime as ort

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "onnxruntime": ort.__version__,
        "onnx": onnx.__version__,
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "intra_op_threads": threads,
        "inter_op_threads": 1,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
