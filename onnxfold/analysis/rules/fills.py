"""Tensors filled with one value: ``ConstantOfShape`` (torch's ``zeros(B, H)``, the initial state of a
decoder's unrolled GRU cell, ``h0 · z`` and ``h0 @ R``).

A filled tensor whose last axis is set by a stored shape entry opens a space there that produces
nothing (no group of its own) but moves with any group it meets: the merged channels of a fill are
the same fill (averaged or summed against its readers' weights alike), and the entry becomes k (a
``shape`` member). Before this rule, g2p_en's decoder state blocked its GRU units' group as an
"untracked tensor" read by ``Mul``.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from onnxfold.analysis.groups import Layout, Segment
from onnxfold.analysis.registry import register_rule
from onnxfold.analysis.walk import Analysis


@register_rule("ConstantOfShape")
def constant_of_shape(walk: Analysis, node: gs.Node) -> None:
    """A fill [..., n] whose n is a stored entry of its shape vector: a space of n channels on the last
    axis, its entry a ``shape`` member (a fill whose last dim is copied or computed is left untracked)."""
    entries = walk.target_entries(node.inputs[0]) if node.inputs and node.inputs[0].name else None
    if not entries:
        return
    last = entries[-1]
    if last.const is None or last.value is None or last.value <= 1:
        return
    space = walk.new_space(int(last.value), node.name, producer=False)
    seg = Segment(space, 0, int(last.value))
    walk.add_shape_member(seg, last.const, last.index, node, last.path)
    walk.set_layout(node.outputs[0], Layout(len(entries), len(entries) - 1, (seg,)))


def fill_only(walk: Analysis, lay: Layout) -> bool:
    """Whether no producer reaches the spaces of ``lay``: a fill's, or what only fills joined."""
    return not any(walk.spaces[sp].producer for seg in lay.segments for sp in walk.component(seg.space))


def fills_apart(walk: Analysis, tracked: list, out_rank: int) -> tuple[list, set[str]]:
    """(``tracked`` (tensor, layout) pairs of an element-wise op, the names of fills set apart): a fill
    on another axis or of another length than the first tracked input a producer reaches is read as
    an untracked broadcast, as before fills were tracked (a mask of ones [B, L, 1] times hidden states
    [B, L, C] lies on the positions); where none is reached, ``tracked`` as it is."""
    if len(tracked) < 2 or all(walk.spaces[g.space].producer for _, lay in tracked for g in lay.segments):
        return tracked, set()  # no space of its own without a producer: no fill (and no union walked)
    weak = [fill_only(walk, lay) for _, lay in tracked]
    real = [pair for pair, w in zip(tracked, weak, strict=True) if not w]
    if not real or len(real) == len(tracked):
        return tracked, set()
    ref = real[0][1]
    axis = ref.axis + out_rank - ref.rank
    kept, apart = list(real), set()
    for (t, lay), w in zip(tracked, weak, strict=True):
        if w and lay.axis + out_rank - lay.rank == axis and lay.length == ref.length:
            kept.append((t, lay))
        elif w:
            apart.add(t.name)
    return kept, apart
