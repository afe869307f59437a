"""DepthToSpace (both modes) and SpaceToDepth fold with the convolutions around them.

A new user's trial (napari-czann-segment's nucleus segmenter, tf2onnx): the whole U-Net decoder was
blocked at "unsupported op DepthToSpace", its sub-pixel upsampling, so a fold removed 45% of the
parameters and only 31% of the MACs. Duplicate oracles: output channel c' + C of the wide model
copies c' (its b² producer rows, wherever the mode puts them), and the consumer's columns of the two
copies split 0.3 / 0.7; folding at 0.5 gives the compact model back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from harness import rel_err, run_ort
from onnx import TensorProto, helper, numpy_helper

import onnxfold

B, C = 2, 4  # block size, compact channels after DepthToSpace (before SpaceToDepth)
RNG = np.random.default_rng(7)


def _model(w1: np.ndarray, w2: np.ndarray, op: str, mode: str | None) -> onnx.ModelProto:
    attrs = {"blocksize": B, **({"mode": mode} if mode else {})}
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node(op, ["r1"], ["moved"], **attrs),
        helper.make_node("Conv", ["moved", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, None, None])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model)


def _index(k: int, c: int, width: int, op: str, mode: str | None) -> int:
    """The channel of (block offset k, channel c) on the side with b² copies of ``width`` channels."""
    return c * B * B + k if op == "DepthToSpace" and mode == "CRD" else k * width + c


def _twins(op: str, mode: str | None) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    copies, wide = B * B, 2 * C
    share = np.array([0.3] * C + [0.7] * C, np.float32)
    if op == "DepthToSpace":  # the producer holds b² copies, the consumer reads one
        w1c, w2c = RNG.normal(size=(copies * C, 3, 3, 3)), RNG.normal(size=(3, C, 1, 1))
        rows = [_index(k, c % C, C, op, mode) for k in range(copies) for c in range(wide)]
        order = [_index(k, c, wide, op, mode) for k in range(copies) for c in range(wide)]
        w1 = np.empty((copies * wide, 3, 3, 3))
        w1[order] = w1c[rows]
        w2 = w2c[:, [c % C for c in range(wide)]] * share[None, :, None, None]
    else:  # the producer holds the channels, the consumer reads b² copies
        w1c, w2c = RNG.normal(size=(C, 3, 3, 3)), RNG.normal(size=(3, copies * C, 1, 1))
        w1 = w1c[[c % C for c in range(wide)]]
        w2 = np.empty((3, copies * wide, 1, 1))
        for k in range(copies):
            for c in range(wide):
                w2[:, k * wide + c] = w2c[:, k * C + c % C] * share[c]
    f = np.float32
    return _model(w1c.astype(f), w2c.astype(f), op, mode), _model(w1.astype(f), w2.astype(f), op, mode)


@pytest.mark.parametrize(
    "op,mode", [("DepthToSpace", "DCR"), ("DepthToSpace", "CRD"), ("SpaceToDepth", None)]
)
def test_pixel_shuffles_fold_back_exactly(tmp_path: Path, op: str, mode: str | None) -> None:
    compact, wide = _twins(op, mode)
    feed = {"x": RNG.normal(size=(2, 3, 8, 8)).astype(np.float32)}
    want = run_ort(compact, feed)[0]
    assert rel_err(run_ort(wide, feed)[0], want) < 1e-5  # the oracle holds
    src = tmp_path / "wide.onnx"
    onnx.save(wide, str(src))
    groups = onnxfold.analyze(src)
    folding = [g for g in groups if g.foldable]
    assert len(folding) == 1, [(g.name, g.size, [b.message for b in g.blocked]) for g in groups]
    assert folding[0].size == 2 * C
    out = tmp_path / "folded.onnx"
    onnxfold.fold(src, 0.5, out, method="fold", repair="none", round_to=1, validate=False)
    folded = onnx.load(str(out))
    assert rel_err(run_ort(folded, feed)[0], want) < 1e-5
    sizes = {t.name: tuple(t.dims) for t in folded.graph.initializer}
    assert sizes == {t.name: tuple(t.dims) for t in compact.graph.initializer}
    same = tmp_path / "same.onnx"
    onnxfold.fold(src, 0.0, same, validate=False)
    assert np.array_equal(run_ort(onnx.load(str(same)), feed)[0], run_ort(wide, feed)[0])
