"""``onnxfold bench llm``: perplexity of a compressed causal LM (SmolLM2-135M) on a fixed English text.

The model (:mod:`onnxfold.bench.llm_model`) is exported once to ONNX; the text
(:mod:`onnxfold.bench.llm_text`) is a GPL-3 copy found among the installed packages. Its first
``windows`` windows of ``window`` tokens are the evaluation; the fitting samples of the
activation-aware methods (``--samples`` samples of ``--sample-length`` tokens, the ``--inputs`` of
``onnxfold fold``) come from the tokens after them. For each target parameter reduction and method,
the original is compressed and, in onnxruntime, scored by

* perplexity: exp of the mean next-token negative log-likelihood over every window's positions;
* top-1 agreement: the fraction of those positions whose most likely next token is the original's.

The uniform methods fold at one channel sparsity for every foldable MLP group, keeping every attention
head (:data:`KEEP_HEADS`), chosen by :func:`match_sparsity` so that the parameter reduction is the one
closest to the target that the fold's rounded widths allow (one probe fold measures the parameters a
channel carries). ``target`` instead asks onnxfold's search for the reduction itself (``target_params``,
method ``auto`` on the fitting samples), with per-group widths, heads included.

Reductions are counted against the original's parameters, leaving out a constant ``overhead`` that
a fold adds at any sparsity, measured by :func:`probe`. SmolLM2 ties its embedding to its output
projection; before tied weights stayed shared (issue 13), the fold stored the transposed use as a
second 28.3M-parameter weight. Now the overhead measures 0, and every point records both the
reduction without it (``reduction``) and the fold report's (``file_reduction``), which then agree.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnxfold.bench.llm_model import DEFAULT_CACHE, CausalLM, SmolLM2
from onnxfold.bench.llm_text import Text, eval_windows, find_text, fit_samples
from onnxfold.errors import one_line
from onnxfold.folding.cluster import DEFAULT_ROUND_TO, cluster_count, widths

DEFAULT_REDUCTIONS = (0.05, 0.1, 0.2)
#: the recipe of the uniform points: every attention head kept, the fold's sparsity for the rest
KEEP_HEADS = "rules:\n  - heads: 0.0\n"


@contextmanager
def keep_heads() -> Iterator[Path]:
    """A recipe file (:data:`KEEP_HEADS`) for the length of the block. SmolLM2 has 3 KV heads per
    layer, so any uniform sparsity would fold 3 → 2 of them everywhere (a third of the attention)."""
    with tempfile.TemporaryDirectory() as folder:
        recipe = Path(folder) / "keep-heads.yaml"
        recipe.write_text(KEEP_HEADS)
        yield recipe


@dataclass(frozen=True)
class LlmMethod:
    """How a method compresses: onnxfold's ``method`` and ``repair``; ``fit`` feeds the fitting
    samples as ``inputs``; ``target`` runs the search to the parameter reduction (no sparsity)."""

    method: str
    repair: str
    fit: bool = False
    target: bool = False


METHODS: dict[str, LlmMethod] = {
    "l2": LlmMethod("l2", "none"),
    "fold": LlmMethod("fold", "none"),
    "fold:ar": LlmMethod("fold", "ar"),  # onnxfold's default before auto
    "default": LlmMethod("auto", "ar"),  # onnxfold fold with no options (data-free auto)
    "wanda": LlmMethod("wanda", "none", fit=True),
    "auto": LlmMethod("auto", "ar", fit=True),
    "target": LlmMethod("auto", "ar", fit=True, target=True),
}
DEFAULT_METHODS = tuple(METHODS)


def label(name: str, samples: int) -> str:
    """The method's name in tables: data methods carry their sample count (``auto:32``)."""
    return f"{name}:{samples}" if METHODS[name].fit else name


def parse_methods(items: Sequence[str], samples: int) -> list[str]:
    """Method names, accepting ``wanda:32``-style labels whose count is ``samples``. ValueError on
    anything else."""
    names = []
    for item in items:
        base, _, count = item.partition(":")
        name = base if count.isdigit() and METHODS.get(base, METHODS["l2"]).fit else item
        if name not in METHODS or (count.isdigit() and int(count) != samples):
            choices = ", ".join(label(m, samples) for m in METHODS)
            raise ValueError(f"bench llm: unknown method {item!r} (choose among {choices})")
        names.append(name)
    if not names:
        raise ValueError("bench llm: no method given")
    return names


