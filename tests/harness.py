"""Helpers shared by the test files (test files never import each other).

Duplicate-channel oracles (Lemma B.1): a tiny graph is built from "compact" weights with :class:`Net`, and
:func:`widen` gives its "wide" twin, where every hidden channel of a group is repeated on the producer side
(:func:`A`) and repeated and halved on the consumer side (:func:`S`); both compute the same function, so
folding the wide one at sparsity 0.5 must give the compact one back. :func:`mlp_proto` is a small valid MLP
with two foldable groups for I/O and error tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

AVG, SUM, KEEP = "avg", "sum", "keep"


def A(n: int, block: int = 1) -> tuple[int, int, str]:
    """n channels whose slices (``block`` entries each) are repeated: producer side."""
    return (n, block, AVG)


def S(n: int, block: int = 1) -> tuple[int, int, str]:
    """n channels whose slices are repeated and halved: consumer side."""
    return (n, block, SUM)


def K(n: int) -> tuple[int, int, str]:
    """n entries left alone (not part of a duplicated group)."""
    return (n, 1, KEEP)


def widen(weights: dict[str, np.ndarray], dup: list[tuple[str, int, list]]) -> dict[str, np.ndarray]:
    """The wide weights: along ``axis`` of each named tensor, each part is duplicated (c → c, c + n)."""
    out = dict(weights)
    for name, axis, parts in dup:
        x = np.moveaxis(out[name], axis, 0)
        pieces, pos = [], 0
        for n, block, role in parts:
            seg = x[pos : pos + n * block]
            pos += n * block
            if role != KEEP:
                seg = np.concatenate([seg, seg])
                if role == SUM:
                    seg = seg / seg.dtype.type(2)
            pieces.append(seg)
        assert pos == x.shape[0], f"duplication spec of {name} axis {axis} covers {pos} of {x.shape[0]}"
        out[name] = np.moveaxis(np.concatenate(pieces), 0, axis)
    return out


def producer(w: str, b: str | None, n: int, axis: int = 0) -> list[tuple[str, int, list]]:
    return [(w, axis, [A(n)])] + ([(b, 0, [A(n)])] if b else [])


class Net:
    """A tiny graph under construction; node outputs are named ``<node>_y`` (``_y1``, … for extra ones)."""

    def __init__(self, weights: dict[str, np.ndarray], opset: int = 17, dtype=np.float32):
        self.weights = weights
        self.opset = opset
        self.elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        self.consts: dict[str, np.ndarray] = {}
        self.nodes: list[onnx.NodeProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []

    def input(self, name: str, shape: list[int]) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, self.elem, shape))
        return name

    def const(self, name: str, value, dtype=None) -> str:
        self.consts[name] = np.asarray(value, dtype=dtype)
        return name

    def f(self, name: str, value: float) -> str:
        """A scalar constant of the graph's float type."""
        return self.const(name, value, helper.tensor_dtype_to_np_dtype(self.elem))

    def i64(self, name: str, value) -> str:
        return self.const(name, value, np.int64)

    def __call__(
        self, op: str, *inputs: str, name: str | None = None, outs: int = 1, domain: str = "", **attrs
    ):
        name = name or f"{op.lower()}_{len(self.nodes)}"
        outputs = [f"{name}_y" + (str(i) if i else "") for i in range(outs)]
        self.nodes.append(
            helper.make_node(op, list(inputs), outputs, name=name, domain=domain or None, **attrs)
        )
        return outputs[0] if outs == 1 else outputs

    def model(self, *outputs: str) -> onnx.ModelProto:
        used = {i for node in self.nodes for i in node.input}
        inits = [
            numpy_helper.from_array(np.asarray(v), k)
            for k, v in {**self.weights, **self.consts}.items()
            if k in used
        ]
        outs = [helper.make_tensor_value_info(o, self.elem, None) for o in outputs]
        graph = helper.make_graph(self.nodes, "case", self.inputs, outs, inits)
        opsets = [helper.make_opsetid("", self.opset)]
        if any(n.domain for n in self.nodes):
            opsets.append(helper.make_opsetid("com.example", 1))
        return helper.make_model(graph, opset_imports=opsets, ir_version=8 if self.opset <= 17 else 9)


