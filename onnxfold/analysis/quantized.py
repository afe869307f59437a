"""Recognising a model that is already quantized: onnxfold folds float weights, not integer ones.

Integer-weight ops (QLinear*, *Integer, MatMulNBits, the com.microsoft quantized kernels) and QDQ pairs
(a DequantizeLinear whose input is a constant, or a QuantizeLinear of a float constant) carry their weights in a form no channel rule reads,
so such a model has no foldable group. The fix is to fold the float model and quantize afterwards
(the ``quantize`` pass), which is what the message says.
"""

from __future__ import annotations

from collections import Counter

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
    return counts


def quantized_hint(counts: Counter) -> str:
    """One line: what the model is and what to do."""
    kinds = ", ".join(f"{n} {op}" for op, n in counts.most_common(4))
    return (
        f"the model is already quantized ({kinds}); onnxfold folds float weights: fold the float model it "
        "was quantized from and quantize the result (onnxfold run FLOAT.onnx -o OUT.onnx --pipeline "
        '"canonicalize,fold,repair,cleanup,quantize,validate"); without the float model, onnxfold fold '
        "--dequantize folds this one's weights made float32 (QDQ weights, dynamic MatMulInteger and "
        "DynamicQuantizeLSTM; onnxfold analyze --dequantize lists the groups it can fold)"
    )
