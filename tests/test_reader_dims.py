"""Free input dims that the input's first readers fix are drawn at the size they fix.

pyannote's segmentation model declares ``input [B, C, T]`` with every dim free and normalizes it with
an InstanceNormalization of one scale: random inputs of 16, 64 … channels stopped the default fold
("size of scale != input channel count"). Every input generator works from the input's specs, so the
specs carry the fixed dims, from a session, a ModelProto or a graph alike.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

import onnxfold
from onnxfold.ir.model import model_from_proto
from onnxfold.runtime.inputs import input_specs, make_inputs
from onnxfold.runtime.session import make_session


def audio_model(scale: int = 1, second_reader: bool = False) -> onnx.ModelProto:
    """x [B, C, T] → InstanceNormalization (scale of ``scale``) → Conv 1→8 (k 5) → Relu → Conv 8→4 → y;
    ``second_reader``: a Conv of 2 input channels reads x too (then C is not fixed)."""
    rng = np.random.default_rng(0)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    nodes = [
        oh.make_node("InstanceNormalization", ["x", "s", "b"], ["n"]),
        oh.make_node("Conv", ["n", "w1", "b1"], ["h"]),
        oh.make_node("Relu", ["h"], ["r"]),
        oh.make_node("Conv", ["r", "w2", "b2"], ["y"]),
    ]
    inits = [
        nh.from_array(np.ones(scale, np.float32), "s"),
        nh.from_array(np.zeros(scale, np.float32), "b"),
        nh.from_array(f(8, 1, 5), "w1"),
        nh.from_array(f(8), "b1"),
        nh.from_array(f(4, 8, 1), "w2"),
        nh.from_array(f(4), "b2"),
    ]
    outputs = [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 4, "L"])]
    if second_reader:
        nodes.append(oh.make_node("Conv", ["x", "w3"], ["z"]))
        inits.append(nh.from_array(f(3, 2, 1), "w3"))
        outputs.append(oh.make_tensor_value_info("z", TensorProto.FLOAT, ["B", 3, "T"]))
    graph = oh.make_graph(
        nodes, "audio", [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "C", "T"])], outputs, inits
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


def test_specs_from_a_session_a_proto_and_a_graph_carry_the_dim_the_readers_fix() -> None:
    proto = audio_model()
    session = make_session(proto.SerializeToString())
    for source in (session, proto, model_from_proto(proto)):
        (spec,) = input_specs(source)
        assert spec.shape == ("B", 1, "T"), (type(source).__name__, spec.shape)
    feed = make_inputs(session, batch=2)
    assert feed["x"].shape[:2] == (2, 1)
    session.run(None, feed)  # the random feed runs


def test_readers_that_disagree_leave_the_dim_free() -> None:
    proto = audio_model(second_reader=True)
    (spec,) = input_specs(proto)
    assert spec.shape == ("B", "C", "T")


def test_the_default_fold_runs_on_a_model_whose_channel_dim_its_first_norm_fixes(tmp_path) -> None:
    path = tmp_path / "audio.onnx"
    onnx.save(audio_model(), path)
    report = onnxfold.fold(str(path), 0.5, str(tmp_path / "out.onnx"), method="fold", repair="none")
    assert report is not None
    folded = make_session(str(tmp_path / "out.onnx"))
    x = np.random.default_rng(1).standard_normal((1, 1, 40)).astype(np.float32)
    assert folded.run(None, {"x": x})[0].shape == (1, 4, 36)


@pytest.mark.parametrize(
    ("op", "weight", "attrs", "rank", "axis", "size"),
    [
        ("Conv", (8, 3, 3, 3), {"group": 2}, 4, 1, 6),
        ("ConvTranspose", (5, 2, 3), {}, 3, 1, 5),
        ("BatchNormalization", (7,), {}, 4, 1, 7),
        ("LayerNormalization", (4, 6), {"axis": -2}, 3, 1, 4),
        ("MatMul", (12, 3), {}, 3, 2, 12),
        ("Gemm", (10, 9), {"transB": 1}, 2, 1, 9),
    ],
)
def test_each_reader_fixes_its_dim(op, weight, attrs, rank, axis, size) -> None:
    from onnxfold.runtime.reader_dims import reader_dims

    dims = ("B",) + tuple(f"d{i}" for i in range(1, rank))
    fixed = reader_dims([(op, ["x", "w"], attrs, ["y"])], {"w": weight}, {"x": dims})
    expected = {axis: size}
    if op == "LayerNormalization":
        expected = {1: 4, 2: 6}
    assert fixed == {"x": expected}
