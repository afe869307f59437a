"""float16: float32 weights and compute converted to float16; graph inputs/outputs stay float32 by default.

What is converted is the *data path*: a value is data when it is a float32 graph input, a float32
weight of more than one element, or a float output of a node with a data input. Every node with a
data input computes in float16 unless its op is kept in float32 (``keep_ops``, quantization and
random ops, ops without an ONNX schema, e.g. custom domains). Computations that do not depend on
data (shape arithmetic such as ``Cast(Shape(x)) * 0.5``, attention masks built from integer inputs)
keep float32, so sizes and indices never pass through float16.

Within a float16 node, an input keeps float32 when the op's schema does not allow float16 there
(e.g. Resize ``scales``, Range, NonMaxSuppression), and type-agnostic inputs (Shape, Size, Cast's
input, ...) are left as they are. Float32 weights are stored in float16 (values beyond ±65504 are
clamped to it); a weight also read by a float32 node keeps a float32 copy. ``Cast(to=FLOAT)`` nodes
on the data path cast to FLOAT16. Where a float16 value meets a float32 input (or the reverse) one
shared ``Cast`` is inserted; with ``keep_io_types`` the graph inputs are cast to float16 after
entry and the outputs back to float32 before exit. Output types come from ONNX's per-node
inference, and ``value_info`` is inferred again at the end (strict type check).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxfold.ir.edit import fresh_name
from onnxfold.ir.model import Model, model_from_proto, to_model_proto
from onnxfold.ir.proto_graph import has_subgraph
from onnxfold.passes.quantize import replace_model_contents
from onnxfold.pipeline.manager import Option, Pass, PassContext, PassError, PassResult

FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16
FP16_MAX = float(np.finfo(np.float16).max)

#: Ops that always compute in float32 (quantization, sampling). Casts are inserted around them.
DEFAULT_KEEP_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "QLinearConv",
        "QLinearMatMul",
        "ConvInteger",
        "MatMulInteger",
        "RandomNormal",
        "RandomUniform",
        "RandomNormalLike",
        "RandomUniformLike",
        "Multinomial",
        "Bernoulli",
    }
)
_FLOAT_TYPES = (FLOAT, FLOAT16)


class Float16Error(ValueError):
    """A model the float16 conversion cannot handle."""


def _numel(dims: Iterable[int]) -> int:
    return int(np.prod(list(dims), dtype=np.int64))


def _constant_float(node: onnx.NodeProto) -> np.ndarray | None:
    """The float32 value of a Constant node, or None when it is not float32."""
    for attr in node.attribute:
        if attr.name == "value" and attr.t.data_type == FLOAT:
            return numpy_helper.to_array(attr.t)
        if attr.name == "value_float":
            return np.array(attr.f, dtype=np.float32)
        if attr.name == "value_floats":
            return np.array(list(attr.floats), dtype=np.float32)
    return None


def _to_fp16(array: np.ndarray) -> tuple[np.ndarray, int]:
    """float16 copy of ``array``, finite values clamped to ±65504; also how many were clamped."""
    array = np.asarray(array, dtype=np.float32)
    finite = np.isfinite(array)
    over = int(np.count_nonzero(finite & (np.abs(array) > FP16_MAX)))
    clipped = np.where(finite, np.clip(array, -FP16_MAX, FP16_MAX), array)
    return clipped.astype(np.float16), over


class _Converter:
    """One conversion of a ModelProto (see the module docstring)."""

    def __init__(self, proto: onnx.ModelProto, keep_io_types: bool, keep_ops: frozenset[str]):
        self.proto = proto
        self.keep_io_types = keep_io_types
        self.keep_ops = keep_ops
        self.opsets = {o.domain or "": o.version for o in proto.opset_import}
        self.opset = self.opsets.get("", self.opsets.get("ai.onnx", 0))
        self.stats: dict[str, Any] = {
            "fp16_nodes": 0,
            "fp32_nodes": 0,
            "casts": 0,
            "weights_converted": 0,
            "weights_kept_fp32": 0,
            "values_clamped": 0,
        }
        g = proto.graph
        self.names: set[str] = (
            {n.name for n in g.node} | {v.name for v in g.input} | {v.name for v in g.output}
        )
        self.names |= {t.name for t in g.initializer} | {o for n in g.node for o in n.output}
        inferred = onnx.shape_inference.infer_shapes(
            proto, check_type=False, strict_mode=False, data_prop=True
        )
        self.vtypes: dict[str, onnx.TypeProto] = {}
        for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
            if vi.type.HasField("tensor_type"):
                self.vtypes[vi.name] = vi.type
        for t in g.initializer:
            self.vtypes.setdefault(t.name, helper.make_tensor_type_proto(t.data_type, list(t.dims)))
        self.graph_inputs = {v.name for v in g.input}
        self.inits = {t.name: t for t in g.initializer if t.name not in self.graph_inputs}
        self.const_nodes = {
            n.output[0]: n
            for n in g.node
            if n.op_type == "Constant" and n.domain in ("", "ai.onnx") and _constant_float(n) is not None
        }

    # ----------------------------------------------------------------- helpers

    def fresh(self, base: str) -> str:
        return fresh_name(self.names, base)

    def elem(self, name: str) -> int:
        t = self.cur.get(name)
        return t.tensor_type.elem_type if t is not None else 0

    def with_elem(self, name: str, elem: int) -> onnx.TypeProto:
        t = onnx.TypeProto()
        if name in self.cur:
            t.CopyFrom(self.cur[name])
        t.tensor_type.elem_type = elem
        return t

    def is_weight(self, name: str) -> bool:
        return name in self.inits or name in self.const_nodes

    def as_type(self, name: str, want: int) -> str:
        """The name of ``name``'s value in type ``want`` (a float16 weight copy or a shared Cast)."""
        if self.elem(name) == want:
            return name
        key = (name, want)
        if key in self.cache:
            return self.cache[key]
        if want == FLOAT16 and self.is_weight(name):
            array = (
                numpy_helper.to_array(self.inits[name])
                if name in self.inits
                else _constant_float(self.const_nodes[name])
            )
            half, over = _to_fp16(array)
            self.stats["values_clamped"] += over
            new = self.fresh(f"{name}_fp16")
            if name in self.inits:
                self.new_inits.append(numpy_helper.from_array(half, new))
            else:
                self.nodes.append(
                    helper.make_node(
                        "Constant",
                        [],
                        [new],
                        name=self.fresh(f"{new}_const"),
                        value=numpy_helper.from_array(half, new),
                    )
                )
            self.copies[new] = name
            self.stats["weights_converted"] += 1
        else:
            suffix = "fp16" if want == FLOAT16 else "fp32"
            new = self.fresh(f"{name}_to_{suffix}")
            self.nodes.append(
                helper.make_node("Cast", [name], [new], name=self.fresh(f"{new}_cast"), to=want)
            )
            self.stats["casts"] += 1
        self.cur[new] = self.with_elem(name, want)
        self.cache[key] = new
        return new

    # ----------------------------------------------------------------- main

    def run(self) -> onnx.ModelProto:
        g = self.proto.graph
        if any(has_subgraph(n) for n in g.node):
            raise Float16Error("models with control flow (If/Loop/Scan subgraphs) are not supported")
        self.cur: dict[str, onnx.TypeProto] = {}
        self.cache: dict[tuple[str, int], str] = {}
        self.copies: dict[str, str] = {}
        self.nodes: list[onnx.NodeProto] = []
        self.new_inits: list[TensorProto] = []
        data: set[str] = set()
        for vi in g.input:
            self.cur[vi.name] = onnx.TypeProto()
            self.cur[vi.name].CopyFrom(vi.type)
            if vi.type.tensor_type.elem_type == FLOAT:
                data.add(vi.name)
                if not self.keep_io_types:
                    self.cur[vi.name].tensor_type.elem_type = FLOAT16
        for name, t in self.inits.items():
            self.cur[name] = self.vtypes[name]
            if t.data_type == FLOAT and _numel(t.dims) > 1:
                data.add(name)
        for node in g.node:
            if node.output and node.output[0] in self.const_nodes:
                out = node.output[0]
                if _constant_float(node).size > 1:
                    data.add(out)
            if any(i in data for i in node.input if i):
                self.convert_node(node, data)
            else:
                self.keep_node(node)
        self.finish_outputs()
        return self.assemble()

    def schema(self, node: onnx.NodeProto) -> onnx.defs.OpSchema | None:
        if node.domain not in ("", "ai.onnx"):
            return None
        try:
            return onnx.defs.get_schema(node.op_type, self.opset, "")
        except onnx.defs.SchemaError:
            return None

    def keep_node(self, node: onnx.NodeProto, count: bool = False) -> None:
        """Copy a node that computes in float32: its float16 inputs are cast back to float32."""
        new = onnx.NodeProto()
        new.CopyFrom(node)
        for i, name in enumerate(node.input):
            if name and self.elem(name) == FLOAT16:
                new.input[i] = self.as_type(name, FLOAT)
        self.nodes.append(new)
        for out in node.output:
            if out and out in self.vtypes:
                self.cur[out] = self.vtypes[out]
        if count:
            self.stats["fp32_nodes"] += 1

    def convert_node(self, node: onnx.NodeProto, data: set[str]) -> None:
        schema = self.schema(node)
        for out in node.output:  # data flows through every float output of a node with a data input
            if (
                out
                and self.vtypes.get(out) is not None
                and self.vtypes[out].tensor_type.elem_type in _FLOAT_TYPES
            ):
                data.add(out)
        if schema is None or node.op_type in self.keep_ops:
            self.keep_node(node, count=True)
            return
        wants = self.input_wants(node, schema)
        new = onnx.NodeProto()
        new.CopyFrom(node)
        for i, want in wants.items():
            new.input[i] = self.as_type(node.input[i], want)
        if node.op_type == "Cast":
            for attr in new.attribute:
                if attr.name == "to" and attr.i == FLOAT:
                    attr.i = FLOAT16
        try:
            out_types = onnx.shape_inference.infer_node_outputs(
                schema,
                new,
                {n: self.cur[n] for n in new.input if n and n in self.cur},
                opset_imports=[helper.make_opsetid(d, v) for d, v in self.opsets.items()],
            )
        except Exception:  # inference of this op failed: compute it in float32 instead
            self.keep_node(node, count=True)
            return
        self.nodes.append(new)
        self.stats["fp16_nodes"] += 1
        for out in node.output:
            if not out:
                continue
            if out in out_types and out_types[out].HasField("tensor_type"):
                t = onnx.TypeProto()
                t.CopyFrom(out_types[out])
                if not t.tensor_type.HasField("shape") and out in self.vtypes:
                    t.tensor_type.shape.CopyFrom(self.vtypes[out].tensor_type.shape)
                self.cur[out] = t
            elif out in self.vtypes:
                self.cur[out] = self.vtypes[out]

    def input_wants(self, node: onnx.NodeProto, schema: onnx.defs.OpSchema) -> dict[int, int]:
        """For each float input that must change type: the type it must have."""
        formals = list(schema.inputs)
        allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
        out_params = {o.type_str for o in schema.outputs}
        params: dict[int, str] = {}
        for i, name in enumerate(node.input):
            if name and formals and self.elem(name) in _FLOAT_TYPES:
                params[i] = formals[min(i, len(formals) - 1)].type_str
        wants: dict[int, int] = {}
        for i, param in params.items():
            types = allowed.get(param, {param})
            if "tensor(float16)" not in types:
                want = FLOAT
            elif param in out_params:
                want = FLOAT16
            else:  # the type does not reach an output (Shape, Cast, BN scale): inputs sharing it must agree,
                # weights follow the computed values (float16 when there are none)
                computed = {
                    self.elem(node.input[j])
                    for j, p in params.items()
                    if p == param and not self.is_weight(node.input[j])
                }
                want = computed.pop() if len(computed) == 1 else FLOAT16
            if want != self.elem(node.input[i]):
                wants[i] = want
        return wants

    def finish_outputs(self) -> None:
        """Cast graph outputs back to their interface type (float32 unless keep_io_types is off)."""
        self.out_types: dict[str, int] = {}
        for vi in self.proto.graph.output:
            original = vi.type.tensor_type.elem_type
            want = FLOAT16 if original == FLOAT and not self.keep_io_types else original
            self.out_types[vi.name] = want
            have = self.elem(vi.name)
            if have not in _FLOAT_TYPES or have == want or vi.name in self.graph_inputs:
                continue
            inner = self.fresh(f"{vi.name}_{'fp16' if have == FLOAT16 else 'fp32'}")
            for node in self.nodes:
                for seq in (node.input, node.output):
                    for i, name in enumerate(seq):
                        if name == vi.name:
                            seq[i] = inner
            self.cur[inner] = self.cur[vi.name]
            self.nodes.append(
                helper.make_node("Cast", [inner], [vi.name], name=self.fresh(f"{vi.name}_cast"), to=want)
            )
            self.stats["casts"] += 1

    def assemble(self) -> onnx.ModelProto:
        g = self.proto.graph
        used = {i for n in self.nodes for i in n.input if i} | {v.name for v in g.output}
        renames: dict[str, str] = {}
        for copy, original in self.copies.items():
            if original not in used:  # only the float16 copy is read: it takes the original name
                renames[copy] = original
        dead_consts = {
            n.output[0]
            for n in self.nodes
            if n.op_type == "Constant" and n.output[0] in self.const_nodes and n.output[0] not in used
        }
        nodes = []
        for node in self.nodes:
            if node.op_type == "Constant" and node.output and node.output[0] in dead_consts:
                continue
            for seq in (node.input, node.output):
                for i, name in enumerate(seq):
                    if name in renames:
                        seq[i] = renames[name]
            nodes.append(node)
        inits = []
        for t in g.initializer:
            if t.name in self.graph_inputs or t.name in used or t.name not in self.copies.values():
                inits.append(t)
                if t.name in self.copies.values() and t.data_type == FLOAT:
                    self.stats["weights_kept_fp32"] += 1
        for t in self.new_inits:
            if t.name in renames:
                t.name = renames[t.name]
            inits.append(t)
        out = onnx.ModelProto()
        out.CopyFrom(self.proto)
        del out.graph.node[:]
        out.graph.node.extend(nodes)
        del out.graph.initializer[:]
        out.graph.initializer.extend(inits)
        del out.graph.value_info[:]
        if not self.keep_io_types:
            for vi in list(out.graph.input) + list(out.graph.output):
                if vi.type.tensor_type.elem_type == FLOAT:
                    vi.type.tensor_type.elem_type = FLOAT16
        try:
            return onnx.shape_inference.infer_shapes(out, check_type=True, strict_mode=True, data_prop=True)
        except Exception as exc:
            raise Float16Error(
                f"the converted graph does not type-check: {str(exc).splitlines()[0][:300]}"
            ) from None


