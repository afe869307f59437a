"""Model statistics (parameters, weight bytes, MACs, op counts) and aligned before/after tables.

MACs (multiply-accumulates) are counted per ONE sample. Shapes come from ONNX shape inference (with data
propagation) on a copy whose batch dims (symbolic dim 0 of the graph inputs) are pinned to 1, so that
dims derived from the batch, such as a flattened [B*S, H] Gemm input, become concrete. Each op counts
with the ``macs`` hook it registered beside its channel rule (:mod:`onnxfold.analysis.rules.producers`):

* Conv:          prod(Y.shape) * (C_in / group) * prod(kernel)
* ConvTranspose: prod(X.shape) * (C_out / group) * prod(kernel)
* Gemm:          M * K * N                (Y[M, N] = A[M, K] B[K, N])
* MatMul:        prod(Y.shape) * K        (K = last dim of A)
* LSTM/GRU/RNN:  seq * batch * (|W| + |R|) (:mod:`onnxfold.analysis.rules.recurrent`; also
                 onnxruntime's DynamicQuantizeLSTM)

and the model total is divided by the batch N (1 when the batch is symbolic, else the graph inputs'
shared fixed dim 0). For Conv and [B, S, H] x [H, F] MatMul this equals the "leave dim 0 out" rule
(out_elements_per_sample * ...); it is also right for seq-first [S, B, H] and flattened [B*S, H] tensors.
The integer variants (ConvInteger, QLinearConv, MatMulInteger, QLinearMatMul) count the same way, in the
default and the com.microsoft domain. Symbolic dims that remain after pinning are taken as 1 and listed in ``symbolic_dims``.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import onnx
from onnx import TensorProto

from onnxfold.analysis.registry import hook as op_hook
from onnxfold.ir.proto_graph import walk_graphs
from onnxfold.ir.shapes import made_up_dim, value_info_dims
from onnxfold.report.table import format_table, human_bytes, human_count  # noqa: F401 (re-exported)

logger = logging.getLogger(__name__)

# Bits per element of tensor types that count as weights. INT64 (shapes, indices), BOOL and STRING do not.
_WEIGHT_BITS: dict[int, int] = {
    TensorProto.FLOAT: 32,
    TensorProto.DOUBLE: 64,
    TensorProto.FLOAT16: 16,
    TensorProto.BFLOAT16: 16,
    TensorProto.INT8: 8,
    TensorProto.UINT8: 8,
    TensorProto.INT16: 16,
    TensorProto.UINT16: 16,
    TensorProto.INT32: 32,
}
for _name, _bits in (
    ("FLOAT8E4M3FN", 8),
    ("FLOAT8E4M3FNUZ", 8),
    ("FLOAT8E5M2", 8),
    ("FLOAT8E5M2FNUZ", 8),
    ("FLOAT8E8M0", 8),
    ("INT4", 4),
    ("UINT4", 4),
    ("FLOAT4E2M1", 4),
    ("INT2", 2),
    ("UINT2", 2),
):
    if hasattr(TensorProto, _name):
        _WEIGHT_BITS[getattr(TensorProto, _name)] = _bits

# Initializers at least this large (and not INT64/INT32) are hidden from shape inference as plain
# graph inputs, so that inference never copies or needs their data.
_LIGHT_THRESHOLD = 1024

Dim = int | str | None


@dataclass
class ModelStats:
    """Size and cost of a model. ``macs`` is per one sample; see the module docstring."""

    params: int = 0
    weight_bytes: int = 0
    macs: int = 0
    macs_unknown_nodes: int = 0
    op_counts: Counter = field(default_factory=Counter)
    file_size: int | None = None
    batch: int = 1
    symbolic_dims: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: MACs were counted at given input shapes (``--input-shape`` or the user's samples)
    pinned: bool = False
    #: parameters of every stored weight tensor by name (what ``params`` adds up; not in ``to_dict``)
    tensor_params: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def node_count(self) -> int:
        """Number of nodes, subgraph nodes included, but not Constant nodes: they hold a tensor, as an
        initializer does (PP-OCRv3's 302 of them, stored as initializers, read "616 -> 315 nodes,
        -48.9%" at ``-s 0``)."""
        return sum(n for op, n in self.op_counts.items() if op != "Constant")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {
            "params": self.params,
            "weight_bytes": self.weight_bytes,
            "macs": self.macs,
            "macs_unknown_nodes": self.macs_unknown_nodes,
            "node_count": self.node_count,
            "op_counts": dict(sorted(self.op_counts.items())),
            "file_size": self.file_size,
            "batch": self.batch,
            "symbolic_dims": list(self.symbolic_dims),
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------- traversal


def op_counts(model: onnx.ModelProto) -> Counter:
    """Nodes of each op type (``domain.op`` outside the default domain), subgraph nodes included."""
    counts: Counter = Counter()
    for graph in walk_graphs(model.graph):
        for node in graph.node:
            counts[node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"] += 1
    return counts


def _numel(dims: Iterable[int]) -> int:
    return math.prod(int(d) for d in dims)


def _weight_tensors(graph: onnx.GraphProto) -> Iterator[tuple[str, int, int]]:
    """(name, data_type, element count) of initializers, sparse initializers and Constant-node tensors."""
    for init in graph.initializer:
        yield init.name, init.data_type, _numel(init.dims)
    for sparse in graph.sparse_initializer:
        yield sparse.values.name, sparse.values.data_type, _numel(sparse.values.dims)  # stored non-zeros
    for node in graph.node:
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
            continue
        name = node.output[0] if node.output else node.name
        for attr in node.attribute:
            if attr.name == "value":
                yield name, attr.t.data_type, _numel(attr.t.dims)
            elif attr.name == "sparse_value":
                yield name, attr.sparse_tensor.values.data_type, _numel(attr.sparse_tensor.values.dims)
            elif attr.name == "value_float":
                yield name, TensorProto.FLOAT, 1
            elif attr.name == "value_floats":
                yield name, TensorProto.FLOAT, len(attr.floats)


# --------------------------------------------------------------------------- shapes


def _graph_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are real inputs (not initializers listed as inputs, as in IR < 4)."""
    inits = {i.name for i in graph.initializer}
    return [i for i in graph.input if i.name not in inits]


def _given_dims(model: onnx.ModelProto, shapes: dict | None) -> dict[str, list[int]]:
    """``shapes`` for the graph inputs they fit (same name and rank)."""
    out = {}
    for vi in _graph_inputs(model.graph):
        dims = _dims_of(vi)
        if shapes and vi.name in shapes and dims is not None and len(dims) == len(shapes[vi.name]):
            out[vi.name] = [int(d) for d in shapes[vi.name]]
    return out


def _symbol_sizes(model: onnx.ModelProto, given: dict[str, list[int]]) -> dict[str, int]:
    """{symbolic dim name: size} of the inputs' named dims as ``given`` sizes them."""
    out: dict[str, int] = {}
    for vi in _graph_inputs(model.graph):
        dims = _dims_of(vi)
        if vi.name in given and dims is not None:
            pairs = zip(dims, given[vi.name], strict=True)
            out.update({d: v for d, v in pairs if isinstance(d, str) and d})
    return out


def _batch_of(model: onnx.ModelProto, given: dict | None = None) -> tuple[int, set[str], str | None]:
    """(batch N, symbolic dim-0 names to pin to N, warning or None) from dim 0 of the graph inputs
    (as ``given`` sets them).

    Symbolic dim 0 everywhere -> N = 1; one shared fixed dim 0 -> that N (symbolic ones pinned to it).
    """
    fixed: set[int] = set()
    symbols: set[str] = set()
    for vi in _graph_inputs(model.graph):
        dims = (given or {}).get(vi.name) or _dims_of(vi)
        if not dims:
            continue
        if isinstance(dims[0], int):
            fixed.add(dims[0])
        elif dims[0]:
            symbols.add(dims[0])
    if len(fixed) > 1:
        return 1, symbols, f"inputs disagree on dim 0 {sorted(fixed)}: MACs are per model run, not per sample"
    n = fixed.pop() if fixed else 1
    return max(n, 1), symbols, None


def _pin_dims(vi: onnx.ValueInfoProto, symbols: set[str], value: int, first: bool) -> None:
    """Replace dims named in ``symbols`` (and, if ``first``, an unnamed dim 0) by ``value``, in place."""
    if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
        return
    for i, d in enumerate(vi.type.tensor_type.shape.dim):
        named = d.HasField("dim_param") and d.dim_param in symbols
        unnamed0 = first and i == 0 and not d.HasField("dim_value") and not d.HasField("dim_param")
        if named or unnamed0:
            d.dim_value = value


def _light_copy(
    model: onnx.ModelProto, symbols: set[str], batch: int, given: dict | None = None
) -> onnx.ModelProto:
    """A copy of ``model`` for shape inference: big initializers become typed graph inputs (no data is
    copied), the batch dims (``symbols``, unnamed input dim 0) are pinned to ``batch`` and the inputs
    in ``given`` get those dims (the shapes recorded between nodes are then inferred again)."""
    g = model.graph
    light = onnx.ModelProto()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    lg = light.graph
    lg.name = g.name
    lg.node.extend(g.node)
    lg.input.extend(g.input)
    lg.output.extend(g.output)
    if not given:
        lg.value_info.extend(g.value_info)
    init_names = {i.name for i in g.initializer}
    for vi in lg.input:
        _pin_dims(vi, symbols, batch, first=vi.name not in init_names)
        for d, v in zip(vi.type.tensor_type.shape.dim, (given or {}).get(vi.name, ()), strict=False):
            d.dim_value = v
    for vi in (*lg.output, *lg.value_info):
        _pin_dims(vi, symbols, batch, first=False)
    input_names = {i.name for i in g.input}
    for init in g.initializer:
        small = init.data_location != TensorProto.EXTERNAL and (  # whatenc's 96 biases in model.onnx.data:
            _numel(init.dims) < _LIGHT_THRESHOLD  # onnxruntime could not find them beside a light copy
            or init.data_type in (TensorProto.INT64, TensorProto.INT32)
        )
        if small:
            lg.initializer.append(init)
        elif init.name not in input_names:
            lg.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    lg.sparse_initializer.extend(g.sparse_initializer)
    return light


def _dims_of(vi: onnx.ValueInfoProto) -> list[Dim] | None:
    return value_info_dims(vi)


def _shape_map(
    model: onnx.ModelProto,
    symbols: set[str],
    batch: int,
    given: dict | None = None,
    untaken: set[str] | None = None,
) -> dict[str, list[Dim]]:
    """Tensor name -> shape, from shape inference (with data propagation) on a batch-pinned light copy
    (its inputs as ``given`` sets them, and the shape vectors they fix computed); only the declared
    shapes if inference fails. ``untaken`` collects the outputs of If branches not taken at ``given``."""
    from onnxfold.ir.shapes import infer_with_contrib_ops
    from onnxfold.report.pinned_shapes import resolve_shape_values

    light = _light_copy(model, symbols, batch, given)
    try:
        if given:  # shape vectors are values at the pinned sizes: computed where inference stops
            inferred = resolve_shape_values(light, infer_with_contrib_ops, untaken)
        else:
            inferred = infer_with_contrib_ops(light)  # a contrib op's shape, then what follows it
    except Exception as exc:  # inference is best effort
        logger.warning("shape inference failed (%s); MACs only for nodes with declared shapes", exc)
        inferred = light
    shapes: dict[str, list[Dim]] = {}
    for graph in walk_graphs(inferred.graph):
        for vi in (*graph.input, *graph.output, *graph.value_info):
            dims = _dims_of(vi)
            if dims is not None:
                shapes.setdefault(vi.name, dims)
    for graph in walk_graphs(model.graph):
        for init in graph.initializer:
            shapes.setdefault(init.name, [int(d) for d in init.dims])
        for node in graph.node:
            if node.op_type == "Constant" and node.output:
                for attr in node.attribute:
                    if attr.name == "value":
                        shapes.setdefault(node.output[0], [int(d) for d in attr.t.dims])
    return shapes


class _DimResolver:
    """Turns possibly-symbolic dims into ints (a symbol in ``sizes`` -> its size, any other -> 1),
    remembering the symbols it took as 1."""

    def __init__(self, sizes: dict[str, int] | None = None) -> None:
        self.symbols: set[str] = set()
        self.sizes = dict(sizes or {})

    def dim(self, d: Dim) -> int:
        if isinstance(d, int) and d >= 0:
            return d
        if isinstance(d, str) and d in self.sizes:
            return self.sizes[d]
        self.symbols.add(d if isinstance(d, str) and d else "?")
        return 1

    def prod(self, dims: Sequence[Dim]) -> int:
        return math.prod(self.dim(d) for d in dims)


def _node_macs(node: onnx.NodeProto, shapes: dict[str, list[Dim]], res: _DimResolver) -> int | None:
    """MACs of one node for the whole (batch-pinned) run, from the ``macs`` hook its op registered
    (:mod:`onnxfold.analysis.registry`); 0 for ops without one; None if shapes are missing."""
    macs = op_hook("macs", node.op_type, node.domain)
    if macs is None:
        return 0

    def shape(idx: int, outputs: bool = False) -> list[Dim] | None:
        names = node.output if outputs else node.input
        if idx >= len(names) or not names[idx]:
            return None
        return shapes.get(names[idx])

    return macs(node, shape, res.dim)


# --------------------------------------------------------------------------- public


#: ops whose inputs after the first are a quantization's scale and zero point, not parameters
_QUANTIZERS = ("QuantizeLinear", "DequantizeLinear")


#: integer ops' inputs that are a quantization's scales and zero points: MatMulInteger and ConvInteger
#: (zero points at 2, 3), QLinearConv and QLinearMatMul (scales and zero points at 1, 2, 4, 5, 6, 7)
_QUANTIZED_INPUTS = {
    "MatMulInteger": (2, 3),
    "ConvInteger": (2, 3),
    "QLinearConv": (1, 2, 4, 5, 6, 7),
    "QLinearMatMul": (1, 2, 4, 5, 6, 7),
}


def quantization_constants(graph: onnx.GraphProto) -> set[str]:
    """The names of ``graph``'s scales and zero points: those of Quantize/DequantizeLinear and of the
    integer ops, and a dynamic quantization's weight scale, the constant a Mul multiplies a
    DynamicQuantizeLinear's scale by (onnxruntime's dynamic INT8 all-MiniLM-L6-v2 read "20.6M -> 20.6M
    +0.2%" parameters beside its weights in a quarter of the bytes)."""
    out = {i for n in graph.node if n.op_type in _QUANTIZERS for i in n.input[1:] if i}
    for n in graph.node:
        out.update(
            n.input[k] for k in _QUANTIZED_INPUTS.get(n.op_type, ()) if k < len(n.input) and n.input[k]
        )
    dynamic = {n.output[1] for n in graph.node if n.op_type == "DynamicQuantizeLinear" and len(n.output) > 1}
    for n in graph.node:
        if n.op_type == "Mul" and any(i in dynamic for i in n.input):
            out.update(i for i in n.input if i not in dynamic)
    return out


def weight_counts(model: onnx.ModelProto) -> tuple[int, int, dict[str, int]]:
    """(parameters, weight bytes, parameters by tensor) of every stored weight tensor of ``model``,
    subgraphs included, each counted once. The scales and zero points of Quantize/DequantizeLinear
    are weight bytes but not parameters: a wake-word featurizer quantized per channel read "params
    811K -> 830K +2.4%" beside its weights stored in 70% fewer bytes."""
    params, bits, by_tensor = 0, 0, {}
    for graph in walk_graphs(model.graph):
        scales = quantization_constants(graph)
        for name, dtype, n in _weight_tensors(graph):
            if dtype in _WEIGHT_BITS:
                bits += n * _WEIGHT_BITS[dtype]
                if name not in scales:
                    params += n
                    by_tensor[name] = by_tensor.get(name, 0) + n
    return params, (bits + 7) // 8, by_tensor


def model_stats(
    model: onnx.ModelProto,
    file_size: int | None = None,
    shapes: dict | None = None,
    batched: bool = True,
) -> ModelStats:
    """Parameters, weight bytes, per-sample MACs and op counts of ``model`` (never reads from disk).

    Params/bytes come from tensor dims, so they are right even if external data was not loaded. Every
    stored tensor counts once, however many nodes read it (a tied embedding and LM head is one tensor;
    cleanup stores copies of one weight once, so a copy the input held is not counted after it).
    ``shapes``: input name -> dims (``--input-shape``) the MACs are counted at (free dims were taken
    as 1 whatever the user gave: madmom's key CNN counted 664K MACs, one frame, at [60, 105]);
    ``batched=False``: the model has no batch axis (:mod:`onnxfold.ir.batch_view`), so its leading
    dim is not divided out.
    """
    stats = ModelStats(file_size=file_size)
    stats.params, stats.weight_bytes, stats.tensor_params = weight_counts(model)
    has_subgraphs = any(graph is not model.graph for graph in walk_graphs(model.graph))
    stats.op_counts = op_counts(model)

    given = _given_dims(model, shapes)
    stats.pinned = bool(given)
    batch, batch_symbols, warning = _batch_of(model, given) if batched else (1, set(), None)
    if warning:
        stats.notes.append(warning)
    stats.batch = batch
    untaken: set[str] = set()  # the outputs of an If branch that does not run at the given sizes
    shapes = _shape_map(model, batch_symbols, batch, given, untaken)
    # at given shapes, a node the pinned inference leaves without shapes (a Reshape to a target
    # computed from Shape, before opset 14) is counted on the unpinned shapes, its symbols sized as
    # given; they are inferred only when such a node is met (the search counts every candidate here)
    fallback: dict[str, list[Dim]] | None = None
    res = _DimResolver(_symbol_sizes(model, given))
    total = 0
    for graph in walk_graphs(model.graph):
        for node in graph.node:
            if op_hook("macs", node.op_type, node.domain) is None or any(o in untaken for o in node.output):
                continue
            before = set(res.symbols)
            macs = _node_macs(node, shapes, res)
            if macs is None and given:
                if fallback is None:
                    fallback = _shape_map(model, batch_symbols, batch)
                macs = _node_macs(node, fallback, res)
            if macs is None:
                stats.macs_unknown_nodes += 1
                res.symbols = before
                logger.debug("no shapes for %s node %r; MACs not counted", node.op_type, node.name)
            else:
                total += macs
    stats.macs = total // batch if total % batch == 0 else round(total / batch)
    stats.symbolic_dims = sorted(res.symbols - batch_symbols)
    if stats.symbolic_dims:
        stats.notes.append(
            f"{symbolic_summary(stats.symbolic_dims)} taken as 1 for MACs (MACs scale with them; "
            "--input-shape counts them at a real size)"
        )
    if stats.macs_unknown_nodes:
        stats.notes.append(f"{stats.macs_unknown_nodes} node(s) without inferred shapes: MACs not counted")
    if has_subgraphs:
        stats.notes.append("subgraph (If/Loop/Scan) nodes counted once each")
    return stats


def symbolic_summary(dims: Sequence[str], shown: int = 3, width: int = 40) -> str:
    """'symbolic dims a, b, c' for a few short names; longer lists and exported expressions (a
    dynamic output length written out as floor(...) arithmetic) are cut to ``shown`` names of at most
    ``width`` characters and a count. Shape inference's own names (``unk__N``, a dim it derived from
    free ones, as a Conv's output length) mean nothing to a reader: they are counted, not named."""
    own = [d for d in dims if not made_up_dim(d)]
    derived = len(dims) - len(own)
    parts = []
    if own:
        names = [d if len(d) <= width else d[: width - 1] + "…" for d in own[:shown]]
        more = f" and {len(own) - shown} more" if len(own) > shown else ""
        parts.append(f"symbolic dim{'s' if len(own) > 1 else ''} {', '.join(names)}{more}")
    if derived:
        parts.append(f"{derived} dim{'s' if derived > 1 else ''} inferred from the inputs' free dims")
    return " and ".join(parts)


def activation_bytes(model: onnx.ModelProto, shapes: dict[str, Sequence[int]]) -> int | None:
    """Bytes of the tensors the main graph's nodes compute, per sample, with the inputs at ``shapes``
    (4 bytes an element; dims inference leaves unknown taken as 1): what a run that keeps every
    intermediate output holds, as onnxruntime's calibration does. None where no shape is inferred."""
    given = _given_dims(model, dict(shapes))
    batch, symbols, _ = _batch_of(model, given)
    dims = _shape_map(model, symbols, batch, given)
    res = _DimResolver(_symbol_sizes(model, given))
    sized = [res.prod(dims[o]) for node in model.graph.node for o in node.output if o in dims]
    return 4 * sum(sized) // max(1, batch) if sized else None
