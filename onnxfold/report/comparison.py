"""The before/after table of a run: parameters, MACs, bytes, file size and nodes, with ratios, and
the notes that qualify them (dims taken as 1, unknown shapes, Loop bodies counted once)."""

from __future__ import annotations

from onnxfold.report.stats import ModelStats, symbolic_summary
from onnxfold.report.table import count_change, format_table, human_bytes, human_count


def ratio_cells(before: float | None, after: float | None) -> tuple[str, str]:
    """The ratio and change columns of one row: ``("0.500", "-50.0%")``, dashes without both values."""
    if before is None or after is None or before == 0:
        return "-", "-"
    r = after / before
    change = 100.0 * (r - 1.0)
    # a change under 0.1% keeps two significant digits: minimol's 0.05% read "-0.1%"
    return f"{r:.3f}", f"{change:+.2g}%" if 0 < abs(change) < 0.1 else f"{change:+.1f}%"


def params_growth(
    before: ModelStats, after: ModelStats, limit: int = 6, folded: bool = True, quantized: bool | str = False
) -> str | None:
    """Why ``after`` holds more parameters than ``before``, naming the tensors that are new or larger;
    None when it holds no more. ``folded``: some group was folded (else no copy was edited: LEADER's
    grew by 8 in a fold that folded nothing, from shape arithmetic made constant); ``quantized``: a
    quantize pass ran, whose scales and zero points are the growth (a trial read "Nothing was folded:
    these are values the input computes at run time" beside a quantized model's 103,500 of them); its
    mode ("static", "dynamic") where known: a static one read "in dynamic mode ... these count" (trial 161)."""
    if after.params <= before.params:
        return None
    grown = [
        (name, n, before.tensor_params.get(name, 0))
        for name, n in after.tensor_params.items()
        if n > before.tensor_params.get(name, 0)
    ]
    grown.sort(key=lambda g: (-(g[1] - g[2]), g[0]))
    listed = ", ".join(
        f"{name} ({human_count(n)}{'' if old == 0 else f', was {human_count(old)}'})"
        for name, n, old in grown[:limit]
    )
    more = f" and {len(grown) - limit} more" if len(grown) > limit else ""
    text = (
        f"the output holds {after.params - before.params} more parameters than the input "
        f"({count_change(before.params, after.params)})"
    )
    if not grown:
        return text + "."
    text += f": tensors it stores that the input has not, or has smaller: {listed}{more}."
    if quantized == "static" and after.weight_bytes < before.weight_bytes:
        text += (
            " The quantize pass's pre-processing (onnxruntime's quant_pre_process) can store values the "
            "input computes at run time as tensors: those named above; the weight bytes show the 8-bit saving."
        )
    elif quantized and after.weight_bytes < before.weight_bytes:
        text += (
            " The quantize pass stores each weight as 8-bit integers (names ending in _quantized) beside "
            "its scales and zero points; in dynamic mode (ConvInteger, MatMulInteger) these count as parameters; "
            "the weight bytes show the saving."
        )
    elif quantized:  # swift-f0: its STFT basis, computed at run time, stored as int8 (weight bytes +195%)
        text += (
            " The weight bytes grew too: onnxruntime's pre-processing for quantization stored tensors the "
            "input computes at run time as weights, and quantized them; quantize:preprocess=false keeps "
            "them computed."
        )
    elif any("__" in name for name, _, _ in grown) and folded:
        text += (
            " A name ending in __<n> is canonicalize's own copy of a vector the input shares between "
            "nodes; the fold edited one reader's copy, so the copies no longer match and stay apart."
        )
    elif not folded:
        text += (
            " Nothing was folded: these are values the input computes at run time from constants (its "
            "shape arithmetic), which canonicalize stores, or their copies per reader."
        )
    return text


