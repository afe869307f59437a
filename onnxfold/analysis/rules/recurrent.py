"""Recurrent ops (LSTM, GRU, RNN) as consumers of the channels they read.

Every gate of a recurrent op reads its input features x [seq, batch, features] (``layout=1``:
[batch, seq, features]) through W [directions, gates·hidden, features]:

    gates_t = x_t Wᵀ + h_{t−1} Rᵀ + b

so x's channels join W's axis 2 as ``sum`` members, like a Gemm's input columns: a fold of the
channels feeding a CRNN's recurrent layer sums their columns of W, and a duplicated channel folds
back exactly. The hidden units are not folded (R, the biases, the initial states and the outputs
are left alone), nor are channels that reach the op through any other input (an initial state, the
sequence lengths). They are a group of their own, blocked (``recurrent-state``), that the outputs Y
[seq, dirs, batch, hidden] and Y_h / Y_c [dirs, batch, hidden] carry on their last axis, so that
`analyze` lists them with the reason and what they reach is tied to them (NSNet2's two GRUs, 54% of
its parameters, were listed nowhere).

MACs per run: seq · batch · (|W| + |R|) (every gate of every direction at every step; the
element-wise gate arithmetic is not counted), seq and batch the first two dims of x.
"""

from __future__ import annotations

import math

import onnx_graphsurgeon as gs

from onnxfold.analysis.groups import (
    COMPUTED_WEIGHT,
    MIXES_CHANNELS,
    OTHER_AXIS,
    RECURRENT_STATE,
    BlockReason,
    Layout,
    Segment,
)
from onnxfold.analysis.registry import register_op, register_rule
from onnxfold.analysis.walk import Analysis

RECURRENT = ("LSTM", "GRU", "RNN")


def recurrent(walk: Analysis, node: gs.Node) -> None:
    """x through W's axis 2 (module docstring); every other tracked input is blocked; the hidden
    units a blocked group on the outputs."""
    _inputs(walk, node)
    _hidden_units(walk, node)


def _hidden_units(walk: Analysis, node: gs.Node) -> None:
    """A blocked space of ``hidden_size`` units on the last axis of every output."""
    hidden = int(node.attrs.get("hidden_size", 0) or 0)
    outputs = [t for t in node.outputs if t is not None and t.name]
    if hidden < 1 or not outputs:
        return
    space = walk.new_space(hidden, node.name)
    walk.block_space(
        space,
        BlockReason(
            RECURRENT_STATE,
            f"hidden units of {node.op} {node.name}: R mixes them from one time step into the next "
            "(not folded)",
            node.name,
        ),
    )
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
    register_op(_op, macs=recurrent_macs)
# onnxruntime's dynamic quantization of an LSTM: the same gates, its int8 weights stored transposed
# ([dirs, features, 4·hidden]), so |W| and |R| are the float layer's
register_op("DynamicQuantizeLSTM", "com.microsoft", macs=recurrent_macs)
