"""A constant read inside several subgraphs (both branches of an If) is stored once in the output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

import onnxfold
from onnxfold.ir.model import load_model, save_model
from onnxfold.runtime.session import make_session


def _if_model() -> onnx.ModelProto:
    """y = If(cond, then: x·W + 1, else: x·W − 1), W [64, 64] an initializer of the main graph."""
    w = nh.from_array(np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32), "W")

    def branch(name: str, offset: float) -> onnx.GraphProto:
        c = nh.from_array(np.array([offset], np.float32), f"c_{name}")
        nodes = [
            oh.make_node("MatMul", ["x", "W"], [f"m_{name}"]),
            oh.make_node("Add", [f"m_{name}", c.name], [f"y_{name}"]),
        ]
        return oh.make_graph(
            nodes, name, [], [oh.make_tensor_value_info(f"y_{name}", TensorProto.FLOAT, [2, 64])], [c]
        )

    node = oh.make_node(
        "If", ["cond"], ["y"], then_branch=branch("then", 1.0), else_branch=branch("else", -1.0)
    )
    graph = oh.make_graph(
        [node],
        "g",
        [
            oh.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64]),
            oh.make_tensor_value_info("cond", TensorProto.BOOL, []),
        ],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, [2, 64])],
        [w],
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


def _graphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    subs = [a.g for n in graph.node for a in n.attribute if a.type == onnx.AttributeProto.GRAPH]
    return [graph] + [g for s in subs for g in _graphs(s)]


def _stored(proto: onnx.ModelProto, name: str) -> int:
    return sum(t.name == name for g in _graphs(proto.graph) for t in g.initializer)


def test_a_constant_read_in_two_branches_is_stored_once(tmp_path: Path) -> None:
    src = tmp_path / "if.onnx"
    onnx.save(_if_model(), src)
    out = tmp_path / "out.onnx"
    save_model(load_model(src), out)
    proto = onnx.load(out)
    assert _stored(proto, "W") == 1 and any(t.name == "W" for t in proto.graph.initializer)
    assert out.stat().st_size < src.stat().st_size + 1024  # not 64·64·4 bytes more
    onnx.checker.check_model(proto, full_check=True)
    x = np.random.default_rng(1).standard_normal((2, 64)).astype(np.float32)
    for cond in (True, False):
        feed = {"x": x, "cond": np.array(cond)}
        ref, got = (make_session(p, optimize=False).run(None, feed)[0] for p in (src, out))
        np.testing.assert_array_equal(got, ref)


def test_a_fold_of_it_counts_the_constant_once(tmp_path: Path) -> None:
    src = tmp_path / "if.onnx"
    onnx.save(_if_model(), src)
    _, report = onnxfold.fold(src, 0.0, tmp_path / "f.onnx", validate=False)
    assert report.before.params == report.after.params == 64 * 64 + 2
