"""Property-based tests (hypothesis) of ``onnxfold.fold`` on random small CNN graphs.

A composite strategy draws a small "program": a chain of layers (Conv, BatchNormalization, activations
Relu / Sigmoid / LeakyRelu / HardSwish / x·Sigmoid(x), per-channel Mul+Add constants, residual Conv blocks, MaxPool /
AveragePool / GlobalAveragePool, a residual Add or a channel Concat with an earlier tensor, so the graph is
a DAG) ending in a head (Flatten → Gemm [→ Relu → Gemm], or a 1×1 Conv). ``build`` turns it into an ONNX
model with onnx.helper; weights come from a numpy RNG seeded by a drawn integer. ``build(..., wide=True)``
builds the exact duplicate twin: every hidden channel is repeated (producer rows, biases, BN vectors and
per-channel constants copied; consumer input columns copied and halved; Flatten blocks of H·W columns
copied and halved; each Concat input duplicated within its own segment).

Properties:

1. folding at any sparsity in [0, 0.9), repair none or ar, gives a valid model (full check) that runs in
   onnxruntime with the original output names and shapes and finite values;
2. folding the wide twin at sparsity 0.5 (repair none) gives back the compact function (1e-5 relative),
   with every group folded to half its size; the wide twin's exactness is checked first;
3. sparsity 0 is bit-identical (onnxruntime, graph optimisations off).

Profiles: ``onnxfold-ci`` (derandomized, 300 examples in all, no deadline) is used by default;
``ONNXFOLD_HYPOTHESIS_EXAMPLES=N`` selects ``onnxfold-more`` and runs N examples per property.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from onnx import helper, numpy_helper

import onnxfold  # noqa: E402
from onnxfold.ir.model import to_model_proto  # noqa: E402
from onnxfold.runtime.session import make_session  # noqa: E402

# --------------------------------------------------------------------------------- hypothesis profiles
_COMMON = dict(
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.register_profile("onnxfold-ci", max_examples=100, **_COMMON)
_MORE = int(os.environ.get("ONNXFOLD_HYPOTHESIS_EXAMPLES", "0") or 0)
settings.register_profile("onnxfold-more", max_examples=max(_MORE, 1), **_COMMON)
PROFILE = settings.get_profile("onnxfold-more" if _MORE > 0 else "onnxfold-ci")


def examples(default: int) -> settings:
    """Settings for one property: ``default`` examples under CI, the flag's count otherwise."""
    return settings(PROFILE, max_examples=_MORE if _MORE > 0 else default)


@pytest.fixture(scope="module", autouse=True)
def _short_deepinversion():
    """The default ``auto`` synthesises DeepInversion samples on graphs with BatchNormalization; what
    these properties check (a valid model, exactness) holds for any samples, so 20 iterations, not 200,
    keep the examples' time on the folds (44 s of 80 were synthesis)."""
    from onnxfold.folding import samples

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(samples, "AUTO_DIR_ITERATIONS", 20)
        yield


# --------------------------------------------------------------------------------- programs
ACTS = ("Relu", "Sigmoid", "LeakyRelu", "HardSwish", "SiLU")
LAYERS = ("conv", "bn", "act", "scale", "pool", "pool", "res", "add", "concat")


