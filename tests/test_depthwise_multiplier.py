"""A depthwise Conv with a channel multiplier (group = C_in, C_out = m·C_in: EEGNet's spatial filter,
Keras' DepthwiseConv2D(depth_multiplier=m)) passes its input's channels on, each as a block of m
outputs: the input group folds through it. Exact oracle: a wide twin whose temporal filters are
duplicated (and with them the depthwise blocks, their BN and the pointwise columns halved) folds back
to the compact network's outputs and parameter count, the depthwise ``group`` shrinking with it."""

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

F1, D, F2, ELECTRODES, SAMPLES = 4, 2, 6, 8, 32


def eegnet(width: int, rng: np.random.Generator | None = None, compact: dict | None = None):
    """Temporal Conv (``width`` filters) → depthwise spatial Conv (multiplier D) → BN → Elu → pointwise
    Conv → Relu → pooled → Gemm, and its weights. Weights random (``rng``), or for a wide twin (``width`` = 2·F1) the
    ``compact`` model's tiled: producers copied, the pointwise columns copied and halved."""
    if compact is None:
        w = {
            "t_w": rng.standard_normal((width, 1, 1, 5)),
            "t_b": rng.standard_normal(width),
            "d_w": rng.standard_normal((width * D, 1, ELECTRODES, 1)),
            "d_b": rng.standard_normal(width * D),
            "bn_s": rng.uniform(0.5, 1.5, width * D),
            "bn_b": rng.standard_normal(width * D),
            "bn_m": rng.standard_normal(width * D),
            "bn_v": rng.uniform(0.5, 1.5, width * D),
            "p_w": rng.standard_normal((F2, width * D, 1, 1)),
            "p_b": rng.standard_normal(F2),
            "g_w": rng.standard_normal((F2, 3)),
            "g_b": rng.standard_normal(3),
        }
    else:  # input channel i of the wide depthwise Conv is i mod F1: its block is the compact block's tiling
        w = {k: np.concatenate([v, v]) if k[0] in "tdb" else v for k, v in compact.items()}
        w["p_w"] = np.concatenate([compact["p_w"], compact["p_w"]], axis=1) / 2
    nodes = [
        oh.make_node("Conv", ["x", "t_w", "t_b"], ["t"], "temporal", pads=[0, 2, 0, 2]),
        oh.make_node("Conv", ["t", "d_w", "d_b"], ["d"], "spatial", group=width),
        oh.make_node("BatchNormalization", ["d", "bn_s", "bn_b", "bn_m", "bn_v"], ["n"], "bn"),
        oh.make_node("Elu", ["n"], ["e"], "elu"),
        oh.make_node("Conv", ["e", "p_w", "p_b"], ["p"], "pointwise"),
        oh.make_node("Relu", ["p"], ["r"], "relu"),
        oh.make_node("GlobalAveragePool", ["r"], ["g"], "pool"),
        oh.make_node("Flatten", ["g"], ["f"], "flatten"),
        oh.make_node("Gemm", ["f", "g_w", "g_b"], ["y"], "head"),
    ]
    graph = oh.make_graph(
        nodes,
        "eegnet",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, ELECTRODES, SAMPLES])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [nh.from_array(v.astype(np.float32), k) for k, v in w.items()],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    return model, w


def run(path: Path, x: np.ndarray) -> np.ndarray:
    return make_session(path, providers=["CPUExecutionProvider"], threads=1).run(None, {"x": x})[0]


@pytest.mark.parametrize("method, repair", [("fold", "none"), ("auto", "ar")])
def test_a_depthwise_conv_with_a_multiplier_folds_its_input_group_back_exactly(tmp_path, method, repair):
    small, weights = eegnet(F1, np.random.default_rng(0))
    wide, _ = eegnet(2 * F1, compact=weights)
    paths = {name: tmp_path / f"{name}.onnx" for name in ("compact", "wide", "folded")}
    onnx.save(small, paths["compact"])
    onnx.save(wide, paths["wide"])
    x = np.random.default_rng(1).standard_normal((4, 1, ELECTRODES, SAMPLES)).astype(np.float32)
    want = run(paths["compact"], x)
    np.testing.assert_allclose(run(paths["wide"], x), want, rtol=1e-5, atol=1e-5)  # the twin is exact
    _, report = onnxfold.fold(
        paths["wide"],
        0.5,
        paths["folded"],
        method=method,
        repair=repair,
        ignore=["^pointwise$"],
        validate=False,
    )
    folded = {p.group.name: p for p in report.plans}
    assert [p.status for p in folded.values()].count("folded") == 1, [
        (n, p.status) for n, p in folded.items()
    ]
    got = run(paths["folded"], x)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    proto = onnx.load(str(paths["folded"]))
    (dw,) = [n for n in proto.graph.node if n.op_type == "Conv" and n.input[0] == "t"]
    assert onnx.helper.get_attribute_value(dw.attribute[0]) == F1
    sizes = {t.name: t.dims for t in proto.graph.initializer}
    assert list(sizes[dw.input[1]]) == [F1 * D, 1, ELECTRODES, 1]
    assert report.after.params == sum(v.size for v in weights.values())


def test_sparsity_zero_leaves_a_depthwise_multiplier_bit_for_bit(tmp_path):
    wide, _ = eegnet(2 * F1, np.random.default_rng(2))
    src, out = tmp_path / "wide.onnx", tmp_path / "out.onnx"
    onnx.save(wide, src)
    onnxfold.fold(src, 0.0, out, validate=False)
    x = np.random.default_rng(3).standard_normal((2, 1, ELECTRODES, SAMPLES)).astype(np.float32)
    assert np.array_equal(run(out, x), run(src, x))
