"""Zero initial states of recurrent ops, left out as the ONNX spec allows.

LSTM, GRU and RNN take ``initial_h`` (and an LSTM ``initial_c``) as optional inputs that default to
zeros. torch's exporter writes them anyway, as slices of one ``ConstantOfShape([layers, batch,
hidden], 0)`` computed from the input's batch size: Resemblyzer's 3-layer speaker encoder feeds its
three LSTMs from one such tensor, whose hidden size is a stored shape entry, so no layer's hidden
units could fold without the others (and the state counted as computed). An input that is zero
wherever it comes from is dropped: the op reads the zeros it would have read.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

#: the recurrent ops and the positions of their initial states
STATE_INPUTS = {"LSTM": (5, 6), "GRU": (5,), "RNN": (5,)}
#: ops that keep a tensor all zero whatever their other inputs (input 0 is the values)
ZERO_KEEPING = {"Slice", "Expand", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Cast", "Tile", "Transpose"}


def is_zero(t: gs.Tensor, depth: int = 0) -> bool:
    """Whether ``t`` is all zero for any input: a zero constant, a ConstantOfShape of 0 (its default),
    or one of those through :data:`ZERO_KEEPING` ops."""
    if isinstance(t, gs.Constant):
        return not np.any(np.asarray(t.values))
    if depth > 8 or len(t.inputs) != 1:
        return False
    node = t.inputs[0]
    if (node.domain or "") not in ("", "ai.onnx"):
        return False
    if node.op == "ConstantOfShape":
        value = node.attrs.get("value")
        return value is None or not np.any(np.asarray(getattr(value, "values", value)))
    return node.op in ZERO_KEEPING and bool(node.inputs) and is_zero(node.inputs[0], depth + 1)


def drop_zero_states(graph: gs.Graph) -> int:
    """Leave out every recurrent op's initial state that :func:`is_zero`; returns how many."""
    dropped = 0
    for node in graph.nodes:
        if node.op not in STATE_INPUTS or (node.domain or "") not in ("", "ai.onnx"):
            continue
        for i in STATE_INPUTS[node.op]:
            if i < len(node.inputs) and node.inputs[i].name and is_zero(node.inputs[i]):
                node.inputs[i] = gs.Variable.empty()
                dropped += 1
        while node.inputs and not node.inputs[-1].name:  # trailing empty inputs are no inputs
            node.inputs.pop()
    return dropped


__all__ = ["drop_zero_states", "is_zero"]
