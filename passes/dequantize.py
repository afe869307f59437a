"""dequantize: an INT8 model back to float32 weights, so that it can be folded (and quantized again).

Wheels often ship only the quantized model (a DistilBERT tagger as static QDQ, a speaker embedder as
onnxruntime's dynamic INT8), and onnxfold folds float weights. This pass rewrites what onnxruntime's
quantizers write:

* a **QDQ weight**, ``DequantizeLinear(q, s, z)`` of a constant: the float constant ``(q − z)·s``
  (per tensor, per channel on ``axis``, or per block of ``block_size`` along it), computed as
  onnxruntime does, in float32;
* an **activation pair**, ``QuantizeLinear`` then ``DequantizeLinear`` with the same scale and zero
  point: removed, the float value passed on (what rounding to 8 bits took is not restored); where its
  range starts at 0, a ``Clip`` to the range stands for it: onnxruntime drops a Relu (or Clip) that
  such a pair's clamp does anyway;
* **dynamic MatMulInteger**: ``DynamicQuantizeLinear(x)``, ``MatMulInteger(x_q, W_q, x_z, W_z)``,
  ``Cast``, then a ``Mul`` by ``x_s·W_s``: one ``MatMul(x, (W_q − W_z)·W_s)``;
* **DynamicQuantizeLSTM**: the ``LSTM`` of its dequantized weights, transposed back to
  [directions, 4·hidden, features];
* a **quantized embedding**, ``DequantizeLinear`` of a ``Gather`` from an integer table: the ``Gather``
  of the table dequantized;
* a **weight quantized in the graph**, ``Mul(Cast(q), s)`` or ``Mul(Sub(Cast(q), z), s)`` of
  constants (weight-only INT8 without QDQ): the float constant the Mul computes.

Other quantized ops (QLinearConv, ConvInteger, MatMulNBits, ...) stay as they are, and the pass says
which; the fold leaves the groups they hold alone. The result computes the float model whose weights
are the quantized ones: it agrees with the INT8 model up to the activations' rounding.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxfold.analysis.quantized import QUANTIZED_OPS, cast_weights
from onnxfold.ir.model import Model, model_from_proto, to_model_proto
from onnxfold.ir.proto_graph import GraphConstants, nested_nodes, node_attrs, node_reads, topological_order
from onnxfold.passes.quantize import replace_model_contents
from onnxfold.pipeline.manager import Pass, PassContext, PassResult, passes_after


def dequantized(q: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, axis: int = 1, block: int = 0):
    """``(q − zero)·scale`` as DequantizeLinear computes it: a scalar scale, one per index of ``axis``,
    or one per ``block`` indices along it; float32 (or the scale's float type)."""
    q, scale = np.asarray(q), np.asarray(scale)
    zero = np.zeros((), np.int64) if zero is None else np.asarray(zero)
    if scale.size > 1 or zero.size > 1:
        axis = axis % q.ndim
        if block:  # one scale per block of indices along axis
            n = q.shape[axis]
            scale, zero = (
                np.repeat(a, block, axis=axis).take(range(n), axis=axis) if a.ndim else a
                for a in (scale, zero)
            )
        else:  # one per index of axis
            shape = [1] * q.ndim
            shape[axis] = -1
            scale, zero = (a.reshape(shape) if a.size > 1 else a.reshape(()) for a in (scale, zero))
    else:
        scale, zero = scale.reshape(()), zero.reshape(())
    x = (q.astype(np.int64) - zero.astype(np.int64)).astype(np.float32)
    return (x * scale.astype(np.float32)).astype(scale.dtype)


class _Rewrite:
    """The graph's nodes, its constants and who reads each tensor, edited in place."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.values = GraphConstants(graph)
        self.made = {o: n for n in graph.node for o in n.output}
        self.dropped: set[int] = set()
        self.new_inits: list[onnx.TensorProto] = []
        self.renamed: dict[str, str] = {}  # a removed value -> the value that stands for it
        self.retyped: set[str] = set()  # values whose type changed: their value_info is dropped
        self.stats: Counter = Counter()

    def readers(self, name: str) -> list[onnx.NodeProto]:
        return [n for n in self.graph.node if id(n) not in self.dropped and name in n.input]

    def const(self, name: str) -> np.ndarray | None:
        return self.values.get(name) if name else None

    def store(self, name: str, value: np.ndarray) -> None:
        self.new_inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))

    def weights(self) -> None:
        for n in self.graph.node:
            if n.op_type != "DequantizeLinear" or (q := self.const(n.input[0])) is None:
                continue
            scale, zero = self.const(n.input[1]), self.const(n.input[2]) if len(n.input) > 2 else None
            if scale is None or (len(n.input) > 2 and n.input[2] and zero is None):
                continue
            self.store(
                n.output[0],
                dequantized(q, scale, zero, node_attrs(n).get("axis", 1), node_attrs(n).get("block_size", 0)),
            )
            self.dropped.add(id(n))
            self.stats["weights_dequantized"] += 1

    def cast_weights(self) -> None:
        """A weight dequantized in the graph, ``Mul(Cast(q), s)`` or ``Mul(Sub(Cast(q), z), s)``
        (:func:`~onnxfold.analysis.quantized.cast_weights`): the float constant the Mul computes, in the
        Cast's type, element by element as onnxruntime does."""
        found = set(cast_weights(self.graph))
        for n in self.graph.node:
            if n.op_type != "Mul" or not n.output or n.output[0] not in found or id(n) in self.dropped:
                continue
            value = None
            for a, b in (n.input, n.input[::-1]):
                scale, made = self.const(b), self.made.get(a)
                if scale is None or made is None:
                    continue
                zero = None
                if made.op_type == "Sub":
                    zero, made = self.const(made.input[1]), self.made.get(made.input[0])
                if made is None or made.op_type != "Cast" or (q := self.const(made.input[0])) is None:
                    continue
                to = np.dtype(helper.tensor_dtype_to_np_dtype(node_attrs(made)["to"]))
                x = q.astype(to)
                if zero is not None:
                    x = x - zero.astype(to)
                value = (x * scale.astype(to)).astype(to)
                break
            if value is None:
                continue
            self.store(n.output[0], value)
            self.dropped.add(id(n))
            self.stats["cast_weights_dequantized"] += 1

    def gathered_tables(self) -> None:
        """An integer table read by ``Gather`` (axis 0) whose every read reaches a ``DequantizeLinear``
        of one scale and zero point through ops that only move values (Transpose, Reshape, ...): the
        table dequantized and those DequantizeLinear removed, the same values (each element is
        dequantized alike, before or after it is gathered and moved). onnxruntime's dynamic quantizer
        writes an embedding so, its Transpose on the 8-bit values; left quantized, its channels formed
        no group (a French lemmatizer's and an Arabic diacritizer's 80- and 128-wide embeddings)."""
        gathers: dict[str, list[onnx.NodeProto]] = {}
        for n in self.graph.node:
            if n.op_type == "Gather" and node_attrs(n).get("axis", 0) == 0 and id(n) not in self.dropped:
                gathers.setdefault(n.input[0], []).append(n)
        for table_name, readers in gathers.items():
            table = self.const(table_name)
            if table is None or table.dtype.kind not in "iu" or len(self.readers(table_name)) != len(readers):
                continue
            ends, moved = self._dequantized_ends([g.output[0] for g in readers])
            if not ends:
                continue
            self.retyped |= moved  # 8-bit values before, float now: their declared types go
            scale, zero = ends[0][1], ends[0][2]
            name = _float_name(table_name, self)
            self.store(name, dequantized(table, scale, zero))
            for g in readers:
                g.input[0] = name
            for dq, _, _ in ends:
                self.renamed[dq.output[0]] = dq.input[0]
                self.dropped.add(id(dq))
            self.stats["tables_dequantized"] += 1

    def _dequantized_ends(self, starts: list[str]) -> tuple[list, set[str]]:
        """(the DequantizeLinear nodes that every path from ``starts`` reaches through value-moving ops,
        each with its scale and zero point, all one scalar scale and zero point, [] where a path
        reaches anything else (then the integers are read as they are); the tensors on the paths)."""
        ends, todo, seen = [], list(starts), set()
        outputs = {o.name for o in self.graph.output}
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            if name in outputs:
                return [], seen
            for r in self.readers(name):
                if r.op_type in _MOVES and r.input[0] == name:
                    todo.extend(r.output)
                elif r.op_type == "DequantizeLinear" and r.input[0] == name:
                    scale = self.const(r.input[1])
                    zero = self.const(r.input[2]) if len(r.input) > 2 and r.input[2] else None
                    if scale is None or scale.size != 1 or (len(r.input) > 2 and r.input[2] and zero is None):
                        return [], seen
                    ends.append((r, scale, zero))
                else:
                    return [], seen
        first = ends[0] if ends else None
        same = first is not None and all(
            np.array_equal(s, first[1])
            and (z is None) == (first[2] is None)
            and (z is None or np.array_equal(z, first[2]))
            for _, s, z in ends
        )
        return (ends if same else []), seen

    def activation_pairs(self) -> None:
        for n in self.graph.node:
            if n.op_type != "DequantizeLinear" or id(n) in self.dropped:
                continue
            q = self.made.get(n.input[0])
            if q is None or q.op_type != "QuantizeLinear" or list(q.input[1:]) != list(n.input[1:]):
                continue
            weight = q.input[0] in self.values  # float weights quantized in the graph: no Clip
            self.renamed[n.output[0]] = (None if weight else self._floor(q, n)) or q.input[0]
            self.dropped.add(id(n))
            self.stats["activation_pairs_removed"] += 1

    def _floor(self, q: onnx.NodeProto, dq: onnx.NodeProto) -> str | None:
        """Where the pair's range starts at 0 (its zero point the type's least value), the Relu or Clip
        onnxruntime folded into it: a Clip to the range (the pair clamps there), else None."""
        scale = self.const(q.input[1])
        zero = self.const(q.input[2]) if len(q.input) > 2 and q.input[2] else None
        if scale is None or scale.size != 1 or zero is None or zero.size != 1 or zero.dtype.kind not in "iu":
            return None
        info = np.iinfo(zero.dtype)
        if int(zero.reshape(())) != info.min:
            return None
        high = np.asarray((info.max - info.min) * scale.reshape(()).astype(np.float32), scale.dtype)
        lo, hi, out = dq.output[0] + "_min", dq.output[0] + "_max", dq.output[0] + "_clipped"
        self.store(lo, np.zeros((), scale.dtype))
        self.store(hi, high)
        self.graph.node.append(helper.make_node("Clip", [q.input[0], lo, hi], [out], name=dq.name + "_clip"))
        self.stats["clips_kept"] += 1
        return out

    def matmul_integer(self) -> None:
        for n in self.graph.node:
            if n.op_type != "MatMulInteger" or len(n.input) < 3:
                continue
            dyn = self.made.get(n.input[0])
            wq, wz = self.const(n.input[1]), self.const(n.input[3]) if len(n.input) > 3 else None
            casts = self.readers(n.output[0])
            if dyn is None or dyn.op_type != "DynamicQuantizeLinear" or wq is None or len(casts) != 1:
                continue
            muls = self.readers(casts[0].output[0]) if casts[0].op_type == "Cast" else []
            if len(muls) != 1 or muls[0].op_type != "Mul":
                continue
            other = [i for i in muls[0].input if i != casts[0].output[0]]
            scales = self.made.get(other[0]) if other else None
            if scales is None or scales.op_type != "Mul" or dyn.output[1] not in scales.input:
                continue
            ws = self.const([i for i in scales.input if i != dyn.output[1]][0])
            if ws is None:
                continue
            weight = dequantized(wq, ws, wz, axis=-1)
            name = muls[0].output[0] + "_weight_dequantized"
            self.store(name, weight)
            matmul = helper.make_node("MatMul", [dyn.input[0], name], [muls[0].output[0]], name=n.name)
            self.dropped.update({id(n), id(casts[0]), id(muls[0])})
            self.graph.node.append(matmul)
            self.stats["matmul_integer_rewritten"] += 1

    def lstm(self) -> None:
        for n in self.graph.node:
            if n.op_type != "DynamicQuantizeLSTM" or len(n.input) < 12:
                continue
            parts = [self.const(n.input[i]) for i in (1, 8, 9, 2, 10, 11)]
            if any(p is None for p in parts):
                continue
            # stored [directions, features, 4·hidden], a scale per direction or per direction and column
            w, r = (np.transpose(_per_direction(*parts[k : k + 3]), (0, 2, 1)) for k in (0, 3))
            names = [n.output[0] if n.output else n.name, n.name]
            w_name, r_name = f"{names[1]}_W_dequantized", f"{names[1]}_R_dequantized"
            self.store(w_name, w)
            self.store(r_name, r)
            inputs = [n.input[0], w_name, r_name, *n.input[3:8]]
            while inputs and not inputs[-1]:
                inputs.pop()
            attrs = node_attrs(n)
            self.graph.node.append(helper.make_node("LSTM", inputs, list(n.output), name=n.name, **attrs))
            self.dropped.add(id(n))
            self.stats["lstm_rewritten"] += 1

    def finish(self) -> None:
        kept = [n for n in self.graph.node if id(n) not in self.dropped]

        def resolve(name: str) -> str:
            while name in self.renamed:
                name = self.renamed[name]
            return name

        outputs = {o.name for o in self.graph.output}
        for n in kept:
            for i, name in enumerate(n.input):
                n.input[i] = resolve(name)
            for inner in nested_nodes(n):  # a Loop body's reads of outer names
                for i, name in enumerate(inner.input):
                    inner.input[i] = resolve(name)
        for name in list(self.renamed):
            if name in outputs:  # a graph output keeps its name
                kept.append(helper.make_node("Identity", [resolve(name)], [name]))
        used = {i for n in kept for i in node_reads(n)} | outputs
        kept = _unused_dropped(kept, used, outputs)
        del self.graph.node[:]
        self.graph.node.extend(topological_order(kept) or kept)  # a cycle: the nodes as they were
        # a subgraph's reads of outer names count: a Loop body's constant dropped as unused made a
        # model onnxruntime refused, written with exit 0 (a tf2onnx LSTM, dynamically quantized)
        used = {i for n in self.graph.node for i in node_reads(n)} | outputs
        infos = [v for v in self.graph.value_info if v.name not in self.retyped]
        del self.graph.value_info[:]
        self.graph.value_info.extend(infos)
        inits = [t for t in self.graph.initializer if t.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(inits + [t for t in self.new_inits if t.name in used])


def _float_name(name: str, rewrite: _Rewrite) -> str:
    """The float tensor's name for quantized ``name``: its name before quantization where onnxruntime's
    ``_quantized`` suffix gives it and nothing else holds it (a requantized fold's embedding read
    ``embed_tokens.weight_quantized_dequantized_quantized``), else ``name`` + ``_dequantized``."""
    stem = name.removesuffix("_quantized")
    taken = {t.name for t in rewrite.graph.initializer} | {o for n in rewrite.graph.node for o in n.output}
    taken |= {i.name for i in rewrite.graph.input} | {t.name for t in rewrite.new_inits}
    return stem if stem != name and stem not in taken else name + "_dequantized"


#: ops that move values without computing on them: a dequantization commutes with them
_MOVES = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"}


def _per_direction(q: np.ndarray, scale: np.ndarray, zero: np.ndarray) -> np.ndarray:
    """A DynamicQuantizeLSTM weight [directions, features, 4·hidden] in float: its scale and zero point
    per direction ([directions]) or per direction and column ([directions, 4·hidden])."""
    scale, zero = (
        a[:, None, None] if a.ndim == 1 else a[:, None, :] for a in (np.asarray(scale), np.asarray(zero))
    )
    return ((q.astype(np.int64) - zero.astype(np.int64)).astype(np.float32) * scale).astype(np.float32)


def _unused_dropped(nodes: list[onnx.NodeProto], used: set[str], outputs: set[str]) -> list[onnx.NodeProto]:
    """``nodes`` less those whose outputs nobody reads any more (QuantizeLinear, DynamicQuantizeLinear
    and the scale products left behind), repeated until none is left."""
    removable = {"QuantizeLinear", "DynamicQuantizeLinear", "Mul", "Sub", "Cast", "Constant"}
    while True:
        dead = [
            n
            for n in nodes
            if n.op_type in removable and not any(o in used or o in outputs for o in n.output if o)
        ]
        if not dead:
            return nodes
        gone = {id(n) for n in dead}
        nodes = [n for n in nodes if id(n) not in gone]
        used = {i for n in nodes for i in node_reads(n)} | outputs


def dequantize_proto(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
    """The model with the rewrites of the module docstring applied, and what they did."""
    rewrite = _Rewrite(proto.graph)
    rewrite.weights()
    rewrite.cast_weights()
    rewrite.gathered_tables()
    rewrite.activation_pairs()
    rewrite.matmul_integer()
    rewrite.lstm()
    rewrite.finish()
    stats = dict(rewrite.stats)
    left = Counter(n.op_type for n in proto.graph.node if n.op_type in QUANTIZED_OPS)
    left.update(n.op_type for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear"))
    if left:
        stats["left_quantized"] = dict(left)
    return proto, stats


#: the weights written are float32, 4 bytes where the model given stored 1 (wakehubert: 1.40 MiB given,
#: 2.03 MiB folded by 36.6%, and nothing said why the file grew)
REQUANTIZE = (
    "its weights are written as float32, 4 bytes each where the model given stored 1, so the file can be "
    "larger than the INT8 one; quantize it again: onnxfold run OUT.onnx -o OUT8.onnx {how}"
)
#: the command's tail by how the model given was quantized: in dynamic mode (MatMulInteger, a
#: dynamically quantized LSTM) again so, which needs no samples; a French lemmatizer in dynamic mode
#: was advised static quantization, which also quantized its activations
REQUANTIZE_BY_MODE = {
    "dynamic": '--pipeline "quantize:mode=dynamic,validate"',
    # pipecat's smart-turn (static QDQ) folded by 24.1%: static again kept accuracy 0.740 of 0.865,
    # dynamic 0.885
    "static": '--inputs SAMPLES --pipeline "quantize:mode=static,validate" (as it came), or '
    '"quantize:mode=dynamic,validate", which quantizes no activation: compare both on your samples',
}


#: said where ``--dequantize`` requantized the fold without ``--requantize``
BY_DEFAULT = (
    "the fold is quantized again as the model given was (the default with --dequantize where that needs "
    "no samples or --inputs are given; --requantize none writes the float32 fold)"
)


def requantize_note(stats: dict) -> str:
    """:data:`REQUANTIZE` for the mode the dequantized model was quantized in (``stats`` of
    :func:`dequantize_proto`: dynamic where it rewrote MatMulInteger or LSTM and no QDQ weight)."""
    dynamic = (
        stats.get("matmul_integer_rewritten")
        or stats.get("lstm_rewritten")
        or stats.get("cast_weights_dequantized")
    ) and not stats.get("weights_dequantized")
    return REQUANTIZE.format(how=REQUANTIZE_BY_MODE["dynamic" if dynamic else "static"])


#: ops of onnxruntime's dynamic quantization (the rest of an INT8 model's quantized ops are static QDQ)
DYNAMIC_OPS = {
    "MatMulInteger",
    "ConvInteger",
    "DynamicQuantizeLinear",
    "DynamicQuantizeLSTM",
    "DynamicQuantizeMatMul",
}


def quantized_mode(model: Model) -> str | None:
    """How ``model`` was quantized: "dynamic" where it holds an op of :data:`DYNAMIC_OPS` or weights
    quantized in the graph alone (Cast·Mul), "static" where it holds QuantizeLinear or
    DequantizeLinear, else None."""
    ops = {n.op for n in model.graph.nodes}
    if ops & DYNAMIC_OPS:
        return "dynamic"
    if ops & {"QuantizeLinear", "DequantizeLinear"}:
        return "static"
    return "dynamic" if cast_weights(model.graph) else None  # weights alone in 8 bits, as dynamic mode keeps


class DequantizePass(Pass):
    name = "dequantize"
    summary = "an INT8 model (QDQ, dynamic MatMulInteger, DynamicQuantizeLSTM, Cast·Mul weights) back to float32 weights"
    options = ()
    requantized = False  #: a quantize pass follows in the pipeline (no advice to quantize again)
    by_default = False  #: that pass is ``--dequantize``'s default (``onnxfold.pipeline.requantize``)

    def bind(self, passes) -> None:
        self.requantized = any(p.name == "quantize" for p in passes_after(self, passes))

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        proto, stats = dequantize_proto(to_model_proto(model))
        if stats.get("left_quantized"):
            kinds = ", ".join(f"{n} {op}" for op, n in Counter(stats["left_quantized"]).most_common(4))
            stats["note"] = f"left as they are: {kinds} (no float form is written for them)"
        changed = any(v for k, v in stats.items() if k not in ("left_quantized", "note"))
        if not changed and not stats.get("left_quantized"):  # asked for on a float model
            stats["note"] = "the model holds no quantized weight or activation: nothing to dequantize"
        if changed:
            replace_model_contents(model, model_from_proto(proto, model.base_dir))
            # the search judges what it does against this float model, not against the rounding of the
            # INT8 activations that a quantize pass would bring back; validation against the model given
            ctx.data.setdefault("dequantized_from", ctx.original)
            ctx.original = model.copy()
            stats["reference"] = (
                "a search measures against the dequantized float model; validation compares with the INT8 "
                "model given, so its figures include what dequantizing moved"
            )
            stats["note"] = "; ".join(
                filter(
                    None,
                    (
                        stats.get("note"),
                        stats["reference"],
                        BY_DEFAULT if self.by_default else "" if self.requantized else requantize_note(stats),
                    ),
                )
            )
        return PassResult(changed, stats)


def given_kept(records, ctx: PassContext) -> bool:
    """Whether the model given is what to write: it was dequantized for a search that then chose to
    fold nothing, and no pass after the search made something new of it (a requantized copy of it
    only approximates the model given). The float32 copy
    would be larger and, against the INT8 model, not quite the same: SSCD's copy detector's was 3.5×
    its size and lost 17% of its average precision, written with exit 0 (a trial)."""
    search = ctx.data.get("search")
    if search is None or search.chosen.steps or "dequantized_from" not in ctx.data:
        return False
    names = [r.name for r in records]
    after = records[names.index("search") + 1 :] if "search" in names else []
    return not any(r.modified and r.name not in ("cleanup", "quantize", "validate") for r in after)
