"""Whether inputs exercised an output's decisions: a fidelity measured where they did not says little.

Random inputs often leave a model's decisions untouched: a text detector's probability map on noise
stays near 0, a recogniser reads noise as blank lines. The report and the data-free search say so
instead of trusting the figure.
"""

from __future__ import annotations

import os
from collections.abc import Container, Mapping

import numpy as np

from onnxfold.runtime.bins import softmax
from onnxfold.runtime.detections import detected_nothing
from onnxfold.runtime.fidelity import auto_metric, probabilities
from onnxfold.runtime.one_class import ONE_CLASS_SHARE, dominant_class, one_class
from onnxfold.runtime.probability_maps import THRESHOLD, per_sample, unmarked_map

#: ops whose outputs stay within the range of their (first) input's values: a bound set by a Sigmoid
#: holds after them (silero-vad's speech probability is a ReduceMean of a Sigmoid map, through an If)
RANGE_KEEPING = {
    "Identity",
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
    "Gather",
    "GatherElements",
    "Slice",
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "AveragePool",
    "MaxPool",
    "GlobalAveragePool",
    "GlobalMaxPool",
}


#: the most values a constant may hold for :func:`bounded_by` to read it (a Where's fill value)
SMALL_CONSTANT = 64
#: ops whose output values lie in known bounds, which tell whether inputs exercised an output
BOUNDING_OPS = {"Sigmoid": (0.0, 1.0), "HardSigmoid": (0.0, 1.0), "Tanh": (-1.0, 1.0)}

#: why an output whose values are all NaN or infinite on the inputs measures nothing (:func:`unexercised`)
NO_FINITE_VALUE = "made this output NaN or infinite everywhere"
#: an output whose reference values span less than this share of its bounds was barely exercised
UNEXERCISED_SHARE = 0.1
#: the fewest decisions (samples of class scores, positions of a sequence) one argmax class must hold
#: before the inputs count as exercising none: validation's 2 random samples of a text-line
#: orientation classifier both read class 0, while 32 split 14/18, and a fold at chance agreement got
#: a note that its figure "says little" instead of a warning (a balanced 2-class output is one class on
#: 8 samples by chance 1 time in 128)
DECISIONS_FOR_ONE_CLASS = 8


def narrow_span(values: np.ndarray, op: str | None) -> tuple[float, float] | None:
    """(smallest, largest) of ``values`` when ``op`` bounds them (:data:`BOUNDING_OPS`) and they span
    under :data:`UNEXERCISED_SHARE` of the bounds (a detector's map on noise, all near 0); else None."""
    values = np.asarray(values)
    if op not in BOUNDING_OPS or values.dtype.kind != "f" or not values.size:
        return None
    lo, hi = BOUNDING_OPS[op]
    span = (float(np.nanmin(values)), float(np.nanmax(values)))
    return span if span[1] - span[0] < UNEXERCISED_SHARE * (hi - lo) else None


def distinct_digits(a: float, b: float) -> tuple[str, str]:
    """``a`` and ``b`` to the fewest significant digits (3 to 9) that tell them apart: an ECG quality
    model's Sigmoid on noise read "only between 1 and 1" at 3 digits (0.99995 to 0.9999999)."""
    for digits in range(3, 10):
        x, y = f"{a:.{digits}g}", f"{b:.{digits}g}"
        if x != y:
            break
    return x, y


#: a fold that shifts a saturated Sigmoid's or Tanh's input by more than this on average (a factor
#: e² in the odds) has changed the model, however still its output looks; a probability of 1e-4 on
#: noise that becomes 3e-4 (a shift of 1.1) has not
SHIFTED_LOGIT = 2.0


