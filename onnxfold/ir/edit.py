"""Small edits of the graphsurgeon IR shared by passes."""

from __future__ import annotations

import onnx_graphsurgeon as gs


def replace_input(node: gs.Node, old: gs.Tensor, new: gs.Tensor) -> None:
    """Make ``node`` read ``new`` wherever it read ``old`` (by identity)."""
    for i, t in enumerate(node.inputs):
        if t is old:
            node.inputs[i] = new
