"""Command line: ``onnxfold {demo,analyze,fold,run,passes,bench}``. A thin shell over :mod:`onnxfold.api`;
the parser is built in :mod:`onnxfold.cli.parser`. Every expected failure (bad file, bad option,
unwritable output) prints one line ``onnxfold: error: …`` on stderr and exits with status 2; nothing
is written in that case."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from onnxfold.cli.checks import (
    announce_search,
    check_external_data,
    check_paths,
    check_targets,
    data_free_line,
    peek,
    weightless,
)
from onnxfold.cli.parser import (
    DELEGATED_BENCHES,
    EXIT_INTERNAL,
    EXIT_UNCHANGED,
    EXIT_USAGE,
    EXIT_WARNED,
    build_parser,
    fold_flags,
    global_parser,
)
from onnxfold.cli.samples import input_values, read_inputs
from onnxfold.errors import EXPECTED_ERRORS, CliError, from_runtime, one_line


def _external(choice: str) -> bool | None:
    return {"auto": None, "always": True, "never": False}[choice]


def _finish(report, args: argparse.Namespace) -> int:
    """Print and write the report; :data:`EXIT_UNCHANGED` where ``--fail-if-unchanged`` asks and the
    written model removes no parameters, MACs or weight bytes, :data:`EXIT_WARNED` where
    ``--fail-if-warned`` asks and validation warns about the task, else 0."""
    print(report.format())
    if args.report:
        report.write_json(args.report)
        print(f"report written to {args.report}")
    print(f"wrote {args.output}")
    before, after = report.before, report.after
    removed = after.params < before.params or (after.macs or 0) < (before.macs or 0)
    removed = removed or after.weight_bytes < before.weight_bytes  # a quantized copy: smaller, as many
    if getattr(args, "fail_if_unchanged", False) and not removed:
        print(f"nothing removed: exit status {EXIT_UNCHANGED} (--fail-if-unchanged)")
        return EXIT_UNCHANGED
    why = report.warned_reason()
    if why and getattr(args, "fail_if_warned", False):
        print(f"{why}: exit status {EXIT_WARNED} (--fail-if-warned)")
        return EXIT_WARNED
    if why:  # a script reading the status alone passed russtress at 50% of words (trial 172)
        print(f"{why}; written as asked, exit status 0 (--fail-if-warned exits {EXIT_WARNED} on it)")
    return 0


def _as_given(args: argparse.Namespace, why: str) -> int:
    """Write the input unchanged (a temporary copy renamed into place) where nothing can fold: ``why``."""
    import os
    import shutil

    src, out = Path(args.model), Path(args.output)
    if out.resolve() != src.resolve():
        tmp = out.with_name(f".{out.name}.onnxfold-tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, out)
    print(f"nothing folded: {why}; wrote {out}, the model as given")
    if args.report:
        Path(args.report).write_text(
            json.dumps({"model": str(src), "output": str(out), "nothing_folded": why})
        )
    return EXIT_UNCHANGED if getattr(args, "fail_if_unchanged", False) else 0


def cmd_fold(args: argparse.Namespace) -> int:
    from onnxfold.api import fold
    from onnxfold.cli.refused import with_recipe
    from onnxfold.search.refusals import SearchRefused

    check_paths(args)
    check_targets(args)
    shapes, inputs = read_inputs(args)  # bad samples fail first, whatever the model holds
    peeked = peek(args.model)  # read once for the checks below, dropped before the fold
    # before the graph is built: a tree ensemble's attributes took 16 GB
    if why := weightless(args.model, peeked):
        return _as_given(args, why)
    if args.calibration and not Path(args.calibration).exists():
        raise CliError(f"calibration data {args.calibration}: no such file or folder")
    check_external_data(args.model, peeked)
    del peeked
    announce_search(args, inputs is not None)
    try:
        _, report = fold(
            args.model,
            output=args.output,
            validate=not args.no_validate,
            check=args.check,
            external_data=_external(args.external_data),
            input_shapes=shapes,
            inputs=inputs,
            overwrite=args.overwrite,
            dequantize=args.dequantize,
            requantize=_requantize_arg(args),
            input_values=input_values(args),
            **{flag.keyword: getattr(args, flag.keyword) for flag in fold_flags()},
        )
    except SearchRefused as exc:  # what --force would write, saved for --recipe
        raise CliError(with_recipe(exc, args.output)) from None
    return _finish(report, args)


def _requantize_arg(args: argparse.Namespace) -> str:
    """``--requantize`` as the API takes it: "default" with ``--dequantize`` alone, "" for none."""
    if args.requantize is None:
        return "default" if args.dequantize else ""
    return "" if args.requantize == "none" else args.requantize


def cmd_run(args: argparse.Namespace) -> int:
    from onnxfold.api import run_pipeline
    from onnxfold.passes import REGISTRY
    from onnxfold.pipeline.manager import load_pipeline_file, parse_pipeline
    from onnxfold.runtime.session import measuring_threads

    if args.dequantize:  # fold's flag; a trial read "unrecognized arguments: --dequantize"
        raise CliError(
            'run takes --dequantize as a pass: put it first in the pipeline, e.g. --pipeline "dequantize,'
            'canonicalize,fold:sparsity=0.3,cleanup,validate"'
        )
    load = parse_pipeline if args.pipeline else load_pipeline_file
    passes = load(args.pipeline or args.pipeline_file, REGISTRY)
    for p in passes:  # --threads for a pass that measures, where its own threads= is left at 0
        if p.opts.get("threads") == 0:
            p.opts["threads"] = args.threads
    check_paths(args)
    shapes, inputs = read_inputs(args)
    with measuring_threads(args.threads):  # validation and calibration runs too (a trial's --threads)
        _, report = run_pipeline(
            args.model,
            passes,
            args.output,
            check=args.check,
            input_shapes=shapes,
            inputs=inputs,
            external_data=_external(args.external_data),
            overwrite=args.overwrite,
            input_values=input_values(args),
        )
    return _finish(report, args)


def _given(args: argparse.Namespace):
    """The model ``analyze`` reads: as given, or with ``--dequantize`` its INT8 weights made float32
    (the ``dequantize`` pass, as ``fold --dequantize`` folds it: analyze listed no foldable group in
    a dynamic INT8 lemmatizer where the fold folded one)."""
    from onnxfold.api import as_model

    model = as_model(args.model)
    if getattr(args, "dequantize", False):
        from onnxfold.passes import DequantizePass
        from onnxfold.pipeline.manager import PassContext

        DequantizePass().run(model, PassContext())  # no copy of the weights: nothing compares with it
    return model


def cmd_sensitivity(args: argparse.Namespace) -> None:
    """``onnxfold analyze MODEL --sensitivity``: the per-group sensitivity table (and plot, JSON)."""
    from onnxfold.folding import samples as budgets
    from onnxfold.ir.batch_view import add_batch_axis, unbatched, with_batch_axis
    from onnxfold.passes import CanonicalizePass, FoldPass, RepairPass
    from onnxfold.passes.search import parse_levels, prepared
    from onnxfold.pipeline.manager import PassContext
    from onnxfold.runtime.batch_axes import declared_layout
    from onnxfold.runtime.random_values import set_input_values
    from onnxfold.runtime.session import measuring_threads
    from onnxfold.search import format_sensitivity, plot_sensitivity, sensitivity
    from onnxfold.search.blind import blind_advice, blind_reason
    from onnxfold.search.sensitivity import plot_ready

    if not Path(args.model).is_file():
        raise CliError(f"{args.model}: no such file")
    if args.plot:
        plot_ready(args.plot)
    shapes, inputs = read_inputs(args)
    if args.round_to < 1:
        raise CliError("--round-to must be at least 1")
    original = _given(args)
    set_input_values(original, input_values(args))
    if unbatched(original):  # measured one whole input per sample, as the search measures it
        shapes = with_batch_axis(shapes, original)
        add_batch_axis(original)
    model = original.copy()
    ctx = PassContext(original=original, input_shapes=shapes or {}, inputs=inputs)
    CanonicalizePass().run(model, ctx)
    # measured as the search measures: the same method, statistics and (without --inputs) proxy
    fold = FoldPass(sparsity=0.0, method=args.method, round_to=args.round_to, threads=args.threads)
    repair = RepairPass(mode="ar")  # fold's default
    # as a search measures (table-cls: --threads was refused), a time-major model's samples on its batch axis
    with measuring_threads(args.threads), declared_layout(original):
        evaluator, _ = prepared(model, ctx, fold, [fold, repair], args.metric)
        estimator = evaluator.within(budgets.SENSITIVITY_MACS)  # a heavy model's first samples, as searched
        cut = f" (measured on the first {estimator.samples}, within its compute budget per measurement)"
        measured_on = evaluator.describe() + (cut if estimator is not evaluator else "")
        curves = sensitivity(
            model,
            estimator,
            parse_levels(args.levels),
            method=fold.method,
            round_to=args.round_to,
            stats=fold.moments,
            judge=fold.judge,
            shapes=ctx.input_shapes,
        )
    if args.json:
        print(
            json.dumps(
                {
                    "method": fold.method,
                    "inputs": measured_on,
                    "metrics": evaluator.metrics,
                    "round_to": args.round_to,
                    "groups": [c.to_dict() for c in curves],
                },
                indent=2,
            )
        )
    else:
        rounding = f"widths rounded to multiples of {args.round_to}" if args.round_to > 1 else "exact widths"
        shown = ", ".join(f"{k} {v}" for k, v in evaluator.metrics.items())
        m = fold.opts["method"]  # auto without statistics plans as fold: both said (khmertagger)
        how = m if fold.method == m else f"{m}, planned as {fold.method}"
        table = format_sensitivity(curves, f"method {how}; {measured_on}; {rounding}; metric {shown}")
        print(table if curves else table.splitlines()[0])  # no empty table's header (trial 137)
        if not curves:  # an empty table said nothing of why (chars2vec: its weights in Loop bodies)
            from onnxfold.analysis.subgraphs import subgraph_note

            hint = subgraph_note(model.graph)
            print(
                "no group can fold, so none was measured"
                + (f": {hint}" if hint else " (onnxfold analyze shows why)")
            )
        blind = blind_reason(curves, evaluator.kind())
        if blind:  # silero-vad's proxy: every group at every level 1.0000, and a search would fold them all
            print(blind_advice(blind, None, evaluator.proxy))
    if args.plot:
        plot_sensitivity(curves, args.plot)
        if not args.json:
            print(f"plot written to {args.plot}")


def cmd_analyze(args: argparse.Namespace) -> None:
    from onnxfold.api import analyze_share, format_groups
    from onnxfold.report.stats import human_count

    if why := weightless(args.model):  # before the graph is built (a tree ensemble: 14 GB for nothing)
        print("[]" if args.json else f"0 channel groups: {why}")
        return
    if args.sensitivity:
        cmd_sensitivity(args)
        return
    model = _given(args)
    groups, held, total = analyze_share(model)
    if args.json:
        print(json.dumps([g.to_dict() for g in groups], indent=2))
    else:
        print(format_groups(groups, verbose=args.members))
    if total and not args.json and not any(g.foldable for g in groups):  # "usually far less" than 0.0%
        print(
            f"no group can fold: fold removes none of the {human_count(total)} parameters (the reasons above)"
        )
    elif total and not args.json:
        print(
            f"every foldable group folded at 0.7 (the search's cap) removes {held / total:.1%} of the "
            f"{human_count(total)} parameters, a bound: what keeps a trained model's task is usually far "
            "less, and the search finds it; what no foldable group reaches stays (blocked groups, an "
            "embedding's vocabulary rows, norms' scales outside a group)"
        )
    if any(g.foldable for g in groups) and not args.json:
        print(data_free_line(model))
    from onnxfold.analysis.quantized import quantized_hint, quantized_ops
    from onnxfold.analysis.subgraphs import subgraph_note

    graph = model.graph
    counts = quantized_ops(graph) if not any(g.foldable for g in groups) else {}
    # with --json the hints go to stderr, so that stdout stays one JSON document (an already
    # quantized model printed [] and nothing else)
    for hint in (subgraph_note(graph, total), quantized_hint(counts) if counts else ""):
        if hint:
            print(hint, file=sys.stderr if args.json else sys.stdout)


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


def _split_globals(argv: list[str]) -> tuple[list[str], list[str]]:
    """The leading options (before the command) and the rest."""
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 1
    return argv[:i], argv[i:]


def _run_delegated(name: str, argv: list[str]) -> int:
    """``bench speed``, ``coverage``, ``scale``, ``clustering``, ``real`` and ``llm`` own their arguments:
    hand argv over."""
    import importlib

    module = name if name in ("clustering", "scale", "speed", "real", "llm") else "coverage"
    return importlib.import_module(f"onnxfold.bench.{module}").main(argv)


class _ToolFormatter(logging.Formatter):
    """``onnxfold: warning: ...``, as the tool's own errors read (a trial found 'WARNING
    onnxfold.runtime.ragged: ...' out of place); with -v the module too, for debugging."""

    def __init__(self, verbose: bool) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s" if verbose else None)
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        if self.verbose:
            return super().format(record)
        return f"onnxfold: {record.levelname.lower()}: {record.getMessage()}"


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(_ToolFormatter(verbose))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler])


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``); the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    leading, rest = _split_globals(argv)
    help_asked = any(a in ("-h", "--help", "--version") for a in leading)
    if len(rest) >= 2 and rest[0] == "bench" and rest[1] in DELEGATED_BENCHES and not help_asked:
        opts = global_parser().parse_args(leading)
        if opts.verbose or opts.debug:
            _setup_logging(opts.verbose)
        return _reported(lambda: _run_delegated(rest[1], rest[2:]), opts.debug, expected=(ImportError,))
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    _setup_logging(args.verbose)

    def command() -> int | None:
        return COMMANDS[args.command](args)

    return _reported(command, args.debug)