def nll_and_top1(logits: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-position next-token negative log-likelihood (float64) and argmax of one window's
    ``logits`` [seq, vocab] for ``ids`` [seq]: position t predicts token t + 1, so seq − 1 values each."""
    head = logits[:-1].astype(np.float64)
    top = head.max(axis=1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(head - top).sum(axis=1))
    return log_z - head[np.arange(len(head)), ids[1:]], logits[:-1].argmax(axis=1)


def score(path: Path, windows: np.ndarray, reference: np.ndarray | None = None) -> dict:
    """Perplexity, mean NLL and top-1 predictions of the ONNX causal LM at ``path`` on ``windows``
    [count, seq] (one window per run); with ``reference`` (the original's top-1, [count, seq − 1])
    also the top-1 agreement with it."""
    from onnxfold.runtime.session import make_session

    session = make_session(str(path))
    name = session.get_inputs()[0].name
    nll, top1 = [], []
    for ids in windows:
        logits = session.run(None, {name: ids[None].astype(np.int64)})[0][0]
        n, t = nll_and_top1(logits, ids)
        nll.append(n)
        top1.append(t)
    mean = float(np.concatenate(nll).mean())
    out = {"perplexity": math.exp(mean), "nll": mean, "top1": np.stack(top1)}
    if reference is not None:
        out["agreement"] = float((out["top1"] == reference).mean())
    return out


def match_sparsity(
    sizes: Sequence[int], per_channel: float, total: int, target: float, round_to: int = DEFAULT_ROUND_TO
) -> tuple[float, float]:
    """The uniform channel sparsity whose fold comes closest to removing ``target`` of ``total``
    parameters, and the reduction it predicts: every group of ``sizes`` folds to
    :func:`~onnxfold.folding.cluster.cluster_count` channels and each removed channel takes
    ``per_channel`` parameters. Candidates are the sparsities at which some group lands exactly on
    one of its widths; ties go to the smaller sparsity."""
    if not sizes or per_channel <= 0 or total <= 0:
        raise ValueError("bench llm: nothing to fold (no foldable group)")

    def predicted(s: float) -> float:
        return sum(n - cluster_count(n, s, round_to) for n in sizes) * per_channel / total

    candidates = sorted({1.0 - w / n for n in set(sizes) for w in widths(n, round_to)})
    best = min(candidates, key=lambda s: (abs(predicted(s) - target), s))
    return best, predicted(best)


def probe(source: Path, round_to: int = DEFAULT_ROUND_TO) -> dict:
    """Two l2 folds, at sparsity 0 and 0.5 (nothing saved): the parameters of the model, the
    ``overhead`` a fold adds whatever the sparsity (a tied embedding whose transposed use is stored
    as a second weight), the widths of the groups that fold, their kinds and the parameters one
    channel carries."""
    from onnxfold.api import fold

    def run(sparsity: float):
        return fold(
            source,
            sparsity,
            None,
            method="l2",
            repair="none",
            validate=False,
            round_to=round_to,
            recipe=recipe,
        )[1]

    with keep_heads() as recipe:
        still, half = run(0.0), run(0.5)
    folded = [p for p in half.plans if p.status == "folded"]
    removed = sum(p.group.size - p.k for p in folded)
    if not removed:
        raise ValueError("bench llm: no group of the model folds")
    return {
        "params": half.before.params,
        "overhead": still.after.params - still.before.params,
        "sizes": [p.group.size for p in folded],
        "kinds": sorted({p.group.kind for p in folded}),
        "per_channel": (still.after.params - half.after.params) / removed,
    }


def reduction_of(report, overhead: int) -> float:
    """The parameter reduction of a fold with the ``overhead`` of :func:`probe` not counted."""
    return 1.0 - (report.after.params - overhead) / report.before.params


def compress(source: Path, output: Path, spec: LlmMethod, reduction: float, sparsity, fit) -> object:
    """Fold ``source`` into ``output`` with ``spec`` at ``sparsity``, or for ``target`` at the
    parameter reduction ``reduction`` as the search counts it; the fold report."""
    from onnxfold.api import fold

    common = dict(validate=False, overwrite=True, inputs={"input_ids": fit} if spec.fit else None)
    if spec.target:
        return fold(
            source,
            None,
            output,
            method=spec.method,
            repair=spec.repair,
            target_params=reduction,
            force=True,  # a point of the curve, whatever it keeps (a budget under the task bar is refused)
            **common,
        )[1]
    with keep_heads() as recipe:
        return fold(
            source, sparsity, output, method=spec.method, repair=spec.repair, recipe=recipe, **common
        )[1]


def run_bench(
    model: CausalLM,
    text: Text,
    methods: Sequence[str],
    reductions: Sequence[float],
    out: Path,
    samples: int = 32,
    sample_length: int = 64,
    window: int = 1024,
    windows: int = 2,
    log: Callable[[str], None] = print,
) -> dict:
    """The sweep (see the module docstring); the record, also written to ``<out>/llm.json`` after
    every point. A point that fails is recorded with its one-line error."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    source = model.onnx()
    ids = model.encode(text.text)
    evals = eval_windows(ids, window, windows, samples * sample_length)
    fit = fit_samples(ids[evals.size :], samples, sample_length)
    log(f"{model.name}: {len(ids)} tokens; evaluation {evals.shape}, fitting samples {fit.shape}")
    base = score(source, evals)
    shape = probe(source)
    record = {
        "model": model.describe(),
        "text": {**text.describe(), "tokens": int(len(ids))},
        "windows": list(evals.shape),
        "fit_samples": list(fit.shape),
        "params": shape["params"],
        "overhead": shape["overhead"],
        "groups": {k: shape[k] for k in ("sizes", "kinds", "per_channel")},
        "original": {"perplexity": base["perplexity"], "nll": base["nll"]},
        "setup_seconds": time.perf_counter() - start,
        "points": [],
    }
    log(f"original perplexity {base['perplexity']:.2f} ({shape['params']:,} parameters)")
    if shape["overhead"]:
        log(f"note: a fold stores {shape['overhead']:,} parameters more (reductions below leave them out)")
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        for reduction in reductions:
            sparsity, predicted = match_sparsity(
                shape["sizes"], shape["per_channel"], shape["params"], reduction
            )
            # the search counts the overhead among the parameters it removes a fraction of
            searched = reduction * shape["params"] / (shape["params"] + shape["overhead"])
            for name in methods:
                spec = METHODS[name]
                row: dict = {"method": label(name, samples), "target": reduction}
                row["sparsity"] = None if spec.target else sparsity
                t0 = time.perf_counter()
                try:
                    report = compress(source, Path(tmp) / "c.onnx", spec, searched, sparsity, fit)
                    row["fold_seconds"] = time.perf_counter() - t0
                    row["reduction"] = reduction_of(report, shape["overhead"])
                    row["file_reduction"] = report.param_sparsity
                    row["params"] = report.after.params
                    row["kinds"] = sorted({p.group.kind for p in report.plans if p.status == "folded"})
                    t1 = time.perf_counter()
                    got = score(Path(tmp) / "c.onnx", evals, base["top1"])
                    row.update(perplexity=got["perplexity"], agreement=got["agreement"])
                    row["eval_seconds"] = time.perf_counter() - t1
                    log(
                        f"{row['method']:10s} target {reduction:.0%}: -{row['reduction']:.1%} params, "
                        f"perplexity {row['perplexity']:.4g}, top-1 agreement {row['agreement']:.3f} "
                        f"(fold {row['fold_seconds']:.0f}s)"
                    )
                except Exception as exc:  # a failing point is recorded, not fatal
                    row.update(error=one_line(exc), fold_seconds=time.perf_counter() - t0)
                    log(f"{row['method']:10s} target {reduction:.0%}: error: {row['error']}")
                row["predicted"] = None if spec.target else predicted
                record["points"].append(row)
                (out / "llm.json").write_text(json.dumps(record, indent=1) + "\n")
    record["seconds"] = time.perf_counter() - start
    (out / "llm.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def table(record: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per point (error rows say so)."""
    header = ["method", "target", "sparsity", "removed", "perplexity", "top-1 agreement", "fold s"]
    rows = []
    for p in record["points"]:
        sparsity = "search" if p["sparsity"] is None else f"{p['sparsity']:.3f}"
        if p.get("error"):
            rows.append([p["method"], f"{p['target']:.0%}", sparsity, "-", "error", p["error"][:60], "-"])
            continue
        rows.append(
            [
                p["method"],
                f"{p['target']:.0%}",
                sparsity,
                f"{p['reduction']:.1%}",
                f"{p['perplexity']:,.2f}",
                f"{p['agreement']:.3f}",
                f"{p['fold_seconds']:.0f}",
            ]
        )
    return header, rows


def markdown(record: dict) -> str:
    header, rows = table(record)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def plot(record: dict, path: Path) -> None:
    """Perplexity (log scale) and top-1 agreement vs parameter reduction, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for method in dict.fromkeys(p["method"] for p in record["points"]):
        pts = sorted(
            (p["reduction"], p["perplexity"], p["agreement"])
            for p in record["points"]
            if p["method"] == method and not p.get("error")
        )
        if pts:
            x, ppl, agree = zip(*pts, strict=True)
            left.plot(x, ppl, "o-", label=method, ms=4)
            right.plot(x, agree, "o-", label=method, ms=4)
    left.axhline(record["original"]["perplexity"], color="grey", ls=":", lw=1, label="original")
    left.set_yscale("log")
    left.set_ylabel("perplexity")
    right.set_ylabel("top-1 agreement with the original")
    right.set_ylim(-0.02, 1.02)
    for ax in (left, right):
        ax.set_xlabel("parameter reduction")
        ax.grid(alpha=0.3)
    left.legend(fontsize=8)
    fig.suptitle(
        f"{record['model'].get('model', 'model')}: {record['windows'][0]}x{record['windows'][1]} tokens"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bench_llm(
    methods: Sequence[str] = DEFAULT_METHODS,
    reductions: Sequence[float] = DEFAULT_REDUCTIONS,
    samples: int = 32,
    out_dir: str | Path = "bench-llm",
    cache: str | Path = DEFAULT_CACHE,
    model: CausalLM | None = None,
    text: Text | None = None,
    **options,
) -> dict:
    """Run the bench (``model`` default :class:`SmolLM2` in ``cache``, ``text`` default
    :func:`find_text`); prints the table and writes ``llm.json``, ``llm.md`` and ``llm.png`` to ``out_dir``."""
    from onnxfold.report.stats import format_table

    names = parse_methods(methods, samples)
    if not reductions or any(not 0.0 < r < 1.0 for r in reductions):
        raise ValueError("bench llm: reductions must be in (0, 1)")
    if samples < 1:
        raise ValueError("bench llm: --samples must be at least 1")
    out = Path(out_dir)
    model = model if model is not None else SmolLM2(Path(cache))
    text = text if text is not None else find_text()
    print(f"text: {text.source} (sha256 {text.sha256[:12]}, {text.copies} copies)", flush=True)
    record = run_bench(model, text, names, sorted(reductions), out, samples, **options)
    print(f"\noriginal perplexity {record['original']['perplexity']:.2f}")
    print(format_table(*table(record)))
    (out / "llm.md").write_text(markdown(record))
    try:
        plot(record, out / "llm.png")
    except ImportError:
        print("(no plot: matplotlib is not installed)")
    return record


def main(argv: Sequence[str] | None = None) -> int:
    """``onnxfold bench llm [options]``; the exit status."""
    p = argparse.ArgumentParser(prog="onnxfold bench llm", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help="comma list of l2, fold, fold:ar, default, wanda, auto, target (wanda:32 etc. also accepted)",
    )
    p.add_argument(
        "--reductions",
        default=",".join(map(str, DEFAULT_REDUCTIONS)),
        help="comma list of target parameter reductions (default 0.05,0.1,0.2)",
    )
    p.add_argument("--samples", type=int, default=32, help="fitting samples of the data methods (default 32)")
    p.add_argument("--sample-length", type=int, default=64, help="tokens per fitting sample (default 64)")
    p.add_argument("--window", type=int, default=1024, help="tokens per evaluation window (default 1024)")
    p.add_argument("--windows", type=int, default=2, help="evaluation windows (default 2)")
    p.add_argument(
        "--cache", default=str(DEFAULT_CACHE), help="wheel/model cache (default ~/.cache/onnxfold/llm)"
    )
    p.add_argument("-o", "--out", default="bench-llm", help="output folder (default bench-llm)")
    a = p.parse_args(argv)
    bench_llm(
        [m.strip() for m in a.methods.split(",") if m.strip()],
        [float(s) for s in a.reductions.split(",") if s.strip()],
        a.samples,
        a.out,
        a.cache,
        sample_length=a.sample_length,
        window=a.window,
        windows=a.windows,
    )
    return 0
