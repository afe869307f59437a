"""Packed projections unpacked: one weight computing q, k and v side by side, read as P parts.

torch's ``nn.MultiheadAttention`` and timm's ViT blocks compute q, k and v with one projection
[..., P·n] and split it by a Reshape to [..., P, n₁, n₂ …] whose packed axis (size P) is later
indexed away: ``Gather(axis, i)``, or ``Split``/``Slice`` of size 1 followed by ``Squeeze``, after
``Transpose``/``Unsqueeze``/``Squeeze`` nodes that move it. No channel axis survives that Reshape, so
the analysis cannot follow q, k and v. Each part i reads the same elements as

    Slice(x, [i·n, (i+1)·n) on the split axis) → Reshape(target without the packed entry)
    → the same Transpose/Unsqueeze/Squeeze nodes with the packed axis left out

(row-major order: the packed axis is the outermost factor of the split axis, so part i is one
contiguous block of it). The rewrite moves elements only, so outputs stay bit-identical, and the
Slice is a cut of the projection's channels that the analysis already follows (q, k, v become
separate groups). Shapes must be inferred; any doubt (unknown dims, other readers, another op on
the way) leaves the graph as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from onnxfold.ir.edit import Names, transpose_perm
from onnxfold.ir.shapes import made_up_dim

LAYOUT_OPS = ("Transpose", "Unsqueeze", "Squeeze")


@dataclass
class _Part:
    """One read of part ``index``: the layout nodes from the Reshape on (``path``) and the tensor
    that holds the part with the packed axis gone (``out``); ``cut`` are the nodes that pick it."""

    index: int
    path: list[gs.Node]
    out: gs.Tensor
    cut: list[gs.Node] = field(default_factory=list)


def _dims(t: gs.Tensor) -> list | None:
    return list(t.shape) if t.shape is not None and all(d is not None for d in t.shape) else None


def _static(d) -> bool:
    return isinstance(d, (int, np.integer)) and d > 0


def _const_ints(t: gs.Tensor | None) -> list[int] | None:
    if not isinstance(t, gs.Constant):
        return None
    v = np.asarray(t.values)
    return [int(x) for x in v.reshape(-1)] if v.dtype.kind in "iu" else None


def _axes(node: gs.Node) -> list[int] | None:
    """A Squeeze/Unsqueeze's ``axes`` (attribute or constant input) as written, None if computed."""
    if len(node.inputs) > 1 and node.inputs[1].name:
        return _const_ints(node.inputs[1])
    axes = node.attrs.get("axes")
    return None if axes is None else [int(a) for a in axes]


def packed_split(x: list, y: list) -> tuple[int, int] | None:
    """(axis a of x that the Reshape splits, P) when y = x[:a] + [P, m₁ …] + x[a+1:] with P > 1,
    every dim of the split static and P·Π m = x[a]; None otherwise."""
    for a in range(len(x)):
        tail = len(x) - a - 1
        if x[:a] != y[:a] or (tail and x[a + 1 :] != y[len(y) - tail :]):
            continue
        mid = y[a : len(y) - tail]
        if len(mid) >= 2 and all(_static(d) for d in mid) and _static(x[a]) and mid[0] > 1:
            if int(np.prod(mid)) == x[a]:
                return a, int(mid[0])
    return None


def _moved(node: gs.Node, axis: int, rank: int) -> int | None:
    """Where a layout node puts input axis ``axis`` (of ``rank``), None if it touches it."""
    if node.op == "Transpose":
        perm = transpose_perm(node, rank)
        return perm.index(axis) if perm is not None else None
    axes = _axes(node)
    if axes is None:
        return None
    if node.op == "Unsqueeze":
        out = rank + len(axes)
        inserted = {a + out if a < 0 else a for a in axes}
        kept = [j for j in range(out) if j not in inserted]
        return kept[axis] if len(kept) == rank else None
    removed = {a + rank if a < 0 else a for a in axes}
    return None if axis in removed or not axes else axis - sum(1 for a in removed if a < axis)