#: the longest error line printed: the tool's own messages are never cut (an onnxruntime one may be)
ERROR_CHARS = 4000


def _reported(call, debug: bool, expected: tuple[type[BaseException], ...] = ()) -> int:
    """``call()``'s exit status (0 for None), any error it raises one line on stderr (raised with
    ``--debug``); :data:`EXPECTED_ERRORS` and ``expected`` exit 2. The benches run apart from the
    parser share it: ``bench speed --files`` on a tagger once ended in onnxruntime's traceback."""
    try:
        return call() or 0
    except (*EXPECTED_ERRORS, *expected) as exc:
        if debug:
            raise
        # whole, as one line: a missed budget's message ended in "nothing written (--force writes the…"
        print(f"onnxfold: error: {one_line(exc, ERROR_CHARS)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("onnxfold: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: still one line unless --debug
        if debug:
            raise
        if from_runtime(exc):
            print(f"onnxfold: error: onnxruntime cannot run the model: {one_line(exc)}", file=sys.stderr)
            return EXIT_USAGE
        print(
            f"onnxfold: internal error: {type(exc).__name__}: {one_line(exc)} (rerun with --debug)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


__all__ = ["COMMANDS", "CliError", "build_parser", "main"]


if __name__ == "__main__":
    sys.exit(main())
