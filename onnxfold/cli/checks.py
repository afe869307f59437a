"""Checks of ``fold`` and ``run`` arguments before anything runs: paths, targets, ``--metric`` outputs,
and a model with nothing to fold at all."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx

from onnxfold.errors import CliError

#: files under this size are parsed before a search is announced, so that a bad file gets its error alone
ANNOUNCE_CHECK_BYTES = 256 << 20


def check_paths(args: argparse.Namespace) -> None:
    src, out = Path(args.model), Path(args.output)
    if not src.is_file():
        raise CliError(f"{src}: {'not a regular file' if src.exists() else 'no such file'}")
    if out.suffix.lower() != ".onnx":
        raise CliError(f"output {out} must end in .onnx")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise CliError(f"output folder {folder} does not exist")
    try:  # before the fold, not after it: an unwritable folder failed a trial's 7 s fold at its end
        tempfile.TemporaryFile(dir=folder, prefix=".onnxfold-probe-").close()
    except OSError as exc:
        raise CliError(f"cannot write to output folder {folder}: {exc.strerror or exc}") from None
    if out.exists() and out.resolve() == src.resolve() and not args.overwrite:
        raise CliError(f"output {out} is the input model; choose another path (or pass --overwrite)")
    src_data = src.with_name(src.name + ".data")
    if src_data.exists() and out.with_name(out.name + ".data").resolve() == src_data.resolve():
        raise CliError(f"output {out} would overwrite the input's data file {src_data.name}")


def check_targets(args: argparse.Namespace) -> None:
    """Targets out of range and ``--metric`` items naming outputs the model lacks, as one-line errors
    before anything runs (occular-deskew's user saw "searching ... at fidelity >= 1.5" first, and
    with -s an unknown output name was accepted without a word)."""
    from onnxfold.runtime.fidelity import check_metric_outputs, parse_metric

    if args.min_fidelity and not 0 < args.min_fidelity <= 1:
        raise CliError(f"--min-fidelity must be in (0, 1], got {args.min_fidelity:g}")
    for flag, value in (("--target-params", args.target_params), ("--target-macs", args.target_macs)):
        if value and not 0 < value < 1:
            raise CliError(f"{flag} is a fraction removed, in (0, 1), got {value:g}")
    _, named = parse_metric(getattr(args, "metric", None) or "auto")
    if named and Path(args.model).stat().st_size < ANNOUNCE_CHECK_BYTES:
        try:
            outputs = [o.name for o in onnx.load(str(args.model), load_external_data=False).graph.output]
        except Exception:
            return  # the load reports a bad file
        try:
            check_metric_outputs(named, outputs)
        except ValueError as exc:
            raise CliError(str(exc)) from None


#: tensor types a weight is stored in (floats, and the integers of a quantized weight)
_WEIGHT_TYPES = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.INT8,
    onnx.TensorProto.UINT8,
}


def peek(path: str | Path) -> onnx.ModelProto | None:
    """The model's protobuf without its external data, where the file is small enough to read before
    the model's own load (:data:`ANNOUNCE_CHECK_BYTES`); None where it is larger, not a regular file
    (a FIFO would block the read), or does not parse (the model's own load reports that)."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size >= ANNOUNCE_CHECK_BYTES:
        return None  # a large file is read once, by the load (one over 2 GiB is refused from its size)
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - the model's own load says what is wrong with it
        return None


def check_external_data(path: str | Path, model: onnx.ModelProto | None = None) -> None:
    """A one-line error, before anything is announced, where a tensor's external data file is missing
    or lies outside the model's folder (trial 203 read "searching for the smallest model ..." first);
    read from the protobuf alone (``model``, else :func:`peek`'s)."""
    from onnxfold.errors import ModelError
    from onnxfold.ir.external import resolve_external_path
    from onnxfold.ir.proto_graph import walk_graphs

    model = model if model is not None else peek(path)
    if model is None:
        return
    for graph in walk_graphs(model.graph):
        for t in graph.initializer:
            if t.data_location == onnx.TensorProto.EXTERNAL:
                where = {e.key: e.value for e in t.external_data}.get("location", "")
                try:
                    resolve_external_path(Path(path).parent, where)
                except ModelError as exc:
                    raise CliError(f"{path}: {exc}") from None


def weightless(path: str | Path, model: onnx.ModelProto | None = None) -> str:
    """Why a model cannot fold at all, read from its protobuf alone: it stores no weight tensor (no
    float or 8-bit initializer or Constant of two values or more, in any graph or subgraph), so there
    is nothing for a fold to rewrite; '' where it stores one, or where the file does not load (the
    model's own load reports that). luscinia's LightGBM stress model keeps its 48.5M tree values in
    node attributes: onnx-graphsurgeon turned them into Python lists, and analyze took 14 GB and 208 s
    to print an empty table (fold: 16.7 GB, 546 s). ``model``: the protobuf, else :func:`peek`'s."""
    from onnxfold.ir.proto_graph import walk_graphs

    model = model if model is not None else peek(path)
    if model is None:
        return ""

    def weight(t: onnx.TensorProto) -> bool:
        return t.data_type in _WEIGHT_TYPES and int(np.prod(t.dims, dtype=np.int64)) >= 2

    for graph in walk_graphs(model.graph):
        if graph.sparse_initializer or any(weight(t) for t in graph.initializer):
            return ""
        for node in graph.node:
            if node.op_type == "Constant" and any(a.name == "value" and weight(a.t) for a in node.attribute):
                return ""
    if not model.graph.node:  # an empty or truncated file parses as an empty model: the load says so
        return ""
    try:  # checked only here, where the verdict is that nothing folds: not for every model folded
        onnx.checker.check_model(model)
    except Exception:  # noqa: BLE001
        return ""
    ops = sorted(
        {n.op_type + (f" ({n.domain})" if n.domain not in ("", "ai.onnx") else "") for n in model.graph.node}
    )
    shown = ", ".join(ops[:4]) + (", …" if len(ops) > 4 else "")
    return (
        f"the model stores no weight tensor for a fold to rewrite (its {len(model.graph.node)} nodes: {shown}; "
        "their parameters are in node attributes, as a tree ensemble's, or read from inputs)"
    )


def announce_search(args: argparse.Namespace, given: bool) -> None:
    """One line before a search, which can take minutes and shows progress bars only on a
    terminal: a DNSMOS default fold sat silent in a log for 5 minutes."""
    from onnxfold.api import default_plan

    _, fidelity, limit, default = default_plan(
        args.sparsity,
        args.min_fidelity,
        args.target_params,
        args.target_macs,
        args.recipe,
        args.time_limit,
        given=given,
    )
    if not (fidelity or args.target_params or args.target_macs):
        if args.time_limit:  # trial 206's -s 0.3 --time-limit 600 ran 20 minutes, judging every group
            print(
                "note: --time-limit bounds a search (no -s, or a target); a fold at -s R runs to its end "
                "(--method fold skips auto's judging of every group, which takes the time on a heavy model)",
                flush=True,
            )
        return
    if sum(map(bool, [args.min_fidelity, args.target_params, args.target_macs])) > 1:
        return  # the search refuses two goals: its one-line error alone
    if Path(args.model).stat().st_size < ANNOUNCE_CHECK_BYTES:  # a file that does not load: its error alone
        import onnx

        try:  # an empty file parses as a ModelProto without a graph
            proto = onnx.load(str(args.model), load_external_data=False)
        except Exception:
            return
        if not proto.HasField("graph"):
            return
        from onnxfold.analysis.quantized import quantized_ops

        if not getattr(args, "dequantize", False) and quantized_ops(proto.graph):
            return  # an INT8 model is refused in seconds, with its own line (a trial read the search's first)
    if fidelity:
        goal = f"the smallest model at fidelity >= {fidelity:g}"
        if default and given:  # onnxfold.search.regression: decided once the outputs are seen
            from onnxfold.search.regression import REGRESSION_MIN_FIDELITY

            goal += f" ({REGRESSION_MIN_FIDELITY:g} if every output is a value read by r2: a regression)"
    else:
        budget = f"{args.target_params:.0%} fewer parameters" if args.target_params else ""
        budget = budget or f"{args.target_macs:.0%} fewer MACs"
        goal = f"the model closest to the original at {budget}"
    where = "the given samples" if given else "a data-free proxy"
    if not given and getattr(args, "calibration", None):  # ICLabel's user had samples on hand
        where += " (--calibration feeds --repair data only: give the samples as --inputs to search on them)"
    # "at most" read as a promise, and a 17.6-GMAC VGG16's 600 s search ran 614 s with its last candidate
    bound = f"search time limit about {limit:g} s, validation after it" if limit else "no time limit"
    why = "no --sparsity given: " if default else ""
    print(f"{why}searching for {goal} on {where} ({bound}) ...", flush=True)


def data_free_line(model) -> str:
    """What ``analyze`` says the default search without ``--inputs`` will measure on, before a user
    spends minutes on it: a fused-BN MobileNetV2's data-free search ran 263 s on random inputs to keep
    the model whole, and said why only in an ``-s`` run's note (trial 181)."""
    from onnxfold.folding.embedding_tables import token_tables
    from onnxfold.folding.samples import NO_BN, has_batchnorm
    from onnxfold.folding.synthesis_plan import deepinversion_plan

    then = "; --inputs with about 32 samples as the model is used measures its task"
    # the fold's own reasons (trial 190 read one from analyze and another from the fold)
    if has_batchnorm(model) and not (why := deepinversion_plan(model)[1]):
        return (
            "data-free (no --inputs), the search measures on DeepInversion samples synthesised from its "
            f"BatchNormalization statistics (torch needed; random inputs without it){then}"
        )
    if has_batchnorm(model):  # trial 186: analyze promised DeepInversion; the fold measured on random inputs
        return f"data-free (no --inputs), the search measures on random inputs, not DeepInversion samples: {why}{then}"
    if not token_tables(model)[1]:
        return f"data-free (no --inputs), the search measures on random token sequences over its embedding table{then}"
    return (
        f"data-free (no --inputs), the search measures on random inputs ({NO_BN}), which seldom stand for "
        f"a task: it often keeps such a model whole{then}"
    )
