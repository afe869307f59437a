"""Graph patterns that real exporters produce, against exact duplicate-channel oracles.

Each case builds a compact graph and a "wide" one whose folding groups have every channel duplicated
(the construction of test_channel_rules.py). Folding the wide graph at sparsity 0.5 through the public
``onnxfold.fold`` must give the compact outputs back; groups touched by a control-flow subgraph (If, Loop)
must be blocked with a reason naming it, while the rest still folds and the folded model stays valid
(``onnx.checker`` full check) and runs under onnxruntime. A recurrent op (LSTM, GRU) is a consumer of
its input features only: the channels feeding it fold, its hidden units never do.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from harness import A, Net, S, initializers, positive, producer, rel_err, rnd, run_ort, widen
from onnx import TensorProto, helper

import onnxfold
from onnxfold.analysis import CLAIM_CONFLICT, SUBGRAPH_USE, UNSUPPORTED_OP
from onnxfold.ir.model import to_model_proto

X = [2, 3, 6, 6]


def fold_public(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, list]:
    model, report = onnxfold.fold(proto, 0.5, validate=False, repair="none")
    return to_model_proto(model), report.plans


def plan_for(plans: list, name: str):
    found = [p for p in plans if name in p.group.producers]
    assert len(found) == 1, f"no single group produced by {name}: {[p.group.producers for p in plans]}"
    return found[0]


def folded_names(plans: list) -> set[str]:
    return {"+".join(sorted(p.group.producers)) for p in plans if p.status == "folded"}


def feeds_for(proto: onnx.ModelProto, seed: int = 1, **extra) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for vi in proto.graph.input:
        if vi.name in extra:
            out[vi.name] = extra[vi.name]
            continue
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        out[vi.name] = rng.standard_normal(shape).astype(np.float32)
    return out


def assert_same(got: list[np.ndarray], ref: list[np.ndarray], tol: float = 1e-5) -> None:
    assert len(got) == len(ref)
    for g, r in zip(got, ref, strict=True):
        assert g.shape == r.shape
        assert float(np.abs(r).max()) > 1e-3, "degenerate case"
        assert rel_err(g, r) <= tol, rel_err(g, r)


def check_valid(proto: onnx.ModelProto) -> None:
    onnx.checker.check_model(proto, full_check=True)


def with_ir(proto: onnx.ModelProto) -> onnx.ModelProto:
    proto.ir_version = helper.find_min_ir_version_for(list(proto.opset_import))
    return proto


# --------------------------------------------------------------------------------- 1. Paddle2ONNX style
def as_constant_nodes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Every initializer turned into a ``Constant`` node output (as Paddle2ONNX exports weights)."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    consts = [
        helper.make_node("Constant", [], [i.name], name=f"const_{i.name}", value=i)
        for i in proto.graph.initializer
    ]
    nodes = consts + list(proto.graph.node)
    del proto.graph.initializer[:]
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return proto


def cbr_gemm_w(rng, n1=4, n2=5):
    return {
        "w1": rnd(rng, n1, 3, 3, 3),
        "b1": rnd(rng, n1),
        "s": positive(rng, n1),
        "t": rnd(rng, n1),
        "mu": rnd(rng, n1),
        "var": positive(rng, n1),
        "w2": rnd(rng, n2, n1, 3, 3),
        "b2": rnd(rng, n2),
        "fw": rnd(rng, 6, n2),
        "fb": rnd(rng, 6),
    }


CBR_DUP = (
    producer("w1", "b1", 4)
    + [(v, 0, [A(4)]) for v in ("s", "t", "mu", "var")]
    + [("w2", 1, [S(4)])]
    + producer("w2", "b2", 5)
    + [("fw", 1, [S(5)])]
)


def cbr_gemm(opset: int = 17, shape=None):
    """x → Conv c1 → BN → Relu → Conv c2 → Relu → GlobalAveragePool → Flatten → Gemm fc."""

    def build(w):
        net = Net(w, opset)
        h = net("Conv", net.input("x", shape or X), "w1", "b1", name="c1", pads=[1, 1, 1, 1])
        h = net("Relu", net("BatchNormalization", h, "s", "t", "mu", "var", name="bn", epsilon=1e-3))
        h = net("Relu", net("Conv", h, "w2", "b2", name="c2", pads=[1, 1, 1, 1]))
        h = net("Flatten", net("GlobalAveragePool", h), axis=1)
        return with_ir(net.model(net("Gemm", h, "fw", "fb", name="fc", transB=1)))

    return build


def test_paddle_constant_weights():
    w = cbr_gemm_w(np.random.default_rng(0))
    build = cbr_gemm()
    compact = as_constant_nodes(build(w))
    wide = as_constant_nodes(build(widen(w, CBR_DUP)))
    assert not wide.graph.initializer and sum(n.op_type == "Constant" for n in wide.graph.node) == 10
    assert any(n.op_type == "BatchNormalization" for n in wide.graph.node)
    feeds = feeds_for(compact)
    ref = run_ort(compact, feeds)
    assert_same(run_ort(wide, feeds), ref)

    folded, plans = fold_public(wide)
    check_valid(folded)
    assert folded_names(plans) == {"c1", "c2"}
    assert all(p.k * 2 == p.group.size for p in plans if p.status == "folded")
    assert_same(run_ort(folded, feeds), ref)
    # the weights come back as initializers, with the compact shapes
    assert not any(n.op_type == "Constant" for n in folded.graph.node)
    have = initializers(folded)
    for name in ("w1", "w2", "fw"):
        assert name in have, sorted(have)
        assert have[name].shape == w[name].shape
        np.testing.assert_allclose(have[name], w[name], rtol=1e-6, atol=0, err_msg=name)


# --------------------------------------------------------------------------------- shared stem
def stem_w(rng, n1=4):
    return {
        "w0": rnd(rng, 3, 3, 3, 3),
        "b0": rnd(rng, 3),
        "w1": rnd(rng, n1, 3, 3, 3),
        "b1": rnd(rng, n1),
        "w2": rnd(rng, 5, n1, 3, 3),
        "b2": rnd(rng, 5),
    }


STEM_DUP = producer("w0", "b0", 3) + [("w1", 1, [S(3)])]


def stem(net: Net) -> str:
    """x → Conv c0 (3, independent, folds) → Relu → Conv c1 (4, the group under test) → Relu = h."""
    h = net("Relu", net("Conv", net.input("x", X), "w0", "b0", name="c0", pads=[1, 1, 1, 1]))
    return net("Relu", net("Conv", h, "w1", "b1", name="c1", pads=[1, 1, 1, 1]), name="h")


def fold_and_compare(build, feeds_list, expect_folded, blocked):
    w = stem_w(np.random.default_rng(0))
    compact, wide = build(w), build(widen(w, STEM_DUP))
    check_valid(wide)
    folded, plans = fold_public(wide)
    check_valid(folded)
    assert folded_names(plans) == expect_folded
    for name, needles in blocked.items():
        p = plan_for(plans, name)
        assert p.status == "blocked", (name, p.status, p.reason)
        for code, needle in needles:  # (code, text) of one of its block reasons
            assert needle in p.reason, (name, p.reason)
            assert any(r.code == code and needle in r.message for r in p.reasons), (name, p.reasons)
    for feeds in feeds_list(compact):
        ref = run_ort(compact, feeds)
        assert_same(run_ort(wide, feeds), ref)
        assert_same(run_ort(folded, feeds), ref)
    assert initializers(folded)["w1"].shape == w["w1"].shape  # c1 untouched (4 in, 3 folded-back out)
    np.testing.assert_allclose(initializers(folded)["w0"], w["w0"], rtol=1e-6, atol=0)
    return folded


# --------------------------------------------------------------------------------- 2. If
def if_graph(w, nested: bool = False):
    net = Net(w)
    h = stem(net)
    y = net("Conv", h, "w2", "b2", name="c2", pads=[1, 1, 1, 1])
    out_vi = [helper.make_tensor_value_info("branch_out", TensorProto.FLOAT, [2, 4, 6, 6])]
    then_g = helper.make_graph(
        [helper.make_node("Sigmoid", ["h_y"], ["branch_out"], name="then_sig")], "then", [], out_vi
    )
    if nested:  # the then branch holds an inner If whose branches reach h two scopes up
        inner_vi = [helper.make_tensor_value_info("inner_out", TensorProto.FLOAT, [2, 4, 6, 6])]
        inner_then = helper.make_graph(
            [helper.make_node("Sigmoid", ["h_y"], ["inner_out"], name="in_sig")], "inner_then", [], inner_vi
        )
        inner_else = helper.make_graph(
            [helper.make_node("Tanh", ["h_y"], ["inner_out"], name="in_tanh")], "inner_else", [], inner_vi
        )
        then_g = helper.make_graph(
            [
                helper.make_node("Not", ["cond"], ["ncond"], name="then_not"),
                helper.make_node(
                    "If",
                    ["ncond"],
                    ["inner_res"],
                    name="inner_if",
                    then_branch=inner_then,
                    else_branch=inner_else,
                ),
                helper.make_node("Identity", ["inner_res"], ["branch_out"], name="then_id"),
            ],
            "then",
            [],
            out_vi,
        )
    else_g = helper.make_graph(
        [helper.make_node("Neg", ["h_y"], ["branch_out"], name="else_neg")], "else", [], out_vi
    )
    net.inputs.append(helper.make_tensor_value_info("cond", TensorProto.BOOL, []))
    net.nodes.append(
        helper.make_node("If", ["cond"], ["z"], name="branch", then_branch=then_g, else_branch=else_g)
    )
    proto = net.model(y)
    proto.graph.output[0].CopyFrom(helper.make_tensor_value_info(y, TensorProto.FLOAT, [2, 5, 6, 6]))
    proto.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 4, 6, 6]))
    return proto


@pytest.mark.parametrize("nested", [False, True], ids=["branches", "nested_if"])
def test_if_subgraph_outer_scope_use(nested):
    def feeds_list(compact):
        return [feeds_for(compact, cond=np.array(c)) for c in (True, False)]

    folded = fold_and_compare(
        lambda w: if_graph(w, nested),
        feeds_list,
        {"c0"},
        {"c1": [(SUBGRAPH_USE, "used inside a subgraph of If (branch)")]},
    )
    outs = [o.name for o in folded.graph.output]
    assert outs == ["c2_y", "z"]
    shapes = [[d.dim_value for d in o.type.tensor_type.shape.dim] for o in folded.graph.output]
    assert shapes[1] == [2, 4, 6, 6]


# --------------------------------------------------------------------------------- 3. Loop
def loop_graph(outer_ref: bool):
    def build(w):
        net = Net(w)
        h = stem(net)
        y = net("Conv", h, "w2", "b2", name="c2", pads=[1, 1, 1, 1])
        body_nodes = [helper.make_node("Identity", ["cond_in"], ["cond_out"], name="body_cond")]
        if outer_ref:  # reads h from the enclosing graph each iteration
            body_nodes.append(helper.make_node("Add", ["v_in", "h_y"], ["v_sum"], name="body_add"))
            body_nodes.append(helper.make_node("Tanh", ["v_sum"], ["v_out"], name="body_tanh"))
        else:  # h only as the loop-carried initial value
            body_nodes.append(helper.make_node("Sin", ["v_in"], ["v_out"], name="body_sin"))
        vi = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 4, 6, 6])  # noqa: E731
        body = helper.make_graph(
            body_nodes,
            "body",
            [
                helper.make_tensor_value_info("iter", TensorProto.INT64, []),
                helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                vi("v_in"),
            ],
            [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), vi("v_out")],
        )
        trips = net.i64("trips", 3)
        net.nodes.append(helper.make_node("Loop", [trips, "", h], ["v_final"], name="loop", body=body))
        proto = net.model(y)
        proto.graph.output[0].CopyFrom(helper.make_tensor_value_info(y, TensorProto.FLOAT, [2, 5, 6, 6]))
        proto.graph.output.append(helper.make_tensor_value_info("v_final", TensorProto.FLOAT, [2, 4, 6, 6]))
        return proto

    return build


@pytest.mark.parametrize("outer_ref", [True, False], ids=["outer_ref", "loop_carried"])
def test_loop_body(outer_ref):
    needles = (
        [(SUBGRAPH_USE, "used inside a subgraph of Loop")]
        if outer_ref
        else [(UNSUPPORTED_OP, "reaches unsupported op Loop")]
    )
    folded = fold_and_compare(loop_graph(outer_ref), lambda c: [feeds_for(c)], {"c0"}, {"c1": needles})
    assert [n.op_type for n in folded.graph.node].count("Loop") == 1


# --------------------------------------------------------------------------------- 4. LSTM / GRU
def rnn_graph(op: str, via: str, hid: int = 3):
    def build(w):
        net = Net(w, 13)
        h = stem(net)
        if via == "flatten_unsqueeze":
            f = net("Flatten", net("GlobalAveragePool", h), axis=1)  # [2, 4]
            seq = net("Unsqueeze", f, net.i64("ax0", [0]))  # [1, 2, 4]
        elif via == "reshape":
            seq = net("Reshape", net("GlobalAveragePool", h), net.i64("shape", [1, 2, -1]))  # [1, 2, 4]
        else:  # gemm features
            f = net("Flatten", net("GlobalAveragePool", h), axis=1)
            f = net("Gemm", f, "gw", "gb", name="g", transB=1)  # [2, 4]
            seq = net("Unsqueeze", f, net.i64("ax0", [0]))
        outs = [f"{op.lower()}_y", f"{op.lower()}_h"] + ([f"{op.lower()}_c"] if op == "LSTM" else [])
        net.nodes.append(
            helper.make_node(op, [seq, f"{op}_W", f"{op}_R", f"{op}_B"], outs, name="rnn", hidden_size=hid)
        )
        proto = net.model(outs[0])
        proto.graph.output[0].CopyFrom(
            helper.make_tensor_value_info(outs[0], TensorProto.FLOAT, [1, 1, 2, hid])
        )
        return proto

    return build


def rnn_w(op: str, via: str, hid: int = 3):
    gates = 4 if op == "LSTM" else 3

    def weights(rng):
        w = stem_w(rng)
        del w["w2"], w["b2"]
        feat = 4
        if via == "gemm":
            w |= {"gw": rnd(rng, 4, 4), "gb": rnd(rng, 4)}
        return w | {
            f"{op}_W": rnd(rng, 1, gates * hid, feat),
            f"{op}_R": rnd(rng, 1, gates * hid, hid),
            f"{op}_B": rnd(rng, 1, 2 * gates * hid),
        }

    return weights


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
@pytest.mark.parametrize("via", ["flatten_unsqueeze", "reshape", "gemm"])
def test_recurrent_op_reads_its_input_channels_through_columns(op, via):
    """An LSTM/GRU reads x through W's axis 2: the channels that feed it fold (duplicates sum back
    into W's columns exactly); its hidden units (R, B, outputs), which reach the graph output here,
    are a blocked group, never touched."""
    w = rnn_w(op, via)(np.random.default_rng(0))
    build = rnn_graph(op, via)
    into_rnn = [(f"{op}_W", 2, [S(4)])]
    if via != "gemm":  # c1 → GAP → Flatten → Unsqueeze (or one Reshape [2, 4, 1, 1] → [1, 2, 4]) → the op
        dup, expect = STEM_DUP + producer("w1", "b1", 4) + into_rnn, {"c0", "c1"}
    elif via == "gemm":  # c1 → GAP → Flatten → Gemm g → Unsqueeze → the recurrent op
        dup = STEM_DUP + producer("w1", "b1", 4) + [("gw", 1, [S(4)])] + producer("gw", "gb", 4) + into_rnn
        expect = {"c0", "c1", "g"}
    compact, wide = build(w), build(widen(w, dup))
    check_valid(wide)
    folded, plans = fold_public(wide)
    check_valid(folded)
    assert folded_names(plans) == expect
    # the hidden units are one group, blocked with its reason (NSNet2's GRUs were listed nowhere)
    hidden = [p for p in plans if "rnn" in p.group.producers]
    assert len(hidden) == 1 and hidden[0].status == "blocked" and hidden[0].group.size == 3
    assert {r.code for r in hidden[0].group.blocked} == {"graph-output"}
    feeds = feeds_for(compact)
    ref = run_ort(compact, feeds)
    assert_same(run_ort(wide, feeds), ref)
    assert_same(run_ort(folded, feeds), ref)
    have = initializers(folded)
    for name in (f"{op}_W", f"{op}_R", f"{op}_B"):  # W's summed columns are the compact model's
        np.testing.assert_array_equal(have[name], w[name])
    # fitted on samples (the consumer compensated by least squares), the duplicates still fold back
    samples = np.concatenate([feeds_for(compact, seed=s)["x"] for s in range(8)])
    model, report = onnxfold.fold(wide, 0.5, validate=False, method="auto", inputs={"x": samples})
    assert folded_names(report.plans) == expect
    assert_same(run_ort(to_model_proto(model), feeds), ref)


# --------------------------------------------------------------------------------- 4b. embedding lookup
VOCAB, EMB = 20, 4


def embedding_graph(into: str, tied: bool = False):
    """ids [2, 5] → Gather(table [VOCAB, EMB]) → a MatMul, or (time-major) a GRU; ``tied``: the
    table is also the output projection (Gemm with transB), as a tied LM head reads it."""

    def build(w):
        net = Net(w, 13)
        net.inputs.append(helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 5]))
        e = net("Gather", "table", "ids", name="embed")  # [2, 5, EMB]
        if into == "gru":
            seq = net("Transpose", e, perm=[1, 0, 2])  # [5, 2, EMB]
            y = net("GRU", seq, "GRU_W", "GRU_R", "GRU_B", name="rnn", hidden_size=3, outs=2)[0]
            shape = [5, 1, 2, 3]
        elif tied:
            h = net("MatMul", net("MatMul", e, "mw", name="m"), "back")  # [2, 5, EMB]
            y = net("Gemm", net("Reshape", h, net.i64("flat", [-1, EMB])), "table", name="head", transB=1)
            shape = [10, VOCAB]
        else:
            y, shape = net("MatMul", e, "mw", name="m"), [2, 5, 3]
        proto = net.model(y)
        proto.graph.output[0].CopyFrom(helper.make_tensor_value_info(y, TensorProto.FLOAT, shape))
        return proto

    return build


def embedding_w(rng, into: str, tied: bool = False):
    w = {"table": rnd(rng, VOCAB, EMB)}
    if into == "matmul":
        return w | {"mw": rnd(rng, EMB, 3)} | ({"back": rnd(rng, 3, EMB)} if tied else {})
    return w | {"GRU_W": rnd(rng, 1, 9, EMB), "GRU_R": rnd(rng, 1, 9, 3), "GRU_B": rnd(rng, 1, 18)}


@pytest.mark.parametrize("into", ["matmul", "gru"])
def test_embedding_lookup_is_a_producer(into):
    """Gather of rows of a constant table (an embedding) produces the table's columns as channels:
    duplicated columns fold back into the compact table exactly, data-free and fitted; with no
    compression the model is reproduced bit for bit."""
    w = embedding_w(np.random.default_rng(0), into)
    build = embedding_graph(into)
    consumer = ("mw", 0) if into == "matmul" else ("GRU_W", 2)
    compact, wide = build(w), build(widen(w, [("table", 1, [A(EMB)]), (*consumer, [S(EMB)])]))
    check_valid(wide)
    ids = np.random.default_rng(1).integers(0, VOCAB, (2, 5))
    feeds = {"ids": ids}
    ref = run_ort(compact, feeds)
    assert_same(run_ort(wide, feeds), ref)
    kept, report = onnxfold.fold(wide, 0.0, validate=False)
    for got, want in zip(run_ort(to_model_proto(kept), feeds), run_ort(wide, feeds), strict=True):
        np.testing.assert_array_equal(got, want)
    folded, plans = fold_public(wide)
    check_valid(folded)
    assert folded_names(plans) == {"embed"}
    assert_same(run_ort(folded, feeds), ref)
    np.testing.assert_allclose(initializers(folded)["table"], w["table"], rtol=1e-6)
    for inputs in (None, {"ids": np.random.default_rng(2).integers(0, VOCAB, (16, 5))}):
        model, report = onnxfold.fold(wide, 0.5, validate=False, method="auto", inputs=inputs)
        assert folded_names(report.plans) == {"embed"}
        assert_same(run_ort(to_model_proto(model), feeds), ref)


def test_tied_embedding_is_left_alone():
    """A table that is both looked up (its columns averaged) and read as a weight's input columns
    (summed) cannot take one fold: that group is blocked with the reason, the rest still folds."""
    w = embedding_w(np.random.default_rng(0), "matmul", tied=True)
    proto = embedding_graph("matmul", tied=True)(w)
    check_valid(proto)
    folded, plans = fold_public(proto)
    check_valid(folded)
    embed = plan_for(plans, "embed")
    assert embed.status == "blocked" and any(r.code == CLAIM_CONFLICT for r in embed.reasons), embed.reason
    assert folded_names(plans) == {"m"}
    np.testing.assert_array_equal(initializers(folded)["table"], w["table"])


def test_an_integer_table_lookup_opens_no_group():
    """A Gather of an integer table is shape arithmetic or an id remap, not an embedding: averaging its
    columns would change integers; no group opens there and the model is reproduced bit for bit."""
    net = Net({"T": np.arange(12, dtype=np.int64).reshape(3, 4), "W": rnd(np.random.default_rng(0), 4, 3)})
    net.inputs.append(helper.make_tensor_value_info("ids", TensorProto.INT64, [2]))
    y = net("MatMul", net("Cast", net("Gather", "T", "ids", name="lookup"), to=TensorProto.FLOAT), "W")
    proto = net.model(y)
    proto.graph.output[0].CopyFrom(helper.make_tensor_value_info(y, TensorProto.FLOAT, [2, 3]))
    folded, plans = fold_public(proto)
    assert not any("lookup" in p.group.producers for p in plans)
    feeds = {"ids": np.array([2, 0])}
    np.testing.assert_array_equal(run_ort(folded, feeds)[0], run_ort(proto, feeds)[0])


# --------------------------------------------------------------------------------- 5. opsets 11 … 21
@pytest.mark.parametrize("opset", [11, 13, 15, 17, 19, 21])
def test_opsets(opset):
    w = cbr_gemm_w(np.random.default_rng(0))
    build = cbr_gemm(opset)
    compact, wide = build(w), build(widen(w, CBR_DUP))
    expected_ir = {11: 6, 13: 7, 15: 8, 17: 8, 19: 9, 21: 10}[opset]
    assert wide.ir_version == expected_ir
    folded, plans = fold_public(wide)
    check_valid(folded)
    assert folded.ir_version == expected_ir
    assert {o.domain: o.version for o in folded.opset_import}.get("", None) == opset
    assert folded_names(plans) == {"c1", "c2"}
    feeds = feeds_for(compact)
    ref = run_ort(compact, feeds)
    assert_same(run_ort(wide, feeds), ref)
    assert_same(run_ort(folded, feeds), ref)
    have = initializers(folded)
    for name, value in w.items():
        assert have[name].shape == value.shape, name
        np.testing.assert_allclose(have[name], value, rtol=1e-6, atol=0, err_msg=name)


# --------------------------------------------------------------------------------- 6. dynamic dims
def test_dynamic_batch_and_spatial():
    w = cbr_gemm_w(np.random.default_rng(0))
    build = cbr_gemm(17, shape=["N", 3, "H", "W"])
    compact, wide = build(w), build(widen(w, CBR_DUP))
    folded, plans = fold_public(wide)
    check_valid(folded)
    assert folded_names(plans) == {"c1", "c2"}
    dims = [d.dim_param or d.dim_value for d in folded.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 3, "H", "W"]
    rng = np.random.default_rng(3)
    for shape in ([1, 3, 8, 8], [3, 3, 11, 7], [5, 3, 5, 13]):
        feeds = {"x": rng.standard_normal(shape).astype(np.float32)}
        ref = run_ort(compact, feeds)
        assert ref[0].shape == (shape[0], 6)
        assert_same(run_ort(wide, feeds), ref)
        assert_same(run_ort(folded, feeds), ref)
    have = initializers(folded)
    for name, value in w.items():
        np.testing.assert_allclose(have[name], value, rtol=1e-6, atol=0, err_msg=name)
