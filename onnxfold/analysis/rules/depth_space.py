"""DepthToSpace and SpaceToDepth: channels traded for b×b blocks of pixels (b the ``blocksize``).

SpaceToDepth [N, C, H, W] → [N, C·b², H/b, W/b] writes channel c of block offset (i, j) at
(i·b + j)·C + c: b² copies of the channel layout side by side, as a Concat of the same tensor b² times
(tiles, :func:`~onnxfold.analysis.rules.reshapes.tiled`). DepthToSpace [N, C·b², H, W] → [N, C, H·b,
W·b] is its inverse: output channel c reads input channels (i·b + j)·C + c (mode ``DCR``, the default),
one per copy, so the input's b² copies of C channels are one group (every copy is merged as the
first is: their spaces are united), or c·b² + i·b + j (mode ``CRD``, PyTorch's PixelShuffle), b²
channels in a row, so the input's channels fold in units of b² (coarsened, as attention heads are).
A super-resolution or segmentation decoder's sub-pixel upsampling then folds with its convolution.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from onnxfold.analysis.groups import OTHER_AXIS, RESHAPES_CHANNELS, BlockReason, Layout, Segment
from onnxfold.analysis.registry import register_rule
from onnxfold.analysis.rules.reshapes import tiled
from onnxfold.analysis.walk import Analysis


def _on_channels(walk: Analysis, node: gs.Node) -> Layout | None:
    """The input's layout where its channels lie on axis 1 one by one; blocks it otherwise."""
    lay = walk.layout(node.inputs[0])
    if lay is None:
        return None
    if lay.axis != 1 or lay.rank != 4 or any(s.block != 1 for s in lay.segments):
        message = f"{node.op} {node.name} reads channels on axis 1 of a 4-D tensor, one by one"
        walk.block(lay, BlockReason(OTHER_AXIS, message, node.name))
        return None
    return lay


@register_rule("SpaceToDepth")
def space_to_depth(walk: Analysis, node: gs.Node) -> None:
    lay = _on_channels(walk, node)
    if lay is None:
        return
    copies = int(node.attrs.get("blocksize", 1)) ** 2
    walk.set_layout(node.outputs[0], Layout(4, 1, tiled(lay.segments, copies, lay.length, 1)))


@register_rule("DepthToSpace")
def depth_to_space(walk: Analysis, node: gs.Node) -> None:
    lay = _on_channels(walk, node)
    if lay is None:
        return
    copies = int(node.attrs.get("blocksize", 1)) ** 2
    mode = node.attrs.get("mode", "DCR")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    uneven = BlockReason(
        RESHAPES_CHANNELS,
        f"{node.op} {node.name} reads {copies} channels per output channel, and {lay.length} are not "
        "whole sets of them",
        node.name,
    )
    if lay.length % copies:
        walk.block(lay, uneven)
        return
    if mode == "CRD":  # b² channels in a row per output channel: units of b²
        if not walk.coarsen_segments(lay, copies, node, uneven):
            return
        lay = walk.layout(node.inputs[0])
        segments = tuple(Segment(s.space, s.start // copies, s.n, 1) for s in lay.segments)
        walk.set_layout(node.outputs[0], Layout(4, 1, segments))
        return
    width = lay.length // copies  # DCR: b² copies of the output's channels side by side
    for cut in range(width, lay.length, width):  # a segment crossing a copy's edge is cut there
        inside = next((s for s in lay.segments if s.start < cut < s.start + s.n), None)
        if inside is not None and not walk.partition(inside.space, [cut - inside.start], node):
            walk.block(lay, uneven)
            return
        lay = walk.layout(node.inputs[0])
    chunks = [[s for s in lay.segments if k * width <= s.start < (k + 1) * width] for k in range(copies)]
    shape = [(s.start - chunks[0][0].start, s.n) for s in chunks[0]]
    if any([(s.start - chunk[0].start, s.n) for s in chunk] != shape for chunk in chunks[1:]):
        walk.block(lay, uneven)
        return
    for chunk in chunks[1:]:
        walk.unite(Layout(4, 1, tuple(chunks[0])), Layout(4, 1, tuple(chunk)))
    walk.set_layout(node.outputs[0], Layout(4, 1, tuple(chunks[0])))
