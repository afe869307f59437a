"""Run a candidate only where it differs from its source: the part downstream of the changed nodes.

A candidate that compresses one group changes the weights of a few nodes; every node that does not
read them, directly or through other nodes, computes what the source computes. So for a candidate
the nodes split in two:

* the **suffix**: the nodes whose weights, attributes or inputs changed, and every node downstream
  of them;
* the rest, whose tensors read by the suffix (the **boundary**) are those of the source.

The boundary is computed once per set of boundary tensors, by a model of the source's nodes that
produce it (the prefix), and kept; each candidate then runs only its suffix, fed the boundary. The
judge of ``auto`` scores several candidates of each group (fold, fold + ar, L2 pruning, a merge),
and a search judges each group at several widths, all with the same boundary: the prefix runs once.

Outputs the suffix does not produce are the source's. Where the suffix would be most of the model,
its nodes carry subgraphs, its node names are not unique, or the boundary would not fit in
:data:`BOUNDARY_BYTES`, the caller runs the whole candidate instead (:meth:`SuffixRuns.outputs` returns
None). Float results can differ from a whole run in the last bits where onnxruntime fuses ops across
the boundary.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper

from onnxfold.ir.proto_graph import has_subgraph, needed_nodes

Feeds = dict[str, np.ndarray]

#: The boundary tensors kept, over every boundary and feed, at most this many bytes (the least
#: recently used go first): a search visits every group at one level, then at the next.
BOUNDARY_BYTES = 512 * 2**20
#: A suffix of more than this fraction of the nodes runs whole: the prefix would save little.
MAX_SUFFIX_FRACTION = 0.8
#: Sources with more bytes of weights than this run candidates whole: a SuffixRuns keeps a copy.
MAX_SOURCE_BYTES = 256 * 2**20


def suffix_runs(
    source, feeds: Sequence[Feeds], names: Sequence[str], providers: Sequence[str] | None = None
) -> SuffixRuns | None:
    """A :class:`SuffixRuns` for ``source`` (an IR Model or a ModelProto), or None when its weights
    pass :data:`MAX_SOURCE_BYTES` or there is nothing to run."""
    if not feeds:
        return None
    if isinstance(source, onnx.ModelProto):
        if source.ByteSize() > MAX_SOURCE_BYTES:
            return None
        proto = source
    else:
        from onnxfold.ir.model import to_model_proto, weight_bytes

        if weight_bytes(source.graph) > MAX_SOURCE_BYTES:
            return None
        proto = to_model_proto(source)
    return SuffixRuns(proto, feeds, names, providers)


def _nbytes(values: list[Feeds] | None) -> int:
    return sum(int(np.asarray(v).nbytes) for feed in values or [] for v in feed.values())


class SuffixRuns:
    """Outputs of candidates of ``source`` on ``feeds`` by running their suffixes (module docstring).
    ``names``: the outputs wanted, in order; those the suffix does not compute are the source's, and
    are computed with the boundary."""

    def __init__(
        self,
        source: onnx.ModelProto,
        feeds: Sequence[Feeds],
        names: Sequence[str],
        providers: Sequence[str] | None = None,
    ):
        self.source = source
        self.providers = providers
        self.feeds = list(feeds)
        self.names = list(names)
        self.node_bytes = {n.name: n.SerializeToString() for n in source.graph.node}
        # subgraphs may read outer tensors that no input lists: such a model runs whole
        self.usable = (
            len(self.node_bytes) == len(source.graph.node)
            and "" not in self.node_bytes
            and not any(has_subgraph(n) for n in source.graph.node)
        )
        self.init_bytes = {t.name: t.SerializeToString() for t in source.graph.initializer}
        self.produced = {o for n in source.graph.node for o in n.output if o}
        self.kept: OrderedDict[frozenset, list[Feeds] | None] = OrderedDict()
        self.types: dict[str, int] | None = None
        self.suffix_runs = 0

    # ------------------------------------------------------------------ the suffix of a candidate
    def suffix(self, candidate: onnx.ModelProto) -> list[onnx.NodeProto] | None:
        """The candidate's nodes that differ from the source or read what those produce, in graph
        order; None when they cannot be told apart (node names not unique)."""
        names = [n.name for n in candidate.graph.node]
        if not self.usable or len(set(names)) != len(names) or "" in names:
            return None
        changed_inits = {
            t.name
            for t in candidate.graph.initializer
            if self.init_bytes.get(t.name) != t.SerializeToString()
        }
        marked = [
            self.node_bytes.get(node.name) != node.SerializeToString()
            or any(i in changed_inits for i in node.input)
            for node in candidate.graph.node
        ]
        changed = {
            o for node, m in zip(candidate.graph.node, marked, strict=True) if m for o in node.output if o
        }
        grew = True
        while grew:  # downstream of a changed tensor, in whatever order the nodes are listed
            grew = False
            for i, node in enumerate(candidate.graph.node):
                if not marked[i] and any(x in changed for x in node.input):
                    marked[i] = grew = True
                    changed.update(o for o in node.output if o)
        return [node for node, m in zip(candidate.graph.node, marked, strict=True) if m]

    def boundary(self, candidate: onnx.ModelProto, suffix: list[onnx.NodeProto]) -> frozenset[str]:
        produced = {o for n in suffix for o in n.output}
        inits = {t.name for t in candidate.graph.initializer}
        return frozenset(i for n in suffix for i in n.input if i and i not in produced and i not in inits)

    # ------------------------------------------------------------------ running
    def outputs(self, candidate: onnx.ModelProto) -> list[list[np.ndarray]] | None:
        """The candidate's outputs (``names``) per feed, from its suffix; None when it should run whole
        (also when the suffix or its prefix fails: a whole run then tells a broken candidate apart)."""
        try:
            return self._outputs(candidate)
        except Exception:  # noqa: BLE001
            return None

    def _outputs(self, candidate: onnx.ModelProto) -> list[list[np.ndarray]] | None:
        suffix = self.suffix(candidate)
        if suffix is None or len(suffix) > MAX_SUFFIX_FRACTION * len(candidate.graph.node):
            return None
        made = {o for n in suffix for o in n.output}
        computed = [n for n in self.names if n in made]
        inputs = self.boundary(candidate, suffix)
        kept = self._boundary_values(inputs | {n for n in self.names if n not in made})
        if kept is None:
            return None
        sess = None
        if suffix:
            from onnxfold.runtime.session import measurement_session

            model = self._suffix_model(candidate, suffix, inputs, kept[0], computed)
            sess = measurement_session(model, providers=self.providers)
            self.suffix_runs += 1
        results = []
        for values in kept:
            feed = {b: values[b] for b in inputs}
            got = dict(zip(computed, sess.run(computed, feed), strict=True)) if sess is not None else {}
            results.append([got[n] if n in got else values[n] for n in self.names])
        return results

    def _boundary_values(self, bound: frozenset[str]) -> list[Feeds] | None:
        """The boundary tensors per feed (graph inputs taken from the feed, the rest computed by the
        source's prefix), kept for the next candidates; None when they cannot be computed or kept."""
        if bound in self.kept:
            self.kept.move_to_end(bound)
            return self.kept[bound]
        try:
            values = self._compute(bound)
        except Exception:  # noqa: BLE001 (remembered as unusable: the candidates run whole)
            values = None
        self.kept[bound] = values
        while len(self.kept) > 1 and sum(_nbytes(v) for v in self.kept.values()) > BOUNDARY_BYTES:
            self.kept.popitem(last=False)
        return values

    def _compute(self, bound: frozenset[str]) -> list[Feeds] | None:
        from onnxfold.runtime.session import measurement_session

        inputs = {i.name for i in self.source.graph.input}
        inner = sorted(b for b in bound if b not in inputs)
        if any(b not in inputs and b not in self.produced for b in bound):
            return None
        types = self._types()
        if any(b not in types for b in inner):
            return None
        sess = (
            measurement_session(self._prefix_model(inner, types), providers=self.providers) if inner else None
        )
        out, size = [], 0
        for feed in self.feeds:
            values = {b: feed[b] for b in bound if b in inputs}
            if sess is not None:
                values.update(zip(inner, sess.run(inner, feed), strict=True))
            size += _nbytes([values])
            if size > BOUNDARY_BYTES:
                return None
            out.append(values)
        return out

    def _types(self) -> dict[str, int]:
        """The element type of every tensor of the source that shape inference knows."""
        if self.types is None:
            types = {t.name: t.type.tensor_type.elem_type for t in self.source.graph.input}
            try:
                inferred = onnx.shape_inference.infer_shapes(self.source)
                types.update({v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info})
                types.update({v.name: v.type.tensor_type.elem_type for v in inferred.graph.output})
            except Exception:  # noqa: BLE001 (a model inference cannot type: no suffix runs)
                pass
            self.types = {k: v for k, v in types.items() if v}
        return self.types

    def _prefix_model(self, wanted: list[str], types: dict[str, int]) -> onnx.ModelProto:
        """The source's nodes that ``wanted`` depends on, with ``wanted`` as outputs."""
        nodes = needed_nodes(self.source.graph, wanted)
        used = {i for n in nodes for i in n.input}
        graph = helper.make_graph(
            nodes,
            "prefix",
            [i for i in self.source.graph.input if i.name in used],
            [helper.make_tensor_value_info(w, types[w], None) for w in wanted],
            [t for t in self.source.graph.initializer if t.name in used],
        )
        return self._model_like(self.source, graph)

    def _suffix_model(
        self,
        candidate: onnx.ModelProto,
        suffix: list[onnx.NodeProto],
        bound,
        first: Feeds,
        computed: list[str],
    ) -> onnx.ModelProto:
        used = {i for n in suffix for i in n.input}
        elem = {name: helper.np_dtype_to_tensor_dtype(np.asarray(v).dtype) for name, v in first.items()}
        outs = {o.name: o for o in candidate.graph.output}
        graph = helper.make_graph(
            suffix,
            "suffix",
            [helper.make_tensor_value_info(b, elem[b], None) for b in sorted(bound)],
            [outs[n] if n in outs else helper.make_tensor_value_info(n, 0, None) for n in computed],
            [t for t in candidate.graph.initializer if t.name in used],
        )
        return self._model_like(candidate, graph)

    @staticmethod
    def _model_like(model: onnx.ModelProto, graph: onnx.GraphProto) -> onnx.ModelProto:
        out = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
        out.functions.extend(model.functions)
        return out