def _picked(node: gs.Node, axis: int, rank: int, packs: int, outputs: set[str]) -> list[_Part] | None:
    """The parts a Gather/Slice/Split node picks on the packed axis (each then squeezed), or None."""
    at = int(node.attrs.get("axis", 0))
    at = at + rank if at < 0 else at
    if node.op == "Gather":
        index = _const_ints(node.inputs[1])
        scalar = isinstance(node.inputs[1], gs.Constant) and np.asarray(node.inputs[1].values).ndim == 0
        if at != axis or index is None or not scalar:
            return None
        return [_Part(index[0], [], node.outputs[0], [node])]
    picks: list[tuple[int, gs.Tensor]] = []
    if node.op == "Slice" and len(node.inputs) >= 3:
        starts, ends = _const_ints(node.inputs[1]), _const_ints(node.inputs[2])
        given = len(node.inputs) > 3 and node.inputs[3].name
        axes = _const_ints(node.inputs[3]) if given else list(range(len(starts or [])))
        steps = _const_ints(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4].name else [1]
        if starts is None or ends is None or axes is None or steps != [1] or len(axes) != 1:
            return None
        if (axes[0] + rank if axes[0] < 0 else axes[0]) != axis or ends[0] != starts[0] + 1:
            return None
        picks = [(starts[0], node.outputs[0])]
    elif node.op == "Split" and at == axis:
        sizes = _const_ints(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1].name else None
        sizes = sizes if sizes is not None else node.attrs.get("split")
        if sizes is None and int(node.attrs.get("num_outputs", 0)) == len(node.outputs) == packs:
            sizes = [1] * packs
        if sizes is None or any(int(s) != 1 for s in sizes):
            return None
        picks = list(enumerate(node.outputs))
    else:
        return None
    parts = []
    for index, out in picks:
        if not out.outputs:
            continue
        squeeze = out.outputs[0]
        if out.name in outputs or len(out.outputs) != 1 or squeeze.op != "Squeeze":
            return None
        if [a + rank if a < 0 else a for a in (_axes(squeeze) or [])] != [axis]:
            return None
        parts.append(_Part(index, [], squeeze.outputs[0], [node, squeeze]))
    return parts


def _parts(
    t: gs.Tensor, axis: int, outputs: set[str], path: list[gs.Node], depth: int = 0
) -> list[_Part] | None:
    """Every read of ``t``'s packed ``axis``: layout nodes followed to the nodes that pick a part."""
    dims = _dims(t)
    if dims is None or t.name in outputs or not t.outputs or depth > 8 or not _static(dims[axis]):
        return None
    found: list[_Part] = []
    for node in t.outputs:
        if node.inputs[0] is not t or (node.domain or "") not in ("", "ai.onnx"):
            return None
        if node.op in LAYOUT_OPS:
            at = _moved(node, axis, len(dims))
            more = None if at is None else _parts(node.outputs[0], at, outputs, [*path, node], depth + 1)
        else:
            more = _picked(node, axis, len(dims), dims[axis], outputs)
            for part in more or []:
                part.path = list(path)
        if more is None:
            return None
        found += more
    return found


def _without(node: gs.Node, axis: int, rank: int, fresh: Names, x: gs.Tensor) -> gs.Node:
    """A copy of layout node ``node`` reading ``x``, which lacks the packed ``axis`` (of ``rank``)."""
    attrs = dict(node.attrs)
    inputs = [x]
    if node.op == "Transpose":  # a permutation: _moved read it on the way here
        attrs["perm"] = [p - (p > axis) for p in transpose_perm(node, rank) if p != axis]
    else:
        axes = _axes(node) or []
        if node.op == "Unsqueeze":
            out = rank + len(axes)
            at = _moved(node, axis, rank)
            new = [(a + out if a < 0 else a) for a in axes]
            new = [a - (a > at) for a in new]
        else:
            new = [(a + rank if a < 0 else a) for a in axes]
            new = [a - (a > axis) for a in new]
        if len(node.inputs) > 1 and node.inputs[1].name:
            inputs.append(gs.Constant(fresh(f"{node.inputs[1].name}_unpacked"), np.asarray(new, np.int64)))
        else:
            attrs["axes"] = new
    out = gs.Variable(fresh(f"{node.outputs[0].name}_unpacked"), dtype=node.outputs[0].dtype)
    return gs.Node(node.op, fresh(f"{node.name}_unpacked"), attrs, inputs, [out])


