"""``onnxfold bench coverage``: how much of each public architecture onnxfold can fold, per torch exporter.

Every model of :data:`onnxfold.models.public.PUBLIC_MODELS` (random weights) is exported with each exporter,
and each of :data:`onnxfold.models.ort_fused.ORT_FUSED_MODELS` (onnxruntime's fused transformer ops) is built
once (exports are cached in ``out_dir/exports``), analysed and folded at one sparsity with validation. Per
(model, exporter) it reports the graph size, the channel groups (total / foldable / blocked), the fraction of
parameters that belong to a foldable group (initializers with at least one non-shape member in a foldable
group, over all float initializers of the canonicalized graph), the parameter sparsity reached, the fold time,
the validation cosine, whether the folded file passes ``onnx.checker.check_model(full_check=True)`` and runs in
onnxruntime with the original output names and shapes, and the most frequent blocking reasons: counted by
their code (``blocked_reasons``: [code, groups]), with their messages (node and tensor names stripped) counted
per code too (``blocked_messages``: [code, message, groups]). Failures become rows with an ``error``; nothing raises.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onnxfold.errors import one_line
from onnxfold.report.progress import progress_bar
from onnxfold.report.stats import format_table

DEFAULT_STYLES = ("legacy", "dynamo")
_TOKEN = re.compile(r"[^\s(),:;'\"]+")


def export_cached(name: str, style: str, folder: Path, force: bool = False, small: bool = False) -> Path:
    """Export public model ``name`` in ``style`` to ``folder[/small]/<name>-<style>.onnx`` unless a current export
    (same models/public.py and models/export.py, same torch) is already there."""
    import onnxruntime
    import torch

    from onnxfold.models import export, ort_fused, public

    path = (folder / "small" if small else folder) / f"{name}-{style}.onnx"
    data = path.with_name(path.name + ".data")
    stamp = path.with_name(path.name + ".stamp")
    # the cache is valid for these exact model sources and this torch (and onnxruntime: its optimizer) version
    sources = b"".join(Path(m.__file__).read_bytes() for m in (public, export, ort_fused))
    versions = torch.__version__ + onnxruntime.__version__
    key = hashlib.sha1(sources + versions.encode()).hexdigest()
    if (
        not force
        and path.exists()
        and (style != "dynamo" or data.exists())
        and stamp.exists()
        and stamp.read_text() == key
    ):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    try:
        if name in ort_fused.ORT_FUSED_MODELS:
            ort_fused.build_ort_fused(name, path, small)
        else:
            export.export_onnx(
                public.build_public(name, small), path, public.public_input(name, 2, small=small), style
            )
    except BaseException:
        for f in (path, data):  # never leave a partial export behind for the cache
            f.unlink(missing_ok=True)
        raise
    stamp.write_text(key)
    return path


def shorten_reason(reason: str, names: set[str]) -> str:
    """A blocking reason with node/tensor names and attribute values removed, so equal patterns count together.

    A plain word that happens to name a tensor (``input``, ``mean``) is kept unless it follows ``tensor``,
    ``input``, ``output`` or an op type.
    """
    prev = [""]

    def strip(m: re.Match[str]) -> str:
        tok, before = m.group(0), prev[0]
        prev[0] = tok
        named = tok in names and (
            not tok.isalpha() or before in ("tensor", "input", "output") or before[:1].isupper()
        )
        return "…" if named else tok

    text = re.sub(r"=\d+", "=N", _TOKEN.sub(strip, reason))
    text = re.sub(r"\s*\(…\)", "", text)
    text = re.sub(r"(…\s*)+", "… ", text).strip()
    return re.sub(r"\s+", " ", text)


def analyze_coverage(path: Path) -> dict[str, Any]:
    """Groups of the canonicalized model and the fraction of float parameters in foldable groups."""
    import onnx_graphsurgeon as gs

    from onnxfold.analysis import analyze_graph
    from onnxfold.analysis.groups import SHAPE
    from onnxfold.api import as_model
    from onnxfold.passes import CanonicalizePass
    from onnxfold.pipeline.manager import PassContext

    model = as_model(path).copy()
    CanonicalizePass().run(model, PassContext())
    graph = model.graph
    tensors = graph.tensors()
    groups = analyze_graph(graph)
    json.dumps([g.to_dict() for g in groups])  # analyze --json: plain JSON or a recorded error
    sizes = {
        name: int(np.prod(t.shape))
        for name, t in tensors.items()
        if isinstance(t, gs.Constant) and np.dtype(t.dtype).kind == "f"
    }
    foldable = {m.tensor for g in groups if g.foldable for m in g.members if m.role != SHAPE}
    total = sum(sizes.values())
    covered = sum(n for name, n in sizes.items() if name in foldable)
    names = {n.name for n in graph.nodes if n.name} | set(tensors)
    codes: Counter[str] = Counter()
    messages: Counter[tuple[str, str]] = Counter()
    for g in groups:  # each group counts once per code and once per message
        codes.update(list(dict.fromkeys(r.code for r in g.blocked)))  # keys in order: ties stay stable
        messages.update(list(dict.fromkeys((r.code, shorten_reason(r.message, names)) for r in g.blocked)))
    return {
        "groups": len(groups),
        "foldable": sum(g.foldable for g in groups),
        "blocked": sum(not g.foldable for g in groups),
        "foldable_channels": sum(g.size for g in groups if g.foldable),
        "channels": sum(g.size for g in groups),
        "foldable_param_fraction": covered / total if total else 0.0,
        "blocked_reasons": codes.most_common(),
        "blocked_messages": [(code, text, n) for (code, text), n in messages.most_common()],
    }


def check_output(original: Path, folded: Path, seed: int = 0) -> dict[str, Any]:
    """Checker (full) on the folded file, and an onnxruntime run of both with the same random inputs."""
    import onnx

    from onnxfold.runtime.inputs import make_inputs
    from onnxfold.runtime.session import make_session

    out: dict[str, Any] = {"checker": False, "checker_error": None, "runs": False, "run_error": None}
    try:
        onnx.checker.check_model(str(folded), full_check=True)
        out["checker"] = True
    except Exception as exc:  # report, do not raise
        out["checker_error"] = one_line(exc, 300, with_type=True)
    try:
        ref = make_session(original, providers=["CPUExecutionProvider"])
        cand = make_session(folded, providers=["CPUExecutionProvider"])
        feed = make_inputs(ref, batch=2, seed=seed)
        ref_names = [o.name for o in ref.get_outputs()]
        cand_names = [o.name for o in cand.get_outputs()]
        ref_shapes = [a.shape for a in ref.run(None, feed)]
        cand_shapes = [a.shape for a in cand.run(ref_names, feed)]
        if ref_names != cand_names:
            out["run_error"] = f"output names {cand_names} != {ref_names}"
        elif ref_shapes != cand_shapes:
            out["run_error"] = f"output shapes {cand_shapes} != {ref_shapes}"
        else:
            out["runs"] = True
        out["output_shapes"] = [list(s) for s in cand_shapes]
    except Exception as exc:
        out["run_error"] = one_line(exc, 300, with_type=True)
    return out


def coverage_row(
    name: str, style: str, out_dir: Path, sparsity: float, force: bool = False, small: bool = False
) -> dict[str, Any]:
    """One (model, exporter) row; every failure is caught and reported in ``error`` with its stage."""
    from onnxfold.api import fold, stats_of
    from onnxfold.ir.model import load_model

    row: dict[str, Any] = {
        "model": name,
        "exporter": style,
        "sparsity": sparsity,
        "error": None,
        "stage": None,
    }
    stage = "export"
    try:
        start = time.perf_counter()
        path = export_cached(name, style, out_dir / "exports", force, small)
        row["export_path"] = str(path)
        row["export_seconds"] = time.perf_counter() - start
        stage = "load"
        stats = stats_of(load_model(path))
        row["nodes"], row["params"] = stats.node_count, stats.params
        stage = "analyze"
        row.update(analyze_coverage(path))
        stage = "fold"
        folded = out_dir / "folded" / path.relative_to(out_dir / "exports")
        folded.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        # plain folding + ar: coverage is what can fold; auto's measured choice is judged elsewhere
        _, report = fold(path, sparsity, folded, validate=True, method="fold")
        row["fold_seconds"] = time.perf_counter() - start
        stage = "report"
        json.dumps(report.to_dict())  # --report: plain JSON or a recorded error
        row["folded_path"] = str(folded)
        row["params_after"] = report.after.params
        row["param_sparsity"] = report.param_sparsity
        row["groups_folded"] = sum(p.status == "folded" for p in report.plans)
        row["cosine"] = report.validation.min_cosine if report.validation is not None else None
        stage = "check"
        row.update(check_output(path, folded))
    except Exception as exc:
        row["error"] = one_line(exc, 300, with_type=True)
        row["stage"] = stage
        row["traceback"] = traceback.format_exc(limit=8)
    return row


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def format_coverage(rows: Sequence[dict[str, Any]], reasons: int = 2, width: int = 70) -> str:
    """The coverage table, then the top blocking reason codes (each with its most frequent message) and
    errors per row."""
    headers = [
        "model",
        "exporter",
        "nodes",
        "params",
        "groups",
        "foldable",
        "blocked",
        "params foldable",
        "channels foldable",
        "sparsity",
        "fold s",
        "cosine",
        "checker",
        "ort",
    ]
    table = []
    for r in rows:
        if r.get("error") and "groups" not in r:
            table.append(
                [r["model"], r["exporter"], r.get("nodes", "-"), r.get("params", "-")]
                + ["-"] * 8
                + ["-", f"{r['stage']} failed"]
            )
            continue
        table.append(
            [
                r["model"],
                r["exporter"],
                r.get("nodes", "-"),
                r.get("params", "-"),
                r.get("groups", "-"),
                r.get("foldable", "-"),
                r.get("blocked", "-"),
                _fmt(r.get("foldable_param_fraction"), ".1%"),
                _fmt(r["foldable_channels"] / r["channels"] if r.get("channels") else None, ".1%"),
                _fmt(r.get("param_sparsity"), ".1%"),
                _fmt(r.get("fold_seconds"), ".2f"),
                _fmt(r.get("cosine"), ".4f"),
                "ok" if r.get("checker") else ("FAIL" if "checker" in r else "-"),
                "ok" if r.get("runs") else ("FAIL" if "runs" in r else f"{r.get('stage')} failed"),
            ]
        )
    parts = [format_table(headers, table, align="llrrrrrrrrrrll")]
    notes = []
    for r in rows:
        lines = []
        if r.get("error"):
            lines.append(f"  error ({r['stage']}): {r['error']}")
        for key in ("checker_error", "run_error"):
            if r.get(key):
                lines.append(f"  {key.replace('_', ' ')}: {r[key]}")
        for code, count in r.get("blocked_reasons", [])[:reasons]:
            example = next((text for c, text, _ in r.get("blocked_messages", []) if c == code), "")
            line = f"{code}: {example}" if example else code
            short = line if len(line) <= width else line[: width - 1] + "…"
            lines.append(f"  {count:3d}× {short}")
        if lines:
            notes.append(f"{r['model']} / {r['exporter']}:\n" + "\n".join(lines))
    if notes:
        parts.append("\ntop blocking reasons (groups) and errors:\n" + "\n".join(notes))
    return "\n".join(parts)


def bench_coverage(
    out_dir: str | Path,
    styles: Sequence[str] = DEFAULT_STYLES,
    sparsity: float = 0.3,
    models: Sequence[str] | None = None,
    force: bool = False,
    small: bool = False,
    verbose: bool = True,
) -> list[dict]:
    """Export, analyse and fold every public model with every exporter; print a table, write coverage.json.
    The onnxruntime-fused models (:data:`onnxfold.models.ort_fused.ORT_FUSED_MODELS`) have one builder each
    (onnxruntime's optimizer, onnx.helper) and one row, whatever ``styles`` says.

    ``small`` uses the reduced variants the tests use (``PUBLIC_MODELS_SMALL``)."""
    from onnxfold.models.ort_fused import ORT_FUSED_MODELS
    from onnxfold.models.public import PUBLIC_MODELS

    known = [*PUBLIC_MODELS, *ORT_FUSED_MODELS]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in progress_bar(models or known, "bench coverage", unit="model"):
        if name not in known:
            raise ValueError(f"unknown public model {name!r}; known: {sorted(known)}")
        for style in [ORT_FUSED_MODELS[name]] if name in ORT_FUSED_MODELS else styles:
            row = coverage_row(name, style, out, sparsity, force, small)
            rows.append(row)
            if verbose:
                state = row["error"] or f"{row.get('foldable')}/{row.get('groups')} groups foldable"
                print(f"{name} / {style}: {state}", flush=True)
    (out / f"coverage{'-small' if small else ''}.json").write_text(
        json.dumps(rows, indent=2, default=str) + "\n"
    )
    if verbose:
        print(format_coverage(rows))
        print(f"\nJSON: {out / ('coverage-small.json' if small else 'coverage.json')}")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="onnxfold bench coverage", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default="coverage", help="folder for exports, folded models and coverage.json"
    )
    parser.add_argument("--styles", default=",".join(DEFAULT_STYLES), help="comma-separated export styles")
    parser.add_argument("--sparsity", type=float, default=0.3)
    parser.add_argument("--models", default="", help="comma-separated subset of the public models")
    parser.add_argument("--force", action="store_true", help="re-export even if a cached export exists")
    parser.add_argument("--small", action="store_true", help="the reduced variants the tests use")
    args = parser.parse_args(argv)
    models = [m for m in args.models.split(",") if m] or None
    rows = bench_coverage(
        args.out, [s for s in args.styles.split(",") if s], args.sparsity, models, args.force, args.small
    )
    return 1 if any(r.get("error") or not r.get("checker") or not r.get("runs") for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
