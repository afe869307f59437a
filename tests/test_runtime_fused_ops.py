"""Models saved after onnxruntime's extended optimisations: FusedConv (a Conv, a residual Add and a
Relu in one node), FusedGemm and FusedMatMul (com.microsoft). An independent oracle builder found
their groups missing from the analysis altogether, so nothing folded (an MLP kept 1,038 parameters
where its compact twin has 428). canonicalize writes them back as the standard ops for the analysis
(:mod:`onnxfold.ir.unfuse`); a fold that folds nothing writes the file as it was.

Duplicate oracles (tests/harness.py): each wide model is fused by onnxruntime itself, then folded at
0.5 and compared with the compact model; ``-s 0`` reproduces the fused file bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from harness import A, Net, S, rel_err, rnd, run_ort, widen

import onnxfold

RNG = np.random.default_rng(5)


def _cnn(w: dict) -> onnx.ModelProto:
    """conv3x3 + Relu (8 channels) → 1×1 conv + the residual Add + Relu → GAP → Gemm."""
    net = Net(w)
    x = net.input("x", ["N", 3, 8, 8])
    h = net("Relu", net("Conv", x, "w1", "b1", pads=[1, 1, 1, 1]))
    r = net("Relu", net("Add", net("Conv", h, "w2", "b2"), h))
    return net.model(net("Gemm", net("Flatten", net("GlobalAveragePool", r)), "w3", "b3", transB=1))


def _mlp(w: dict) -> onnx.ModelProto:
    net = Net(w)
    x = net.input("x", ["N", 6])
    h = net("Relu", net("Gemm", x, "m1", "c1", transB=1))
    return net.model(net("Gemm", net("Tanh", net("Gemm", h, "m2", "c2", transB=1)), "m3", "c3", transB=1))


def _params(proto: onnx.ModelProto) -> int:
    return sum(int(np.prod(t.dims)) for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)


def _fused(proto: onnx.ModelProto, path: Path) -> onnx.ModelProto:
    """``proto`` as onnxruntime's extended optimisation saves it."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(path)
    ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return onnx.load(str(path))


CNN = {
    "w1": rnd(RNG, 4, 3, 3, 3),
    "b1": rnd(RNG, 4),
    "w2": rnd(RNG, 4, 4, 1, 1),
    "b2": rnd(RNG, 4),
    "w3": rnd(RNG, 5, 4),
    "b3": rnd(RNG, 5),
}
# the stem's channels are the residual stream: conv1's rows, conv2's rows and columns, the head's
CNN_DUP = [
    ("w1", 0, [A(4)]),
    ("b1", 0, [A(4)]),
    ("w2", 0, [A(4)]),
    ("b2", 0, [A(4)]),
    ("w2", 1, [S(4)]),
    ("w3", 1, [S(4)]),
]
MLP = {
    "m1": rnd(RNG, 5, 6),
    "c1": rnd(RNG, 5),
    "m2": rnd(RNG, 7, 5),
    "c2": rnd(RNG, 7),
    "m3": rnd(RNG, 3, 7),
    "c3": rnd(RNG, 3),
}
MLP_DUP = [
    ("m1", 0, [A(5)]),
    ("c1", 0, [A(5)]),
    ("m2", 1, [S(5)]),
    ("m2", 0, [A(7)]),
    ("c2", 0, [A(7)]),
    ("m3", 1, [S(7)]),
]


@pytest.mark.parametrize(
    "build,weights,dup,fused_ops,shape,foldable",
    [
        (_cnn, CNN, CNN_DUP, {"FusedConv"}, (3, 3, 8, 8), 1),
        (_mlp, MLP, MLP_DUP, {"FusedGemm"}, (4, 6), 2),
    ],
    ids=["cnn", "mlp"],
)
def test_runtime_fused_models_fold_back_exactly(
    tmp_path: Path, build, weights, dup, fused_ops, shape, foldable
) -> None:
    compact = build(weights)
    wide = _fused(build(widen(weights, dup)), tmp_path / "wide.onnx")
    assert fused_ops <= {n.op_type for n in wide.graph.node if n.domain == "com.microsoft"}
    feed = {"x": np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    want = run_ort(compact, feed)[0]
    assert rel_err(run_ort(wide, feed)[0], want) < 1e-5  # the oracle holds
    groups = onnxfold.analyze(tmp_path / "wide.onnx")
    assert sum(g.foldable for g in groups) == foldable, [
        (g.name, [b.message for b in g.blocked]) for g in groups
    ]
    for method in ("fold", "auto"):
        out = tmp_path / f"{method}.onnx"
        onnxfold.fold(
            tmp_path / "wide.onnx", 0.5, out, method=method, repair="none", round_to=1, validate=False
        )
        assert rel_err(run_ort(onnx.load(str(out)), feed)[0], want) < 1e-5
    same = tmp_path / "same.onnx"
    onnxfold.fold(tmp_path / "wide.onnx", 0.0, same, validate=False)
    written = onnx.load(str(same))
    assert fused_ops <= {n.op_type for n in written.graph.node if n.domain == "com.microsoft"}
    assert np.array_equal(run_ort(written, feed)[0], run_ort(wide, feed)[0])


def test_a_fused_matmul_with_transposes_and_a_scale_is_read_as_its_matmul(tmp_path: Path) -> None:
    """FusedMatMul(a, B) = alpha · a · Bᵀ (transB) with B constant: a producer, as a MatMul is."""
    w = {"B": rnd(RNG, 5, 6), "V": rnd(RNG, 5, 3)}
    dup = [("B", 0, [A(5)]), ("V", 0, [S(5)])]

    def model(weights: dict, fused: bool) -> onnx.ModelProto:
        net = Net(weights)
        x = net.input("x", ["N", 6])
        if fused:
            h = net("FusedMatMul", x, "B", domain="com.microsoft", alpha=0.5, transB=1)
        else:
            h = net("Mul", net("MatMul", x, net("Transpose", "B", perm=[1, 0])), net.f("half", 0.5))
        proto = net.model(net("MatMul", net("Relu", h), "V"))
        if fused:
            proto.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
        return proto

    compact, wide = model(w, False), model(widen(w, dup), True)
    src = tmp_path / "wide.onnx"
    onnx.save(wide, str(src))
    feed = {"x": np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32)}
    want = run_ort(compact, feed)[0]
    assert rel_err(run_ort(wide, feed)[0], want) < 1e-5
    out = tmp_path / "folded.onnx"
    onnxfold.fold(src, 0.5, out, method="fold", repair="none", round_to=1, validate=False)
    folded = onnx.load(str(out))
    assert rel_err(run_ort(folded, feed)[0], want) < 1e-5 and _params(folded) == _params(compact)
