"""Random inputs drawn as the model normalizes them (:mod:`onnxfold.runtime.input_scales`), through
the Transposes an exporter writes between the input and its normalization."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxfold.folding.samples import token_draws
from onnxfold.ir.model import load_model
from onnxfold.runtime.inputs import make_inputs
from onnxfold.runtime.session import make_session

MEAN = np.array([-38.0, -40.0, 5.0], np.float32)  #: a dB input's channels, as crema's BN holds them
VAR = np.array([200.0, 150.0, 4.0], np.float32)


def _model(path: Path, perms: list[list[int]], norm: str) -> Path:
    """x [N, 6, 5, 3] (channels last) -> the Transposes ``perms`` -> ``norm`` over the channel axis
    (BatchNormalization, or Sub then Div by constants [3, 1, 1]) -> Conv 4 -> Relu."""
    rng = np.random.default_rng(0)
    weights = {"W": rng.standard_normal((4, 3, 1, 1)).astype(np.float32)}
    nodes, t = [], "x"
    for i, perm in enumerate(perms):
        nodes.append(helper.make_node("Transpose", [t], [f"t{i}"], perm=perm))
        t = f"t{i}"
    if norm == "bn":
        weights.update(g=np.ones(3, np.float32), b=np.zeros(3, np.float32), m=MEAN, v=VAR)
        nodes.append(helper.make_node("BatchNormalization", [t, "g", "b", "m", "v"], ["n"], epsilon=1e-3))
    else:
        weights.update(m=MEAN.reshape(3, 1, 1), s=np.sqrt(VAR).reshape(3, 1, 1))
        nodes += [helper.make_node("Sub", [t, "m"], ["d"]), helper.make_node("Div", ["d", "s"], ["n"])]
    nodes += [helper.make_node("Conv", ["n", "W"], ["c"]), helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6, 5, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("norm", ["bn", "sub-div"])
@pytest.mark.parametrize(
    "perms",
    [[[0, 3, 1, 2]], [[0, 2, 1, 3], [0, 3, 2, 1]]],  # NHWC -> NCHW in one Transpose, or in two
    ids=["one", "two"],
)
def test_an_input_transposed_before_its_normalization_is_drawn_at_its_channels_scale(
    tmp_path: Path, perms: list[list[int]], norm: str
) -> None:
    """tf2onnx's Keras input: Transpose(0, 3, 1, 2), then BatchNormalization (crema's chord CNN, whose
    log-CQT dB BN mean is -38: N(0, 1) draws read as another signal, trial 199). The draws' last
    axis takes each channel's mean and spread, and the normalized values are standard normal."""
    src = _model(tmp_path / "m.onnx", perms, norm)
    feed = make_inputs(make_session(str(src)), batch=64, id_draws=token_draws(load_model(src)))["x"]
    assert feed.shape == (64, 6, 5, 3)
    per_channel = feed.reshape(-1, 3)
    np.testing.assert_allclose(per_channel.mean(0), MEAN, atol=1.0)  # 3 standard errors of 1,920 draws
    np.testing.assert_allclose(per_channel.std(0), np.sqrt(VAR), rtol=0.1)


def test_a_transpose_read_by_something_else_too_gives_no_scale(tmp_path: Path) -> None:
    """Only a chain of single readers: where the transposed input also feeds another node, the
    normalization does not describe every use of it, and the draws stay N(0, 1)."""
    src = _model(tmp_path / "m.onnx", [[0, 3, 1, 2]], "bn")
    proto = onnx.load(str(src))
    proto.graph.node.append(helper.make_node("Relu", ["t0"], ["side"]))
    proto.graph.output.append(helper.make_tensor_value_info("side", TensorProto.FLOAT, None))
    onnx.save(proto, str(src))
    assert "x" not in token_draws(load_model(src))
