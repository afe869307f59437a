"""Which op computes an output's values, looked up through ops that only move or scale them: the
output's metric (:mod:`onnxfold.runtime.fidelity`) depends on it (a Softmax's probabilities, a pooled
embedding)."""

from __future__ import annotations

import os

import numpy as np

#: ops that only move, retype, regroup or scale values: the op an output comes from is looked up
#: through them (a Div through its numerator: a temperature, a mean's count, a norm)
PASS_THROUGH = {
    "Identity",
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Cast",
    "Transpose",
    "Concat",
    "Div",
}

#: ops that only change the shape of values, looked through between a linear layer and its bias Add
RESHAPES = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze"}

#: ops that carry a state along a sequence: a [B, D] output taken from one (its last step, picked by a
#: Slice or Gather) is a hidden state, an embedding (chars2vec's word vector: a Keras LSTM's last
#: state, written by tf2onnx as a Loop), not class scores
RECURRENT_OPS = {"LSTM", "GRU", "RNN", "Loop", "Scan"}
#: ops that pick steps of a sequence, looked through only on the way to a :data:`RECURRENT_OPS` node
STEP_PICKS = {"Slice", "Gather"}


def producers_of(model) -> dict[str, str]:
    """Tensor name -> op type of the node that computes its values, for a path, bytes, a ModelProto or a
    Model (an initializer's weights are not read from a path): looked up through :data:`PASS_THROUGH`
    ops along their first input (an exporter's Identity, Flatten or one-input Concat before the
    output; a masked mean's Div of a ReduceSum is a ReduceSum, logits over a temperature a Gemm)."""
    import onnx

    model = _loaded(model)
    made = _made(model)
    if isinstance(model, onnx.ModelProto):
        held = {t.name for t in model.graph.initializer}
    else:
        import onnx_graphsurgeon as gs

        held = {name for name, t in model.graph.tensors().items() if isinstance(t, gs.Constant)}
    out = {}
    for name, (op, inputs) in made.items():
        seen = {name}
        while op in PASS_THROUGH and inputs and inputs[0] in made and inputs[0] not in seen:
            if op == "Concat" and len(inputs) > 1:
                break
            seen.add(inputs[0])
            op, inputs = made[inputs[0]]
        out[name] = _recurrent_source(op, inputs, made, seen) or _linear(op, inputs, made, held) or op
    return out


def _made(model) -> dict[str, tuple[str, list[str]]]:
    """Tensor name -> (the op type of the node that writes it, that node's input names), of a
    ModelProto or a Model's graph."""
    import onnx

    if isinstance(model, onnx.ModelProto):
        return {o: (n.op_type, [i for i in n.input if i]) for n in model.graph.node for o in n.output}
    return {
        o.name: (n.op, [i.name for i in n.inputs if i.name]) for n in model.graph.nodes for o in n.outputs
    }


def _loaded(model):
    """``model`` itself, or the ModelProto of a path (its external data not read) or of bytes."""
    import onnx

    if isinstance(model, (bytes, bytearray)):
        return onnx.load_from_string(bytes(model))
    if isinstance(model, (str, os.PathLike)):
        return onnx.load(str(model), load_external_data=False)
    return model


def _linear(op: str, inputs: list[str], made: dict, held: set[str]) -> str | None:
    """The MatMul or Gemm of a linear layer whose bias an Add adds (a constant added to its output,
    maybe reshaped first: Paddle2ONNX's and tf2onnx's fully connected heads), else None: the output is that layer's scores,
    not an Add's sum (a residual stream, a normalisation's shift)."""
    if op != "Add" or len(inputs) != 2:
        return None
    for this, other in (inputs, inputs[::-1]):
        bias = other in held or (other in made and made[other][0] == "Constant")
        seen = {this}
        while this in made and made[this][0] in RESHAPES and made[this][1] and made[this][1][0] not in seen:
            this = made[this][1][0]  # tf2onnx's Tensordot: MatMul on [B·L, D], Reshape to [B, L, C], Add
            seen.add(this)
        if bias and this in made and made[this][0] in ("MatMul", "Gemm"):
            return made[this][0]
    return None


def _recurrent_source(op: str, inputs: list[str], made: dict, seen: set[str]) -> str | None:
    """The :data:`RECURRENT_OPS` node a :data:`STEP_PICKS` op picks steps of (through
    :data:`PASS_THROUGH` ops and more picks), else None: a [CLS] row's Gather stays a Gather."""
    if op not in STEP_PICKS:
        return None
    while inputs and inputs[0] in made and inputs[0] not in seen:
        seen.add(inputs[0])
        op, inputs = made[inputs[0]]
        if op in RECURRENT_OPS:
            return op
        if op not in PASS_THROUGH | STEP_PICKS:
            return None
    return None


