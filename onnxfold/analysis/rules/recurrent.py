"""Recurrent ops (LSTM, GRU, RNN) as consumers of the channels they read.

Every gate of a recurrent op reads its input features x [seq, batch, features] (``layout=1``:
[batch, seq, features]) through W [directions, gates·hidden, features]:

    gates_t = x_t Wᵀ + h_{t−1} Rᵀ + b

so x's channels join W's axis 2 as ``sum`` members, like a Gemm's input columns: a fold of the
channels feeding a CRNN's recurrent layer sums their columns of W, and a duplicated channel folds
back exactly. The hidden units are not folded (R, the biases, the initial states and the outputs
are left alone, and the outputs carry no tracked channels), nor are channels that reach the op
through any other input (an initial state, the sequence lengths).

MACs per run: seq · batch · (|W| + |R|) (every gate of every direction at every step; the
element-wise gate arithmetic is not counted), seq and batch the first two dims of x.
"""

from __future__ import annotations

import math

import onnx_graphsurgeon as gs

from onnxfold.analysis.groups import COMPUTED_WEIGHT, MIXES_CHANNELS, OTHER_AXIS, BlockReason
from onnxfold.analysis.registry import register_op, register_rule
from onnxfold.analysis.walk import Analysis

RECURRENT = ("LSTM", "GRU", "RNN")


def recurrent(walk: Analysis, node: gs.Node) -> None:
    """x through W's axis 2 (module docstring); every other tracked input is blocked."""
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
