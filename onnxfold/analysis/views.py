"""Views of a stored weight: a constant read through data-movement ops by some of its readers.

canonicalize replaces a Transpose (Cast, Squeeze, Unsqueeze) of a weight by its result, except when the
weight has other readers too: a tied input embedding and LM head is one table read by a Gather and, through
a Transpose, by the head's MatMul. Replacing the Transpose would store the table twice, and a fold could
then edit the two copies differently. So such a node stays, and its output is a *view* of the weight: the
same entries with the axes moved (and maybe a different dtype).

The walk shows every reader of a view a stand-in constant with the view's values, so the rules treat
it like any weight (:func:`exposed`). Afterwards the members registered on a view are moved to the
stored weight, axis by axis (:func:`to_source`), and the whole-graph checks of
:mod:`onnxfold.analysis.finish` see the view's readers as readers of the weight
(:func:`effective_readers`): a group can only edit the weight when every reader, direct or through a
view, takes the same edit; otherwise it is blocked (``shared-weight`` or ``claim-conflict``). The
rewrite then edits the stored weight alone and every view follows at run time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs
from onnx import helper

from onnxfold.ir.edit import transpose_perm
from onnxfold.ir.external import peek_values

VIEW_OPS = ("Transpose", "Squeeze", "Unsqueeze", "Cast")


@dataclass(frozen=True)
class View:
    """Tensor ``name`` (the output of node ``node``) holds the entries of constant ``source``:
    its axis i is axis ``axes[i]`` of the source, or an inserted axis of size 1 when that is None."""

    name: str
    node: str
    source: str
    axes: tuple[int | None, ...]
    shape: tuple[int, ...]
    dtype: np.dtype

    def source_axis(self, axis: int) -> int | None:
        return self.axes[axis] if 0 <= axis < len(self.axes) else None


def _const_axes(node: gs.Node, rank: int) -> list[int] | None:
    """The ``axes`` of a Squeeze/Unsqueeze (attribute or constant input), normalised to ``rank``."""
    if len(node.inputs) > 1 and node.inputs[1].name:
        if not isinstance(node.inputs[1], gs.Constant):
            return None
        axes = [int(a) for a in np.asarray(node.inputs[1].values).reshape(-1)]
    else:
        axes = [int(a) for a in node.attrs.get("axes", [])]
    axes = [a + rank if a < 0 else a for a in axes]
    return axes if all(0 <= a < rank for a in axes) and len(set(axes)) == len(axes) else None


def _step(node: gs.Node, base: View, name: str) -> View | None:
    """The view ``node`` makes of ``base``, or None when it is not a pure move of axes."""
    axes, shape, dtype = list(base.axes), list(base.shape), base.dtype
    if node.op == "Transpose":
        perm = transpose_perm(node, len(axes))
        if perm is None:
            return None
        axes, shape = [axes[p] for p in perm], [shape[p] for p in perm]
    elif node.op == "Unsqueeze":
        if len(node.inputs) > 1 and node.inputs[1].name:
            if not isinstance(node.inputs[1], gs.Constant):
                return None
            count = int(np.asarray(node.inputs[1].values).size)
        else:
            count = len(node.attrs.get("axes", []))
        inserted = _const_axes(node, len(axes) + count)
        if not inserted:
            return None
        for a in sorted(inserted):
            axes.insert(a, None)
            shape.insert(a, 1)
    elif node.op == "Squeeze":
        if (len(node.inputs) > 1 and node.inputs[1].name) or "axes" in node.attrs:
            removed = _const_axes(node, len(axes))
        else:
            removed = [i for i, d in enumerate(shape) if d == 1]
        if removed is None or any(shape[a] != 1 for a in removed):
            return None
        axes = [a for i, a in enumerate(axes) if i not in removed]
        shape = [d for i, d in enumerate(shape) if i not in removed]
    elif node.op == "Cast":
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(int(node.attrs["to"])))
        except (KeyError, TypeError, ValueError):
            return None
        if dtype.kind not in "fiu" or base.dtype.kind not in "fiu":
            return None
    else:
        return None
    return View(name, node.name, base.source, tuple(axes), tuple(shape), dtype)


def find_views(graph: gs.Graph) -> dict[str, View]:
    """Every view in ``graph`` (topologically sorted): name → :class:`View`. A view that is a graph
    output, or is read inside a subgraph, is left out (its node then counts as an ordinary reader)."""
    outputs = {t.name for t in graph.outputs}
    main = {id(n) for n in graph.nodes}
    views: dict[str, View] = {}
    for node in graph.nodes:
        if node.op not in VIEW_OPS or (node.domain or "") not in ("", "ai.onnx") or len(node.outputs) != 1:
            continue
        data, out = node.inputs[0] if node.inputs else None, node.outputs[0]
        if data is None or not out.name or out.name in outputs:
            continue
        if any(id(r) not in main for r in out.outputs):
            continue
        if isinstance(data, gs.Constant):
            try:
                shape = tuple(int(d) for d in data.shape)
                dtype = np.dtype(data.dtype)
            except TypeError:
                continue
            if len(shape) < 2:
                continue  # vectors are copied per reader by canonicalize, never viewed
            base = View(data.name, "", data.name, tuple(range(len(shape))), shape, dtype)
        elif data.name in views:
            base = views[data.name]
        else:
            continue
        view = _step(node, base, out.name)
        if view is not None:
            views[out.name] = view
    return views


def view_values(view: View, source: np.ndarray) -> np.ndarray:
    """The values of ``view`` from its source's (a numpy view where no Cast is involved)."""
    kept = [a for a in view.axes if a is not None]
    squeezed = tuple(a for a in range(source.ndim) if a not in kept)
    rest = [a for a in range(source.ndim) if a not in squeezed]
    out = np.squeeze(source, axis=squeezed) if squeezed else source
    out = np.transpose(out, [rest.index(a) for a in kept]).reshape(view.shape)
    return out if out.dtype == view.dtype else out.astype(view.dtype)


@contextmanager
def exposed(graph: gs.Graph, views: dict[str, View]) -> Iterator[None]:
    """While active, every reader of a view reads a stand-in constant of the same name and values
    instead; on exit the graph is exactly as it was (readers in their original order)."""
    if not views:
        yield
        return
    tensors = graph.tensors()
    swaps: list[tuple[gs.Node, int, gs.Tensor]] = []
    try:
        for view in views.values():
            tensor = tensors[view.name]
            source = tensors[view.source]
            standin = gs.Constant(view.name, np.asarray(view_values(view, peek_values(source))))
            for reader in list(tensor.outputs):
                for i, t in enumerate(reader.inputs):
                    if t is tensor:
                        reader.inputs[i] = standin
                        swaps.append((reader, i, tensor))
        yield
    finally:
        for reader, i, tensor in swaps:
            reader.inputs[i] = tensor


def effective_readers(tensor: gs.Tensor, views: dict[str, View], depth: int = 0) -> list[gs.Node]:
    """The nodes reading ``tensor``, each node making a view replaced by the readers of that view."""
    readers: list[gs.Node] = []
    for node in tensor.outputs:
        if len(node.outputs) == 1 and node.outputs[0].name in views and depth < 16:
            readers += effective_readers(node.outputs[0], views, depth + 1)
        else:
            readers.append(node)
    return readers
