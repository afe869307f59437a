"""``onnxfold bench speed``: CPU latency, file size and memory of folded and INT8 models.

For each architecture (random weights; speed does not depend on them) the original export, the
model folded at several channel sparsities (with ``round_to`` 1 and 8 side by side: exact widths,
and the fold's default multiples of 8) and the 50 %-folded model quantized to INT8 (static QDQ and
dynamic) are timed with onnxruntime on CPU: a fixed
``intra_op_num_threads`` (2) and ``inter_op_num_threads`` (1), batch 1 and batch 8, median of many
runs after warm-up. Idle intra-op threads do not spin (``session.intra_op.allow_spinning=0``;
``--spin`` restores onnxruntime's default): on a machine shared with other processes, spinning
threads take the cores the working thread needs, and latencies grew 2-3x and varied with the
load. The variants of one architecture are timed round-robin in one process, so a change of
machine load hits them alike (the JSON also keeps the 10th percentile and the minimum, the
estimates least disturbed by other processes). File size is the saved size; peak memory is the
peak RSS (``VmHWM``; ``ru_maxrss`` where /proc is missing) of a fresh subprocess that loads the
model into a session and runs both batches, reported whole and less the process's peak just
before the session was created (Python, numpy, onnxruntime and the inputs). After each
architecture's table come the latency ratio of every rounded fold to the unrounded fold of the
same sparsity, and a warning line for every folded variant slower than its original.

Architectures: ``resnet18`` (torchvision layout at 224×224, plus a natively half-width ResNet-18
exported from torch for the fold-at-50 % comparison), ``vgg11bn`` (VGG-11-BN with the 4096-wide
classifier at 64×64: at 224×224 one batch-8 run takes seconds on two threads; its two 4096-wide FC
groups are not folded because clustering 4096 channels dominates the bench's run time, so only the
convolutions, which hold 95 % of its MACs, are folded), ``mobilenetv2`` (224×224) and ``bert`` (a
2-layer BERT built from a ``transformers`` config offline, only when transformers is installed).
Calibration data of the static INT8 models is random (no data set is bundled): ranges fit noise.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onnxfold.bench.speed_measure import environment, make_bench_session, measure_memory, time_variants
from onnxfold.bench.speed_report import (
    acceptance,
    format_round_effect,
    format_rows,
    plot,
    round_effect,
    slower_warnings,
    summarize,
)
from onnxfold.bench.speed_variants import (
    DEFAULT_MODELS,
    DEFAULT_SPARSITIES,
    INT8_SPARSITY,
    ArchSpec,
    Variant,
    _random_input,
    _transformers_available,
    arch_specs,
    build_variants,
    fill_stats,
)
from onnxfold.errors import one_line
from onnxfold.report.progress import progress_bar

__all__ = [
    "DEFAULT_MODELS",
    "DEFAULT_SPARSITIES",
    "INT8_SPARSITY",
    "ArchSpec",
    "Variant",
    "acceptance",
    "arch_specs",
    "bench_speed",
    "build_variants",
    "environment",
    "fill_stats",
    "format_rows",
    "make_bench_session",
    "measure_memory",
    "plot",
    "summarize",
    "time_variants",
]


def bench_speed(
    out_dir: str | os.PathLike = "bench-speed",
    models: Sequence[str] = DEFAULT_MODELS,
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
    round_tos: Sequence[int] = (1, 8),
    batches: Sequence[int] = (1, 8),
    threads: int = 2,
    budget_s: float = 2.0,
    int8: bool = True,
    memory: bool = True,
    seed: int = 0,
    spinning: bool = False,
) -> dict[str, Any]:
    """Build, time and measure every variant of ``models``; write speed.json and speed.png to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specs = arch_specs()
    unknown = [m for m in models if m not in specs]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; known: {sorted(specs)}")
    skipped: dict[str, str] = {}
    all_variants: list[Variant] = []
    env = environment(threads)
    env["intra_op_spinning"] = spinning
    started = time.perf_counter()
    for name in progress_bar(models, "bench speed", unit="model"):
        spec = specs[name]
        if name == "bert" and not _transformers_available():
            skipped[name] = "transformers is not installed"
            print(f"{name}: skipped ({skipped[name]})", flush=True)
            continue
        t0 = time.perf_counter()
        try:
            variants = build_variants(spec, out / name, sparsities, round_tos, int8, seed)
        except Exception as exc:  # one architecture failing must not lose the others
            skipped[name] = one_line(exc, 200, with_type=True)
            print(f"{name}: failed ({skipped[name]})", flush=True)
            continue
        t1 = time.perf_counter()
        rng = np.random.default_rng(seed)
        feeds = {b: {k: _random_input(k, s, rng) for k, s in spec.input_shapes(b).items()} for b in batches}
        unique = list({v.path: v for v in variants}.values())
        time_variants(unique, feeds, threads, budget_s, spinning=spinning)
        for v in variants:  # aliases (same file) share the measurement
            src = next(u for u in unique if u.path == v.path)
            v.latency_ms, v.runs = dict(src.latency_ms), dict(src.runs)
            v.latency_p10_ms, v.latency_min_ms = dict(src.latency_p10_ms), dict(src.latency_min_ms)
        if memory:
            with tempfile.TemporaryDirectory() as tmp:
                files = []
                for b, feed in feeds.items():
                    f = Path(tmp) / f"feed{b}.npz"
                    np.savez(f, **feed)
                    files.append(f)
                for v in unique:
                    measure_memory(v, files, threads)
            for v in variants:
                src = next(u for u in unique if u.path == v.path)
                v.peak_rss_mib, v.session_rss_mib = src.peak_rss_mib, src.session_rss_mib
        all_variants += variants
        rows = summarize(variants)
        print(
            f"\n{spec.description}: built in {t1 - t0:.0f} s, measured in {time.perf_counter() - t1:.0f} s",
            flush=True,
        )
        print(format_rows(rows, batches), flush=True)
        for line in format_round_effect(round_effect(rows)) + slower_warnings(rows):
            print(line, flush=True)
    rows = summarize(all_variants)
    result = {
        "environment": env,
        "models": {m: specs[m].description for m in models if m not in skipped},
        "skipped": skipped,
        "batches": list(batches),
        "sparsities": list(sparsities),
        "round_to": list(round_tos),
        "rows": rows,
        "acceptance": acceptance(rows),
        "round_to_effect": round_effect(rows),
        "warnings": slower_warnings(rows),
        "seconds": time.perf_counter() - started,
    }
    (out / "speed.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    png = plot(rows, out / "speed.png", batches) if rows else None
    acc = result["acceptance"]
    if acc:
        print(
            "\nacceptance (ResNet-18): "
            + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in acc.items())
        )
    print(
        f"wrote {out / 'speed.json'}" + (f" and {png}" if png else "") + f" in {result['seconds']:.0f} s",
        flush=True,
    )
    return result


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Arguments of ``onnxfold bench speed`` (also ``python -m onnxfold.bench.speed``)."""
    parser = parser or argparse.ArgumentParser(
        prog="onnxfold bench speed", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--out",
        default=None,
        help="output folder (models, speed.json, speed.png; default bench-speed; with --files only when given)",
    )
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=list(DEFAULT_MODELS))
    parser.add_argument(
        "--files",
        nargs="+",
        metavar="MODEL.onnx",
        help="time your own models instead, side by side, the first as the reference (nothing is folded; "
        "the JSON goes to --out): e.g. the original and a fold of it",
    )
    parser.add_argument(
        "--input-shape",
        action="append",
        default=[],
        metavar="NAME:D0,D1,...",
        help="--files: the shape of an input with symbolic dims (repeatable; without a name for one input)",
    )
    parser.add_argument("--inputs", help="--files: samples to time on (as fold's --inputs), else random")
    parser.add_argument("--sparsities", nargs="+", type=float, default=list(DEFAULT_SPARSITIES))
    parser.add_argument(
        "--round-to",
        nargs="+",
        type=int,
        default=[1, 8],
        dest="round_tos",
        help="fold each sparsity with each of these round_to values, timed side by side "
        "(default 1 8: exact widths and the fold's default multiples of 8)",
    )
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of timed runs per model and batch")
    parser.add_argument("--no-int8", action="store_true", help="skip the INT8 variants")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument(
        "--spin",
        action="store_true",
        help="let idle intra-op threads spin (onnxruntime's default; off here because on a shared "
        "machine spinning makes latency depend on the other load)",
    )
    return parser


def run_from_args(args: argparse.Namespace) -> dict[str, Any]:
    if args.files:
        from onnxfold.bench.speed_files import bench_files
        from onnxfold.runtime.inputs import parse_input_shapes

        return bench_files(
            args.files,
            args.out,
            args.batches,
            args.threads,
            args.budget,
            shapes=parse_input_shapes(args.input_shape),
            inputs=args.inputs,
            memory=not args.no_memory,
            spinning=args.spin,
        )
    if args.input_shape or args.inputs:
        raise ValueError("--input-shape and --inputs apply to --files")
    return bench_speed(
        args.out or "bench-speed",
        args.models,
        args.sparsities,
        args.round_tos,
        args.batches,
        args.threads,
        args.budget,
        not args.no_int8,
        not args.no_memory,
        spinning=args.spin,
    )


def main(argv: Sequence[str] | None = None) -> int:
    # onnxruntime's quantizer warns on the root logger about every 1-D weight of a per-channel run
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    loggers = [logging.getLogger(n) for n in ("onnxfold", "onnxfold.passes.quantize")]
    levels = [lg.level for lg in loggers]
    loggers[0].setLevel(logging.WARNING)
    loggers[1].setLevel(logging.ERROR)  # "random calibration data"
    try:  # the levels are the bench's only: a caller in the same process (a test) keeps its own
        run_from_args(build_parser().parse_args(argv))
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