@st.composite
def programs(draw) -> dict:
    """A program: input size, seed, layers (each producing tensor i + 1 from tensor i and maybe one more)."""
    hw = draw(st.sampled_from([6, 8]))
    depth = draw(st.integers(2, 6))
    # per tensor: (channel segments or None for the graph input, spatial size)
    tensors: list[tuple[tuple[int, ...] | None, int]] = [(None, hw)]
    layers: list[tuple] = []
    for i in range(depth):
        segs, size = tensors[-1]
        kind = "conv" if i == 0 else draw(st.sampled_from(LAYERS))
        if kind == "add":
            cands = [j for j in range(1, len(tensors) - 1) if tensors[j] == tensors[-1]]
            kind = "conv" if not cands else kind
        if kind == "concat":
            cands = [
                j
                for j in range(1, len(tensors) - 1)
                if tensors[j][1] == size and len(tensors[j][0]) + len(segs) <= 4
            ]
            kind = "conv" if not cands else kind
        if kind == "pool" and size == 1:
            kind = "act"
        if kind == "res" and len(segs) != 1:
            kind = "conv"
        if kind == "conv":
            width = draw(st.integers(2, 6))
            k = draw(st.sampled_from([1, 3])) if size > 1 else 1
            layer = ("conv", width, k, draw(st.booleans()))
            out = ((width,), size)
        elif kind == "res":  # Conv of the same width (+ activation) added back to its input
            layer = ("res", draw(st.sampled_from([1, 3])) if size > 1 else 1, draw(st.sampled_from(ACTS)))
            out = (segs, size)
        elif kind == "bn":
            layer, out = ("bn",), (segs, size)
        elif kind == "act":
            layer, out = ("act", draw(st.sampled_from(ACTS))), (segs, size)
        elif kind == "scale":
            layer, out = ("scale",), (segs, size)
        elif kind == "pool":
            pool = draw(st.sampled_from(["max", "avg2", "avg3", "gap"]))
            layer = ("pool", pool)
            out = (segs, {"max": size // 2, "avg2": size // 2, "avg3": size, "gap": 1}[pool])
        elif kind == "add":
            j = draw(st.sampled_from(cands))
            layer, out = ("add", j), (segs, size)
        else:  # concat
            j = draw(st.sampled_from(cands))
            layer, out = ("concat", j), (segs + tensors[j][0], size)
        layers.append(layer)
        tensors.append(out)
    head = draw(st.sampled_from(["gemm", "gemm2", "conv"]))
    return {
        "hw": hw,
        "seed": draw(st.integers(0, 2**16)),
        "layers": layers,
        "head": head,
        "out": draw(st.integers(1, 4)),
        "hidden": draw(st.integers(2, 5)),
    }


# --------------------------------------------------------------------------------- building
def dup(x: np.ndarray, segs: tuple[int, ...] | None, axis: int, halve: bool, block: int = 1) -> np.ndarray:
    """Duplicate each segment (of ``n`` channels × ``block`` entries) along ``axis``: c → c, c + n."""
    if segs is None:
        return x
    x = np.moveaxis(x, axis, 0)
    parts, pos = [], 0
    for n in segs:
        seg = x[pos : pos + n * block]
        pos += n * block
        if halve:
            seg = seg / seg.dtype.type(2)
        parts += [seg, seg]
    assert pos == x.shape[0]
    return np.moveaxis(np.concatenate(parts), 0, axis)


def build(prog: dict, wide: bool = False) -> onnx.ModelProto:
    """The compact model of ``prog``, or its exact duplicate-channel twin (``wide``)."""
    rng = np.random.default_rng(prog["seed"])
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def rnd(*shape, lo=None, hi=None):
        if lo is not None:
            return rng.uniform(lo, hi, shape).astype(np.float32)
        return (rng.standard_normal(shape) * 0.7).astype(np.float32)

    def init(name, value):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name))
        return name

    def node(op, *inputs, **attrs):
        name = f"n{len(nodes)}_{op.lower()}"
        nodes.append(helper.make_node(op, list(inputs), [name + "_y"], name=name, **attrs))
        return name + "_y"

    w = (
        (lambda x, segs, axis, halve, block=1: dup(x, segs, axis, halve, block))
        if wide
        else (lambda x, segs, axis, halve, block=1: x)
    )
    width = lambda segs: sum(segs) if segs is not None else 3  # noqa: E731  (compact channel count)

    def activation(t, act):
        if act == "SiLU":
            return node("Mul", t, node("Sigmoid", t))
        if act == "LeakyRelu":
            return node("LeakyRelu", t, alpha=0.1)
        return node(act, t)

    hw = prog["hw"]
    tensors = [("x", None, hw)]
    for li, layer in enumerate(prog["layers"]):
        t, segs, size = tensors[-1]
        c = width(segs)
        kind = layer[0]
        if kind == "conv":
            _, n, k, bias = layer
            weight = w(
                w(rnd(n, c, k, k) / np.float32(np.sqrt(c * k * k) / 1.5), (n,), 0, False), segs, 1, True
            )
            ins = [t, init(f"w{li}", weight)]
            if bias:
                ins.append(init(f"b{li}", w(rnd(n), (n,), 0, False)))
            out = (node("Conv", *ins, kernel_shape=[k, k], pads=[k // 2] * 4), (n,), size)
        elif kind == "res":
            _, k, act = layer
            weight = w(
                w(rnd(c, c, k, k) / np.float32(np.sqrt(c * k * k) / 1.5), segs, 0, False), segs, 1, True
            )
            y = node(
                "Conv",
                t,
                init(f"w{li}", weight),
                init(f"b{li}", w(rnd(c), segs, 0, False)),
                kernel_shape=[k, k],
                pads=[k // 2] * 4,
            )
            out = (node("Add", t, activation(y, act)), segs, size)
        elif kind == "bn":
            vecs = [rnd(c, lo=0.5, hi=1.5), rnd(c), rnd(c) * 0.3, rnd(c, lo=0.5, hi=2.0)]
            names = [init(f"bn{li}_{i}", w(v, segs, 0, False)) for i, v in enumerate(vecs)]
            out = (node("BatchNormalization", t, *names, epsilon=1e-5), segs, size)
        elif kind == "act":
            out = (activation(t, layer[1]), segs, size)
        elif kind == "scale":
            sc = init(f"sc{li}", w(rnd(1, c, 1, 1, lo=0.5, hi=1.5), segs, 1, False))
            sh = init(f"sh{li}", w(rnd(1, c, 1, 1) * 0.5, segs, 1, False))
            out = (node("Add", node("Mul", t, sc), sh), segs, size)
        elif kind == "pool":
            pool = layer[1]
            if pool == "max":
                y = node("MaxPool", t, kernel_shape=[2, 2], strides=[2, 2])
            elif pool == "avg2":
                y = node("AveragePool", t, kernel_shape=[2, 2], strides=[2, 2])
            elif pool == "avg3":
                y = node("AveragePool", t, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
            else:
                y = node("GlobalAveragePool", t)
            out = (y, segs, size // 2 if pool in ("max", "avg2") else size if pool == "avg3" else 1)
        elif kind == "add":
            out = (node("Add", t, tensors[layer[1]][0]), segs, size)
        else:
            other, osegs, _ = tensors[layer[1]]
            out = (node("Concat", t, other, axis=1), segs + osegs, size)
        tensors.append(out)

    t, segs, size = tensors[-1]
    c, n_out = width(segs), prog["out"]
    if prog["head"] == "conv":
        y = node(
            "Conv",
            t,
            init("head_w", w(rnd(n_out, c, 1, 1) / np.float32(np.sqrt(c)), segs, 1, True)),
            init("head_b", rnd(n_out)),
            kernel_shape=[1, 1],
        )
        shape = [2, n_out, size, size]
    else:
        f = node("Flatten", t, axis=1)
        feats = c * size * size
        if prog["head"] == "gemm2":
            h = prog["hidden"]
            g1 = w(w(rnd(h, feats) / np.float32(np.sqrt(feats)), (h,), 0, False), segs, 1, True, size * size)
            f = node(
                "Relu", node("Gemm", f, init("fc1_w", g1), init("fc1_b", w(rnd(h), (h,), 0, False)), transB=1)
            )
            feats, segs_in, block = h, (h,), 1
        else:
            segs_in, block = segs, size * size
        gw = w(rnd(n_out, feats) / np.float32(np.sqrt(feats)), segs_in, 1, True, block)
        y = node("Gemm", f, init("fc_w", gw), init("fc_b", rnd(n_out)), transB=1)
        shape = [2, n_out]
    graph = helper.make_graph(
        nodes,
        "prop",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3, hw, hw])],
        [helper.make_tensor_value_info(y, onnx.TensorProto.FLOAT, shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


# --------------------------------------------------------------------------------- harness
def feeds_for(prog: dict) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(prog["seed"] + 1)
    return {"x": (rng.standard_normal((2, 3, prog["hw"], prog["hw"])) * 2).astype(np.float32)}


def run(model: onnx.ModelProto, feeds: dict, optimize: bool = True) -> dict[str, np.ndarray]:
    sess = make_session(
        model.SerializeToString(), providers=["CPUExecutionProvider"], optimize=optimize, threads=1
    )
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds), strict=True))


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    ref = ref.astype(np.float64)
    return float(np.abs(got.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-30))


def do_fold(model: onnx.ModelProto, sparsity: float, repair: str = "none"):
    folded, report = onnxfold.fold(
        onnx.ModelProto.FromString(model.SerializeToString()), sparsity, validate=False, repair=repair
    )
    return to_model_proto(folded), report


# --------------------------------------------------------------------------------- properties
@examples(150)
@given(
    prog=programs(), sparsity=st.floats(0.0, 0.9, exclude_max=True), repair=st.sampled_from(["none", "ar"])
)
def test_fold_gives_valid_running_model(prog, sparsity, repair):
    compact = build(prog)
    feeds = feeds_for(prog)
    ref = run(compact, feeds)
    folded, _ = do_fold(compact, sparsity, repair)
    onnx.checker.check_model(folded, full_check=True)
    assert [o.name for o in folded.graph.output] == [o.name for o in compact.graph.output]
    got = run(folded, feeds)
    assert list(got) == list(ref)
    for name, r in ref.items():
        assert got[name].shape == r.shape, name
        assert np.isfinite(got[name]).all(), name


@examples(100)
@given(prog=programs())
def test_folding_duplicate_twin_gives_compact_back(prog):
    compact, wide = build(prog), build(prog, wide=True)
    feeds = feeds_for(prog)
    ref = run(compact, feeds)
    assume(all(float(np.abs(r).max()) > 1e-3 for r in ref.values()))
    for name, got in run(wide, feeds).items():  # the construction itself is exact
        assert got.shape == ref[name].shape and rel_err(got, ref[name]) <= 1e-5, ("wide twin", name)

    folded, report = do_fold(wide, 0.5)
    for name, got in run(folded, feeds).items():
        assert got.shape == ref[name].shape
        assert rel_err(got, ref[name]) <= 1e-5, (name, rel_err(got, ref[name]))
    bad = [
        (p.group.name, p.status, p.k, p.group.size, p.reason)
        for p in report.plans
        if (p.status != "folded" or 2 * p.k != p.group.size) and "graph output" not in p.reason
    ]
    assert not bad, bad


@examples(50)
@given(prog=programs(), repair=st.sampled_from(["none", "ar"]))
def test_sparsity_zero_is_bit_identical(prog, repair):
    compact = build(prog)
    feeds = feeds_for(prog)
    ref = run(compact, feeds, optimize=False)
    folded, _ = do_fold(compact, 0.0, repair)
    got = run(folded, feeds, optimize=False)
    assert list(got) == list(ref)
    for name, r in ref.items():
        assert got[name].shape == r.shape
        assert np.array_equal(got[name], r), (name, rel_err(got[name], r))
