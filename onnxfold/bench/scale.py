"""``onnxfold bench scale``: fold a LLaMA-7B-shaped model within one machine's memory.

Builds (once) a LLaMA-shaped decoder with random fp16 weights in external data
(:mod:`onnxfold.models.llama_onnx`; 32 layers, hidden 4096, MLP 11008, 32 heads: about 13.5 GB),
then folds it with the paper's recipe (``models/recipes/llama-7b.yaml``) in a child process,
exactly as a user would run ``onnxfold fold``, and reports wall time and peak resident memory of
each step (``wait4`` rusage of the child), file sizes and what was folded. The output is checked
by ``onnx.checker`` from its path and by loading it back lazily (every external slice inside its
data file, of the size its shape needs).

Random weights have no structure to find, so this measures cost, not quality. ``--oracle-layers N``
adds an exact check at full width: the builder's duplicate twin of an N-layer model (every head and
MLP neuron doubled: 64 heads, MLP 22016) is folded at sparsity 0.5 through the same large-model path
(spilling, Ward-sized groups, streamed save) and must give the compact N-layer model's logits in
onnxruntime.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

from onnxfold.errors import one_line
from onnxfold.report.stats import format_table


def run_measured(cmd: list[str], log_path: Path) -> dict:
    """Run ``cmd``; wall seconds, peak RSS (MiB) of the child and its exit status."""
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "seconds": time.perf_counter() - start,
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "exit": proc.returncode,
        "log": str(log_path),
    }


def file_bytes(path: Path) -> int:
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def default_recipe() -> Path:
    return Path(str(resources.files("onnxfold.models") / "recipes" / "llama-7b.yaml"))


def bench_scale(
    out_dir: str | os.PathLike,
    layers: int = 32,
    hidden: int = 4096,
    intermediate: int = 11008,
    heads: int = 32,
    vocab: int = 32000,
    recipe: str | os.PathLike | None = None,
    rebuild: bool = False,
    keep: bool = False,
    extra: list[str] | None = None,
    model: str | os.PathLike | None = None,
    oracle_layers: int = 0,
) -> dict:
    """Build (unless ``model`` names an existing one, or the folder holds a build of the same
    configuration) and fold; returns the measurements (also written to ``out_dir/scale.json``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    src, folded = Path(model) if model else out / "llama.onnx", out / "llama-folded.onnx"
    config = dict(layers=layers, hidden=hidden, intermediate=intermediate, heads=heads, vocab=vocab)
    config_file = out / "llama.json"
    results: dict = {"config": config if model is None else {"model": str(model)}}
    if model is None and (
        rebuild
        or not src.exists()
        or not config_file.exists()
        or json.loads(config_file.read_text()) != config
    ):
        code = (
            "from onnxfold.models.llama_onnx import build_llama_onnx; "
            f"build_llama_onnx({str(src)!r}, layers={layers}, hidden={hidden}, intermediate={intermediate}, "
            f"heads={heads}, vocab={vocab}, dtype='float16', seed=0)"
        )
        results["build"] = run_measured([sys.executable, "-c", code], out / "build.log")
        if results["build"]["exit"] != 0:
            raise RuntimeError(f"building the model failed: see {out / 'build.log'}")
        config_file.write_text(json.dumps(config))
    results["input_bytes"] = file_bytes(src)
    recipe = Path(recipe) if recipe else default_recipe()
    for stale in (folded, folded.with_name(folded.name + ".data")):
        stale.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "onnxfold",
        "fold",
        str(src),
        "-o",
        str(folded),
        "--recipe",
        str(recipe),
        "--no-validate",
        "--external-data",
        "always",
        "--report",
        str(out / "report.json"),
        *(extra or []),
    ]
    results["fold"] = run_measured(cmd, out / "fold.log")
    if results["fold"]["exit"] != 0:
        raise RuntimeError(f"the fold failed: see {out / 'fold.log'}")
    results["output_bytes"] = file_bytes(folded)
    results["check"] = check_output(folded)
    report = json.loads((out / "report.json").read_text())
    results["params_before"] = report["before"]["params"]
    results["params_after"] = report["after"]["params"]
    results["passes"] = {p["name"]: p["seconds"] for p in report["passes"]}
    groups = report["groups"]
    results["groups"] = {
        kind: {
            "folded": sum(g["status"] == "folded" and g["kind"] == kind for g in groups),
            "total": sum(g["kind"] == kind for g in groups),
        }
        for kind in ("heads", "channels")
    }
    widths: dict[str, list[int]] = {}
    for g in groups:
        if g["status"] == "folded":
            widths.setdefault(f"{g['kind']} {g['channels_before']} -> {g['channels_after']}", []).append(
                g["layer"]
            )
    results["widths"] = widths
    if oracle_layers:
        results["oracle"] = duplicate_oracle(out, oracle_layers, hidden, intermediate, heads, vocab)
    (out / "scale.json").write_text(json.dumps(results, indent=2) + "\n")
    if not keep:
        for path in (folded, folded.with_name(folded.name + ".data")):
            path.unlink(missing_ok=True)
    return results


