"""Transposes that an exporter writes the long way, rewritten as one ``Transpose`` (values unchanged)."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxfold.ir.edit import transpose_perm


def _copies_dim(value: int | None, origin, x: gs.Tensor, axis: int) -> bool:
    """Whether a shape entry (``value``/``origin`` of :func:`dim_values`) is dim ``axis`` of ``x``: the
    static dim's value, or a copy of that entry of ``Shape(x)`` (through Cast), also read as
    ``Gather(Shape(y), perm)`` where ``x = Transpose(y, perm)`` (pipecat's smart-turn, a dynamo export
    at a symbolic batch, takes kᵀ's target from the shape of k before its head Transpose)."""
    dims = list(x.shape)
    if value is not None:
        return value > 0 and isinstance(dims[axis], (int, np.integer)) and value == dims[axis]
    if origin is None:
        return False
    t, j = origin
    while len(t.inputs) == 1 and t.inputs[0].op == "Cast":
        t = t.inputs[0].inputs[0]
    if len(t.inputs) == 1 and t.inputs[0].op == "Gather" and int(t.inputs[0].attrs.get("axis", 0)) == 0:
        picks = t.inputs[0].inputs[1]
        if not isinstance(picks, gs.Constant) or np.ndim(picks.values) != 1 or j >= len(picks.values):
            return False
        t, j = t.inputs[0].inputs[0], int(picks.values[j])
    if len(t.inputs) != 1 or t.inputs[0].op != "Shape":
        return False
    source, start = t.inputs[0].inputs[0], int(t.inputs[0].attrs.get("start", 0))
    k = (start + len(dims) if start < 0 else start) + j
    if source is x:
        return k == axis
    made = x.inputs[0] if len(x.inputs) == 1 else None
    if made is None or made.op != "Transpose" or made.inputs[0] is not source:
        return False
    perm = transpose_perm(made, len(dims))
    return perm is not None and perm[axis] == k


def _only_reader(t: gs.Tensor, op: str, outputs: set[str]) -> gs.Node | None:
    """The one node reading ``t`` when it is an ``op`` and ``t`` is no graph output, else None."""
    if t.name in outputs or len(t.outputs) != 1 or t.outputs[0].op != op:
        return None
    return t.outputs[0]


def direct_key_transposes(graph: gs.Graph) -> int:
    """Replace ``Reshape(x, [-1, d₋₂, d₋₁]) → Transpose(0, 2, 1) → Reshape(·, [d₀ … d₋₃, d₋₁, d₋₂])``
    by ``Transpose(x)`` of its last two axes (shapes must be inferred).

    torch's dynamo exporter writes kᵀ of ``scaled_dot_product_attention`` this way (transformers' default
    ``sdpa`` attention): the batch and head axes are merged into one for the 3-D Transpose, so no channel
    axis survives the first Reshape. Both forms move the same elements to the same places: kᵀ[…, j, i] =
    k[…, i, j]. Every entry of both targets must be a proven copy of x's dims (a static value or
    ``Shape(x)``); the intermediates must have no other reader."""
    from onnxfold.analysis.shape_trace import dim_values  # the evaluator of shape arithmetic

    outputs = {t.name for t in graph.outputs}
    changed = 0
    for first in list(graph.nodes):
        if first.op != "Reshape" or len(first.inputs) < 2 or len(first.outputs) != 1:
            continue
        x = first.inputs[0]
        rank = len(x.shape) if x.shape is not None else 0
        swap = _only_reader(first.outputs[0], "Transpose", outputs)
        if rank < 3 or swap is None or list(swap.attrs.get("perm") or []) != [0, 2, 1]:
            continue
        last = _only_reader(swap.outputs[0], "Reshape", outputs)
        if last is None or last.inputs[0] is not swap.outputs[0]:
            continue
        merged, split = dim_values(first.inputs[1]), dim_values(last.inputs[1])
        if merged is None or split is None or len(merged.values) != 3 or len(split.values) != rank:
            continue
        lead = [d for d in x.shape[:-2]]
        lead_ok = merged.values[0] == -1 or (
            all(isinstance(d, (int, np.integer)) for d in lead) and merged.values[0] == int(np.prod(lead))
        )
        want = [*range(rank - 2), rank - 1, rank - 2]
        pairs = [(merged, 1, rank - 2), (merged, 2, rank - 1)] + [(split, i, a) for i, a in enumerate(want)]
        proven = [_copies_dim(v.values[i], v.origins[i], x, a) for v, i, a in pairs]
        if not lead_ok or not all(proven[:2]) or proven[2:].count(False) > 1:
            continue
        if not all(proven[2:]) and split.values[proven[2:].index(False)] != -1:
            continue
        out = last.outputs[0]
        last.outputs.clear()
        graph.nodes.append(gs.Node("Transpose", f"{last.name}_direct", {"perm": want}, [x], [out]))
        changed += 1
    return changed