def free_last_axes(model) -> frozenset[str]:
    """The outputs of ``model`` declared [B, symbol]: the last axis sizes with the input (swift-f0's
    pitch and confidence [1, frames]), where a class axis has the size its weights fix. auto read
    those two [N, frames] as class scores, and a fold that kept 0.97 of the voicing decisions measured
    top1 0.1875 (the frame of highest pitch moved). Rank 2 or more: BeatNet's beat logits, exported
    channels first as [1, 3, T], were read with T for classes, and a fold that kept 95% of the frames'
    decisions measured top1 0.09. Not the batch view's [1, n_out] of a model without a batch axis
    (:mod:`onnxfold.ir.batch_view`), which declares one clip's scores [n_out]."""
    from onnxfold.ir.batch_view import PREFIX
    from onnxfold.runtime.inputs import output_specs

    graph = getattr(model, "graph", None)
    if hasattr(graph, "nodes"):  # a Model: its outputs' producers
        made = {t.name: t.inputs[0].name for t in graph.outputs if t.inputs}
    else:
        made = {o: n.name for n in getattr(graph, "node", ()) for o in n.output}
    return frozenset(
        s.name
        for s in output_specs(model)
        if len(s.shape or ()) >= 2
        and isinstance(s.shape[-1], str)
        and not (made.get(s.name) or "").startswith(PREFIX)
    )


#: ops whose integer output holds quantized numbers (scores, features), not labels
QUANTIZERS = {"QuantizeLinear", "DynamicQuantizeLinear"}


def quantized_outputs(model, names) -> dict[str, tuple[float, float]]:
    """Those of the outputs ``names`` a QuantizeLinear writes directly, each with its (scale, zero point):
    uint8 or int8 scores to compare as numbers, not labels. Qualcomm AI Hub's YAMNet writes its AudioSet
    logits so, and read as labels (equal or not) they measured "top1 0.0668" where 71.9% of argmaxes
    agreed. A scale or zero point that is not a stored scalar reads as 1 or 0."""
    import onnx

    from onnxfold.ir.proto_graph import GraphConstants

    model = _loaded(model)
    wanted = set(names)
    if isinstance(model, onnx.ModelProto):
        consts = GraphConstants(model.graph, inline_only=True)
        nodes = [(n.op_type, list(n.input), list(n.output)) for n in model.graph.node]

        def scalar(name: str, default: float) -> float:
            v = consts.get(name)
            return float(v.reshape(-1)[0]) if v is not None and v.size == 1 else default
    else:
        import onnx_graphsurgeon as gs

        tensors = model.graph.tensors()
        nodes = [(n.op, [i.name for i in n.inputs], [o.name for o in n.outputs]) for n in model.graph.nodes]

        def scalar(name: str, default: float) -> float:
            t = tensors.get(name)
            if not isinstance(t, gs.Constant):
                return default
            try:
                v = np.asarray(t.values)
            except Exception:
                return default
            return float(v.reshape(-1)[0]) if v.size == 1 else default

    out = {}
    for op, inputs, outputs in nodes:
        if op in QUANTIZERS and outputs and outputs[0] in wanted:
            scale = scalar(inputs[1], 1.0) if len(inputs) > 1 and op == "QuantizeLinear" else 1.0
            zero = scalar(inputs[2], 0.0) if len(inputs) > 2 and inputs[2] else 0.0
            out[outputs[0]] = (scale, zero)
    return out


def as_scores(values, quantized: dict[str, tuple[float, float]]) -> dict:
    """``values`` by name, those in ``quantized`` dequantized to float32, (q − zero point)·scale: their
    argmax and every comparison are then those of the numbers they stand for."""
    out = dict(values)
    for name, (scale, zero) in quantized.items():
        if name in out:
            out[name] = ((np.asarray(out[name]).astype(np.float64) - zero) * scale).astype(np.float32)
    return out


#: ops whose output holds only their input's shape, never its values
SHAPE_READS = {"Shape", "Size"}
#: ops with subgraphs, which may read any outer value: taken as reading the inputs' values
_SUBGRAPH_OPS = {"If", "Loop", "Scan"}


def shape_only_outputs(model) -> frozenset[str]:
    """The graph outputs whose values depend on the graph inputs through their shapes alone (every
    path to an input passes a Shape or Size): no weight moves them. MarbleNet writes ``signal_len``
    [1], its frame count: every search on 32 clips of one length warned that the samples measured
    top1 1.0000 "for a model answering label 200 everywhere"."""
    import onnx

    model = _loaded(model)
    made, graph = _made(model), model.graph
    if isinstance(model, onnx.ModelProto):
        inputs, outputs = {i.name for i in graph.input}, [o.name for o in graph.output]
    else:
        inputs, outputs = {i.name for i in graph.inputs}, [o.name for o in graph.outputs]
    reads: dict[str, bool] = {}  # tensor -> whether its values depend on an input's values
    for out in outputs:
        stack = [out]
        while stack:
            name = stack[-1]
            if name in reads:
                stack.pop()
                continue
            if name in inputs or (name in made and made[name][0] in _SUBGRAPH_OPS):
                reads[name] = True
            elif name not in made or made[name][0] in SHAPE_READS:
                reads[name] = False
            else:
                pending = [i for i in made[name][1] if i not in reads]
                if pending:
                    stack.extend(pending)
                    continue
                reads[name] = any(reads[i] for i in made[name][1])
            stack.pop()
    return frozenset(o for o in outputs if not reads[o])