def duplicate_oracle(out: Path, layers: int, hidden: int, intermediate: int, heads: int, vocab: int) -> dict:
    """Fold the duplicate twin of an ``layers``-layer model at 0.5 (repair none) and compare its logits with
    the compact model's in onnxruntime: exact up to float rounding when every rewrite is right."""
    import numpy as np

    from onnxfold.models.llama_onnx import build_llama_onnx
    from onnxfold.runtime.session import make_session

    folder = out / "oracle"
    folder.mkdir(exist_ok=True)
    dims = dict(
        layers=layers, hidden=hidden, intermediate=intermediate, heads=heads, vocab=vocab, dtype="float16"
    )
    compact = build_llama_onnx(folder / "compact.onnx", **dims, seed=1)
    twin = build_llama_onnx(folder / "twin.onnx", **dims, seed=1, duplicate=True)
    folded = folder / "folded.onnx"
    cmd = [
        sys.executable,
        "-m",
        "onnxfold",
        "fold",
        str(twin),
        "-o",
        str(folded),
        "--sparsity",
        "0.5",
        "--repair",
        "none",
        "--no-validate",
        "--external-data",
        "always",
        "--report",
        str(folder / "report.json"),
    ]
    result = run_measured(cmd, folder / "fold.log")
    if result["exit"] != 0:
        raise RuntimeError(f"the oracle fold failed: see {folder / 'fold.log'}")
    ids = np.random.default_rng(0).integers(0, vocab, (1, 16)).astype(np.int64)
    ref = make_session(str(compact), optimize=False).run(None, {"input_ids": ids})[0].astype(np.float64)
    got = make_session(str(folded), optimize=False).run(None, {"input_ids": ids})[0].astype(np.float64)
    result.update(
        twin_bytes=file_bytes(twin),
        max_abs_error=float(np.abs(got - ref).max()),
        max_abs_logit=float(np.abs(ref).max()),
        cosine=float((got * ref).sum() / (np.linalg.norm(got) * np.linalg.norm(ref))),
    )
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    return result


def check_output(path: Path) -> dict:
    """onnx.checker from the path (large models are checked without loading their data) and a lazy load."""
    import onnx

    from onnxfold.ir.model import load_model

    start = time.perf_counter()
    onnx.checker.check_model(str(path), full_check=True)
    model = load_model(path)  # checks every external slice against its data file and shape
    return {
        "checker": True,
        "lazy_load": True,
        "nodes": len(model.graph.nodes),
        "seconds": time.perf_counter() - start,
    }


def format_results(r: dict) -> str:
    gib = 1024**3
    rows = []
    if "build" in r:
        rows.append(
            [
                "build (random fp16)",
                f"{r['build']['seconds']:.0f} s",
                f"{r['build']['peak_rss_mib']:.0f} MiB",
                f"{r['input_bytes'] / gib:.2f} GiB",
            ]
        )
    rows.append(
        [
            "fold (recipe)",
            f"{r['fold']['seconds']:.0f} s",
            f"{r['fold']['peak_rss_mib']:.0f} MiB",
            f"{r['output_bytes'] / gib:.2f} GiB",
        ]
    )
    text = format_table(["step", "wall", "peak RSS", "file"], rows, align="lrrr")
    text += (
        f"\nparameters {r['params_before'] / 1e9:.2f} B -> {r['params_after'] / 1e9:.2f} B "
        f"({1 - r['params_after'] / r['params_before']:.1%} removed); "
        f"heads groups folded {r['groups']['heads']['folded']}/{r['groups']['heads']['total']}, "
        f"channel groups {r['groups']['channels']['folded']}/{r['groups']['channels']['total']}"
    )
    text += "\npasses: " + ", ".join(f"{k} {v:.0f} s" for k, v in r["passes"].items())
    text += f"\noutput: onnx.checker and lazy load passed in {r['check']['seconds']:.0f} s"
    text += "\nfolded widths: " + "; ".join(
        f"{k} (layers {min(v)}-{max(v)})" for k, v in r.get("widths", {}).items()
    )
    if "oracle" in r:
        o = r["oracle"]
        text += (
            f"\nduplicate oracle ({o['twin_bytes'] / 1024**3:.2f} GiB twin folded at 0.5 in {o['seconds']:.0f} s, "
            f"{o['peak_rss_mib']:.0f} MiB): max |logit error| {o['max_abs_error']:.3g} of "
            f"{o['max_abs_logit']:.3g}, cosine {o['cosine']:.6f}"
        )
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="onnxfold bench scale", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", default="bench-scale", help="folder for the model, the folded model and scale.json"
    )
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--intermediate", type=int, default=11008)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--recipe", help="recipe (default: the paper's LLaMA-7B recipe)")
    parser.add_argument("--rebuild", action="store_true", help="build the model again even if it exists")
    parser.add_argument("--keep", action="store_true", help="keep the folded model")
    parser.add_argument("--model", help="fold this existing model instead of building one")
    parser.add_argument(
        "--oracle-layers",
        type=int,
        default=0,
        help="also fold the duplicate twin of a model with this many layers at full width and "
        "compare its logits with the compact model's (exact check)",
    )
    args = parser.parse_args(argv)
    try:
        results = bench_scale(
            args.out,
            args.layers,
            args.hidden,
            args.intermediate,
            args.heads,
            args.vocab,
            args.recipe,
            args.rebuild,
            args.keep,
            model=args.model,
            oracle_layers=args.oracle_layers,
        )
    except (RuntimeError, OSError, ValueError) as exc:
        print(f"onnxfold: error: {one_line(exc)}", file=sys.stderr)
        return 1
    print(format_results(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
