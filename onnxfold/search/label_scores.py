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

import numpy as np
import onnx

from onnxfold.ir.model import Model, to_model_proto

#: how the scores an output's labels come from are judged
SCORES_METRIC = "r2"


def scores_behind(model: Model | onnx.ModelProto) -> dict[str, str]:
    """Label output -> the float tensor its ArgMax (ArgMin) reads
    (:func:`~onnxfold.folding.judge.label_scores`), read from the graph alone."""
    from onnxfold.folding.judge import label_scores

    return label_scores(model if isinstance(model, onnx.ModelProto) else _wiring(model))


def softmax_logits(model: Model | onnx.ModelProto) -> dict[str, str]:
    """Graph output made by a Softmax (through casts and reshapes) -> the logits that Softmax reads,
    from the graph alone; an output of rank 2 ([B, C], a classifier's) where the graph declares it."""
    from onnxfold.folding.judge import read_by

    proto = model if isinstance(model, onnx.ModelProto) else _wiring(model)
    declared = {o.name: o.type.tensor_type for o in proto.graph.output}
    return {
        name: logits
        for name, logits in read_by(proto, ("Softmax",)).items()
        if not declared[name].HasField("shape") or len(declared[name].shape.dim) == 2
    }


def saturated(probabilities: np.ndarray, logits: np.ndarray | None = None) -> bool:
    """Whether a Softmax's probabilities [B, C] hold an exact 0 in at least half of their rows: a class
    below the winner by 88 nats or more (float32's exp underflows there), so a margin shrinking by tens
    of nats leaves every value as it was. MEGnet's ICA labeller (trial 204) read 0 and 1 in every row;
    a fold measured "top1 1.0000, r2 1.0000" on 32 samples and changed 7-12% of new components' labels.
    Its logits are then judged by r2 too (:data:`SCORES_METRIC`), where they are all finite (a mask of
    −inf makes its 0s, and no r2 reads it)."""
    p = np.asarray(probabilities)
    if p.dtype.kind != "f" or p.ndim != 2 or p.shape[1] < 2 or not len(p):
        return False
    if logits is not None and not np.isfinite(np.asarray(logits, dtype=np.float64)).all():
        return False
    return bool(np.mean((p == 0).any(axis=1)) >= 0.5)


def _wiring(model: Model) -> onnx.ModelProto:
    """The nodes' names and wiring of ``model`` with its outputs' declared shapes: no weight is copied."""
    graph = onnx.GraphProto()
    for t in model.graph.outputs:
        dims = None if t.shape is None else [d if isinstance(d, int) else str(d) for d in t.shape]
        graph.output.append(onnx.helper.make_tensor_value_info(t.name, onnx.TensorProto.FLOAT, dims))
    for node in model.graph.nodes:
        graph.node.append(
            onnx.helper.make_node(node.op, [t.name for t in node.inputs], [t.name for t in node.outputs])
        )
    return onnx.helper.make_model(graph)


def exposed(model: Model | onnx.ModelProto, names: Iterable[str]) -> onnx.ModelProto:
    """A ModelProto of ``model`` (a given ModelProto is copied, not changed) that also outputs the
    tensors ``names``."""
    from onnxfold.folding.judge import with_outputs

    if isinstance(model, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return with_outputs(copy, list(names))
    return with_outputs(to_model_proto(model), list(names))
