"""The op table (onnxfold.analysis.walk), rule by rule, against exact duplicate-channel oracles.

Every case builds one tiny ONNX graph twice from the same "compact" weights: once as is, and once
"wide", where every hidden channel of the groups expected to fold is duplicated (producer rows,
biases, BN vectors and per-channel constants repeated; consumer input columns repeated and halved;
a Flatten block of H·W columns per channel repeated; each Concat input duplicated within its own
segment; shape constants computed from the widths). By Lemma B.1 both graphs compute the same
function, and folding the wide graph at sparsity 0.5 must give the compact graph back: the same
outputs under onnxruntime, and every initializer with the compact shape and values. Barriers must
block their group with a reason naming the op, while the rest of the graph still folds exactly.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from harness import (
    A,
    K,
    Net,
    S,
    initializers,
    positive,
    producer,
    random_feeds,
    rel_err,
    rnd,
    run_ort,
    widen,
)
from onnx import helper, numpy_helper

import onnxfold
from onnxfold.analysis import (
    GRAPH_INPUT,
    GRAPH_OUTPUT,
    GROUPED_CONV,
    MIXES_CHANNELS,
    RESHAPES_CHANNELS,
    SHARED_TENSOR,
    UNSUPPORTED_OP,
    UNTRACKED_TENSOR,
    analyze_graph,
)
from onnxfold.ir.model import model_from_proto, to_model_proto
from onnxfold.passes import REGISTRY
from onnxfold.pipeline.manager import PassContext, PassManager, parse_pipeline
from onnxfold.runtime.session import make_session


# --------------------------------------------------------------------------------- folding through the passes
def fold(proto: onnx.ModelProto, sparsity: float = 0.5) -> tuple[onnx.ModelProto, list]:
    model = model_from_proto(proto)
    ctx = PassContext()
    spec = f"canonicalize,fold:sparsity={sparsity},cleanup"
    PassManager(parse_pipeline(spec, REGISTRY), check=True).run(model, ctx)
    return to_model_proto(model), ctx.data["fold_plans"]


def groups_of(proto: onnx.ModelProto):
    model = model_from_proto(proto)
    PassManager(parse_pipeline("canonicalize", REGISTRY)).run(model)
    return analyze_graph(model.graph)


def plan_for(plans: list, producer_name: str):
    found = [p for p in plans if producer_name in p.group.producers]
    assert len(found) == 1, (
        f"no single group produced by {producer_name}: {[p.group.producers for p in plans]}"
    )
    return found[0]


@dataclass
class Case:
    """``fold``: groups that must fold ("a+b" = one group produced by a and b); ``blocked``: producer →
    (code, text) one of its block reasons must have. ``dup`` duplicates exactly the folding groups."""

    weights: Callable[[np.random.Generator], dict[str, np.ndarray]]
    build: Callable[[dict[str, np.ndarray]], onnx.ModelProto]
    dup: list[tuple[str, int, list]]
    fold: list[str]
    blocked: dict[str, tuple[str, str]] = field(default_factory=dict)


def check_case(case: Case, tol: float = 1e-5) -> None:
    compact_w = case.weights(np.random.default_rng(0))
    compact = case.build(compact_w)
    wide = case.build(widen(compact_w, case.dup))
    feeds = random_feeds(compact)
    ref = run_ort(compact, feeds)
    assert all(float(np.abs(r).max()) > 1e-3 for r in ref), "degenerate case"
    for w, r in zip(run_ort(wide, feeds), ref, strict=True):  # the construction itself is exact (Lemma B.1)
        assert w.shape == r.shape and rel_err(w, r) <= tol

    folded, plans = fold(wide)
    for got, r in zip(run_ort(folded, feeds), ref, strict=True):
        assert got.shape == r.shape
        assert rel_err(got, r) <= tol

    done = {"+".join(sorted(p.group.producers)): p for p in plans if p.status == "folded"}
    assert set(done) == {"+".join(sorted(g.split("+"))) for g in case.fold}
    for p in done.values():
        assert p.k * 2 == p.group.size
    for name, (code, needle) in case.blocked.items():
        p = plan_for(plans, name)
        assert p.status == "blocked" and needle in p.reason, (name, p.status, p.reason)
        assert any(r.code == code and needle in r.message for r in p.reasons), (name, p.reasons)

    # the folded graph *is* the compact graph: every initializer back to its compact shape and values
    have = initializers(folded)
    for name, value in initializers(compact).items():
        assert have[name].shape == value.shape, name
        assert have[name].dtype == value.dtype, name
        np.testing.assert_allclose(have[name], value, rtol=1e-6, atol=0, err_msg=name)


CASES: dict[str, Case] = {}


def case(name: str, *args, **kwargs) -> None:
    assert name not in CASES
    CASES[name] = Case(*args, **kwargs)


X = [2, 3, 6, 6]


# --------------------------------------------------------------------------------- producers
def conv_pair_w(rng, bias=True, n=4, k2=3):
    w = {"w1": rnd(rng, n, 3, 3, 3), "w2": rnd(rng, 5, n, k2, k2)}
    if bias:
        w |= {"b1": rnd(rng, n), "b2": rnd(rng, 5)}
    return w


def conv_chain(mid: Callable[[Net, str], str], bias: bool = True, opset: int = 17, dtype=np.float32, k2=3):
    """x → Conv c1 (n) → mid → Conv c2 (5) → y."""

    def build(w):
        net = Net(w, opset, dtype)
        x = net.input("x", X)
        h = net("Conv", x, "w1", *(["b1"] if bias else []), name="c1", pads=[1, 1, 1, 1])
        h = mid(net, h)
        pads = [(k2 - 1) // 2] * 4
        return net.model(net("Conv", h, "w2", *(["b2"] if bias else []), name="c2", pads=pads))

    return build


def relu(net: Net, h: str) -> str:
    return net("Relu", h)


CHAIN_DUP = producer("w1", "b1", 4) + [("w2", 1, [S(4)])]
case(
    "conv_relu_conv", conv_pair_w, conv_chain(relu), CHAIN_DUP, ["c1"], {"c2": (GRAPH_OUTPUT, "graph output")}
)
case(
    "conv_no_bias",
    lambda r: conv_pair_w(r, bias=False),
    conv_chain(relu, bias=False),
    producer("w1", None, 4) + [("w2", 1, [S(4)])],
    ["c1"],
)
case("conv_opset13", conv_pair_w, conv_chain(relu, opset=13), CHAIN_DUP, ["c1"])
case("conv_opset20", conv_pair_w, conv_chain(relu, opset=20), CHAIN_DUP, ["c1"])


def bn_w(rng):
    return conv_pair_w(rng, bias=False) | {
        "s": positive(rng, 4),
        "t": rnd(rng, 4),
        "mu": rnd(rng, 4),
        "var": positive(rng, 4),
    }


case(
    "batchnorm",
    bn_w,
    conv_chain(
        lambda net, h: net("Relu", net("BatchNormalization", h, "s", "t", "mu", "var", epsilon=1e-3)),
        bias=False,
    ),
    producer("w1", None, 4) + [(v, 0, [A(4)]) for v in ("s", "t", "mu", "var")] + [("w2", 1, [S(4)])],
    ["c1"],
)
case(
    "depthwise_conv",
    lambda r: conv_pair_w(r) | {"wd": rnd(r, 4, 1, 3, 3), "bd": rnd(r, 4)},
    conv_chain(
        lambda net, h: net(
            "Relu",
            net(
                "Conv",
                net("Relu", h),
                "wd",
                "bd",
                name="dw",
                pads=[1, 1, 1, 1],
                group=net.weights["wd"].shape[0],
            ),
        )
    ),
    CHAIN_DUP + producer("wd", "bd", 4),
    ["c1"],
)
case(
    "instancenorm",
    lambda r: conv_pair_w(r) | {"s": positive(r, 4), "t": rnd(r, 4)},
    conv_chain(lambda net, h: net("InstanceNormalization", h, "s", "t")),
    CHAIN_DUP + producer("s", "t", 4),
    ["c1"],
)


def stem_w(rng, extra):
    return {
        "w0": rnd(rng, 3, 3, 3, 3),
        "b0": rnd(rng, 3),
        "w1": rnd(rng, 4, 3, 3, 3),
        "b1": rnd(rng, 4),
    } | extra


STEM_DUP = producer("w0", "b0", 3) + [("w1", 1, [S(3)])]


def stem_chain(tail: Callable[[Net, str], str], opset: int = 17):
    """x → Conv c0 (3, folds) → Relu → Conv c1 (4, the group under test) → tail → y."""

    def build(w):
        net = Net(w, opset)
        h = net("Relu", net("Conv", net.input("x", X), "w0", "b0", name="c0", pads=[1, 1, 1, 1]))
        h = net("Conv", h, "w1", "b1", name="c1", pads=[1, 1, 1, 1])
        out = tail(net, h)
        return net.model(*out) if isinstance(out, tuple) else net.model(out)

    return build


def conv2(net: Net, h: str, w: str = "w2") -> str:
    return net("Conv", h, w, name="c2", pads=[1, 1, 1, 1])


# grouped Conv (group 2 of 4 channels, weight [4, 2, 3, 3]): c1's channels merge only within their
# convolution group, and so do gconv's outputs; the duplicates are made within each group ([A(2)] * 2),
# and gconv's input columns (axis 1 holds one group's channels) are repeated and halved as usual
GROUPED_DUP = (
    STEM_DUP
    + [("w1", 0, [A(2)] * 2), ("b1", 0, [A(2)] * 2), ("wg", 1, [S(2)]), ("wg", 0, [A(2)] * 2)]
    + [("w2", 1, [S(2)] * 2)]
)
case(
    "grouped_conv",
    lambda r: stem_w(r, {"wg": rnd(r, 4, 2, 3, 3), "w2": rnd(r, 5, 4, 3, 3)}),
    stem_chain(
        lambda net, h: conv2(
            net, net("Relu", net("Conv", net("Relu", h), "wg", name="gconv", group=2, pads=[1, 1, 1, 1]))
        )
    ),
    GROUPED_DUP,
    ["c0", "c1", "gconv"],
)
# a depthwise Conv with a multiplier (group 4 over c1's 4 channels, 8 outputs, weight [8, 1, 3, 3]):
# output channels 2c, 2c + 1 filter c1's channel c alone, so c1's group passes through it in blocks of 2
# (filters, bias and BN vectors averaged block by block, c2's columns summed); the wide twin duplicates
# c1 (c → c, c + 4) and with it each block, and the Conv's group follows c1's width (8 → 4)
case(
    "grouped_conv_bias_bn",
    lambda r: (
        stem_w(r, {"wg": rnd(r, 8, 1, 3, 3), "bg": rnd(r, 8), "w2": rnd(r, 5, 8, 3, 3)})
        | {"s": positive(r, 8), "t": rnd(r, 8), "mu": rnd(r, 8), "var": positive(r, 8)}
    ),
    stem_chain(
        lambda net, h: conv2(
            net,
            net(
                "Relu",
                net(
                    "BatchNormalization",
                    net(
                        "Conv",
                        net("Relu", h),
                        "wg",
                        "bg",
                        name="gconv",
                        group=net.weights["w1"].shape[0],
                        pads=[1, 1, 1, 1],
                    ),
                    "s",
                    "t",
                    "mu",
                    "var",
                ),
            ),
        )
    ),
    STEM_DUP
    + producer("w1", "b1", 4)
    + [(v, 0, [A(4, 2)]) for v in ("wg", "bg", "s", "t", "mu", "var")]
    + [("w2", 1, [S(4, 2)])],
    ["c0", "c1"],
)


def grouped_after_concat(w):
    net = Net(w)
    x = net.input("x", X)
    a = net("Relu", net("Conv", x, "wa", "ba", name="cA", pads=[1, 1, 1, 1]))
    b = net("Relu", net("Conv", x, "wb", "bb", name="cB", pads=[1, 1, 1, 1]))
    h = net("Relu", net("Conv", net("Concat", a, b, axis=1), "wg", name="gconv", group=2, pads=[1, 1, 1, 1]))
    return net.model(net("Conv", h, "w3", name="c3"))


case(
    "grouped_conv_after_concat",
    lambda r: {
        "wa": rnd(r, 4, 3, 3, 3),
        "ba": rnd(r, 4),
        "wb": rnd(r, 4, 3, 3, 3),
        "bb": rnd(r, 4),
        "wg": rnd(r, 6, 4, 3, 3),
        "w3": rnd(r, 5, 6, 1, 1),
    },
    grouped_after_concat,
    [("wg", 0, [A(3)] * 2), ("w3", 1, [S(3)] * 2)],
    ["gconv"],
    {
        "cA": (GROUPED_CONV, "reads channels of several groups"),
        "cB": (GROUPED_CONV, "reads channels of several groups"),
    },
)


def convtranspose(w, group: int = 1):
    net = Net(w)
    h = net("Relu", net("Conv", net.input("x", X), "w1", "b1", name="c1", pads=[1, 1, 1, 1]))
    h = net("Relu", net("ConvTranspose", h, "wt", "bt", name="ct", strides=[2, 2], group=group))
    return net.model(net("Conv", h, "w2", name="c2"))


case(
    "convtranspose",
    lambda r: {
        "w1": rnd(r, 4, 3, 3, 3),
        "b1": rnd(r, 4),
        "wt": rnd(r, 4, 3, 2, 2),
        "bt": rnd(r, 3),
        "w2": rnd(r, 5, 3, 3, 3),
    },
    convtranspose,
    producer("w1", "b1", 4) + [("wt", 0, [S(4)])] + producer("wt", "bt", 3, axis=1) + [("w2", 1, [S(3)])],
    ["c1", "ct"],
)


# grouped ConvTranspose (group 2, weight [4, 3, 2, 2] → 6 outputs): input rows and output columns merge
# within their convolution group; the output columns (axis 1) hold one group's outputs per slab of axis 0
case(
    "grouped_convtranspose",
    lambda r: {
        "w1": rnd(r, 4, 3, 3, 3),
        "b1": rnd(r, 4),
        "wt": rnd(r, 4, 3, 2, 2),
        "bt": rnd(r, 6),
        "w2": rnd(r, 5, 6, 3, 3),
    },
    lambda w: convtranspose(w, group=2),
    [("w1", 0, [A(2)] * 2), ("b1", 0, [A(2)] * 2), ("wt", 0, [S(2)] * 2), ("wt", 1, [A(3)])]
    + [("bt", 0, [A(3)] * 2), ("w2", 1, [S(3)] * 2)],
    ["c1", "ct"],
)


def gemm_case(trans_b1: int, c_shape: tuple[int, ...], trans_b2: int) -> None:
    def weights(rng):
        return {
            "gw1": rnd(rng, *((4, 6) if trans_b1 else (6, 4))),
            "gc1": rnd(rng, *c_shape),
            "gw2": rnd(rng, *((5, 4) if trans_b2 else (4, 5))),
            "gc2": rnd(rng, 1, 5),
        }

    def build(w):
        net = Net(w)
        h = net("Gemm", net.input("v", [2, 6]), "gw1", "gc1", name="g1", alpha=0.7, beta=1.3, transB=trans_b1)
        h = net("Tanh", h)
        return net.model(net("Gemm", h, "gw2", "gc2", name="g2", alpha=1.1, beta=0.9, transB=trans_b2))

    dup = [
        ("gw1", 0 if trans_b1 else 1, [A(4)]),
        ("gc1", len(c_shape) - 1, [A(4)]),
        ("gw2", 1 if trans_b2 else 0, [S(4)]),
    ]
    case(
        f"gemm_tb{trans_b1}_c{len(c_shape)}d_tb{trans_b2}",
        weights,
        build,
        dup,
        ["g1"],
        {"g2": (GRAPH_OUTPUT, "graph output")},
    )


gemm_case(1, (4,), 0)
gemm_case(0, (1, 4), 1)
gemm_case(1, (1, 4), 1)
gemm_case(0, (4,), 0)


def matmul_case(rank: int) -> None:
    def build(w):
        net = Net(w)
        a = net.input("v", [2, 3, 6][3 - rank :])
        h = net("Relu", net("Add", net("MatMul", a, "w1", name="m1"), "b1"))
        return net.model(net("Add", net("MatMul", h, "w2", name="m2"), "b2"))

    case(
        f"matmul_rank{rank}",
        lambda r: {"w1": rnd(r, 6, 4), "b1": rnd(r, 4), "w2": rnd(r, 4, 5), "b2": rnd(r, 5)},
        build,
        producer("w1", None, 4, axis=1) + [("b1", 0, [A(4)]), ("w2", 0, [S(4)])],
        ["m1"],
    )


matmul_case(2)
matmul_case(3)


def reverse_sequence_case(channels_on_time: bool) -> None:
    """tf2onnx's backward pass of a Keras LSTM: ReverseSequence along time [T, B, C] keeps the channels;
    one whose time axis is the channel axis ([C, B, T] after a Transpose) blocks them."""

    def build(w):
        net = Net(w)
        h = net("Relu", net("Add", net("MatMul", net.input("v", [4, 2, 6]), "w1", name="m1"), "b1"))
        lens = net.i64("lens", [3, 4])
        if channels_on_time:
            h = net(
                "Transpose", net("ReverseSequence", net("Transpose", h, perm=[2, 1, 0]), lens), perm=[2, 1, 0]
            )
        else:
            h = net("ReverseSequence", h, lens, time_axis=0, batch_axis=1)
        return net.model(net("Add", net("MatMul", h, "w2", name="m2"), "b2"))

    case(
        f"reverse_sequence{'_on_channels' if channels_on_time else ''}",
        lambda r: {"w1": rnd(r, 6, 4), "b1": rnd(r, 4), "w2": rnd(r, 4, 5), "b2": rnd(r, 5)},
        build,
        [] if channels_on_time else producer("w1", None, 4, axis=1) + [("b1", 0, [A(4)]), ("w2", 0, [S(4)])],
        [] if channels_on_time else ["m1"],
        {"m1": (RESHAPES_CHANNELS, "reverses along the channel axis")} if channels_on_time else {},
    )


reverse_sequence_case(False)
reverse_sequence_case(True)


def tile_case(axis: int) -> None:
    """Tile repeating the frames [B, T, C] → [B, 3T, C] keeps the channels (BatDetect2's ``repeat``);
    repeating the channel axis blocks them."""

    def build(w):
        net = Net(w)
        h = net("Relu", net("Add", net("MatMul", net.input("v", [2, 3, 6]), "w1", name="m1"), "b1"))
        h = net("Tile", h, net.i64("reps", [3 if i == axis else 1 for i in range(3)]))
        if axis == 2:  # the channels tiled to 12: back to 4 by a sum of the copies
            h = net(
                "ReduceSum", net("Reshape", h, net.i64("split", [2, 3, 3, 4])), net.i64("ax", [2]), keepdims=0
            )
        return net.model(net("Add", net("MatMul", h, "w2", name="m2"), "b2"))

    case(
        f"tile_axis{axis}",
        lambda r: {"w1": rnd(r, 6, 4), "b1": rnd(r, 4), "w2": rnd(r, 4, 5), "b2": rnd(r, 5)},
        build,
        producer("w1", None, 4, axis=1) + [("b1", 0, [A(4)]), ("w2", 0, [S(4)])] if axis != 2 else [],
        ["m1"] if axis != 2 else [],
        {"m1": (RESHAPES_CHANNELS, "repeats the channel axis")} if axis == 2 else {},
    )


tile_case(1)
tile_case(2)


def se_expand_as_case() -> None:
    """A squeeze-and-excitation block exported with ``x * s.expand_as(x)``: Expand(s, Shape(x)) reads
    the channel count at run time, and the Mul beside x unites both in one group, so the count read
    is the folded one (asterocr's AsterNet: seven SE groups were blocked)."""

    def build(w):
        net = Net(w)
        x = net.input("x", ["N", 3, 6, "W"])  # free dims: Shape(h) is read at run time
        h = net("Relu", net("Conv", x, "w1", "b1", name="c1", pads=[1, 1, 1, 1]))
        e = net("Relu", net("Conv", net("GlobalAveragePool", h), "se1", name="squeeze"))
        e = net("Sigmoid", net("Conv", e, "se2", "se2b", name="excite"))
        h = net("Mul", h, net("Expand", e, net("Shape", h)))
        return net.model(net("Conv", h, "w2", "b2", name="c2", pads=[1, 1, 1, 1]))

    case(
        "se_expand_as",
        lambda r: conv_pair_w(r) | {"se1": rnd(r, 1, 4, 1, 1), "se2": rnd(r, 4, 1, 1, 1), "se2b": rnd(r, 4)},
        build,
        producer("w1", "b1", 4)
        + [("se1", 1, [S(4)]), ("se1", 0, [A(1)]), ("se2", 1, [S(1)])]
        + [("se2", 0, [A(4)]), ("se2b", 0, [A(4)]), ("w2", 1, [S(4)])],
        ["c1+excite", "squeeze"],
    )


se_expand_as_case()


# --------------------------------------------------------------------------------- element-wise
def gelu_erf(net: Net, h: str) -> str:
    e = net("Erf", net("Div", h, net.f("sqrt2", np.sqrt(2.0))))
    return net("Mul", net("Mul", h, net("Add", e, net.f("one", 1.0))), net.f("half", 0.5))


ACTS: dict[str, Callable[[Net, str], str]] = {
    "Relu": relu,
    "LeakyRelu": lambda net, h: net("LeakyRelu", h, alpha=0.1),
    "PRelu": lambda net, h: net("PRelu", h, "slope"),
    "HardSigmoid": lambda net, h: net("HardSigmoid", h, alpha=0.3, beta=0.4),
    "HardSwish": lambda net, h: net("HardSwish", h),
    "Clip": lambda net, h: net("Clip", h, net.f("lo", -0.3), net.f("hi", 0.6)),
    "Tanh": lambda net, h: net("Tanh", h),
    "Sigmoid": lambda net, h: net("Sigmoid", h),
    "Elu": lambda net, h: net("Elu", h, alpha=0.7),
    "GeluErf": gelu_erf,
    "SiLU": lambda net, h: net("Mul", h, net("Sigmoid", h)),
    "Gelu": lambda net, h: net("Gelu", h),
}
for _act, _fn in ACTS.items():
    _opset = 20 if _act == "Gelu" else 13 if _act == "Clip" else 17
    if _act == "PRelu":
        case(
            "act_PRelu",
            lambda r: conv_pair_w(r) | {"slope": rnd(r, 4, 1, 1)},
            conv_chain(_fn),
            CHAIN_DUP + [("slope", 0, [A(4)])],
            ["c1"],
        )
    else:
        case(f"act_{_act}", conv_pair_w, conv_chain(_fn, opset=_opset), CHAIN_DUP, ["c1"])

case(
    "pool_max",
    conv_pair_w,
    conv_chain(lambda net, h: net("MaxPool", h, kernel_shape=[2, 2], strides=[2, 2])),
    CHAIN_DUP,
    ["c1"],
)
case(
    "pool_average",
    conv_pair_w,
    conv_chain(lambda net, h: net("AveragePool", h, kernel_shape=[3, 3], pads=[1, 1, 1, 1])),
    CHAIN_DUP,
    ["c1"],
)
case(
    "pool_global_average",
    lambda r: conv_pair_w(r, k2=1),
    conv_chain(lambda net, h: net("GlobalAveragePool", net("Relu", h)), k2=1),
    CHAIN_DUP,
    ["c1"],
)


def pad_spatial(net: Net, h: str) -> str:
    return net("Pad", h, net.i64("pads", [0, 0, 1, 0, 0, 0, 0, 1]), mode="reflect")


case("pad_spatial", conv_pair_w, conv_chain(pad_spatial, opset=13), CHAIN_DUP, ["c1"])
case(
    "pad_spatial_axes",
    conv_pair_w,
    conv_chain(
        lambda net, h: net(
            "Pad", h, net.i64("pads", [1, 0, 0, 2]), net.f("cval", 0.25), net.i64("axes", [2, 3])
        ),
        opset=18,
    ),
    CHAIN_DUP,
    ["c1"],
)
case(  # tf2onnx's strided_slice with masks: every axis listed, the channel one taken whole
    "slice_whole_channel_axis",
    conv_pair_w,
    conv_chain(
        lambda net, h: net(
            "Slice",
            h,
            net.i64("starts", [0, 0, 0, -100]),
            net.i64("ends", [2**31 - 1, 2**31 - 1, 2**31 - 1, 5]),
            net.i64("axes", [0, 1, 2, 3]),
            net.i64("steps", [1, 1, 1, 1]),
        ),
        opset=13,
    ),
    CHAIN_DUP,
    ["c1"],
)
# opset 9 keeps a Slice's starts, ends and axes as attributes: waifu2x's CUNet (PyTorch 1.7) crops its
# U-Net skips so, and 8 of its 26 groups were blocked as if each Slice cut the channel axis
case(
    "slice_opset9_spatial",
    conv_pair_w,
    conv_chain(lambda net, h: net("Slice", h, axes=[2, 3], starts=[1, 0], ends=[-1, 5]), opset=9),
    CHAIN_DUP,
    ["c1"],
)
case(  # no axes: every axis from 0, the channel one taken whole
    "slice_opset9_whole_channel_axis",
    conv_pair_w,
    conv_chain(lambda net, h: net("Slice", h, starts=[0, 0, 1], ends=[2**31 - 1, 2**31 - 1, -1]), opset=9),
    CHAIN_DUP,
    ["c1"],
)
# a constant pad on the channel axis adds channels that all hold the pad value: c1's channels follow
# it (shifted by the pad before them), the pad's own channels have no producer and stay as they are
case(
    "pad_channels",
    lambda r: stem_w(r, {"w2": rnd(r, 5, 5, 3, 3)}),
    stem_chain(lambda net, h: conv2(net, net("Pad", h, net.i64("pads", [0, 1, 0, 0, 0, 0, 0, 0])))),
    STEM_DUP + producer("w1", "b1", 4) + [("w2", 1, [K(1), S(4)])],
    ["c0", "c1"],
)
case(  # a reflect pad copies channels: it cannot follow a merge
    "pad_channels_reflect",
    lambda r: stem_w(r, {"w2": rnd(r, 5, 5, 3, 3)}),
    stem_chain(
        lambda net, h: conv2(net, net("Pad", h, net.i64("pads", [0, 1, 0, 0, 0, 0, 0, 0]), mode="reflect")),
        opset=13,
    ),
    STEM_DUP,
    ["c0"],
    {"c1": (RESHAPES_CHANNELS, "Pad")},
)


def padded_shortcut(w):
    """MediaPipe's BlazeFace block: y = Relu(conv(h) + Pad(h, zeros after)), the shortcut widened to
    the conv's channels with a constant pad whose width the fold rewrites (it is computed from the
    weights here, so the wide graph pads twice as many channels)."""
    net = Net(w, 13)
    h = net("Relu", net("Conv", net.input("x", X), "w0", "b0", name="c0", pads=[1, 1, 1, 1]))
    a = net("Conv", h, "wa", "ba", name="cA", pads=[1, 1, 1, 1])
    extra = w["wa"].shape[0] - w["w0"].shape[0]
    p = net("Pad", h, net.i64("pads", [0, 0, 0, 0, 0, extra, 0, 0]), net.f("cval", 0.5))
    return net.model(net("Conv", net("Relu", net("Add", a, p)), "w3", name="c3"))


def padded_shortcut_w(r):
    return {
        "w0": rnd(r, 4, 3, 3, 3),
        "b0": rnd(r, 4),
        "wa": rnd(r, 6, 4, 3, 3),
        "ba": rnd(r, 6),
        "w3": rnd(r, 5, 6, 1, 1),
    }


case(  # the Add cuts cA's channels into the shortcut's [0, 4) and the pad's [4, 6): two groups
    "pad_channels_residual",
    padded_shortcut_w,
    padded_shortcut,
    producer("w0", "b0", 4)
    + [("wa", 1, [S(4)]), ("wa", 0, [A(4), A(2)]), ("ba", 0, [A(4), A(2)]), ("w3", 1, [S(4), S(2)])],
    ["c0+cA", "cA"],
)


def concat_plus_conv(w):
    """One conv's output added to a Concat of two others: the Add cuts it at the Concat's seam."""
    net = Net(w)
    x = net.input("x", X)
    a = net("Conv", x, "wa", "ba", name="cA", pads=[1, 1, 1, 1])
    b = net("Conv", x, "wb", "bb", name="cB", pads=[1, 1, 1, 1])
    c = net("Conv", x, "wc", "bc", name="cC", pads=[1, 1, 1, 1])
    return net.model(net("Conv", net("Relu", net("Add", c, net("Concat", a, b, axis=1))), "w3", name="c3"))


case(
    "add_cuts_at_concat_seam",
    lambda r: concat_w(r) | {"wc": rnd(r, 7, 3, 3, 3), "bc": rnd(r, 7)},
    concat_plus_conv,
    producer("wa", "ba", 4)
    + producer("wb", "bb", 3)
    + [("wc", 0, [A(4), A(3)]), ("bc", 0, [A(4), A(3)]), ("w3", 1, [S(4), S(3)])],
    ["cA+cC", "cB+cC"],
)
case(
    "resize_scales",
    conv_pair_w,
    conv_chain(lambda net, h: net("Resize", h, "", net.f("scales", [1, 1, 2, 2]), mode="nearest"), opset=13),
    CHAIN_DUP,
    ["c1"],
)
case(
    "resize_scales_linear",
    conv_pair_w,
    conv_chain(lambda net, h: net("Resize", h, "", net.f("scales", [1, 1, 1.5, 2]), mode="linear")),
    CHAIN_DUP,
    ["c1"],
)


def resize_sizes(w):
    net = Net(w)
    h = net("Conv", net.input("x", X), "w1", "b1", name="c1", pads=[1, 1, 1, 1])
    h = net("Resize", h, "", "", net.i64("sizes", [2, w["w1"].shape[0], 9, 12]), mode="nearest")
    return net.model(net("Conv", h, "w2", "b2", name="c2", pads=[1, 1, 1, 1]))


case("resize_sizes", conv_pair_w, resize_sizes, CHAIN_DUP, ["c1"])


def per_channel_consts(net: Net, h: str) -> str:
    h = net("Add", net("Mul", h, "sc"), "sh")
    return net("Relu", net("Sub", "sub", net("Div", h, "dv")))


case(
    "per_channel_constants",
    lambda r: (
        conv_pair_w(r)
        | {
            "sc": rnd(r, 4, 1, 1),
            "sh": rnd(r, 4, 1, 1),
            "sub": rnd(r, 1, 4, 1, 1),
            "dv": positive(r, 4, 1, 1),
        }
    ),
    conv_chain(per_channel_consts),
    CHAIN_DUP + [("sc", 0, [A(4)]), ("sh", 0, [A(4)]), ("sub", 1, [A(4)]), ("dv", 0, [A(4)])],
    ["c1"],
)


# --------------------------------------------------------------------------------- joins
def residual_branches(w):
    net = Net(w)
    h = net("Relu", net("Conv", net.input("x", X), "w0", "b0", name="c0", pads=[1, 1, 1, 1]))
    a = net("Conv", h, "wa", "ba", name="cA", pads=[1, 1, 1, 1])
    b = net("Conv", h, "wb", "bb", name="cB")
    return net.model(net("Conv", net("Relu", net("Add", a, b)), "w3", name="c3"))


case(
    "residual_two_branches",
    lambda r: {
        "w0": rnd(r, 4, 3, 3, 3),
        "b0": rnd(r, 4),
        "wa": rnd(r, 3, 4, 3, 3),
        "ba": rnd(r, 3),
        "wb": rnd(r, 3, 4, 1, 1),
        "bb": rnd(r, 3),
        "w3": rnd(r, 5, 3, 3, 3),
    },
    residual_branches,
    producer("w0", "b0", 4)
    + [("wa", 1, [S(4)]), ("wb", 1, [S(4)])]
    + producer("wa", "ba", 3)
    + producer("wb", "bb", 3)
    + [("w3", 1, [S(3)])],
    ["c0", "cA+cB"],
)


def residual_identity(w):
    net = Net(w)
    h = net("Relu", net("Conv", net.input("x", X), "w0", "b0", name="c0", pads=[1, 1, 1, 1]))
    r = net(
        "Conv",
        net("Relu", net("Conv", h, "w1", "b1", name="c1", pads=[1, 1, 1, 1])),
        "w2",
        "b2",
        name="c2",
        pads=[1, 1, 1, 1],
    )
    return net.model(net("Conv", net("Relu", net("Add", h, r)), "w3", name="c3"))


case(
    "residual_identity",
    lambda r: {
        "w0": rnd(r, 4, 3, 3, 3),
        "b0": rnd(r, 4),
        "w1": rnd(r, 3, 4, 3, 3),
        "b1": rnd(r, 3),
        "w2": rnd(r, 4, 3, 3, 3),
        "b2": rnd(r, 4),
        "w3": rnd(r, 5, 4, 1, 1),
    },
    residual_identity,
    producer("w0", "b0", 4)
    + [("w1", 1, [S(4)])]
    + producer("w1", "b1", 3)
    + [("w2", 1, [S(3)])]
    + producer("w2", "b2", 4)
    + [("w3", 1, [S(4)])],
    ["c0+c2", "c1"],
)


def squeeze_excite(w):
    net = Net(w)
    h = net("Relu", net("Conv", net.input("x", X), "w1", "b1", name="c1", pads=[1, 1, 1, 1]))
    g = net("Relu", net("Conv", net("GlobalAveragePool", h), "ws1", "bs1", name="s1"))
    g = net("Sigmoid", net("Conv", g, "ws2", "bs2", name="s2"))
    return net.model(net("Conv", net("Mul", h, g), "w2", name="c2", pads=[1, 1, 1, 1]))


case(
    "squeeze_excite",
    lambda r: {
        "w1": rnd(r, 4, 3, 3, 3),
        "b1": rnd(r, 4),
        "ws1": rnd(r, 2, 4, 1, 1),
        "bs1": rnd(r, 2),
        "ws2": rnd(r, 4, 2, 1, 1),
        "bs2": rnd(r, 4),
        "w2": rnd(r, 5, 4, 3, 3),
    },
    squeeze_excite,
    producer("w1", "b1", 4)
    + [("ws1", 1, [S(4)])]
    + producer("ws2", "bs2", 4)
    + [("w2", 1, [S(4)])]
    + producer("ws1", "bs1", 2)
    + [("ws2", 1, [S(2)])],
    ["c1+s2", "s1"],
)


def concat_w(rng):
    return {
        "wa": rnd(rng, 4, 3, 3, 3),
        "ba": rnd(rng, 4),
        "wb": rnd(rng, 3, 3, 3, 3),
        "bb": rnd(rng, 3),
        "w3": rnd(rng, 5, 7, 1, 1),
    }


def concat(with_input: bool):
    def build(w):
        net = Net(w)
        x = net.input("x", X)
        a = net("Relu", net("Conv", x, "wa", "ba", name="cA", pads=[1, 1, 1, 1]))
        b = x if with_input else net("Relu", net("Conv", x, "wb", "bb", name="cB", pads=[1, 1, 1, 1]))
        return net.model(net("Conv", net("Concat", a, b, axis=1), "w3", name="c3"))

    return build


case(
    "concat_channels",
    concat_w,
    concat(False),
    producer("wa", "ba", 4) + producer("wb", "bb", 3) + [("w3", 1, [S(4), S(3)])],
    ["cA", "cB"],
)
case(
    "concat_with_graph_input",
    concat_w,
    concat(True),
    producer("wa", "ba", 4) + [("w3", 1, [S(4), K(3)])],
    ["cA"],
)


def concat_bn_depthwise(w):
    net = Net(w)
    x = net.input("x", X)
    a = net("Conv", x, "wa", "ba", name="cA", pads=[1, 1, 1, 1])
    b = net("Conv", x, "wb", "bb", name="cB", pads=[1, 1, 1, 1])
    h = net("Relu", net("BatchNormalization", net("Concat", a, b, axis=1), "s", "t", "mu", "var"))
    h = net("Relu", net("Conv", h, "wd", name="dw", group=w["wd"].shape[0], pads=[1, 1, 1, 1]))
    return net.model(net("Conv", h, "w3", name="c3"))


case(
    "concat_bn_depthwise",
    lambda r: (
        concat_w(r)
        | {
            "s": positive(r, 7),
            "t": rnd(r, 7),
            "mu": rnd(r, 7),
            "var": positive(r, 7),
            "wd": rnd(r, 7, 1, 3, 3),
        }
    ),
    concat_bn_depthwise,
    producer("wa", "ba", 4)
    + producer("wb", "bb", 3)
    + [("w3", 1, [S(4), S(3)])]
    + [(v, 0, [A(4), A(3)]) for v in ("s", "t", "mu", "var", "wd")],
    ["cA", "cB"],
)


def split_concat(w):
    net = Net(w, 13)
    x = net.input("x", X)
    a = net("Conv", x, "wa", "ba", name="cA", pads=[1, 1, 1, 1])
    b = net("Conv", x, "wb", "bb", name="cB", pads=[1, 1, 1, 1])
    sizes = [w["wa"].shape[0], w["wb"].shape[0]]
    p, q = net("Split", net("Relu", net("Concat", a, b, axis=1)), net.i64("split", sizes), axis=1, outs=2)
    return net.model(net("Add", net("Conv", p, "wp", name="cP"), net("Conv", q, "wq", name="cQ")))


case(
    "split_at_segment_bounds",
    lambda r: concat_w(r) | {"wp": rnd(r, 5, 4, 1, 1), "wq": rnd(r, 5, 3, 1, 1)},
    split_concat,
    producer("wa", "ba", 4) + producer("wb", "bb", 3) + [("wp", 1, [S(4)]), ("wq", 1, [S(3)])],
    ["cA", "cB"],
)


def split_spatial(net: Net, h: str) -> str:
    p, q = net("Split", h, axis=2, outs=2)
    return net("Mul", p, net("Sigmoid", q))


case("split_spatial", conv_pair_w, conv_chain(split_spatial), CHAIN_DUP, ["c1"])


# --------------------------------------------------------------------------------- reshapes into a Gemm
def flatten_gemm(kind: str, opset: int = 17):
    """x → Conv c1 (n) → Relu → MaxPool (3×3) → Flatten/Reshape → Gemm fc."""

    def build(w):
        net = Net(w, opset)
        h = net("Conv", net.input("x", X), "w1", "b1", name="c1", pads=[1, 1, 1, 1])
        h = net("MaxPool", net("Relu", h), kernel_shape=[2, 2], strides=[2, 2])
        n = w["w1"].shape[0]
        if kind == "flatten":
            h = net("Flatten", h, axis=1)
        else:
            target = {"0,-1": [0, -1], "N,-1": [2, -1], "N,CHW": [2, n * 9], "-1,CHW": [-1, n * 9]}[kind]
            h = net("Reshape", h, net.i64("target", target))
        return net.model(net("Gemm", h, "fw", "fb", name="fc", transB=1))

    return build


for _kind in ("flatten", "0,-1", "N,-1", "N,CHW", "-1,CHW"):
    case(
        f"reshape_gemm_{_kind}",
        lambda r: {"w1": rnd(r, 4, 3, 3, 3), "b1": rnd(r, 4), "fw": rnd(r, 5, 36), "fb": rnd(r, 5)},
        flatten_gemm(_kind),
        producer("w1", "b1", 4) + [("fw", 1, [S(4, 9)])],
        ["c1"],
    )


def nhwc_flatten_gemm(kind: str):
    """x → Conv c1 (n) → Relu → MaxPool → Transpose to NHWC → Flatten/Reshape → Gemm fc: the channel
    is the inner factor of the flattened features (Keras' Flatten through tf2onnx), so the 9 pixels
    hold 9 copies of the channels side by side."""

    def build(w):
        net = Net(w)
        h = net("Conv", net.input("x", X), "w1", "b1", name="c1", pads=[1, 1, 1, 1])
        h = net("MaxPool", net("Relu", h), kernel_shape=[2, 2], strides=[2, 2])
        h = net("Transpose", h, perm=[0, 2, 3, 1])
        n = w["w1"].shape[0]
        if kind == "flatten":
            h = net("Flatten", h, axis=1)
        else:
            h = net("Reshape", h, net.i64("target", {"0,-1": [0, -1], "-1,HWC": [-1, 9 * n]}[kind]))
        return net.model(net("Gemm", h, "fw", "fb", name="fc", transB=1))

    return build


for _kind in ("flatten", "0,-1", "-1,HWC"):
    case(
        f"nhwc_{_kind}_gemm",
        lambda r: {"w1": rnd(r, 4, 3, 3, 3), "b1": rnd(r, 4), "fw": rnd(r, 5, 36), "fb": rnd(r, 5)},
        nhwc_flatten_gemm(_kind),
        producer("w1", "b1", 4) + [("fw", 1, [S(4)] * 9)],
        ["c1"],
    )


def permuted_flatten_gemm(w):
    """x [N, 3, 8, 1] (a free batch) → Conv c1 (n, kernel 3×1) → Relu → MaxPool 2×1 → [N, n, 4, 1] →
    Transpose(0, 2, 1, 3) → Reshape [−1, 4·n] → Gemm fc: CREPE's channel permute before its flatten,
    each channel's columns strided by n (it was blocked: "Reshape moves the channel axis")."""
    net = Net(w)
    h = net("Conv", net.input("x", ["N", 3, 8, 1]), "w1", "b1", name="c1", pads=[1, 0, 1, 0])
    h = net("MaxPool", net("Relu", h), kernel_shape=[2, 1], strides=[2, 1])
    h = net("Transpose", h, perm=[0, 2, 1, 3])
    h = net("Reshape", h, net.i64("target", [-1, 4 * w["w1"].shape[0]]))
    return net.model(net("Gemm", h, "fw", "fb", name="fc", transB=1))


case(
    "permuted_flatten_gemm",
    lambda r: {"w1": rnd(r, 4, 3, 3, 1), "b1": rnd(r, 4), "fw": rnd(r, 5, 16), "fb": rnd(r, 5)},
    permuted_flatten_gemm,
    producer("w1", "b1", 4) + [("fw", 1, [S(4)] * 4)],
    ["c1"],
)


def stacked_frames(target: Callable[[int], list[int]] | None):
    """v [2, 8, 6] → MatMul m1 (4) → Relu → Reshape [B, 4, 2·4] (two frames stacked: each row holds
    two copies of the channels) → MatMul m2; ``target`` None: computed from v's batch (magika's)."""

    def build(w):
        net = Net(w)
        v = net.input("v", [2, 8, 6] if target else ["N", 8, 6])
        h = net("Relu", net("Add", net("MatMul", v, "w1", name="m1"), "b1"))
        n = w["w1"].shape[1]
        shape = net.i64("target", target(n)) if target else computed_target(net, v, 4, 2 * n)
        h = net("Reshape", h, shape)
        return net.model(net("MatMul", h, "w2", name="m2"))

    return build


for _name, _target in (
    ("const", lambda n: [2, 4, 2 * n]),
    ("copy_batch", lambda n: [0, 4, 2 * n]),
    ("inferred", lambda n: [0, 4, -1]),
    ("computed", None),
):
    case(
        f"stacked_frames_{_name}",
        lambda r: {"w1": rnd(r, 6, 4), "b1": rnd(r, 4), "w2": rnd(r, 8, 5)},
        stacked_frames(_target),
        producer("w1", None, 4, axis=1) + [("b1", 0, [A(4)]), ("w2", 0, [S(4), S(4)])],
        ["m1"],
    )


def computed_target(net: Net, source: str, *tail: int) -> str:
    """[source's dim 0, *tail], computed as tf2onnx writes it (Shape → Slice → Concat)."""
    batch = net("Slice", net("Shape", source), net.i64("s0", [0]), net.i64("s1", [1]))
    return net("Concat", batch, net.i64("tail", list(tail)), axis=0)


def unit_axis(inserted: bool):
    """A Reshape that inserts ([B, C, T] → [B, 1, C, T]) or removes ([B, 1, C, T] → [B, C, T]) a dim
    of size 1 before the channels, as Unsqueeze and Squeeze do; tf2onnx writes them as Reshapes to a
    computed target (a constant one canonicalize turns into an Unsqueeze or Squeeze)."""

    def build(w):
        net = Net(w)
        n = w["w1"].shape[1]
        if inserted:
            v = net.input("v", ["N", 3, 6])
            h = net(
                "Transpose", net("Relu", net("Add", net("MatMul", v, "w1", name="m1"), "b1")), perm=[0, 2, 1]
            )
            h = net("Reshape", h, computed_target(net, v, 1, n, 3))
            h = net("ReduceMean", h, axes=[3], keepdims=0)
            return net.model(net("MatMul", h, "w2", name="m2"))
        v = net.input("v", ["N", 1, 3, 6])
        h = net("Relu", net("Add", net("MatMul", v, "w1", name="m1"), "b1"))
        h = net("Reshape", net("Transpose", h, perm=[0, 1, 3, 2]), computed_target(net, v, n, 3))
        h = net("ReduceMean", h, axes=[2], keepdims=0)
        return net.model(net("MatMul", h, "w2", name="m2"))

    return build


for _inserted in (True, False):
    case(
        f"reshape_{'inserts' if _inserted else 'removes'}_a_unit_axis",
        lambda r: {"w1": rnd(r, 6, 4), "b1": rnd(r, 4), "w2": rnd(r, 4, 5)},
        unit_axis(_inserted),
        producer("w1", None, 4, axis=1) + [("b1", 0, [A(4)]), ("w2", 0, [S(4)])],
        ["m1"],
    )


def split_channel_rows(w):
    """[2, 3, 4] → Reshape [2, 6, 2]: each channel's entries end up in two rows; nothing to follow."""
    net = Net(w)
    h = net("Relu", net("MatMul", net.input("v", [2, 3, 6]), "w1", name="m1"))
    return net.model(net("MatMul", net("Reshape", h, net.i64("target", [2, 6, 2])), "w2", name="m2"))


case(
    "reshape_scattering_channels_blocks",
    lambda r: {"w1": rnd(r, 6, 4), "w2": rnd(r, 2, 5)},
    split_channel_rows,
    [],
    [],
    {"m1": (RESHAPES_CHANNELS, "moves the channel axis")},
)


def test_too_many_copies_of_the_channels_block(monkeypatch) -> None:
    """An NHWC Flatten over 9 pixels lays 9 copies of the channels side by side; past the cap on
    segments (each a member of the consumer's weight) the group is blocked, and says why."""
    from onnxfold.analysis.rules import reshapes

    monkeypatch.setattr(reshapes, "MAX_TILE_SEGMENTS", 8)
    w = {"w1": rnd(np.random.default_rng(0), 4, 3, 3, 3), "b1": np.zeros(4, np.float32)}
    proto = nhwc_flatten_gemm("flatten")(
        {**w, "fw": np.ones((5, 36), np.float32), "fb": np.zeros(5, np.float32)}
    )
    (group,) = [g for g in groups_of(proto) if g.name == "c1"]
    assert not group.foldable
    assert [(r.code, r.message) for r in group.blocked] == [
        (RESHAPES_CHANNELS, "Flatten flatten_4 stacks 9 copies of the channels (more than 8 segments)")
    ]


def reshape_keep_channels(opset: int):
    def build(w):
        net = Net(w, opset)
        h = net("Relu", net("Conv", net.input("x", X), "w1", "b1", name="c1", pads=[1, 1, 1, 1]))
        h = net("Reshape", h, net.i64("target", [2, w["w1"].shape[0], 36]))
        if opset >= 18:
            h = net("ReduceMean", h, net.i64("axes", [2]), keepdims=0)
        else:
            h = net("ReduceMean", h, axes=[2], keepdims=0)
        return net.model(net("Gemm", h, "fw", "fb", name="fc", transB=1))

    return build


for _opset in (17, 20):
    case(
        f"reshape_keep_channels_reducemean_opset{_opset}",
        lambda r: {"w1": rnd(r, 4, 3, 3, 3), "b1": rnd(r, 4), "fw": rnd(r, 5, 4), "fb": rnd(r, 5)},
        reshape_keep_channels(_opset),
        producer("w1", "b1", 4) + [("fw", 1, [S(4)])],
        ["c1"],
    )


def reducemean_gemm(opset: int):
    def build(w):
        net = Net(w, opset)
        h = net("Relu", net("Conv", net.input("x", X), "w1", "b1", name="c1", pads=[1, 1, 1, 1]))
        if opset >= 18:
            h = net("ReduceMean", h, net.i64("axes", [2, 3]), keepdims=0)
        else:
            h = net("ReduceMean", h, axes=[2, 3], keepdims=0)
        return net.model(net("Gemm", h, "fw", "fb", name="fc", transB=1))

    return build


for _opset in (13, 20):
    case(
        f"reducemean_spatial_gemm_opset{_opset}",
        lambda r: {"w1": rnd(r, 4, 3, 3, 3), "b1": rnd(r, 4), "fw": rnd(r, 5, 4), "fb": rnd(r, 5)},
        reducemean_gemm(_opset),
        producer("w1", "b1", 4) + [("fw", 1, [S(4)])],
        ["c1"],
    )


def flatten_rank3(w):
    net = Net(w)
    h = net("Relu", net("Add", net("MatMul", net.input("v", [2, 3, 6]), "w1", name="m1"), "b1"))
    return net.model(net("Gemm", net("Flatten", h, axis=2), "fw", "fb", name="fc", transB=1))


case(
    "flatten_axis2_gemm",
    lambda r: {"w1": rnd(r, 6, 4), "b1": rnd(r, 4), "fw": rnd(r, 5, 4), "fb": rnd(r, 5)},
    flatten_rank3,
    producer("w1", None, 4, axis=1) + [("b1", 0, [A(4)]), ("fw", 1, [S(4)])],
    ["m1"],
)


def transpose_matmul(w):
    net = Net(w)
    h = net("Relu", net("Conv", net.input("x", X), "w1", "b1", name="c1", pads=[1, 1, 1, 1]))
    h = net("Transpose", h, perm=[0, 2, 3, 1])
    return net.model(net("Add", net("MatMul", h, "mw", name="m2"), "mb"))


case(
    "transpose_nhwc_matmul",
    lambda r: {"w1": rnd(r, 4, 3, 3, 3), "b1": rnd(r, 4), "mw": rnd(r, 4, 5), "mb": rnd(r, 5)},
    transpose_matmul,
    producer("w1", "b1", 4) + [("mw", 0, [S(4)])],
    ["c1"],
)


# --------------------------------------------------------------------------------- barriers
case(
    "softmax_channels",
    lambda r: stem_w(r, {"w2": rnd(r, 5, 4, 3, 3)}),
    stem_chain(lambda net, h: conv2(net, net("Softmax", h, axis=1))),
    STEM_DUP,
    ["c0"],
    {"c1": (MIXES_CHANNELS, "Softmax")},
)
case("softmax_spatial", conv_pair_w, conv_chain(lambda net, h: net("Softmax", h, axis=-1)), CHAIN_DUP, ["c1"])
case(
    "reducemean_channels",
    lambda r: stem_w(r, {"w2": rnd(r, 5, 1, 3, 3)}),
    stem_chain(lambda net, h: conv2(net, net("ReduceMean", h, axes=[1], keepdims=1))),
    STEM_DUP,
    ["c0"],
    {"c1": (MIXES_CHANNELS, "ReduceMean")},
)


def layernorm(axis: int, blocked: bool) -> None:
    def build(w):
        net = Net(w)
        h = net("Relu", net("Add", net("MatMul", net.input("v", [2, 3, 6]), "w0", name="m0"), "b0"))
        h = net("LayerNormalization", net("MatMul", h, "w1", name="m1"), "ls", "lb", axis=axis)
        return net.model(net("MatMul", h, "w2", name="m2"))

    shape = (4,) if axis == -1 else (3, 4)
    dup = producer("w0", None, 3, axis=1) + [("b0", 0, [A(3)]), ("w1", 0, [S(3)])]
    if not blocked:
        dup += [
            ("w1", 1, [A(4)]),
            ("w2", 0, [S(4)]),
            ("ls", len(shape) - 1, [A(4)]),
            ("lb", len(shape) - 1, [A(4)]),
        ]
    case(
        f"layernorm_axis{axis}",
        lambda r: {
            "w0": rnd(r, 6, 3),
            "b0": rnd(r, 3),
            "w1": rnd(r, 3, 4),
            "ls": positive(r, *shape),
            "lb": rnd(r, *shape),
            "w2": rnd(r, 4, 5),
        },
        build,
        dup,
        ["m0"] + ([] if blocked else ["m1"]),
        {"m1": (MIXES_CHANNELS, "LayerNormalization")} if blocked else {},
    )


layernorm(-1, True)
layernorm(-2, True)


def layernorm_spatial(w):
    net = Net(w)
    h = net("Conv", net.input("x", X), "w1", "b1", name="c1", pads=[1, 1, 1, 1])
    h = net("LayerNormalization", h, "ls", "lb", axis=2)
    return net.model(net("Conv", h, "w2", "b2", name="c2", pads=[1, 1, 1, 1]))


case(
    "layernorm_spatial",
    lambda r: conv_pair_w(r) | {"ls": positive(r, 6, 6), "lb": rnd(r, 6, 6)},
    layernorm_spatial,
    CHAIN_DUP,
    ["c1"],
)
case(
    "graph_output_in_middle",
    lambda r: stem_w(r, {"w2": rnd(r, 5, 4, 3, 3)}),
    stem_chain(lambda net, h: (conv2(net, net("Relu", h, name="mid")), "mid_y")),
    STEM_DUP,
    ["c0"],
    {"c1": (GRAPH_OUTPUT, "graph output mid_y")},
)
case(
    "unknown_op_topk",
    lambda r: stem_w(r, {"w2": rnd(r, 5, 4, 3, 3)}),
    stem_chain(lambda net, h: conv2(net, net("TopK", net("Relu", h), net.i64("k", [3]), axis=3, outs=2)[0])),
    STEM_DUP,
    ["c0"],
    {"c1": (UNSUPPORTED_OP, "TopK")},
)


def shared_sequential(w):
    net = Net(w)
    h = net("Relu", net("Conv", net.input("x", X), "w0", "b0", name="c0", pads=[1, 1, 1, 1]))
    h = net("Relu", net("Conv", h, "ws", "bs1", name="cS1", pads=[1, 1, 1, 1]))
    h = net("Relu", net("Conv", h, "ws", "bs2", name="cS2", pads=[1, 1, 1, 1]))
    return net.model(net("Conv", h, "w3", name="c3"))


case(
    "shared_weight_two_convs",
    lambda r: {
        "w0": rnd(r, 4, 3, 3, 3),
        "b0": rnd(r, 4),
        "ws": rnd(r, 4, 4, 3, 3) * 0.5,
        "bs1": rnd(r, 4),
        "bs2": rnd(r, 4),
        "w3": rnd(r, 5, 4, 1, 1),
    },
    shared_sequential,
    producer("w0", "b0", 4)
    + producer("ws", "bs1", 4)
    + [("bs2", 0, [A(4)]), ("ws", 1, [S(4)]), ("w3", 1, [S(4)])],
    ["c0+cS1+cS2"],
)


def weight_read_elsewhere(w):
    net = Net(w)
    h = net("Relu", net("Conv", net.input("x", X), "w0", "b0", name="c0", pads=[1, 1, 1, 1]))
    h = net("Relu", net("Conv", h, "w1", "b1", name="c1", pads=[1, 1, 1, 1]))
    return net.model(conv2(net, h), net("ReduceSum", "w2", keepdims=0, name="peek"))


case(
    "weight_read_by_other_op",
    lambda r: stem_w(r, {"w2": rnd(r, 5, 4, 3, 3)}),
    weight_read_elsewhere,
    STEM_DUP,
    ["c0"],
    {"c1": (SHARED_TENSOR, "also used by ReduceSum")},
)


def shared_untracked_reader(w):
    net = Net(w)
    h = net("Relu", net("Conv", net.input("x", X), "w0", "b0", name="c0", pads=[1, 1, 1, 1]))
    a = net("Relu", net("Conv", h, "ws", "bs1", name="cS1", pads=[1, 1, 1, 1]))
    b = net("Relu", net("Conv", net.input("x2", [2, 4, 6, 6]), "ws", "bs2", name="cS2", pads=[1, 1, 1, 1]))
    return net.model(net("Add", net("Conv", a, "w3", name="c3"), net("Conv", b, "w4", name="c4")))


case(
    "shared_weight_untracked_reader",
    lambda r: {
        "w0": rnd(r, 4, 3, 3, 3),
        "b0": rnd(r, 4),
        "ws": rnd(r, 4, 4, 3, 3),
        "bs1": rnd(r, 4),
        "bs2": rnd(r, 4),
        "w3": rnd(r, 5, 4, 1, 1),
        "w4": rnd(r, 5, 4, 1, 1),
    },
    shared_untracked_reader,
    producer("ws", "bs1", 4) + [("bs2", 0, [A(4)]), ("w3", 1, [S(4)]), ("w4", 1, [S(4)])],
    ["cS1+cS2"],
    {"c0": (SHARED_TENSOR, "also used by Conv cS2")},
)


def concat_united_reshape(w):
    net = Net(w)
    x = net.input("x", X)
    a = net("Relu", net("Conv", x, "wa", "ba", name="cA", pads=[1, 1, 1, 1]))
    b = net("Relu", net("Conv", x, "wb", "bb", name="cB", pads=[1, 1, 1, 1]))
    y1 = net("Conv", net("Add", a, b), "w3", name="c3")
    h = net("MaxPool", net("Concat", a, b, axis=1), kernel_shape=[2, 2], strides=[2, 2])
    h = net("Reshape", h, net.i64("target", [2, 9 * (w["wa"].shape[0] + w["wb"].shape[0])]))
    return net.model(y1, net("Gemm", h, "fw", name="fc", transB=1))


case(
    "concat_of_united_branches_reshape",
    lambda r: {
        "wa": rnd(r, 4, 3, 3, 3),
        "ba": rnd(r, 4),
        "wb": rnd(r, 4, 3, 3, 3),
        "bb": rnd(r, 4),
        "w3": rnd(r, 5, 4, 1, 1),
        "fw": rnd(r, 5, 72),
    },
    concat_united_reshape,
    producer("wa", "ba", 4) + producer("wb", "bb", 4) + [("w3", 1, [S(4)]), ("fw", 1, [S(4, 9), S(4, 9)])],
    ["cA+cB"],
)


def gemm_trans_a(w):
    net = Net(w)
    h = net("Relu", net("Gemm", net.input("v", [2, 6]), "gw1", "gc1", name="g1", transB=1))
    return net.model(net("Gemm", net("Transpose", h, perm=[1, 0]), "gw2", name="g2", transA=1))


case(
    "gemm_transA",
    lambda r: {"gw1": rnd(r, 4, 6), "gc1": rnd(r, 4), "gw2": rnd(r, 4, 5)},
    gemm_trans_a,
    producer("gw1", "gc1", 4) + [("gw2", 0, [S(4)])],
    ["g1"],
)


def squeeze_gemm(opset: int):
    def build(w):
        net = Net(w, opset)
        h = net("Relu", net("Conv", net.input("x", X), "w1", "b1", name="c1", pads=[1, 1, 1, 1]))
        h = net("GlobalAveragePool", h)
        h = net("Squeeze", h, net.i64("axes", [2, 3])) if opset >= 13 else net("Squeeze", h, axes=[2, 3])
        h = net("Sigmoid", net("Gemm", h, "fw", "fb", name="g1", transB=1))
        h = net("Unsqueeze", h, net.i64("uaxes", [2])) if opset >= 13 else net("Unsqueeze", h, axes=[2])
        return net.model(net("Conv", h, "w2", name="c2"))

    return build


for _opset in (11, 13):
    case(
        f"squeeze_unsqueeze_opset{_opset}",
        lambda r: {
            "w1": rnd(r, 4, 3, 3, 3),
            "b1": rnd(r, 4),
            "fw": rnd(r, 3, 4),
            "fb": rnd(r, 3),
            "w2": rnd(r, 5, 3, 1),
        },
        squeeze_gemm(_opset),
        producer("w1", "b1", 4) + [("fw", 1, [S(4)])] + producer("fw", "fb", 3) + [("w2", 1, [S(3)])],
        ["c1", "g1"],
    )


def split_unrewritable(opset: int):
    def build(w):
        net = Net(w, opset)
        x = net.input("x", X)
        a = net("Conv", x, "wa", "ba", name="cA", pads=[1, 1, 1, 1])
        b = net("Conv", x, "wb", "bb", name="cB", pads=[1, 1, 1, 1])
        cat = net("Concat", a, b, axis=1)
        if opset < 13:
            p, q = net("Split", cat, axis=1, split=[len(w["wa"]), len(w["wb"])], outs=2)  # as widened
        elif opset < 18:  # neither sizes nor num_outputs: equal parts, one per output
            p, q = net("Split", cat, axis=1, outs=2)
        else:
            p, q = net("Split", cat, axis=1, num_outputs=2, outs=2)
        return net.model(net("Add", net("Conv", p, "wp", name="cP"), net("Conv", q, "wq", name="cQ")))

    return build


def split_pair_w(r):
    return {
        "wa": rnd(r, 4, 3, 3, 3),
        "ba": rnd(r, 4),
        "wb": rnd(r, 4, 3, 3, 3),
        "bb": rnd(r, 4),
        "wp": rnd(r, 5, 4, 1, 1),
        "wq": rnd(r, 5, 4, 1, 1),
    }


# opset < 13: the sizes are an attribute, rewritten entry by entry with the fold (an opset-12 YOLOv8's
# every C2f block was blocked before: 23 of its 66 groups)
case(
    "split_sizes_in_an_attribute_opset11",
    split_pair_w,
    split_unrewritable(11),
    producer("wa", "ba", 4) + producer("wb", "bb", 4) + [("wp", 1, [S(4)]), ("wq", 1, [S(4)])],
    ["cA", "cB"],
)
# opset 18 num_outputs: canonicalize gives the Split explicit sizes, which fold like any shape constant
case(
    "split_num_outputs_made_explicit_opset18",
    split_pair_w,
    split_unrewritable(18),
    producer("wa", "ba", 4) + producer("wb", "bb", 4) + [("wp", 1, [S(4)]), ("wq", 1, [S(4)])],
    ["cA", "cB"],
)

# opset 13-17 without sizes (torch's legacy export of GLU): given explicit sizes the same way
case(
    "split_equal_parts_made_explicit_opset17",
    split_pair_w,
    split_unrewritable(17),
    producer("wa", "ba", 4) + producer("wb", "bb", 4) + [("wp", 1, [S(4)]), ("wq", 1, [S(4)])],
    ["cA", "cB"],
)


def glu_depthwise(w):
    """Conformer's convolution module as torch's legacy exporter writes it: pointwise Conv to 2H,
    GLU as Split(axis 1, two equal parts) then a · Sigmoid(b), depthwise Conv, Relu, pointwise Conv."""
    net = Net(w, 17)
    x = net.input("x", X)
    a, b = net("Split", net("Conv", x, "w1", "b1", name="pw1"), axis=1, outs=2)
    gated = net("Mul", a, net("Sigmoid", b))
    dw = net("Conv", gated, "wd", "bd", name="dw", group=len(w["wd"]), pads=[1, 1, 1, 1])
    return net.model(net("Conv", net("Relu", dw), "w2", name="pw2"))


case(
    "glu_split_without_sizes_then_depthwise",
    lambda r: {
        "w1": rnd(r, 8, 3, 1, 1),
        "b1": rnd(r, 8),
        "wd": rnd(r, 4, 1, 3, 3),
        "bd": rnd(r, 4),
        "w2": rnd(r, 5, 4, 1, 1),
    },
    glu_depthwise,
    [("w1", 0, [A(4), A(4)]), ("b1", 0, [A(4), A(4)])] + producer("wd", "bd", 4) + [("w2", 1, [S(4)])],
    ["pw1"],
)


@pytest.mark.parametrize("name", list(CASES))
def test_rule_folds_duplicates_exactly(name: str) -> None:
    check_case(CASES[name])


# --------------------------------------------------------------------------------- other checks
def test_concat_members_have_offsets_and_separate_groups() -> None:
    proto = concat(False)(widen(concat_w(np.random.default_rng(0)), []))
    groups = {g.name: g for g in groups_of(proto)}
    cols = {name: [m for m in groups[name].members if m.tensor == "w3"] for name in ("cA", "cB")}
    assert [(m.axis, m.offset, m.role) for m in cols["cA"]] == [(1, 0, "sum")]
    assert [(m.axis, m.offset, m.role) for m in cols["cB"]] == [(1, 4, "sum")]
    assert groups["cA"].size == 4 and groups["cB"].size == 3


def test_concat_clusters_never_span_inputs() -> None:
    """The two Concat inputs hold identical channels; a fold still keeps both inputs at k = n/2 each."""
    w = concat_w(np.random.default_rng(0))
    w["wb"], w["bb"] = w["wa"][:3].copy(), w["ba"][:3].copy()
    w = widen(w, producer("wa", "ba", 4) + producer("wb", "bb", 3) + [("w3", 1, [S(4), S(3)])])
    folded, plans = fold(concat(False)(w))
    assert sorted((p.group.name, p.group.size, p.k) for p in plans if p.status == "folded") == [
        ("cA", 8, 4),
        ("cB", 6, 3),
    ]
    assert initializers(folded)["w3"].shape == (5, 7, 1, 1)


def test_flatten_gemm_block_members() -> None:
    proto = flatten_gemm("N,CHW")(
        {
            "w1": np.zeros((4, 3, 3, 3), np.float32),
            "b1": np.zeros(4, np.float32),
            "fw": np.zeros((5, 36), np.float32),
            "fb": np.zeros(5, np.float32),
        }
    )
    (group,) = [g for g in groups_of(proto) if g.name == "c1"]
    by_tensor = {m.tensor: m for m in group.members}
    assert (by_tensor["fw"].axis, by_tensor["fw"].block, by_tensor["fw"].role) == (1, 9, "sum")
    assert (by_tensor["target"].offset, by_tensor["target"].block, by_tensor["target"].role) == (
        1,
        9,
        "shape",
    )


def test_custom_domain_op_blocks_and_rest_analyzes() -> None:
    w = stem_w(np.random.default_rng(0), {"w2": np.ones((5, 4, 3, 3), np.float32)})
    proto = stem_chain(lambda net, h: conv2(net, net("MyAct", h, domain="com.example")))(w)
    groups = {g.name: g for g in groups_of(proto)}
    assert groups["c0"].foldable and groups["c0"].size == 3
    assert not groups["c1"].foldable
    assert [r.code for r in groups["c1"].blocked] == [UNSUPPORTED_OP], groups["c1"].blocked
    assert any("MyAct" in str(r) for r in groups["c1"].blocked)


@pytest.mark.parametrize(
    ("prep", "code", "needle"),
    [
        (None, GRAPH_INPUT, "Concat cat combines channels with graph input past"),
        (
            "Neg",
            GRAPH_INPUT,
            "Concat cat combines channels with untracked tensor neg_y (from graph input past)",
        ),
        ("Add", UNTRACKED_TENSOR, "Concat cat combines channels with untracked tensor add_y"),
    ],
)
def test_concat_with_a_cache_input_names_the_graph_input(prep, code, needle) -> None:
    """A KV-cache pattern: new channels appended on the sequence axis to a graph input that carries the
    same channels. The input's width is part of the model's signature, so the group stays blocked, and
    the reason names the graph input (also through single-input ops; not through ops with two sources)."""
    rng = np.random.default_rng(0)
    net = Net({"w1": rnd(rng, 4, 6), "w2": rnd(rng, 6, 5)})
    x, past = net.input("x", [2, 3, 4]), net.input("past", [2, 2, 6])
    if prep == "Neg":
        past = net("Neg", past, name="neg")
    elif prep == "Add":
        past = net("Add", past, net.input("bias", [2, 2, 6]), name="add")
    h = net("MatMul", x, "w1", name="k_proj")
    proto = net.model(net("MatMul", net("Concat", past, h, name="cat", axis=1), "w2", name="out"))
    (group,) = [g for g in groups_of(proto) if g.name == "k_proj"]
    assert [(r.code, r.message, r.node) for r in group.blocked] == [(code, needle, "cat")]


def test_a_join_with_a_tensor_lost_at_an_op_without_a_rule_names_that_op() -> None:
    """A U-Net decoder's skip join read "combines channels with untracked tensor batch_normalization_5"
    where the tensor came from a DepthToSpace onnxfold had no rule for, several nodes up: the reason
    now names the op where the channels were lost."""
    rng = np.random.default_rng(0)
    net = Net({"w1": rnd(rng, 4, 6), "w2": rnd(rng, 6, 5), "w3": rnd(rng, 4, 6), "s": rnd(rng, 6)})
    x = net.input("x", [2, 4])
    shuffled = net("CumSum", net("MatMul", x, "w3"), net.i64("axis", 1), name="cumsum")  # no rule for it
    lost = net("Mul", net("Relu", shuffled), "s")
    h = net("MatMul", x, "w1", name="proj")
    proto = net.model(net("MatMul", net("Add", h, lost, name="join"), "w2", name="out"))
    (group,) = [g for g in groups_of(proto) if g.name == "proj"]
    needle = "(after CumSum cumsum, which onnxfold has no rule for)"
    assert any(r.code == UNTRACKED_TENSOR and needle in r.message for r in group.blocked), group.blocked


def test_softmax_opset11_flattens_over_channels() -> None:
    """Before opset 13, Softmax(axis=0) normalises over the flattened [N·C·H·W]: channels are mixed."""
    w = conv_pair_w(np.random.default_rng(0))
    groups = {g.name: g for g in groups_of(conv_chain(lambda net, h: net("Softmax", h, axis=0), opset=11)(w))}
    assert not groups["c1"].foldable and "Softmax" in str(groups["c1"].blocked[0])
    assert groups["c1"].blocked[0].code == MIXES_CHANNELS
    groups = {g.name: g for g in groups_of(conv_chain(lambda net, h: net("Softmax", h, axis=2), opset=11)(w))}
    assert groups["c1"].foldable


@pytest.mark.parametrize(
    "name",
    [
        "squeeze_excite",
        "concat_channels",
        "reshape_gemm_N,CHW",
        "depthwise_conv",
        "shared_weight_two_convs",
        "resize_sizes",
        "grouped_conv",
        "grouped_convtranspose",
        "permuted_flatten_gemm",
    ],
)
def test_sparsity_zero_is_bit_identical(name: str) -> None:
    c = CASES[name]
    wide = c.build(widen(c.weights(np.random.default_rng(0)), c.dup))
    folded, plans = fold(wide, sparsity=0.0)
    assert plans and all(p.status != "folded" for p in plans)
    feeds = random_feeds(wide)
    for got, ref in zip(run_ort(folded, feeds), run_ort(wide, feeds), strict=True):
        assert np.array_equal(got, ref)
    have = initializers(folded)
    for key, value in initializers(wide).items():
        assert have[key].dtype == value.dtype and np.array_equal(have[key], value), key


def test_fp16_conv_chain() -> None:
    """float16 weights, constants and inputs: folding keeps the dtype and still gives back the compact graph."""

    def weights(rng):
        w = conv_pair_w(rng) | {"s": positive(rng, 4, 1, 1), "t": rnd(rng, 4, 1, 1)}
        return {k: v.astype(np.float16) for k, v in w.items()}

    def mid(net: Net, h: str) -> str:
        return net("Relu", net("Add", net("Mul", net("Div", h, net.f("two", 2.0)), "s"), "t"))

    check_case(
        Case(
            weights,
            conv_chain(mid, dtype=np.float16),
            CHAIN_DUP + producer("s", None, 4) + producer("t", None, 4),
            ["c1"],
        ),
        tol=2e-3,
    )


def test_split_inside_a_group_partitions_it_and_folds_each_part_exactly():
    """Split [2, 2] of a 4-channel conv whose channels are [a, a, b, b]: two parts, each folds to 1."""
    rng = np.random.default_rng(0)
    w_c = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    b_c = rng.standard_normal(2).astype(np.float32)
    wp = rng.standard_normal((5, 1, 1, 1)).astype(np.float32)
    wq = rng.standard_normal((5, 1, 1, 1)).astype(np.float32)

    def model(width: int) -> onnx.ModelProto:
        rep = width // 2
        w1 = np.repeat(w_c, rep, axis=0)
        b1 = np.repeat(b_c, rep)
        inits = [
            numpy_helper.from_array(a, n)
            for a, n in (
                (w1, "w1"),
                (b1, "b1"),
                (np.repeat(wp, rep, axis=1) / rep, "wp"),
                (np.repeat(wq, rep, axis=1) / rep, "wq"),
                (np.array([rep, rep], np.int64), "split"),
            )
        ]
        nodes = [
            helper.make_node("Conv", ["x", "w1", "b1"], ["h"], name="c1", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["h"], ["r"], name="relu"),
            helper.make_node("Split", ["r", "split"], ["p", "q"], name="split", axis=1),
            helper.make_node("Conv", ["p", "wp"], ["yp"], name="cP"),
            helper.make_node("Conv", ["q", "wq"], ["yq"], name="cQ"),
            helper.make_node("Add", ["yp", "yq"], ["y"], name="add"),
        ]
        graph = helper.make_graph(
            nodes,
            "g",
            [helper.make_tensor_value_info("x", 1, [2, 3, 6, 6])],
            [helper.make_tensor_value_info("y", 1, None)],
            inits,
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])

    wide = model(4)
    groups = groups_of(wide)
    parts = [g for g in groups if g.foldable]
    assert sorted(g.size for g in parts) == [2, 2]
    assert {m.offset for g in parts for m in g.members if m.tensor == "w1"} == {0, 2}
    m = model_from_proto(wide)
    PassManager(parse_pipeline("canonicalize,fold:sparsity=0.5,cleanup", REGISTRY), check=True).run(m)
    folded = to_model_proto(m)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    ref = ort.InferenceSession(model(2).SerializeToString()).run(None, {"x": x})[0]
    got = ort.InferenceSession(folded.SerializeToString()).run(None, {"x": x})[0]
    assert rel_err(got, ref) <= 1e-5
    split = next(t for t in folded.graph.initializer if t.name == "split")
    assert numpy_helper.to_array(split).tolist() == [1, 1]


@pytest.mark.parametrize("style", ["legacy", "dynamo"])
def test_gemm_between_leading_dim_reshapes_folds_exactly(tmp_path, style):
    """GPT-2's Conv1D: x.view(-1, d) → addmm → view(b, t, f): the Reshapes regroup only the dims before
    the channel axis, whose count is an explicit constant rewritten with the fold. Duplicate neurons of a
    wide twin fold back to the compact model exactly."""
    import torch

    class FlatMLP(torch.nn.Module):
        def __init__(self, w1, b1, w2, b2):
            super().__init__()
            self.w1, self.b1, self.w2, self.b2 = (
                torch.nn.Parameter(torch.tensor(a)) for a in (w1, b1, w2, b2)
            )

        def forward(self, x):
            b, t, d = x.shape
            h = torch.addmm(self.b1, x.reshape(-1, d), self.w1).view(b, t, self.w1.shape[1])
            h = torch.nn.functional.gelu(h)
            return torch.addmm(self.b2, h.view(-1, h.shape[-1]), self.w2).view(b, t, d)

    rng = np.random.default_rng(0)
    d, f = 8, 6
    w1, b1 = rng.standard_normal((d, f)).astype(np.float32), rng.standard_normal(f).astype(np.float32)
    w2, b2 = rng.standard_normal((f, d)).astype(np.float32), rng.standard_normal(d).astype(np.float32)
    order = np.r_[np.arange(f), np.arange(f)][::-1].copy()
    wide_args = (w1[:, order], b1[order], w2[order] / 2, b2)
    x = torch.randn(2, 5, d)
    paths = {}
    for name, args in (("compact", (w1, b1, w2, b2)), ("wide", wide_args)):
        paths[name] = tmp_path / f"{name}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                FlatMLP(*args).eval(),
                (x,),
                str(paths[name]),
                input_names=["x"],
                output_names=["y"],
                dynamo=style == "dynamo",
                **({"opset_version": 17} if style == "legacy" else {}),
            )
    out = tmp_path / "folded.onnx"
    _, report = onnxfold.fold(paths["wide"], 0.5, out, repair="none", check=True, validate=False)
    folded = [p for p in report.plans if p.status == "folded"]
    assert [(p.group.size, p.k) for p in folded] == [(2 * f, f)]
    feed = {"x": x.numpy()}
    ref = make_session(str(paths["compact"])).run(None, feed)[0]
    got = make_session(str(out)).run(None, feed)[0]
    assert np.abs(got - ref).max() <= 1e-5 * max(1.0, float(np.abs(ref).max()))