def pre_activation_shift(ref: np.ndarray, cand: np.ndarray, op: str | None) -> float | None:
    """The mean |Δz| of the input z of a Sigmoid (z = log p/(1 − p)) or Tanh (z = atanh y) that gave
    ``ref`` and ``cand``, their values kept a float32 step inside the bounds; None for other ops. On
    noise an ECG quality model's Sigmoid stayed within 5e-5 of 1: a fold at 3.0% shifted z by 0.05 and
    kept 99.8% of real decisions, one at 48.9% shifted it by 9.7 (from 13.6 to 3.8) and kept 67%,
    while both outputs stayed in that narrow band."""
    if op not in ("Sigmoid", "Tanh"):
        return None
    ref, cand = np.asarray(ref, np.float64), np.asarray(cand, np.float64)
    if ref.shape != cand.shape or not ref.size:
        return None
    eps = 1e-7

    def z(v: np.ndarray) -> np.ndarray:
        if op == "Tanh":
            return np.arctanh(np.clip(v, -1 + eps, 1 - eps))
        p = np.clip(v, eps, 1 - eps)
        return np.log(p / (1 - p))

    shift = np.abs(z(cand) - z(ref))
    return float(np.mean(shift[np.isfinite(shift)])) if np.isfinite(shift).any() else None


def sample_spread(values: np.ndarray, samples: int | None) -> float | None:
    """How much an unbounded float output varies from sample to sample against its size,
    √(mean_j var_s x_sj) / √(mean x²) (var over the samples s of each element j), or None where its
    samples are not found or are fewer than 2. Brainmaze's spindle detector's logits on noise: 0.03;
    on EEG: 0.47."""
    from onnxfold.runtime.sequences import sample_axis

    values = np.asarray(values)
    if values.dtype.kind != "f" or not samples or samples < 2 or values.size <= samples:
        return None
    where = sample_axis(values.shape, samples)
    if where is None:
        return None
    x = np.moveaxis(values, 1, 0) if where == "second" else values
    x = np.asarray(x, np.float64).reshape(samples, -1)
    if not np.isfinite(x).all():
        return None
    size = float(np.sqrt(np.mean(x * x)))
    return float(np.sqrt(np.mean(x.var(axis=0)))) / size if size > 0 else None


def bounded_by(model) -> dict[str, str]:
    """Output name -> the op of :data:`BOUNDING_OPS` whose bounds its values
    keep, looked up through :data:`RANGE_KEEPING` ops, through an If whose branches all end in
    values of one such op, and through a Where that picks between such values and constants within
    their bounds (swift-f0's confidence: a Sigmoid, or 0 outside the pitch range); outputs bounded by
    none are left out. ``model``: a ModelProto, a
    :class:`~onnxfold.ir.model.Model` (its graph read as it is: no weights copied) or a path."""
    import onnx

    if isinstance(model, (str, os.PathLike)):
        model = onnx.load(str(model), load_external_data=False)
    # name -> (op, input names, output names, the output names of each subgraph: an If's branches)
    made: dict[str, tuple[str, list[str], list[str], list[list[str]]]] = {}
    small: dict[str, np.ndarray] = {}  # the values of small constants: a Where's other branch

    def index_proto(graph) -> None:
        for t in graph.initializer:
            if np.prod(t.dims) <= SMALL_CONSTANT and t.data_location != onnx.TensorProto.EXTERNAL:
                small[t.name] = onnx.numpy_helper.to_array(t)
        for n in graph.node:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                if np.prod(n.attribute[0].t.dims) <= SMALL_CONSTANT:
                    small[n.output[0]] = onnx.numpy_helper.to_array(n.attribute[0].t)
            subs = [a.g for a in n.attribute if a.type == onnx.AttributeProto.GRAPH]
            branches = [[o.name for o in g.output] for g in subs]
            for o in n.output:
                made[o] = (n.op_type, list(n.input), list(n.output), branches)
            for g in subs:
                index_proto(g)

    def index_ir(graph) -> None:  # onnx-graphsurgeon: subgraphs are Graph attributes
        for n in graph.nodes:
            for t in n.inputs:
                if hasattr(t, "values") and np.prod(t.shape or ()) <= SMALL_CONSTANT:
                    small[t.name] = np.asarray(t.values)
            subs = [g for g in n.attrs.values() if hasattr(g, "nodes") and hasattr(g, "outputs")]
            branches = [[o.name for o in g.outputs] for g in subs]
            outs = [o.name for o in n.outputs]
            for o in outs:
                made[o] = (n.op, [i.name for i in n.inputs], outs, branches)
            for g in subs:
                index_ir(g)

    def bound(name: str, seen: frozenset) -> str | None:
        if name in seen or name not in made:
            return None
        op, inputs, outs, branches = made[name]
        if op in BOUNDING_OPS:
            return op
        if op in RANGE_KEEPING and inputs:
            return bound(inputs[0], seen | {name})
        if op == "Where" and len(inputs) == 3:  # bounded values or, in the other branch, constants within
            ends = [bound(i, seen | {name}) for i in inputs[1:]]
            ops = {e for e in ends if e}
            if len(ops) != 1:
                return None
            lo, hi = BOUNDING_OPS[next(iter(ops))]
            for i, end in zip(inputs[1:], ends, strict=True):
                value = small.get(i)
                if end is None and (value is None or not value.size or value.min() < lo or value.max() > hi):
                    return None
            return next(iter(ops))
        if op == "If" and branches:
            at = outs.index(name)
            ends = {bound(b[at], seen | {name}) if at < len(b) else None for b in branches}
            return ends.pop() if len(ends) == 1 else None
        return None

    if isinstance(model, onnx.ModelProto):
        index_proto(model.graph)
        outputs = [o.name for o in model.graph.output]
    else:
        index_ir(model.graph)
        outputs = [o.name for o in model.graph.outputs]
    return {o: b for o in outputs if (b := bound(o, frozenset())) is not None}


