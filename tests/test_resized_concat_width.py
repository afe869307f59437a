"""An ENet initial block: a strided Conv beside a MaxPool of the input, resized to the Conv's size by
computed ``sizes`` and concatenated on channels. Shape inference cannot size the Resize, so the
Concat saw "an input of unknown width" and blocked the Conv's group (wired-table-rec's table-line
segmenter: its first and second blocks). The width follows from the sizes: their channel entry is the
resized tensor's own channel count."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from harness import AVG, KEEP, SUM, Net, rel_err, rnd, run_ort, widen

import onnxfold


def _initial_block(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    c = weights["w1"].shape[0]
    net = Net(weights, opset=11)  # the segmenter's: Resize-11 is not sized from computed sizes
    x = net.input("x", ["N", 3, "H", "W"])
    conv = net("Relu", net("Conv", x, "w1", "b1", strides=[2, 2], pads=[1, 1, 1, 1]))
    pooled = net("MaxPool", x, kernel_shape=[2, 2], strides=[2, 2])
    # as PyTorch 1.x exported F.interpolate(pooled, size=conv.shape[2:]): the spatial dims gathered
    # one by one, unsqueezed, joined and cast, which shape inference does not follow
    keep = net("Slice", net("Shape", pooled), net.i64("s0", [0]), net.i64("s2", [2]), net.i64("a0", [0]))
    dims = [
        net("Unsqueeze", net("Gather", net("Shape", conv), net.i64(f"d{i}", i), axis=0), axes=[0])
        for i in (2, 3)
    ]
    space = net("Cast", net("Concat", *dims, axis=0), to=onnx.TensorProto.INT64)
    sizes = net("Concat", keep, space, axis=0)
    resized = net("Resize", pooled, net.f("roi", []), net.f("scales", []), sizes, mode="linear")
    joined = net("Concat", conv, resized, axis=1)
    assert weights["w2"].shape[1] == c + 3
    return net.model(net("Conv", joined, "w2", "b2"))


def test_a_conv_concatenated_with_a_resized_pool_folds_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    compact = {
        "w1": rnd(rng, 6, 3, 3, 3),
        "b1": rnd(rng, 6),
        "w2": rnd(rng, 4, 9, 1, 1),
        "b2": rnd(rng, 4),
    }
    wide = widen(
        compact, [("w1", 0, [(6, 1, AVG)]), ("b1", 0, [(6, 1, AVG)]), ("w2", 1, [(6, 1, SUM), (3, 1, KEEP)])]
    )
    src = tmp_path / "wide.onnx"
    onnx.save(_initial_block(wide), str(src))
    small, report = onnxfold.fold(
        src, 0.5, tmp_path / "small.onnx", method="fold", repair="none", validate=False
    )
    plan = next(p for p in report.plans if p.group.size == 12)
    assert plan.status == "folded" and plan.k == 6, plan
    x = {"x": rng.standard_normal((2, 3, 16, 20)).astype(np.float32)}
    want = run_ort(_initial_block(compact), x)[0]
    got = run_ort(onnx.load(str(tmp_path / "small.onnx")), x)[0]
    assert rel_err(got, want) < 1e-5