def run_ort(proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def random_feeds(proto: onnx.ModelProto, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in proto.graph.input:
        shape = [d.dim_value if d.HasField("dim_value") else 2 for d in vi.type.tensor_type.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    ref = ref.astype(np.float64)
    return float(np.abs(got.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-30))


def initializers(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}


def rnd(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return (rng.standard_normal(shape) * 0.5).astype(np.float32)


def positive(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.uniform(0.5, 2.0, shape).astype(np.float32)


def conv_chain(path, widths: Sequence[int], seed: int = 0):
    """x [N, widths[0], 8, 8] -> Conv 3x3 (pad 1) -> Relu -> ... -> Conv to ``widths[-1]``, saved to
    ``path``: one foldable group per hidden width, random weights."""
    rng = np.random.default_rng(seed)
    pairs = list(zip(widths[:-1], widths[1:], strict=True))
    net = Net({f"w{i + 1}": rnd(rng, cout, cin, 3, 3) for i, (cin, cout) in enumerate(pairs)})
    h = net.input("x", ["N", widths[0], 8, 8])
    for i in range(len(pairs)):
        h = net("Conv", h, f"w{i + 1}", pads=[1, 1, 1, 1])
        h = net("Relu", h) if i < len(pairs) - 1 else h
    onnx.save(net.model(h), path)
    return path


def mlp_proto(shape_x=("N", 8)) -> onnx.ModelProto:
    """A small MLP with two foldable groups (W1, W2 are the first two initializers)."""
    rng = np.random.default_rng(0)
    arrays = {"W1": (8, 16), "b1": (16,), "W2": (16, 12), "b2": (12,), "W3": (12, 4)}
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n) for n, s in arrays.items()]
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h1"], name="mm1"),
        helper.make_node("Add", ["h1", "b1"], ["a1"]),
        helper.make_node("Relu", ["a1"], ["r1"]),
        helper.make_node("MatMul", ["r1", "W2"], ["h2"], name="mm2"),
        helper.make_node("Add", ["h2", "b2"], ["a2"]),
        helper.make_node("Relu", ["a2"], ["r2"]),
        helper.make_node("MatMul", ["r2", "W3"], ["y"], name="mm3"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape_x))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [shape_x[0], 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def masked_tokens_proto(mask_type: int = TensorProto.INT64) -> onnx.ModelProto:
    """hidden = E[input_ids] * attention_mask, both [batch, seq] (E: 50 rows of 8): a token model
    with a mask input, for sample loading."""
    table = np.random.default_rng(1).standard_normal((50, 8)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["E", "input_ids"], ["h"]),
            helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["m", "axis"], ["m3"]),
            helper.make_node("Mul", ["h", "m3"], ["hidden"]),
        ],
        "tokens",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", mask_type, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", "seq", 8])],
        [numpy_helper.from_array(table, "E"), numpy_helper.from_array(np.array([-1], np.int64), "axis")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def scaled_mlp_proto(
    w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, first: str = "Scaler"
) -> onnx.ModelProto:
    """x [N, 6] → Scaler (as skl2onnx writes a StandardScaler) → Cast → MatMul + b1 → Relu → MatMul."""
    pre = (
        helper.make_node("Scaler", ["x"], ["s"], domain="ai.onnx.ml", offset=[1.0] * 6, scale=[0.5] * 6)
        if first == "Scaler"
        else helper.make_node("Mystery", ["x"], ["s"], domain="com.example")
    )
    graph = helper.make_graph(
        [
            pre,
            helper.make_node("Cast", ["s"], ["c"], to=TensorProto.FLOAT),
            helper.make_node("MatMul", ["c", "w1"], ["h"]),
            helper.make_node("Add", ["h", "b1"], ["hb"]),
            helper.make_node("Relu", ["hb"], ["r"]),
            helper.make_node("MatMul", ["r", "w2"], ["y"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
        [
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(b1, "b1"),
            numpy_helper.from_array(w2, "w2"),
        ],
    )
    opsets = [
        helper.make_opsetid("", 17),
        helper.make_opsetid("ai.onnx.ml", 1),
        helper.make_opsetid("com.example", 1),
    ]
    return helper.make_model(graph, opset_imports=opsets)


def save_ml_model(graph: onnx.GraphProto, path, ml_opset: int = 1):
    """Save ``graph`` with opset 13 and ``ai.onnx.ml`` at ``ml_opset`` (IR 8, as skl2onnx writes it) to
    ``path``; the path."""
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("ai.onnx.ml", ml_opset)]
    )
    model.ir_version = 8
    onnx.save(model, str(path))
    return path