def test_a_constant_read_in_several_slots_of_one_node_gets_a_copy_per_slot():
    """An exporter may build a shape as Concat(two, two, two, …) from one deduplicated [2] for the
    batch, the KV heads and the repeat factor: folding rewrites one entry, so each slot needs its own."""
    import onnx_graphsurgeon as gs

    from onnxfold.passes.canonicalize import unshare_vectors

    two = gs.Constant("two", np.array([2], np.int64))
    out = gs.Variable("shape", np.int64, [3])
    graph = gs.Graph(
        nodes=[gs.Node("Concat", inputs=[two, two, two], outputs=[out], attrs={"axis": 0})], outputs=[out]
    )
    assert unshare_vectors(graph) == 2
    inputs = graph.nodes[0].inputs
    assert len({id(t) for t in inputs}) == 3 and all(np.array_equal(t.values, [2]) for t in inputs)


@pytest.mark.parametrize("style", ["legacy", "dynamo"])
def test_fused_gate_up_cut_by_slices_folds_exactly(tmp_path, style):
    """Phi-3's fused gate_up projection: h[..., :f] and h[..., f:] (Slice on the channel axis) cut one
    producer into gate and up, tied again by their product. The Slices partition the group, their
    bounds are rewritten, and duplicate neurons of a wide twin fold back to the compact model exactly."""
    import torch

    class GateUp(torch.nn.Module):
        def __init__(self, w_gu, w_down):
            super().__init__()
            self.w_gu, self.w_down = (
                torch.nn.Parameter(torch.tensor(w_gu)),
                torch.nn.Parameter(torch.tensor(w_down)),
            )

        def forward(self, x):
            h = x @ self.w_gu
            f = h.shape[-1] // 2
            return (torch.nn.functional.silu(h[..., :f]) * h[..., f:]) @ self.w_down

    rng = np.random.default_rng(0)
    d, f = 8, 6
    gate, up = rng.standard_normal((d, f)).astype(np.float32), rng.standard_normal((d, f)).astype(np.float32)
    down = rng.standard_normal((f, d)).astype(np.float32)
    order = np.r_[np.arange(f), np.arange(f)][::-1].copy()
    models = {
        "compact": (np.hstack([gate, up]), down),
        "wide": (np.hstack([gate[:, order], up[:, order]]), down[order] / 2),
    }
    x = torch.randn(2, 5, d)
    paths = {}
    for name, args in models.items():
        paths[name] = tmp_path / f"{name}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                GateUp(*args).eval(),
                (x,),
                str(paths[name]),
                input_names=["x"],
                output_names=["y"],
                dynamo=style == "dynamo",
                **({"opset_version": 17} if style == "legacy" else {}),
            )
    out = tmp_path / "folded.onnx"
    _, report = onnxfold.fold(paths["wide"], 0.5, out, repair="none", check=True, validate=False)
    folded = [p for p in report.plans if p.status == "folded"]
    assert [(p.group.size, p.k) for p in folded] == [(2 * f, f)], [
        (p.group.size, p.reason) for p in report.plans
    ]
    feed = {"x": x.numpy()}
    ref = make_session(str(paths["compact"])).run(None, feed)[0]
    got = make_session(str(out)).run(None, feed)[0]
    assert np.abs(got - ref).max() <= 1e-5 * max(1.0, float(np.abs(ref).max()))


