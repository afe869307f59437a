"""Labels the data-free proxy leaves undecided, judged by the scores behind them.

A model whose output is an ArgMax's labels shows a measurement nothing when its inputs make every
label one class: any fold keeps that one answer. wired-table-rec's table-line segmenter (an ArgMax of
a Softmax per pixel) labelled every pixel of random inputs background, its data-free search read
fidelity 1.0000 at 66.6% fewer parameters, and the fold changed the cells of 4 of 8 rendered tables.
The float scores the ArgMax reads still move with a fold, so where the proxy leaves an output's labels
unexercised the search measures those scores too, as an output of their own, by r2 (label outputs
the proxy does exercise are judged by their labels alone, as before).
"""

from __future__ import annotations

from collections.abc import Iterable

import onnx

from onnxfold.ir.model import Model, to_model_proto

#: how the scores an output's labels come from are judged
SCORES_METRIC = "r2"


def scores_behind(model: Model | onnx.ModelProto) -> dict[str, str]:
    """Label output -> the float tensor its ArgMax (ArgMin) reads
    (:func:`~onnxfold.folding.judge.label_scores`), read from the graph alone."""
    from onnxfold.folding.judge import label_scores

    if isinstance(model, onnx.ModelProto):
        return label_scores(model)
    graph = onnx.GraphProto()  # the nodes' names and wiring only: no weight is copied
    outputs = {t.name for t in model.graph.outputs}
    graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in outputs)
    for node in model.graph.nodes:
        graph.node.append(
            onnx.helper.make_node(node.op, [t.name for t in node.inputs], [t.name for t in node.outputs])
        )
    return label_scores(onnx.helper.make_model(graph))


def exposed(model: Model | onnx.ModelProto, names: Iterable[str]) -> onnx.ModelProto:
    """A ModelProto of ``model`` (a given ModelProto is copied, not changed) that also outputs the
    tensors ``names``."""
    from onnxfold.folding.judge import with_outputs

    if isinstance(model, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return with_outputs(copy, list(names))
    return with_outputs(to_model_proto(model), list(names))