def format_comparison(before: ModelStats, after: ModelStats) -> str:
    """Before/after table: params, MACs, weight bytes, file size, node count with ratio and change %."""
    rows = []
    for label, b, a, fmt in (
        ("params", before.params, after.params, human_count),
        ("MACs", before.macs, after.macs, human_count),
        ("weight bytes", before.weight_bytes, after.weight_bytes, human_bytes),
        ("file size", before.file_size, after.file_size, human_bytes),
        ("node count", before.node_count, after.node_count, lambda n: "-" if n is None else str(n)),
    ):
        ratio, change = ratio_cells(b, a)
        rows.append([label, fmt(b), fmt(a), ratio, change])
    table = format_table(["", "before", "after", "ratio", "change"], rows, align="lrrrr")
    notes = []
    same = before.symbolic_dims == after.symbolic_dims and before.pinned == after.pinned
    for which, s in (("before", before), ("after", after)):
        if s.macs_unknown_nodes:
            notes.append(f"note ({which}): MACs of {s.macs_unknown_nodes} node(s) unknown (no shapes)")
        if s.symbolic_dims and not (same and which == "after"):
            # dims computed at run time (a Resize to another tensor's size) stay free at given shapes
            why = (
                "shape inference could not follow them from the input shapes"
                if s.pinned
                else "--input-shape sets them"
            )
            which = "before and after" if same else which
            notes.append(f"note ({which}): MACs take {symbolic_summary(s.symbolic_dims)} as 1 ({why})")
    sized = before.file_size and after.file_size and before.weight_bytes == after.weight_bytes
    if sized and abs(after.file_size / before.file_size - 1) >= 0.01:  # flashvad: "-6.1%", no weight moved
        notes.append(
            "note: the weights are unchanged: the file size moved with what the file stores beside them, "
            "the shapes of intermediate values (value_info), which are inferred again on writing"
        )
    bodies = [op for op in ("Loop", "Scan") if before.op_counts.get(op) or after.op_counts.get(op)]
    if bodies:  # chars2vec's two LSTM Loops over 16 steps counted 1.15M MACs, not about 18M
        notes.append(
            f"note: MACs count each {'/'.join(bodies)} body once; the model's grow with its iterations"
        )
    return "\n".join([table, *notes])


def stored_once_share(passes, params: int = 0) -> float:
    """The share of the input's ``params`` held more than once and stored once: a search's figure, or
    what cleanup passes stored once (without a search: ``-s 0.1`` on sudachi's ALBERT tagger read
    "parameter sparsity 34.0%", 29.6% of it its shared and tied weights)."""
    searched = max((r.stats.get("stored_once", 0.0) for r in passes if r.name == "search"), default=0.0)
    cleaned = sum(r.stats.get("params_stored_once", 0) for r in passes if r.name == "cleanup")
    return max(searched, cleaned / params if params else 0.0)


def stored_once_note(passes, before: ModelStats, after: ModelStats) -> list[str]:
    """A note, under the table, splitting the parameter reduction where part of it is weights the input
    held more than once, stored once whatever folds (:func:`stored_once_share`): sudachi-b-imitator's
    ALBERT tagger read "30.8% fewer parameters" where 29.6% were its layers' shared weights and the fold
    took 1.7% of the rest; unidic-lite-imitator's led with "-27.3%" where no channel was folded."""
    once = stored_once_share(passes, before.params)
    total = 1.0 - after.params / before.params if before.params else 0.0
    repeated = max((r.stats.get("input_repeated_params", 0) for r in passes if r.name == "fold"), default=0)
    if repeated and after.params > before.params - repeated:  # copies a fit made unequal (trial 160)
        return [
            f"warning: the result stores {after.params:,} parameters, more than the {before.params - repeated:,} "
            f"the input holds once its {repeated:,} repeated ones are stored once: merges fitted to samples "
            "gave copies of one weight values of their own; a fold without --inputs, or --method fold, "
            "folds the copies alike"
        ]
    if once < 0.001 or total < once - 1e-9:
        return []
    folded = max(0.0, 1.0 - (1.0 - total) / (1.0 - once))
    rest = f"the fold removed {folded:.1%} of the rest" if folded >= 0.0005 else "no channel was folded"
    return [
        f"note: of the {total:.1%} fewer parameters, {once:.1%} are weights the input holds more than once "
        "(shared layers, a tied embedding, a detector's anchor grid stored twice), stored once whatever "
        f"folds; {rest} (a runtime that folds constants, as onnxruntime does, may build a tied weight's "
        "transposed copy again in memory)"
    ]


def float_again_line(before: ModelStats, after: ModelStats) -> str | None:
    """A warning where a dequantized model, which no pass quantized again, is written larger than the
    INT8 file given (khmercut's segmenter: 1.1% fewer parameters, 2.23 -> 3.71 MiB, exit 0 with a
    note the trial read as passive); None otherwise."""
    if not before.file_size or not after.file_size or after.file_size <= before.file_size:
        return None
    return (
        f"warning: the file written, {human_bytes(after.file_size)}, is {after.file_size / before.file_size - 1:.0%} "
        f"larger than the INT8 model given ({human_bytes(before.file_size)}): its weights are float32 again; "
        "--requantize quantizes the fold again"
    )
