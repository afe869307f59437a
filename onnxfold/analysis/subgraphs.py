"""Weights inside subgraphs (the bodies of If, Loop and Scan): no channel rule reads them.

A recurrent layer that an exporter wrote as a ``Loop`` (tf2onnx's Keras LSTM in chars2vec: both
layers, all 1.15M of its parameters, in two Loop bodies) holds its matrices in the body, where the
analysis finds no group; the groups it does find that reach a body are blocked (``subgraph-use``).
Without saying where the weights are, a user read "0 channel groups" and "the rest is in weights no
group folds: onnxfold analyze lists them" while analyze listed nothing.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx_graphsurgeon as gs

#: the least share of a model's parameters read inside bodies that :func:`subgraph_hint` reports
HINT_SHARE = 0.01


def _weight(t: gs.Tensor) -> bool:
    """A float constant of known shape: a weight (shape, axis and index constants are integers)."""
    try:
        return isinstance(t, gs.Constant) and t.shape is not None and np.dtype(t.dtype).kind == "f"
    except TypeError:  # a dtype numpy cannot name (bfloat16, float8): a weight all the same
        return isinstance(t, gs.Constant) and t.shape is not None


def _body_constants(node: gs.Node, graph: gs.Graph) -> dict[str, gs.Constant]:
    """The constants that ``node``'s body ``graph`` and its nested bodies read: their own, the outer
    graph's that they capture by name, and those ``node`` passes in as state (tf2onnx's LSTM
    matrices are Loop-carried inputs; a Loop's trip count and condition are not weights)."""
    passed = node.inputs[2:] if node.op == "Loop" else node.inputs
    found: dict[str, gs.Constant] = {t.name: t for t in passed if _weight(t)}
    for g in [graph, *graph.subgraphs(recursive=True)]:
        for inner in g.nodes:
            for t in inner.inputs:
                if _weight(t):
                    found[t.name] = t
    return found


def subgraph_weights(graph: gs.Graph) -> Counter:
    """Parameters read inside the subgraphs of each kind of top-level node, e.g. ``{"Loop": 1153207}``,
    each weight counted once (under the first node whose body reads it)."""
    counts: Counter = Counter()
    seen: set[str] = set()
    for node in graph.nodes:
        for value in node.attrs.values():
            if not isinstance(value, gs.Graph):
                continue
            for name, t in _body_constants(node, value).items():
                if name not in seen:
                    seen.add(name)
                    counts[node.op] += int(np.prod(t.shape))
    return +counts


#: ops that, reading a body's carried float state, make the body a recurrent layer's step
_STEP_OPS = {"MatMul", "Gemm", "Conv", "LSTM", "GRU", "RNN"}
#: ops whose later inputs are indices, shapes or sizes, not data a state flows through
_DATA_FIRST = {"Gather", "Slice", "Reshape", "Expand", "Tile", "Pad", "Squeeze", "Unsqueeze", "Resize"}


def _float(t: gs.Tensor) -> bool:
    try:
        return t.dtype is not None and np.dtype(t.dtype).kind == "f"
    except TypeError:
        return True


def recurrent_body(node: gs.Node, body: gs.Graph) -> bool:
    """Whether ``body`` (of a Loop or Scan ``node``) is a recurrent layer's step: a float state carried
    from one iteration to the next reaches a MatMul, Gemm or Conv (through data inputs only: a Gather's
    indices are not data). tf.map_fn's STFT in Google's speech-embedding model carries only counters,
    and gathers each frame by one; an LSTM carries its hidden state into the recurrent matrix."""
    if node.op == "Loop":
        carried = body.inputs[2:]
    elif node.op == "Scan":
        carried = body.inputs[: len(node.inputs) - int(node.attrs.get("num_scan_inputs", 0))]
    else:
        return False
    reached = {t.name for t in carried if _float(t)}
    for inner in body.nodes:  # in the order they were written: topological
        data = inner.inputs[:1] if inner.op in _DATA_FIRST else inner.inputs
        if any(t.name in reached for t in data):
            if inner.op in _STEP_OPS:
                return True
            reached.update(t.name for t in inner.outputs)
    return False


def has_recurrent_body(graph: gs.Graph) -> bool:
    """Whether a top-level Loop or Scan of ``graph`` is a recurrent layer (:func:`recurrent_body`)."""
    return any(
        recurrent_body(node, value)
        for node in graph.nodes
        for value in node.attrs.values()
        if isinstance(value, gs.Graph)
    )


def subgraph_hint(counts: Counter, total: int, recurrent: bool = True) -> str:
    """One line: how many of ``total`` parameters the bodies read, and what would fold them; "" when
    none, or under :data:`HINT_SHARE` of them (a small If branch is not worth a line). ``recurrent``:
    a body is a recurrent layer (:func:`has_recurrent_body`), which an LSTM node would let fold; else a
    loop over frames (an STFT's DFT basis and mel matrix) has no channels to fold."""
    from onnxfold.report.table import human_count

    held = sum(counts.values())
    if not held or (total and held < HINT_SHARE * total):
        return ""
    where = " and ".join(f"{op} bodies" for op, _ in counts.most_common())
    share = f" ({held / total:.0%})" if total else ""
    why = (
        "exported as an LSTM, GRU or RNN node instead, a recurrent layer's hidden units fold, and so do "
        "the channels of a layer that feeds it (a Keras GRU with reset_after=False, which tf2onnx writes "
        "as a Loop, is an ONNX GRU with linear_before_reset=0)"
        if recurrent
        else "no state passes from one iteration to the next through a matrix: a loop over frames or "
        "items, e.g. a spectrogram's DFT basis and mel matrix, has no channels to fold"
    )
    return (
        f"{human_count(held)} of the {human_count(max(total, held))} parameters{share} are read inside "
        f"{where}, which onnxfold does not fold ({why})"
    )


def subgraph_note(graph: gs.Graph, total: int | None = None) -> str:
    """:func:`subgraph_hint` of ``graph``, its ``total`` (None: counted from its float constants and
    its bodies')."""
    counts = subgraph_weights(graph)
    if not counts:
        return ""
    if total is not None:
        return subgraph_hint(counts, total, has_recurrent_body(graph))
    sizes = {
        t.name: int(np.prod(t.shape))
        for g in [graph, *graph.subgraphs(recursive=True)]
        for t in g.tensors().values()
        if _weight(t)
    }
    return subgraph_hint(counts, sum(sizes.values()), has_recurrent_body(graph))
