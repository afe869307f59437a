"""Calibration feeds for static quantization: runs of a few samples each, cut so that onnxruntime's
calibration, which keeps every intermediate tensor of a run, fits in memory."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx


def split_rows(arrays: Mapping[str, np.ndarray], chunk: int) -> list[dict[str, np.ndarray]]:
    """Feeds of at most ``chunk`` samples each, every input cut along its sample axis and scalar inputs
    whole in each (:func:`~onnxfold.folding.samples.chunked`: swift-f0's audio [1, samples] beside
    its fmin and fmax scalars); one feed when the arrays cannot be cut into samples."""
    from onnxfold.folding.samples import chunked

    return chunked(dict(arrays), max(1, chunk))


#: the bytes of intermediate outputs one calibration run may hold: at most this, and at most a
#: quarter of the memory available
CALIBRATION_RUN_BYTES = 2 << 30


def fit_runs(src: Path, feeds: list[dict[str, np.ndarray]], method: str) -> tuple[list[dict], str]:
    """``feeds`` cut into runs whose intermediate outputs fit :data:`CALIBRATION_RUN_BYTES` (onnxruntime's
    calibration keeps every tensor of a run: 8 microscope tiles of 1024² held 24.3 GB and the process
    was killed), with a note saying so; as they are where a run fits, its size is unknown, or the
    model's batch is fixed."""
    from onnxfold.folding.samples import fixed_batch
    from onnxfold.report.stats import activation_bytes

    model = onnx.load(str(src), load_external_data=False)
    if (fixed_batch(model) or 1) > 1:
        return feeds, ""  # a fixed batch: its runs cannot be cut
    first = feeds[0] if feeds else {}
    shapes = {k: [1, *np.shape(v)[1:]] for k, v in first.items() if np.ndim(v)}
    per_sample = activation_bytes(model, shapes) if shapes else None
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):  # not Linux: the fixed budget alone
        free = 4 * CALIBRATION_RUN_BYTES
    budget = min(CALIBRATION_RUN_BYTES, free // 4)
    most = max((rows_of(f) for f in feeds), default=1)
    if not per_sample or most * per_sample <= budget:
        return feeds, ""
    rows = max(1, budget // per_sample)
    cut = [part for f in feeds for part in split_rows(f, rows)]
    if len(cut) == len(feeds):  # runs of one sample already
        return feeds, ""
    note = f"calibration runs of {rows} sample{'s' if rows > 1 else ''}, since one sample's activations take {per_sample / 2**30:.1f} GiB"
    if method != "minmax":
        note += f" ({method} calibration keeps them all: minmax keeps one run's)"
    return cut, note


def rows_of(feed: Mapping[str, np.ndarray]) -> int:
    """The samples ``feed`` holds (:func:`~onnxfold.folding.samples.sample_count`); 1 when it cannot be
    cut into samples."""
    from onnxfold.folding.samples import sample_count, splittable

    return sample_count(dict(feed)) if splittable(dict(feed)) else 1


def collapsed_outputs(src: Path, out: Path, feed: Mapping[str, np.ndarray], mode: str = "static") -> str:
    """A warning where the quantized model at ``out`` answers a constant on ``feed`` for an output
    that the float model at ``src`` varies on (fastmrz's U-Net, static INT8: 0.1098 at every pixel,
    its task lost), else ''."""
    from onnxfold.runtime.padding import numerically_zero
    from onnxfold.runtime.session import CPU, make_session

    ref, got = make_session(str(src), providers=[CPU]), make_session(str(out), providers=[CPU])
    names = [o.name for o in ref.get_outputs()]
    pairs = zip(names, ref.run(names, dict(feed)), got.run(names, dict(feed)), strict=True)
    flat = {
        n: float(np.asarray(b).flat[0])
        for n, a, b in pairs
        if np.asarray(a).dtype.kind == "f"
        and np.asarray(b).size
        and not numerically_zero(np.asarray(a))  # denormals varying: a constant 0 already
        and np.ptp(a) > 0
        and np.ptp(b) == 0
    }
    if not flat:
        return ""
    what = ", ".join(f"{n} ({v:.4g} everywhere)" for n, v in flat.items())
    return (
        f"the quantized model answers a constant for {what} where the float model varies on the "
        "calibration samples: its task is lost; "
        + ("" if mode == "dynamic" else "mode=dynamic, or ")
        + "float32 ops (op_types=A|B, exclude=NAME) may keep it"
    )


def checked_samples(arrays, session, what: str) -> dict[str, np.ndarray]:
    """In-memory samples (an array or ``{input: array}``; other keys are ignored) through
    :func:`~onnxfold.runtime.sample_files.load_inputs`: cast and checked like calibration files; a
    one-line PassError naming ``what`` when they do not fit ``session``'s inputs."""
    from onnxfold.errors import PassError
    from onnxfold.runtime.inputs import input_specs
    from onnxfold.runtime.sample_files import load_inputs

    names = [s.name for s in input_specs(session)]
    if isinstance(arrays, Mapping):
        missing = [n for n in names if n not in arrays]
        if missing:
            raise PassError(f"quantize: {what} lack model input(s) {missing}")
        arrays = {n: arrays[n] for n in names}
    try:
        return load_inputs(arrays, session, chunked=True)
    except ValueError as exc:
        raise PassError(f"quantize: {what}: {exc}") from None


#: ops whose values lie in [0, 1]: probabilities a task reads at a threshold
UNIT_RANGE_OPS = {"Sigmoid", "HardSigmoid", "Softmax"}
#: the threshold such an output is read at: a quantized range that ends below it never reaches it
DECISION = 0.5
#: ops between a probability and the graph output that move its values without changing them
_MOVES = {"Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten"}


def clipped_outputs(out: Path, source: str) -> str:
    """A warning where a statically quantized model at ``out`` can no longer output a probability of
    :data:`DECISION` for an output that a :data:`UNIT_RANGE_OPS` op makes (its QuantizeLinear's range,
    calibrated on ``source``, ends below it; for a Sigmoid left float, its logits' range ends at 0 or
    below, so it never passes it), else ''. CenterFace calibrated on random images: its
    heatmap's range ended at 0.017, and the model found none of 194 faces while validation on random
    inputs read r2 0.91."""
    from onnx import numpy_helper

    graph = onnx.load(str(out), load_external_data=False).graph
    made = {o: n for n in graph.node for o in n.output if o}
    values = {t.name: t for t in graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL}

    def source_of(name: str):
        node = made.get(name)
        while node is not None and node.op_type in _MOVES and node.input:
            node = made.get(node.input[0])
        return node

    def highest(dq) -> float | None:  # the largest value a DequantizeLinear of one scale writes
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[1] not in values:
            return None
        scale = numpy_helper.to_array(values[dq.input[1]]).astype(np.float64)
        zero = (
            numpy_helper.to_array(values[dq.input[2]])
            if len(dq.input) > 2 and dq.input[2] in values
            else np.zeros((), np.uint8)
        )
        if scale.size != 1 or zero.size != 1 or zero.dtype.kind not in "iu":
            return None
        return float((np.iinfo(zero.dtype).max - int(zero.reshape(()))) * scale.reshape(()))

    found = []
    for output in graph.output:
        dq = source_of(output.name)
        top = None
        if dq is not None and dq.op_type in ("Sigmoid", "HardSigmoid"):  # left float: its input's range
            prob, logit = dq, highest(source_of(dq.input[0]))
            if logit is not None and prob.op_type == "Sigmoid":
                top = float(1.0 / (1.0 + np.exp(-logit)))
            elif logit is not None:
                ab = {a.name: a.f for a in prob.attribute}
                top = float(np.clip(ab.get("alpha", 0.2) * logit + ab.get("beta", 0.5), 0.0, 1.0))
        else:
            q = made.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            prob = source_of(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
            top = highest(dq) if prob is not None and prob.op_type in UNIT_RANGE_OPS else None
        # a float Sigmoid after logits whose range ends at 0 (ranges hold 0) never passes DECISION
        if top is not None and (top < DECISION or (top <= DECISION and prob is dq)):
            found.append(f"{output.name} (a {prob.op_type}'s, at most {top:.3g})")
    if not found:
        return ""
    its = "their ranges were" if len(found) > 1 else "its range was"
    return (
        f"the quantized model cannot output a probability of {DECISION:g} for {', '.join(found)}: {its} "
        f"calibrated on {source}, which never reached it, so no decision above it is ever taken (a "
        "detector's score, a mask); calibrate on real inputs (calibration=FILE, or --inputs) or use "
        "quantize:mode=dynamic"
    )