@pytest.mark.parametrize(("pick", "reads"), [(0, False), (1, False), (2, True)])
def test_a_shape_read_through_a_permutation_follows_the_channel_entry(pick: int, reads: bool) -> None:
    """pyannote's LSTM export reads the batch as Gather(Gather(Shape(x), [0, 2, 1]), 0) of x [B, C, T]
    (its shape unknown to inference behind an If, so canonicalize cannot make it a constant): the
    permutation moves the channel entry to place 2, and only a pick of place 2 reads the count."""
    import onnx_graphsurgeon as gs

    from onnxfold.analysis.rules.layout import channel_reader

    x = gs.Variable("x", np.float32, None)
    dims = gs.Variable("dims", np.int64, [3])
    permuted = gs.Variable("permuted", np.int64, [3])
    picked = gs.Variable("picked", np.int64, [])
    perm = gs.Constant("perm", np.array([0, 2, 1], np.int64))
    index = gs.Constant("index", np.array(pick, np.int64))
    gs.Graph(
        nodes=[
            gs.Node("Shape", inputs=[x], outputs=[dims]),
            gs.Node("Gather", name="permute", inputs=[dims, perm], outputs=[permuted], attrs={"axis": 0}),
            gs.Node("Gather", name="pick", inputs=[permuted, index], outputs=[picked], attrs={"axis": 0}),
        ],
        inputs=[x],
        outputs=[picked],
    )
    reader = channel_reader(dims, 1, 3)
    assert (reader.name if reader is not None else None) == ("pick" if reads else None)
