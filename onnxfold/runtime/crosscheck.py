"""Run onnxfold's outputs on a second runtime, so nothing onnxruntime-specific slips into them.

``python -m onnxfold.runtime.crosscheck MODEL.onnx …`` (or :func:`compare_runtimes` from Python)
runs every model with onnxruntime (CPU) and, when the ``openvino`` package is installed, with
OpenVINO's CPU plugin on the same random input: it prints the agreement (max abs error, cosine)
and each runtime's median batch-1 latency at a fixed thread count. OpenVINO is not a dependency;
install it in its own environment (``pip install openvino``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from onnxfold.report.stats import format_table


def _median_ms(fn, runs: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def compare_runtimes(
    paths: Sequence[str | Path], threads: int = 2, runs: int = 20, seed: int = 0
) -> list[dict]:
    """onnxruntime vs OpenVINO on each model (same input); OpenVINO columns are None when absent."""
    from onnxfold.runtime.inputs import make_inputs
    from onnxfold.runtime.session import make_session

    try:
        import openvino as ov

        core = ov.Core()
    except ImportError:
        core = None
    rows = []
    for path in paths:
        session = make_session(str(path), threads=threads)
        feed = make_inputs(session, batch=1, seed=seed)
        ref = session.run(None, feed)[0]
        row = {
            "model": str(path),
            "onnxruntime_ms": _median_ms(lambda s=session, f=feed: s.run(None, f), runs),
            "openvino_ms": None,
            "max_abs": None,
            "cosine": None,
        }
        if core is not None:
            compiled = core.compile_model(
                core.read_model(str(path)), "CPU", {"INFERENCE_NUM_THREADS": str(threads)}
            )
            inputs = [feed[i.get_any_name()] for i in compiled.inputs]
            out = np.asarray(compiled(inputs)[compiled.output(0)])
            row["openvino_ms"] = _median_ms(lambda c=compiled, i=inputs: c(i), runs)
            row["max_abs"] = float(np.abs(out - ref).max())
            denom = float(np.linalg.norm(out) * np.linalg.norm(ref)) or 1.0
            row["cosine"] = float(out.ravel().astype(np.float64) @ ref.ravel().astype(np.float64) / denom)
        rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m onnxfold.runtime.crosscheck", description=__doc__.splitlines()[0]
    )
    parser.add_argument("models", nargs="+")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args(argv)
    rows = compare_runtimes(args.models, args.threads, args.runs)

    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    print(
        format_table(
            ["model", "onnxruntime ms", "openvino ms", "max abs diff", "cosine"],
            [
                [
                    Path(r["model"]).name,
                    fmt(r["onnxruntime_ms"], ".2f"),
                    fmt(r["openvino_ms"], ".2f"),
                    fmt(r["max_abs"], ".1e"),
                    fmt(r["cosine"], ".6f"),
                ]
                for r in rows
            ],
        )
    )
    if rows and rows[0]["openvino_ms"] is None:
        print("openvino is not installed: only onnxruntime was run (pip install openvino)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
