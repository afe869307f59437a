"""A fold whose merges, fitted to samples, make copies of one weight unequal says that it grew the model.

Trial 160: fracast's forecaster, exported by torch's dynamo exporter, holds each of its shared stages'
weights once per use (231K parameters, 85K distinct). `-s 0.3 --inputs` fitted each copy's merge to its
own activations, so cleanup could not store them once again: the result held 126K parameters, 48% more
than the model once its copies are stored once, under a headline of "-45.4%". Folded without a fit the
copies stay equal and are stored once (68.6K).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from harness import Net

import onnxfold


def _twin_branches() -> onnx.ModelProto:
    """x1, x2 [N, 8] -> Relu(MatMul W) -> MatMul V, twice: the second branch's W2, V2 are copies."""
    rng = np.random.default_rng(0)
    w, v = rng.standard_normal((8, 32)).astype(np.float32), rng.standard_normal((32, 4)).astype(np.float32)
    net = Net({"W": w, "V": v, "W2": w.copy(), "V2": v.copy()})
    y1 = net("MatMul", net("Relu", net("MatMul", net.input("x1", ["N", 8]), "W")), "V")
    y2 = net("MatMul", net("Relu", net("MatMul", net.input("x2", ["N", 8]), "W2")), "V2")
    return net.model(y1, y2)


def test_copies_fitted_apart_are_warned_of_and_a_plain_fold_keeps_them_one(tmp_path: Path) -> None:
    src = tmp_path / "twins.onnx"
    onnx.save(_twin_branches(), src)
    rng = np.random.default_rng(1)
    samples = {  # the branches read inputs of different scales: their fits differ
        "x1": rng.standard_normal((32, 8)).astype(np.float32),
        "x2": (3.0 + 2.0 * rng.standard_normal((32, 8))).astype(np.float32),
    }
    distinct = 8 * 32 + 32 * 4  # one copy of each weight
    _, fitted = onnxfold.fold(str(src), 0.25, str(tmp_path / "lsq.onnx"), method="lsq", inputs=samples)
    assert fitted.before.params == 2 * distinct and fitted.after.params > distinct  # the premise
    line = next(t for t in fitted.format().splitlines() if t.startswith("warning: the result stores"))
    assert f"more than the {distinct:,} the input holds once its {distinct:,} repeated ones" in line
    _, plain = onnxfold.fold(str(src), 0.25, str(tmp_path / "fold.onnx"), method="fold", inputs=samples)
    assert plain.after.params < distinct  # the copies folded alike, stored once
    assert "warning: the result stores" not in plain.format()


def test_analyzes_bound_counts_a_weights_copies_once() -> None:
    """fracast's analyze read "removes 105.9% of the 231K parameters": its copies were counted as stored
    once and again as folded. Here: 768 parameters, 384 of them a copy; at the cap 22 of each branch's
    32 channels go, 22 x (8 + 4) of the weights left once the copy is stored once."""
    from onnxfold.api import analyze_share

    _, held, total = analyze_share(_twin_branches())
    distinct = 8 * 32 + 32 * 4
    assert total == 2 * distinct
    assert held == distinct + 22 * (8 + 4) < total
