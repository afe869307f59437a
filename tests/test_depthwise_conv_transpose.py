"""A depthwise ConvTranspose (group = C_in, weight [C_in, m, k…]: a U-Net's learnt per-channel
upsampling, platelet-unet-watershed's ``ConvTranspose3d(C, C, 2, stride=2, groups=C)``) passes its
input's channels on, each as a block of m outputs, as a depthwise Conv does: it blocked 8 of the
U-Net's 22 groups. Exact oracle: a wide twin whose producer filters are duplicated (and with them the
upsampling rows, a depthwise Conv after it that reads the blocks, and the pointwise columns halved)
folds back to the compact network's outputs, each ``group`` shrinking with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

import onnxfold
from onnxfold.runtime.session import make_session

WIDTH, OUT = 4, 3


def unet_up(width: int, m: int, rng: np.random.Generator | None = None, compact: dict | None = None):
    """Conv (``width`` filters) → Relu → depthwise ConvTranspose (multiplier ``m``, stride 2) → Relu →
    depthwise Conv (group width·m) → pointwise Conv → pooled → Gemm. A wide twin (``compact`` given)
    tiles the compact weights, its pointwise columns halved."""
    if compact is None:
        w = {
            "c_w": rng.standard_normal((width, 2, 3, 3)),
            "c_b": rng.standard_normal(width),
            "u_w": rng.standard_normal((width, m, 2, 2)),
            "u_b": rng.standard_normal(width * m),
            "d_w": rng.standard_normal((width * m, 1, 3, 3)),
            "d_b": rng.standard_normal(width * m),
            "p_w": rng.standard_normal((5, width * m, 1, 1)),
            "g_w": rng.standard_normal((5, OUT)),
        }
    else:
        w = {k: np.concatenate([v, v]) if k[0] in "cud" else v for k, v in compact.items()}
        w["p_w"] = np.concatenate([compact["p_w"], compact["p_w"]], axis=1) / 2
    nodes = [
        oh.make_node("Conv", ["x", "c_w", "c_b"], ["c"], "producer", pads=[1, 1, 1, 1]),
        oh.make_node("Relu", ["c"], ["cr"], "relu0"),
        oh.make_node("ConvTranspose", ["cr", "u_w", "u_b"], ["u"], "up", group=width, strides=[2, 2]),
        oh.make_node("Relu", ["u"], ["ur"], "relu1"),
        oh.make_node("Conv", ["ur", "d_w", "d_b"], ["d"], "depthwise", group=width * m, pads=[1, 1, 1, 1]),
        oh.make_node("Conv", ["d", "p_w"], ["p"], "pointwise"),
        oh.make_node("GlobalAveragePool", ["p"], ["g"], "pool"),
        oh.make_node("Flatten", ["g"], ["f"], "flatten"),
        oh.make_node("Gemm", ["f", "g_w"], ["y"], "head"),
    ]
    graph = oh.make_graph(
        nodes,
        "unet_up",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", OUT])],
        [nh.from_array(v.astype(np.float32), k) for k, v in w.items()],
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), w


def run(path: Path, x: np.ndarray) -> np.ndarray:
    return make_session(path, providers=["CPUExecutionProvider"], threads=1).run(None, {"x": x})[0]


@pytest.mark.parametrize("m", [1, 2])
@pytest.mark.parametrize("method", ["fold", "auto"])
def test_a_depthwise_conv_transpose_folds_its_input_group_back_exactly(tmp_path, m, method) -> None:
    small, weights = unet_up(WIDTH, m, np.random.default_rng(m))
    wide, _ = unet_up(2 * WIDTH, m, compact=weights)
    paths = {name: tmp_path / f"{name}.onnx" for name in ("compact", "wide", "folded")}
    onnx.save(small, paths["compact"])
    onnx.save(wide, paths["wide"])
    x = np.random.default_rng(9).standard_normal((4, 2, 6, 6)).astype(np.float32)
    want = run(paths["compact"], x)
    np.testing.assert_allclose(run(paths["wide"], x), want, rtol=1e-5, atol=1e-5)  # the twin is exact
    groups = onnxfold.analyze(paths["wide"])
    (producer,) = [g for g in groups if g.name == "producer"]
    assert producer.foldable, producer.reasons
    _, report = onnxfold.fold(
        paths["wide"],
        0.5,
        paths["folded"],
        method=method,
        repair="none",
        ignore=["^pointwise$"],
        validate=False,
    )
    assert {p.group.name: p.status for p in report.plans}["producer"] == "folded"
    got = run(paths["folded"], x)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    proto = onnx.load(str(paths["folded"]))
    attrs = {n.name: {a.name: oh.get_attribute_value(a) for a in n.attribute} for n in proto.graph.node}
    assert attrs["up"]["group"] == WIDTH and attrs["depthwise"]["group"] == WIDTH * m
    assert report.after.params == sum(v.size for v in weights.values())


def test_sparsity_zero_leaves_a_depthwise_conv_transpose_bit_for_bit(tmp_path) -> None:
    wide, _ = unet_up(2 * WIDTH, 2, np.random.default_rng(5))
    src, out = tmp_path / "wide.onnx", tmp_path / "out.onnx"
    onnx.save(wide, src)
    onnxfold.fold(src, 0.0, out, validate=False)
    x = np.random.default_rng(3).standard_normal((2, 2, 6, 6)).astype(np.float32)
    assert np.array_equal(run(out, x), run(src, x))