def unexercised(
    name: str,
    ref: np.ndarray,
    producer_op: str | None = None,
    token_inputs: bool = False,
    samples: int | None = None,
    bound: str | None = None,
) -> str | None:
    """How the inputs ``ref`` came from left an output's decisions unexercised, or None: a bounded
    output (Sigmoid, HardSigmoid, Tanh) whose values barely moved
    (:func:`narrow_span`: a detector's probability map on noise, all near
    0), or class or sequence probabilities whose argmax is one class at (nearly) every position (a
    recogniser reading noise as blank lines: :func:`~onnxfold.runtime.fidelity.probabilities`), or
    labels per position that hold one value at (nearly) every position (character ids decoded in
    the graph, all blank on noise: trueocr's, where a fold reading 0% of real lines measured exact). A
    fidelity measured on such inputs says little about the task. ``bound``: the op whose bounds the
    values keep when it is not their producer (:func:`bounded_by`)."""
    if np.asarray(ref).dtype.kind == "f" and np.size(ref) and not np.isfinite(ref).any():
        return NO_FINITE_VALUE  # swift-f0's pitch on random fmin and fmax: NaN at every frame
    if (nothing := detected_nothing(ref)) is not None:
        return nothing
    bound = bound or producer_op
    span = narrow_span(ref, bound)
    if span is not None:
        lo, hi = BOUNDING_OPS[bound]
        what = f"{bound} output" if bound == producer_op else f"output (bounded by a {bound})"
        low, high = distinct_digits(*span)
        return f"moved this {what} only between {low} and {high} of its range [{lo:g}, {hi:g}]"
    ref = np.asarray(ref)
    if unmarked_map(ref, bound):
        side = "above" if ref.min() > THRESHOLD else "below"
        low, high = distinct_digits(float(ref.min()), float(ref.max()))
        if per_sample(ref.shape):  # one probability a sample: its decision, never taken both ways
            return f"decided every sample one way (this {bound} output between {low} and {high}, {side} {THRESHOLD:g})"
        return f"marked no region of this {bound} map (every value between {low} and {high}, {side} {THRESHOLD:g})"
    if ref.dtype.kind in "biu" and ref.ndim >= 2 and ref.size > 1:  # labels per position
        values, counts = np.unique(ref, return_counts=True)
        share = counts.max() / ref.size
        if share >= ONE_CLASS_SHARE and ref.size >= DECISIONS_FOR_ONE_CLASS:
            return f"made its label {values[counts.argmax()]} {_where(share, 'positions')}"
        return None
    if one_class_scores(name, ref, producer_op, token_inputs, samples):
        cls, share = dominant_class(ref)
        others = round((1.0 - share) * (ref.size // ref.shape[-1]))
        if ref.ndim >= 3 and others >= (samples or ref.shape[0]):
            return None  # a detector's anchors: 0.2% of 8525 a face, 17 decisions an image are exercised
        return f"made its argmax class {cls} {_where(share, 'samples' if ref.ndim == 2 else 'positions')}"
    if bound not in BOUNDING_OPS and not probabilities(ref, producer_op):
        share = sample_spread(ref, samples)
        if share is not None and share < UNEXERCISED_SHARE:
            return f"varied this output from sample to sample by only {share:.1%} of its size"
    return None


#: a constant answer that measures at least this on the user's samples makes their figure blind
CONSTANT_ANSWER_BAR = 0.9


def decided_one_way(metric: str, ref: np.ndarray, samples: int | None = None) -> str | None:
    """How an output judged by its decisions alone (``metric``: top1, tags, sequence…) would measure
    if it answered its most common class (or label) everywhere, when that reaches
    :data:`CONSTANT_ANSWER_BAR` on the user's samples ``ref``; else None. Their figure then cannot
    tell the original from a model that answers that to everything (malvizv1's malware classifier,
    32 benign files judged by top1: a fold calling every file benign measured 1.0000)."""
    from onnxfold.runtime.fidelity import fidelity_value, metric_parts

    ref = np.asarray(ref)
    if ref.dtype.kind in "biu":
        if ref.size < DECISIONS_FOR_ONE_CLASS:
            return None
        values, counts = np.unique(ref, return_counts=True)
        answer, what = np.full_like(ref, values[counts.argmax()]), f"label {values[counts.argmax()]}"
    elif (
        ref.dtype.kind == "f"
        and ref.ndim >= 2
        and ref.shape[-1] > 1
        and ref.size // ref.shape[-1] >= DECISIONS_FOR_ONE_CLASS
    ):
        cls = dominant_class(ref)[0]
        answer, what = np.zeros_like(ref), f"class {cls}"
        answer[..., cls] = 1.0
    else:
        return None
    value = fidelity_value(metric_parts(metric)[0], ref, answer, samples)
    if value < CONSTANT_ANSWER_BAR:
        return None
    return f"measure {metric_parts(metric)[0]} {value:.4f} for a model answering {what} everywhere"


def judged_one_way(
    name: str,
    metric: str,
    values: np.ndarray,
    producer: str | None = None,
    tokens: bool = False,
    samples: int | None = None,
    anchor_scores: Container[str] = (),
) -> str | None:
    """On given samples: how a constant answer would measure on an output judged by its decisions
    (``metric`` top1, tags, sequence, alone or guarded), or on class scores that ``auto`` judges by r2
    because every sample decides one class (:func:`decided_one_way`); None otherwise. What the search
    refuses samples for, and validation warns of. ``anchor_scores``: the outputs that are an SSD's class
    probabilities per anchor beside their box offsets (background at nearly every anchor of a photo is
    what a working detector answers: :func:`~onnxfold.runtime.anchors.softmax_heads`)."""
    from onnxfold.runtime.fidelity import COUNTS_OF_CLASSES, metric_parts

    if metric == "r2" and name in anchor_scores:
        return None
    if metric_parts(metric)[0] in COUNTS_OF_CLASSES:
        return decided_one_way(metric, values, samples)
    if metric == "r2" and auto_metric(name, values, producer, tokens, samples) == "top1":
        return decided_one_way("top1", values, samples)
    return None


def _where(share: float, of: str) -> str:
    """'on every sample' / 'at every position', or the share: '99.8% of the positions'."""
    if share == 1.0:
        return "on every sample" if of == "samples" else "at every position"
    return f"{'on' if of == 'samples' else 'at'} {share:.1%} of the {of}"


def one_class_scores(
    name: str,
    ref: np.ndarray,
    producer_op: str | None = None,
    token_inputs: bool = False,
    samples: int | None = None,
    fewest: int = DECISIONS_FOR_ONE_CLASS,
) -> bool:
    """Whether ``ref`` holds class (or sequence) probabilities whose argmax is one class at (nearly)
    every one of at least ``fewest`` decisions (the rows over its class axis)."""
    ref = np.asarray(ref)
    return bool(
        ref.dtype.kind == "f"
        and ref.ndim >= 2
        and ref.shape[-1] > 1
        and ref.size // ref.shape[-1] >= fewest
        and probabilities(ref, producer_op)
        and auto_metric(name, ref, producer_op, token_inputs, samples) in ("top1", "sequence")
        and one_class(ref)
    )


def too_few_decisions(
    reference: dict, producers: dict, token_inputs: bool = False, samples: int | None = None
) -> list[str]:
    """The outputs whose argmax is one class on every decision of fewer than
    :data:`DECISIONS_FOR_ONE_CLASS`: too few to tell inputs that exercise none of them from a draw
    that happened to agree (validation then draws more)."""
    short = []
    for name, ref in reference.items():
        ref = np.asarray(ref)
        if ref.ndim < 2 or ref.shape[-1] < 2 or ref.size // ref.shape[-1] >= DECISIONS_FOR_ONE_CLASS:
            continue
        if one_class_scores(name, ref, producers.get(name), token_inputs, samples, fewest=2):
            short.append(name)
    return short


def unexercised_by_both(
    name: str,
    ref: np.ndarray,
    cand: np.ndarray,
    producer_op: str | None = None,
    token_inputs: bool = False,
    samples: int | None = None,
    bound: str | None = None,
    given: bool = False,
) -> str | None:
    """:func:`unexercised` of the reference, when the candidate leaves the decisions unexercised
    too: its bounded values in the same narrow band, its argmax the same one class everywhere. Where the
    original made no decision and the candidate makes some, it has changed whatever the metric
    says (PP-OCRv4's recogniser folded at 0.05 no longer reads noise as blank lines, and no longer
    reads text). ``given``: the user's samples, whose spread from sample to sample is the task's (a
    face mesh's landmarks in pixels vary by 9.8% of their size from face to face, and read "measure
    nothing of the task"): the spread test, made for noise, is not theirs, as the search's is not."""
    why = unexercised(name, ref, producer_op, token_inputs, samples, bound)
    if why is None:
        return None
    if why == NO_FINITE_VALUE:  # the candidate gives none either
        return why if not np.isfinite(np.asarray(cand, np.float64)).any() else None
    if why.startswith("varied"):  # the candidate as still, and within a tenth of the original's size
        if given:
            return None
        ref, cand = np.asarray(ref, np.float64), np.asarray(cand, np.float64)
        if cand.shape != ref.shape or not np.isfinite(cand).all():
            return None
        share = sample_spread(cand, samples)
        moved = float(np.sqrt(np.mean((cand - ref) ** 2) / np.mean(ref * ref)))
        return why if share is not None and share < UNEXERCISED_SHARE and moved < UNEXERCISED_SHARE else None
    if (bound or producer_op) in BOUNDING_OPS:  # both models' values together within the narrow band
        shift = pre_activation_shift(ref, cand, bound or producer_op)
        if shift is not None and shift > SHIFTED_LOGIT:  # still in the band, moved far inside the op
            return None
        if why.startswith(("marked no region", "decided every")):  # the candidate on the same side everywhere
            same = np.shape(cand) == np.shape(ref)
            return why if same and unmarked_map(np.concatenate([ref, cand]), bound or producer_op) else None
        both = np.concatenate([np.asarray(ref, np.float64).ravel(), np.asarray(cand, np.float64).ravel()])
        return why if narrow_span(both, bound or producer_op) is not None else None
    cand = np.asarray(cand)
    if np.asarray(ref).dtype.kind in "biu":  # labels: the candidate's the same
        return why if np.array_equal(cand, ref) else None
    same = cand.shape == np.shape(ref) and np.array_equal(
        cand.argmax(axis=-1), np.asarray(ref).argmax(axis=-1)
    )
    return why if same and not confidence_collapsed(ref, cand, producer_op) else None


#: the candidate's mean probability of the original's argmax class under this share of the original's
#: reads as a collapse, not as noise's indifference
COLLAPSED_SHARE = 0.5


def confidence_collapsed(ref: np.ndarray, cand: np.ndarray, producer_op: str | None = None) -> bool:
    """Whether the candidate keeps the original's one class (its argmax) with far less confidence: its
    mean probability of that class under :data:`COLLAPSED_SHARE` of the original's (scores taken
    through a softmax where they are not probabilities). chessvision's piece classifier folded at 0.3
    still answered class 6 to every noise sample, at 0.19 where the original said 0.986, and read
    every square of a real board as empty; its validation said "note: … says little about the task"."""
    ref, cand = np.asarray(ref, np.float64), np.asarray(cand, np.float64)
    if ref.shape != cand.shape or ref.ndim < 1 or not np.isfinite(cand).all():
        return False
    if not probabilities(ref, producer_op):
        ref, cand = softmax(ref), softmax(cand)
    top = ref.argmax(axis=-1)[..., None]
    was, now = float(np.take_along_axis(ref, top, -1).mean()), float(np.take_along_axis(cand, top, -1).mean())
    return now < COLLAPSED_SHARE * was


def holes_note(name: str, values, samples: int | None, random_feed: Mapping | None = None) -> str:
    """Where the original's output ``name`` holds NaN or inf on the given samples: on how many of them
    (on every sample, or a share of the values where no leading axis holds the samples), else ''.
    Such values are left out of every figure (a caustic-nmr shift model writes NaN for a missing atom;
    chython's mapper gave NaN on samples padded into its -inf row). ``random_feed``: the data-free
    proxy's random inputs, whose draws the model may not take: a hint at ``--input-value`` follows
    (a terrain diffusion model takes the log of its noise level ``sigma``: drawn from N(0, 1), half the
    proxy's samples came out NaN, and it printed fidelity 1.0000 on the rest)."""
    values = np.asarray(values)
    if values.dtype.kind != "f" or not values.size:
        return ""
    bad = ~np.isfinite(values)
    if not bad.any():
        return ""
    hint = "" if random_feed is None else _value_hint(random_feed, samples)
    if bad.all():
        return f"the original gives NaN or inf everywhere in {name} on these samples: its figures measure nothing{hint}"
    if samples and values.ndim >= 1 and values.shape[0] == samples:
        hit = int(bad.reshape(samples, -1).any(axis=1).sum())
        where = f"on {hit} of {samples} samples"
    else:
        where = f"at {bad.mean():.1%} of its values"
    return f"the original gives NaN or inf in {name} {where}: those values are left out of every figure{hint}"


def _value_hint(feed: Mapping, samples: int | None) -> str:
    """``; random values of sigma may be …: --input-value sigma=V`` naming the float inputs that hold
    one value a sample (a noise level, a scale, a threshold: what a model takes the log or root of)."""
    scalars = [
        k for k, v in feed.items() if np.asarray(v).dtype.kind == "f" and samples and np.size(v) == samples
    ]
    name = scalars[0] if scalars else "NAME"
    which = ", ".join(scalars) if scalars else "an input"
    return (
        f"; random values of {which} may be ones the model never takes (a noise level or scale it takes "
        f"the log or root of): --input-value {name}=V sets the value it reads, or give --inputs"
    )