def _entries(target: gs.Tensor) -> list[tuple[gs.Tensor, int]] | None:
    """Where each entry of 1-D shape tensor ``target`` lives: (tensor, index) pairs through a Concat
    of pieces of known length; None if the pieces are not known."""
    if isinstance(target, gs.Constant):
        return [(target, i) for i in range(int(np.asarray(target.values).size))]
    node = target.inputs[0] if len(target.inputs) == 1 else None
    if node is None or node.op != "Concat" or int(node.attrs.get("axis", 0)) not in (0, -1):
        return None
    found: list[tuple[gs.Tensor, int]] = []
    for piece in node.inputs:
        size = np.asarray(piece.values).size if isinstance(piece, gs.Constant) else None
        if size is None and piece.shape is not None and len(piece.shape) == 1 and _static(piece.shape[0]):
            size = int(piece.shape[0])
        if size is None:
            return None
        found += [(piece, i) for i in range(int(size))]
    return found


def reordered_target(graph: gs.Graph, fresh: Names, target: gs.Tensor, order: list[int]) -> gs.Tensor:
    """Shape tensor ``target`` with its entries in ``order`` (some may be left out). Constant entries
    are fresh copies, so a width rewritten for one reader changes no other; a computed entry of
    length 1 is read as it is. The result is a constant, a Concat of single entries, or (where the
    pieces are not known) a Gather of ``target``: all traced by the analysis like the original."""
    entries = _entries(target)
    if isinstance(target, gs.Constant):
        values = np.asarray(target.values).reshape(-1)
        return gs.Constant(fresh(f"{target.name}_unpacked"), values[order].copy())
    out = gs.Variable(fresh(f"{target.name}_unpacked"), dtype=np.int64, shape=[len(order)])
    if entries is None or any(
        not isinstance(entries[i][0], gs.Constant) and entries[i][0].shape[0] != 1 for i in order
    ):
        index = gs.Constant(fresh(f"{target.name}_order"), np.asarray(order, np.int64))
        graph.nodes.append(
            gs.Node("Gather", fresh(f"{target.name}_order"), {"axis": 0}, [target, index], [out])
        )
        return out
    pieces = []
    for i in order:
        piece, at = entries[i]
        if isinstance(piece, gs.Constant):
            value = np.asarray(piece.values).reshape(-1)[at : at + 1].copy()
            piece = gs.Constant(fresh(f"{piece.name}_entry"), value)
        pieces.append(piece)
    graph.nodes.append(gs.Node("Concat", fresh(f"{target.name}_order"), {"axis": 0}, pieces, [out]))
    return out


def _part_target(graph: gs.Graph, fresh: Names, node: gs.Node, a: int, xs: list, ys: list) -> gs.Tensor:
    """The target of part i's Reshape: the original's without the packed entry ``a``. Without
    ``allowzero`` the dims before it are 0 (the input's own: the Slice keeps x's, which equal them)
    and the static dims of the split are constants: a Paddle2ONNX target computed the sequence
    length at run time, and no rule could trace that entry (PP-OCRv4's SVTR attention)."""
    tail = len(xs) - a - 1
    if int(node.attrs.get("allowzero", 0)):
        return reordered_target(graph, fresh, node.inputs[1], [i for i in range(len(ys)) if i != a])
    head = gs.Constant(
        fresh(f"{node.inputs[1].name}_part"), np.asarray([0] * a + list(ys[a + 1 : len(ys) - tail]), np.int64)
    )
    if not tail:
        return head
    rest = reordered_target(graph, fresh, node.inputs[1], list(range(len(ys) - tail, len(ys))))
    out = gs.Variable(fresh(f"{node.inputs[1].name}_part"), dtype=np.int64, shape=[len(ys) - 1])
    graph.nodes.append(gs.Node("Concat", fresh(f"{node.name}_target"), {"axis": 0}, [head, rest], [out]))
    return out


