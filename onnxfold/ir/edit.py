"""Small edits of the graphsurgeon IR shared by passes."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs


def replace_input(node: gs.Node, old: gs.Tensor, new: gs.Tensor) -> None:
    """Make ``node`` read ``new`` wherever it read ``old`` (by identity)."""
    for i, t in enumerate(node.inputs):
        if t is old:
            node.inputs[i] = new


def remove_identities(graph: gs.Graph) -> int:
    """Bypass Identity and inference-mode Dropout nodes."""
    outputs = {t.name for t in graph.outputs}
    removed = 0
    for node in list(graph.nodes):
        if node.op not in ("Identity", "Dropout") or (node.domain or "") not in ("", "ai.onnx"):
            continue
        if node.op == "Dropout":
            training = node.inputs[2] if len(node.inputs) > 2 else None
            if (
                training is not None
                and training.name
                and not (isinstance(training, gs.Constant) and not bool(np.asarray(training.values).any()))
            ):
                continue
            if len(node.outputs) > 1 and node.outputs[1].outputs:
                continue
        src, dst = node.inputs[0], node.outputs[0]
        if dst.name in outputs:
            continue
        for consumer in list(dst.outputs):
            replace_input(consumer, dst, src)
        for sub in graph.subgraphs(recursive=True):
            for inner in sub.nodes:
                for i, t in enumerate(inner.inputs):
                    if t.name == dst.name:
                        inner.inputs[i] = src
        node.inputs.clear()
        node.outputs.clear()
        removed += 1
    return removed


def transpose_perm(node: gs.Node, rank: int) -> list[int] | None:
    """A Transpose's permutation of ``rank`` axes (reversed when the attribute is absent); None when
    it is not one."""
    perm = node.attrs.get("perm")
    perm = list(range(rank))[::-1] if perm is None else [int(p) for p in perm]
    return perm if sorted(perm) == list(range(rank)) else None


class Names:
    """Fresh tensor and node names for a graph's new nodes."""

    def __init__(self, graph: gs.Graph):
        self.taken = set(graph.tensors().keys()) | {n.name for n in graph.nodes}

    def __call__(self, base: str) -> str:
        return fresh_name(self.taken, base)


def fresh_name(taken: set[str], base: str) -> str:
    """``base``, else ``base_1``, ``base_2`` …: the first name not in ``taken``, which then holds it."""
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name
