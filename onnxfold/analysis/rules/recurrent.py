"""Recurrent ops (LSTM, GRU, RNN) as consumers of the channels they read.

Every gate of a recurrent op reads its input features x [seq, batch, features] (``layout=1``:
[batch, seq, features]) through W [directions, gates·hidden, features]:

    gates_t = x_t Wᵀ + h_{t−1} Rᵀ + b

so x's channels join W's axis 2 as ``sum`` members, like a Gemm's input columns: a fold of the
channels feeding a CRNN's recurrent layer sums their columns of W, and a duplicated channel folds
back exactly. Channels that reach the op through any other input (an initial state, the sequence
lengths) are blocked.

The hidden units are a group of their own (the op's ``hidden_size`` of them), carried on the last
axis of the outputs Y [seq, dirs, batch, hidden] and Y_h / Y_c [dirs, batch, hidden]. Unit i owns
row g·hidden + i of every gate block g of W and R [dirs, gates·hidden, ·] (LSTM: 4 gates, GRU: 3,
RNN: 1), entry g·hidden + i of each of the 2·gates blocks of B, of P's 3 peephole blocks, and entry
i of the initial states' last axis: ``average`` members. R also reads the units back, through its
axis 2: a ``sum`` member, as a consumer's columns. Every gate is channel-wise in the units (σ, tanh,
the products with the cell state), so a unit whose rows equal another's follows it at every step,
and merging them (rows averaged, R's columns summed) is exact; ``hidden_size`` loses n − k. The
units of both directions of a bidirectional layer share one assignment (W and R hold both on axis
0). A layer whose W, R, B, P or initial states are computed (a streaming model's state fed back as a
graph input) keeps its units, blocked (``recurrent-state``), as do units that reach a graph output.

MACs per run: seq · batch · (|W| + |R|) (every gate of every direction at every step; the
element-wise gate arithmetic is not counted), seq and batch the first two dims of x.
"""

from __future__ import annotations

import math

import onnx_graphsurgeon as gs

from onnxfold.analysis.groups import (
    AVERAGE,
    COMPUTED_WEIGHT,
    MIXES_CHANNELS,
    OTHER_AXIS,
    RECURRENT_STATE,
    SUM,
    BlockReason,
    Layout,
    Segment,
    shrink_unit_attrs,
)
from onnxfold.analysis.registry import register_op, register_rule
from onnxfold.analysis.walk import Analysis

RECURRENT = ("LSTM", "GRU", "RNN")


def recurrent(walk: Analysis, node: gs.Node) -> None:
    """x through W's axis 2 (module docstring); every other tracked input is blocked; the hidden
    units a blocked group on the outputs."""
    _inputs(walk, node)
    _hidden_units(walk, node)


#: gate blocks of W and R per op (B holds twice as many, P three for an LSTM)
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def _hidden_units(walk: Analysis, node: gs.Node) -> None:
    """A space of ``hidden_size`` units on the last axis of every output, with the members of the
    module docstring, or blocked where a weight or state it needs is computed."""
    hidden = int(node.attrs.get("hidden_size", 0) or 0)
    outputs = [t for t in node.outputs if t is not None and t.name]
    if hidden < 1 or not outputs:
        return
    space = walk.new_space(hidden, node.name)
    gates = GATES[node.op]
    inputs = {i: t for i, t in enumerate(node.inputs) if t is not None and t.name}
    rows = {1: gates, 2: gates, 3: 2 * gates, 7: 3}  # W, R, B, P: blocks of hidden entries on axis 1
    computed = [t.name for i, t in inputs.items() if i in (*rows, 5, 6) and not isinstance(t, gs.Constant)]
    shapes = {i: tuple(inputs[i].shape or ()) for i in rows if i in inputs}
    if computed or any(
        len(shape) < 2 or shape[1] != n * hidden for i, shape in shapes.items() for n in [rows[i]]
    ):
        what = (
            f"{', '.join(computed)} {'is' if len(computed) == 1 else 'are'} computed"
            if computed
            else "odd shapes"
        )
        walk.block_space(
            space,
            BlockReason(
                RECURRENT_STATE,
                f"hidden units of {node.op} {node.name}: R mixes them from one time step into the next and "
                f"{what} (not folded)",
                node.name,
            ),
        )
    else:
        for i, blocks in rows.items():
            for g in range(blocks if i in inputs else 0):
                kind = "weight" if i in (1, 2) else "bias"
                walk.add_member(
                    space, inputs[i], 1, AVERAGE, node, g * hidden, kind=kind, feature=i in (1, 2)
                )
        walk.add_member(space, inputs[2], 2, SUM, node, kind="weight", feature=False)
        for i in (5, 6):  # initial_h, initial_c [dirs, batch, hidden]
            if i in inputs:
                walk.add_member(
                    space, inputs[i], len(inputs[i].shape) - 1, AVERAGE, node, kind="state", feature=False
                )
        walk.unit_attrs[space].append((node.name, "hidden_size", 1))
    for t in outputs:
        rank = 4 if t is node.outputs[0] else 3
        walk.set_layout(t, Layout(rank, rank - 1, (Segment(space, 0, hidden),)))


def _inputs(walk: Analysis, node: gs.Node) -> None:
    x, w = node.inputs[0], node.inputs[1]
    for other in node.inputs[1:]:
        walk.block(
            walk.layout(other),
            BlockReason(
                MIXES_CHANNELS,
                f"{node.op} {node.name} mixes these channels into its hidden state; only its input x is read "
                "through columns",
                node.name,
            ),
        )
    lay = walk.layout(x)
    if lay is None:
        return
    if not isinstance(w, gs.Constant) or len(w.shape) != 3:
        walk.block(
            lay,
            BlockReason(
                COMPUTED_WEIGHT,
                f"{node.op} {node.name} has no constant weight W [dirs, gates, in]",
                node.name,
            ),
        )
        return
    if lay.rank != 3 or lay.axis != 2:
        walk.block(
            lay,
            BlockReason(
                OTHER_AXIS,
                f"{node.op} {node.name} reads its features on axis 2, not axis {lay.axis}",
                node.name,
            ),
        )
        return
    walk.add_consumer(lay, w, 2, node)


def recurrent_macs(node, shape, dim) -> int | None:
    """seq · batch · (|W| + |R|) (module docstring)."""
    x, w, r = shape(0), shape(1), shape(2)
    if x is None or w is None or r is None or len(x) != 3:
        return None
    return dim(x[0]) * dim(x[1]) * (math.prod(map(dim, w)) + math.prod(map(dim, r)))


for _op in RECURRENT:
    register_rule(_op)(recurrent)
    register_op(_op, macs=recurrent_macs, fix_attrs=shrink_unit_attrs)  # hidden_size loses n − k
# onnxruntime's dynamic quantization of an LSTM: the same gates, its int8 weights stored transposed
# ([dirs, features, 4·hidden]), so |W| and |R| are the float layer's
register_op("DynamicQuantizeLSTM", "com.microsoft", macs=recurrent_macs)