def _slice(graph: gs.Graph, fresh: Names, x: gs.Tensor, axis: int, lo: int, hi: int, name: str) -> gs.Tensor:
    out = gs.Variable(fresh(f"{name}_part"), dtype=x.dtype)
    if graph.opset < 10:
        attrs = {"starts": [lo], "ends": [hi], "axes": [axis]}
        graph.nodes.append(gs.Node("Slice", fresh(f"{name}_part"), attrs, [x], [out]))
        return out
    bounds = [
        gs.Constant(fresh(f"{name}_part_{k}"), np.asarray([v], np.int64))
        for k, v in (("start", lo), ("end", hi), ("axis", axis))
    ]
    graph.nodes.append(gs.Node("Slice", fresh(f"{name}_part"), {}, [x, *bounds], [out]))
    return out


def _zero_after(target: gs.Tensor, entry: int, node: gs.Node) -> bool:
    """Whether a target entry after ``entry`` may be 0 (a copy of the input dim at its index, which
    leaving ``entry`` out would shift)."""
    values = _const_ints(target)
    return not int(node.attrs.get("allowzero", 0)) and values is not None and 0 in values[entry + 1 :]


def _counted(xs: list | None, ys: list | None, target: gs.Tensor) -> int | None:
    """The one output dim inference left unknown (``unk__N``) where the constant target says −1: when
    every other leading dim equals x's and the split's dims are x's split axis (packed_split, the
    dim before the split), the element count makes it x's own (a dynamo export's batch: [−1, 65, 3,
    3, 64]). None where there is no such dim."""
    values = _const_ints(target)
    if xs is None or ys is None or values is None or values.count(-1) != 1 or len(values) != len(ys):
        return None
    at = values.index(-1)
    return at if ys[at] is not None and made_up_dim(ys[at]) and at < len(xs) else None


def unpack_packed_axes(graph: gs.Graph) -> int:
    """Rewrite every packed projection read part by part (see the module docstring); returns how
    many Reshapes were unpacked. Shapes must be inferred."""
    outputs = {t.name for t in graph.outputs}  # and tensors a subgraph reads: left alone alike
    outputs |= {t.name for sub in graph.subgraphs(recursive=True) for n in sub.nodes for t in n.inputs}
    fresh = Names(graph)
    changed = 0
    for node in list(graph.nodes):
        if node.op != "Reshape" or len(node.inputs) < 2 or len(node.outputs) != 1:
            continue
        x, y = node.inputs[0], node.outputs[0]
        xs, ys = _dims(x), _dims(y)
        free = _counted(xs, ys, node.inputs[1])
        if free is not None:
            ys = [*ys[:free], xs[free], *ys[free + 1 :]]
        split = packed_split(xs, ys) if xs is not None and ys is not None else None
        if (
            split is None
            or _zero_after(node.inputs[1], split[0], node)
            or (free is not None and free >= split[0])
        ):
            continue
        a, packs = split
        parts = _parts(y, a, outputs, [])
        for part in parts or []:
            part.index += packs if part.index < 0 else 0
        if not parts or any(not 0 <= p.index < packs for p in parts):
            continue
        width = int(xs[a]) // packs
        for part in parts:
            piece = _slice(graph, fresh, x, a, part.index * width, (part.index + 1) * width, node.name)
            piece.shape = [*xs[:a], width, *xs[a + 1 :]]  # known here; inference may leave them out
            target = _part_target(graph, fresh, node, a, xs, ys)
            out = gs.Variable(fresh(f"{y.name}_unpacked"), dtype=y.dtype, shape=ys[:a] + ys[a + 1 :])
            graph.nodes.append(
                gs.Node("Reshape", fresh(f"{node.name}_unpacked"), dict(node.attrs), [piece, target], [out])
            )
            axis, rank = a, len(ys)
            for step in part.path:
                copy = _without(step, axis, rank, fresh, out)
                graph.nodes.append(copy)
                axis, dims = _moved(step, axis, rank), _dims(step.outputs[0])
                rank, out = len(dims), copy.outputs[0]
                out.shape = dims[:axis] + dims[axis + 1 :]
            part.cut[-1].outputs.clear()  # the picking nodes go dead; cleanup removes them
            out.inputs[0].outputs[0] = part.out
        changed += 1
    return changed
