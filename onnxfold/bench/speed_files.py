"""``onnxfold bench speed --files ORIGINAL.onnx OTHER.onnx ...``: your own models, timed side by side.

The first file is the reference; every file is timed as it is (nothing is folded or quantized) on
the same inputs, round-robin in one process as the built-in architectures are
(:func:`~onnxfold.bench.speed_measure.time_variants`), at each ``--batches`` size and ``--threads``
intra-op threads, with peak memory from a fresh subprocess per file. Inputs are the first ``b``
samples of ``--inputs`` when given (a fixed-size model takes its own batch), else random ones at
``--input-shape`` (a symbolic dim that neither names gets onnxfold's default: the batch size for a
leading dim, 16 for a sequence, 224 for height and width). This is the careful measurement that a
fold's ``--speed-check`` (one second, one sample) points to.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onnxfold.bench.speed_measure import environment, measure_memory, time_variants
from onnxfold.bench.speed_report import format_rows, summarize
from onnxfold.bench.speed_variants import Variant, fill_stats
from onnxfold.runtime.inputs import check_input_shapes


def _feeds(
    path: Path, batches: Sequence[int], shapes: Mapping[str, Sequence[int]], inputs: str | None
) -> dict[int, dict[str, np.ndarray]]:
    """{batch: feed} for the model at ``path`` (module docstring)."""
    from onnxfold.folding.samples import sample_count, splittable, take, token_draws
    from onnxfold.ir.model import load_model
    from onnxfold.runtime.inputs import fixed_batches, input_specs, make_inputs
    from onnxfold.runtime.sample_files import load_inputs
    from onnxfold.runtime.session import make_session

    session = make_session(str(path))
    specs = input_specs(session)
    fixed = fixed_batches(specs)
    if fixed:  # a model exported at a fixed batch runs at that batch only
        batches = [fixed[0]]
    if inputs is None:  # a given shape's leading dim follows the batch where the model leaves it free
        free = {s.name for s in specs if s.shape and not isinstance(s.shape[0], int)}
        draws = token_draws(load_model(path))  # drawn as fold draws them: token types inside their table
        return {
            b: make_inputs(
                session,
                shapes={k: (b, *v[1:]) if k in free and v else v for k, v in shapes.items()} or None,
                batch=b,
                id_draws=draws,
            )
            for b in batches
        }
    samples = load_inputs(inputs, session)
    if not splittable(samples):  # Piper's voice reads `scales` [3] beside its batch (trial 197)
        raise ValueError(
            f"{inputs}: the samples cannot be cut into batches (an input without a sample axis, or inputs "
            "holding different counts): time the model with --input-shape instead"
        )
    n = sample_count(samples)
    short = [b for b in batches if b > n]
    if short:
        raise ValueError(
            f"{inputs}: {n} samples, fewer than batch {short[0]}: give more, or smaller --batches"
        )
    return {b: take(samples, slice(0, b)) for b in batches}


def bench_files(
    files: Sequence[str],
    out_dir: str | None,
    batches: Sequence[int],
    threads: int,
    budget_s: float,
    shapes: Mapping[str, Sequence[int]] | None = None,
    inputs: str | None = None,
    memory: bool = True,
    spinning: bool = False,
) -> dict[str, Any]:
    """Time ``files`` side by side (module docstring); write speed.json to ``out_dir`` when given."""
    paths = [Path(f) for f in files]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ValueError(f"{missing[0]}: no such model file")
    if len(paths) < 2:
        raise ValueError("--files needs the original and at least one model to compare with it")
    started = time.perf_counter()
    shapes = dict(shapes or {})
    check_input_shapes(shapes, paths[0])
    feeds = _feeds(paths[0], batches, shapes, inputs)
    arch = paths[0].stem
    variants = [
        Variant(arch, p.name, p, "original" if i == 0 else "file", note=str(p)) for i, p in enumerate(paths)
    ]
    first = feeds[min(feeds)]
    for v in variants:  # MACs per sample at the shapes timed
        fill_stats(v, {k: tuple(np.shape(a)) for k, a in first.items()})
    time_variants(variants, feeds, threads, budget_s, spinning=spinning)
    if memory:
        with tempfile.TemporaryDirectory() as tmp:
            saved = []
            for b, feed in feeds.items():
                saved.append(Path(tmp) / f"feed{b}.npz")
                np.savez(saved[-1], **feed)
            for v in variants:
                measure_memory(v, saved, threads)
    rows = summarize(variants)
    shown = list(feeds)
    print(format_rows(rows, shown), flush=True)
    shapes_used = {b: {k: list(np.shape(a)) for k, a in f.items()} for b, f in feeds.items()}
    print(
        f"({threads} intra-op thread{'s' if threads != 1 else ''}; inputs "
        + "; ".join(f"batch {b}: {s}" for b, s in shapes_used.items())
        + ("" if inputs else ", random")
        + f"; median of the runs, {budget_s:g} s a file and batch)",
        flush=True,
    )
    bodies = sorted({op for v in variants for op in v.bodies})
    if bodies:  # chars2vec's two LSTM Loops over 12 steps: 1.15M MACs printed, about 13.8M run
        print(f"note: MACs count each {'/'.join(bodies)} body once; the model's grow with its iterations")
    if "Loop" in bodies:  # SLANet's table decoder: the folded model decoded other lengths on random inputs
        print(
            "note: a Loop may run as many iterations as its inputs' values decide (a decoder stops at its "
            "end token), so two files can differ in time by what they decode: --inputs with real samples "
            "times them on the same task"
        )
    result = {
        "environment": {**environment(threads), "intra_op_spinning": spinning},
        "files": [str(p) for p in paths],
        "inputs": {str(b): s for b, s in shapes_used.items()},
        "rows": rows,
        "seconds": time.perf_counter() - started,
    }
    if out_dir is not None:  # nothing written into the current folder unasked
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "speed.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
        print(f"wrote {out / 'speed.json'} in {result['seconds']:.0f} s", flush=True)
    return result