def convert_float16(
    proto: onnx.ModelProto, keep_io_types: bool = True, keep_ops: Iterable[str] = ()
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """A float16 copy of ``proto`` (see the module docstring) and conversion statistics."""
    conv = _Converter(proto, keep_io_types, DEFAULT_KEEP_OPS | frozenset(keep_ops))
    converted = conv.run()
    return converted, conv.stats


class Float16Pass(Pass):
    name = "float16"
    summary = "convert float32 weights and compute to float16 (graph inputs/outputs stay float32 by default)"
    options = (
        Option("keep_io_types", bool, True, "keep float32 graph inputs/outputs (Cast at the boundaries)"),
        Option(
            "keep_ops",
            list,
            [],
            "op types that keep computing in float32 (separate with |), in "
            "addition to quantization and random ops",
        ),
    )

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        proto = to_model_proto(model)
        try:
            converted, stats = convert_float16(proto, self.opts["keep_io_types"], self.opts["keep_ops"])
        except Float16Error as exc:
            raise PassError(f"float16: {exc}") from None
        replace_model_contents(model, model_from_proto(converted, model.base_dir))
        if stats["values_clamped"]:
            stats["warning"] = f"{stats['values_clamped']} weight values beyond ±65504 were clamped"
        return PassResult(bool(stats["fp16_nodes"] or stats["weights_converted"]), stats)
