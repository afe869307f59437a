"""Tied and shared weights (issue 13): a tensor read by several nodes, directly or through a Transpose,
is stored once in the output, whatever the fold does to it; the parameter count counts it once, and a
count above the input's comes with the reason."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from harness import A, Net, S, initializers, rel_err, run_ort, widen
from onnx import TensorProto, helper, numpy_helper

import onnxfold
from onnxfold.report.fold_report import saved_size
from onnxfold.report.stats import model_stats
from onnxfold.runtime.session import make_session

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VOCAB, HIDDEN = 500, 64


def _ids(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((3, 9), np.int64)
    mask[1, 6:] = 0
    return {"input_ids": rng.integers(0, VOCAB, (3, 9)).astype(np.int64), "attention_mask": mask}


def export_tied_llama(path: Path, style: str) -> Path:
    """A tiny LlamaForCausalLM whose LM head is its input embedding (``tie_word_embeddings``), exported
    to logits. The legacy exporter stores the table twice (the embedding and its constant-folded
    transpose for the head); dynamo stores it once and reads it through a Transpose."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        attn_implementation="eager",
    )
    lm = transformers.LlamaForCausalLM(config).eval()
    assert lm.lm_head.weight is lm.model.embed_tokens.weight

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lm = lm

        def forward(self, input_ids, attention_mask):
            return self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    args = (torch.randint(0, VOCAB, (2, 7)), torch.ones(2, 7, dtype=torch.int64))
    names = dict(input_names=["input_ids", "attention_mask"], output_names=["logits"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if style == "legacy":  # an attention_mask input keeps the legacy exporter off aten::diff
            axes = {n: {0: "batch", 1: "seq"} for n in ("input_ids", "attention_mask")}
            torch.onnx.export(
                Logits(), args, str(path), dynamo=False, dynamic_axes=axes, opset_version=17, **names
            )
        else:
            batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
            shapes = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
            torch.onnx.export(Logits(), args, str(path), dynamic_shapes=shapes, **names)
    return path


def exact_run(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """Logits with no graph rewrites and no weight prepacking: onnxruntime prepacks a MatMul weight
    stored as an initializer but not one computed by a Transpose, and the two kernels may round the
    last bits differently (3e-5 on SmolLM2's logits), although the values are the same."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.add_session_config_entry("session.disable_prepacking", "1")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def tables(path: Path) -> list[str]:
    """Names of the stored tensors holding VOCAB × HIDDEN values (the table, or a copy of it)."""
    proto = onnx.load(str(path), load_external_data=False)
    return [t.name for t in proto.graph.initializer if int(np.prod(t.dims)) == VOCAB * HIDDEN]


@pytest.fixture(scope="module", params=["dynamo", "legacy"])
def tied_llama(request, tmp_path_factory) -> tuple[str, Path]:
    folder = tmp_path_factory.mktemp(f"tied-{request.param}")
    return request.param, export_tied_llama(folder / "m.onnx", request.param)


@pytest.mark.parametrize("sparsity", [0.0, 0.3])
def test_a_tied_embedding_is_stored_once(tied_llama, sparsity: float, tmp_path: Path) -> None:
    style, src = tied_llama
    assert len(tables(src)) == (2 if style == "legacy" else 1)
    out = tmp_path / "f.onnx"
    _, report = onnxfold.fold(src, sparsity, out, check=True)
    onnx.checker.check_model(str(out), full_check=True)
    assert len(tables(out)) == 1, tables(out)
    assert report.after.params <= report.before.params
    assert (
        model_stats(onnx.load(str(out), load_external_data=False)).params
        <= model_stats(onnx.load(str(src), load_external_data=False)).params
    )
    feeds = _ids()
    if sparsity == 0.0:
        np.testing.assert_array_equal(exact_run(out, feeds), exact_run(src, feeds))
        ref, got = (make_session(str(p)).run(None, feeds)[0] for p in (src, out))
        np.testing.assert_array_equal(got, ref)  # onnxruntime folds the Transpose back at load time
        assert saved_size(out) <= saved_size(src)
    else:
        assert any(p.status == "folded" for p in report.plans)
        assert saved_size(out) < saved_size(src)
        got = make_session(str(out)).run(None, feeds)[0]
        assert got.shape == (3, 9, VOCAB) and np.isfinite(got).all()


# --------------------------------------------------------------------------- hand-built graphs


def _tied_producers(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """W [n, 12] read by two Gemms (x·Wᵀ, with different biases) and, through a Transpose, by a MatMul
    (x·Wᵀ again): three producers of the same n channels, added, then read by V."""
    net = Net(weights)
    x = net.input("x", [3, 12])
    g1 = net("Relu", net("Gemm", x, "W", "b1", transB=1, name="gemm1"))
    g2 = net("Sigmoid", net("Gemm", x, "W", "b2", transB=1, alpha=0.5, name="gemm2"))
    t = net("Transpose", "W", perm=[1, 0], name="wt")
    g3 = net("Tanh", net("MatMul", x, t, name="mm3"))
    s = net("Add", net("Add", g1, g2), g3)
    return net.model(net("MatMul", s, "V", name="head"))


def _tied_weights() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    compact = {
        "W": rng.standard_normal((8, 12)).astype(np.float32),
        "b1": rng.standard_normal(8).astype(np.float32),
        "b2": rng.standard_normal(8).astype(np.float32),
        "V": rng.standard_normal((8, 4)).astype(np.float32),
    }
    wide = widen(compact, [("W", 0, [A(8)]), ("b1", 0, [A(8)]), ("b2", 0, [A(8)]), ("V", 0, [S(8)])])
    return compact, wide


@pytest.mark.parametrize("repair", ["none", "ar"])
def test_a_weight_read_by_two_gemms_and_a_transpose_folds_once(tmp_path: Path, repair: str) -> None:
    compact, wide = _tied_weights()
    src, out = tmp_path / "wide.onnx", tmp_path / "f.onnx"
    onnx.save(_tied_producers(wide), src)
    _, report = onnxfold.fold(src, 0.5, out, repair=repair, check=True)
    (plan,) = [p for p in report.plans if "gemm1" in p.group.producers]
    assert plan.status == "folded" and (plan.group.size, plan.k) == (16, 8), plan.reason
    assert set(plan.group.producers) == {"gemm1", "gemm2", "mm3"}
    folded = onnx.load(str(out))
    stored = initializers(folded)
    assert sorted(n for n, v in stored.items() if v.ndim == 2) == ["V", "W"], sorted(stored)
    assert stored["W"].shape == (8, 12)
    readers = [n.op_type for n in folded.graph.node if "W" in n.input]
    assert sorted(readers) == ["Gemm", "Gemm", "Transpose"]
    x = np.random.default_rng(0).standard_normal((3, 12)).astype(np.float32)
    want = run_ort(_tied_producers(compact), {"x": x})[0]
    assert rel_err(run_ort(folded, {"x": x})[0], want) <= 1e-5
    assert report.after.params == model_stats(_tied_producers(compact)).params


def test_the_data_repair_leaves_a_shared_weight_naive_and_stored_once(tmp_path: Path) -> None:
    """The data repair corrects each producer from its own measured output: a shared weight would need
    a different edit per reader, so its producers stay naive, the pass says so, and W is one tensor."""
    compact, wide = _tied_weights()
    src, out = tmp_path / "wide.onnx", tmp_path / "f.onnx"
    onnx.save(_tied_producers(wide), src)
    samples = np.random.default_rng(1).standard_normal((16, 12)).astype(np.float32)
    _, report = onnxfold.fold(src, 0.5, out, repair="data", calibration=samples, validate=False)
    (repair,) = [r for r in report.passes if r.name == "repair"]
    assert repair.stats["shared_weight_skipped"] >= 1, repair.stats
    stored = initializers(onnx.load(str(out)))
    assert sorted(n for n, v in stored.items() if v.ndim == 2) == ["V", "W"]
    x = samples[:3]
    want = run_ort(_tied_producers(compact), {"x": x})[0]
    assert rel_err(run_ort(onnx.load(str(out)), {"x": x})[0], want) <= 1e-5


def _embedding_and_head() -> onnx.ModelProto:
    """E [30, 16] read by a Gather (an embedding) and, through a Transpose, by the head MatMul that
    consumes a foldable group h: folding h would sum rows of Eᵀ for the head but not for the Gather."""
    rng = np.random.default_rng(4)
    net = Net({"E": rng.standard_normal((30, 16)).astype(np.float32), "W1": rng.standard_normal((8, 16))})
    net.weights["W1"] = net.weights["W1"].astype(np.float32)
    ids = net.input("ids", [3])
    net.inputs[-1] = helper.make_tensor_value_info("ids", TensorProto.INT64, [3])
    x = net.input("x", [3, 8])
    h = net("Relu", net("MatMul", x, "W1", name="mm1"))
    logits = net("MatMul", h, net("Transpose", "E", perm=[1, 0], name="et"), name="head")
    emb = net("Gather", "E", ids, axis=0, name="embed")
    return net.model(logits, emb)


def test_a_group_that_would_edit_a_shared_table_for_one_reader_is_blocked(tmp_path: Path) -> None:
    src, out = tmp_path / "m.onnx", tmp_path / "f.onnx"
    onnx.save(_embedding_and_head(), src)
    _, report = onnxfold.fold(src, 0.5, out, check=True, validate=False)  # random ids leave the table
    (h,) = [p for p in report.plans if "mm1" in p.group.producers]
    assert h.status == "blocked"
    # the Gather averages E's columns (an embedding's channels), the head would sum them
    assert any(r.code == "claim-conflict" and r.tensor == "E" for r in h.reasons), h.reasons
    stored = initializers(onnx.load(str(out)))
    assert [n for n, v in stored.items() if v.size == 30 * 16] == ["E"]
    assert report.after.params <= report.before.params


def test_a_transposed_copy_is_stored_once(tmp_path: Path) -> None:
    """The legacy exporter's form of a tie (a table and its transpose as two initializers): cleanup
    keeps one and reads the other through a Transpose; the outputs stay bit-identical."""
    rng = np.random.default_rng(5)
    e = rng.standard_normal((40, 16)).astype(np.float32)
    inits = [numpy_helper.from_array(e, "E"), numpy_helper.from_array(np.ascontiguousarray(e.T), "ET")]
    nodes = [
        helper.make_node("Gather", ["E", "ids"], ["emb"], axis=0),
        helper.make_node("MatMul", ["emb", "ET"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 40])],
        inits,
    )
    src, out = tmp_path / "m.onnx", tmp_path / "f.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), src)
    _, report = onnxfold.fold(src, 0.0, out, validate=False)  # random ids leave the table
    stored = initializers(onnx.load(str(out)))
    assert list(stored) == ["E"]
    feeds = {"ids": np.array([0, 5, 39], np.int64)}
    ref, got = (make_session(str(p), optimize=False).run(None, feeds)[0] for p in (src, out))
    np.testing.assert_array_equal(got, ref)
    assert report.after.params == e.size < report.before.params


# --------------------------------------------------------------------------- the parameter count


def test_a_tensor_read_by_several_nodes_is_counted_once() -> None:
    _, wide = _tied_weights()
    stats = model_stats(_tied_producers(wide))
    assert stats.params == sum(v.size for v in wide.values())


def _shared_vectors() -> onnx.ModelProto:
    """Three per-channel vectors shared by a foldable branch and a branch that ends in a graph output:
    canonicalize gives each node its own copy, the fold halves the foldable branch's copies, and the
    tiny branch saves fewer parameters than the copies cost."""
    rng = np.random.default_rng(6)
    weights = {n: rng.standard_normal(s).astype(np.float32) for n, s in [("W1", (1, 16)), ("W2", (16, 1))]}
    weights |= {"W3": rng.standard_normal((1, 16)).astype(np.float32)}
    weights |= {n: rng.standard_normal(16).astype(np.float32) for n in ("b", "c", "d")}
    net = Net(weights)
    x = net.input("x", [3, 1])
    a = net("Add", net("Mul", net("Add", net("MatMul", x, "W1", name="mm1"), "b"), "c"), "d")
    y = net("MatMul", net("Relu", a), "W2", name="mm2")
    z = net("Add", net("Mul", net("Add", net("MatMul", x, "W3", name="mm3"), "b"), "c"), "d")
    return net.model(y, z)


def test_a_fold_that_ends_with_more_parameters_says_why(tmp_path: Path) -> None:
    src, out = tmp_path / "m.onnx", tmp_path / "f.onnx"
    onnx.save(_shared_vectors(), src)
    _, report = onnxfold.fold(src, 0.5, out, repair="none")
    assert report.after.params > report.before.params
    note = report.params_note
    assert note and "more parameters" in note
    assert all(name in note for name in ("b__1", "c__1", "d__1")), note
    assert note in report.format()
    assert report.to_dict()["params_note"] == note


def test_no_note_when_parameters_do_not_grow(tmp_path: Path) -> None:
    _, wide = _tied_weights()
    src = tmp_path / "m.onnx"
    onnx.save(_tied_producers(wide), src)
    _, report = onnxfold.fold(src, 0.5, tmp_path / "f.onnx")
    assert report.after.params < report.before.params
    assert report.params_note is None and report.to_dict()["params_note"] is None


def _averaged_and_summed() -> onnx.ModelProto:
    """W [16, 16] read directly by a MatMul that consumes group h (rows of W summed) and, through a
    Transpose, by a MatMul whose output channels are rows of W (averaged): h and that output become
    one group, which cannot average and sum the same rows."""
    rng = np.random.default_rng(7)
    net = Net(
        {
            n: rng.standard_normal((8, 16) if n == "W1" else (16, 16)).astype(np.float32)
            for n in "W1 W V".split()
        }
    )
    x = net.input("x", [3, 8])
    h = net("Relu", net("MatMul", x, "W1", name="mm1"))
    a = net("MatMul", h, "W", name="consume")
    b = net("Relu", net("MatMul", a, net("Transpose", "W", perm=[1, 0], name="wt"), name="produce"))
    return net.model(net("MatMul", b, "V", name="head"))


def test_a_weight_averaged_by_one_reader_and_summed_by_another_is_blocked(tmp_path: Path) -> None:
    src, out = tmp_path / "m.onnx", tmp_path / "f.onnx"
    onnx.save(_averaged_and_summed(), src)
    _, report = onnxfold.fold(src, 0.5, out, check=True)
    touching = [p for p in report.plans if {"mm1", "produce"} & set(p.group.producers)]
    assert touching and all(p.status == "blocked" for p in touching)
    assert any(r.code == "claim-conflict" and r.tensor == "W" for p in touching for r in p.reasons)
    stored = initializers(onnx.load(str(out)))
    assert sorted(n for n, v in stored.items() if v.shape == (16, 16)) == ["V", "W"]  # W once


def test_views_follow_transpose_squeeze_unsqueeze_and_cast() -> None:
    import onnx_graphsurgeon as gs

    from onnxfold.analysis.views import find_views, view_values

    w = np.arange(2 * 1 * 3, dtype=np.float32).reshape(2, 1, 3)
    net = Net({"W": w})
    x = net.input("x", [3, 2])
    sq = net("Squeeze", "W", net.i64("ax1", [1]), name="sq")  # [2, 3]
    tr = net("Transpose", sq, perm=[1, 0], name="tr")  # [3, 2]
    un = net("Unsqueeze", tr, net.i64("ax0", [0]), name="un")  # [1, 3, 2]
    ca = net("Cast", un, to=TensorProto.FLOAT16, name="ca")
    y = net("MatMul", x, net("Cast", ca, to=TensorProto.FLOAT, name="back"))
    z = net("Gather", "W", net.i64("zero", 0), axis=0)
    graph = gs.import_onnx(net.model(y, z))
    views = find_views(graph)
    assert views["tr_y"].axes == (2, 0) and views["un_y"].axes == (None, 2, 0)
    assert views["back_y"].shape == (1, 3, 2) and views["back_y"].source == "W"
    want = w.reshape(2, 3).T[None].astype(np.float16).astype(np.float32)
    got = view_values(views["back_y"], w)
    assert got.dtype == np.float32 and np.array_equal(got, want)


def test_cleanup_shares_identical_weights_and_leaves_types_numpy_cannot_hold(tmp_path: Path) -> None:
    """Two bit-identical float weights become one; two identical bfloat16 weights stay as they are,
    because reading them through graphsurgeon would cast them to another type."""
    from onnxfold.passes import CanonicalizePass, CleanupPass

    w = np.arange(16, dtype=np.float32).reshape(4, 4) / 7
    inits = [numpy_helper.from_array(w, "A"), numpy_helper.from_array(w.copy(), "B")]
    inits += [helper.make_tensor(n, TensorProto.BFLOAT16, [4, 4], list(range(16))) for n in ("C", "D")]
    nodes = [
        helper.make_node("MatMul", ["x", "A"], ["a"]),
        helper.make_node("MatMul", ["a", "B"], ["b"]),
        helper.make_node("Cast", ["b"], ["bb"], to=TensorProto.BFLOAT16),
        helper.make_node("MatMul", ["bb", "C"], ["c"]),
        helper.make_node("MatMul", ["c", "D"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [2, 4])],
        inits,
    )
    src, out = tmp_path / "m.onnx", tmp_path / "f.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), src)
    onnxfold.run_pipeline(src, [CanonicalizePass(), CleanupPass()], out)
    stored = {t.name: t.data_type for t in onnx.load(str(out)).graph.initializer}
    assert stored == {"A": TensorProto.FLOAT, "C": TensorProto.BFLOAT16, "D": TensorProto.BFLOAT16}
    readers = [n.input[1] for n in onnx.load(str(out)).graph.node if n.op_type == "MatMul"]
    assert readers == ["A", "A", "C", "D"]


def _branches_sharing_a_zero_bias() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Two MatMul → Add → Relu → MatMul branches whose Adds read one zero bias [1, 8] (Paddle2ONNX
    writes a conv's bias as Add of a [1, C, 1, 1] constant; onnxfold's own cleanup shares equal ones).
    Each branch's 8 hidden channels are 4 channels twice, at other positions in each; returns the
    model and the compact twin's weights."""
    rng = np.random.default_rng(11)
    compact = {n: rng.standard_normal(s).astype(np.float32) for n, s in [("W1", (5, 4)), ("W2", (4, 3))]}
    compact |= {n: rng.standard_normal(s).astype(np.float32) for n, s in [("W3", (5, 4)), ("W4", (4, 3))]}
    wide = {}
    for first, second, where in (
        ("W1", "W2", np.r_[0:4, 0:4]),
        ("W3", "W4", rng.permutation(np.r_[0:4, 0:4])),
    ):
        share = rng.uniform(0.2, 0.8, 4)
        split = np.where(
            np.arange(8) == np.array([np.flatnonzero(where == c)[0] for c in where]),
            share[where],
            1 - share[where],
        )
        wide[first] = compact[first][:, where]
        wide[second] = (compact[second][where] * split[:, None]).astype(np.float32)
    bias = numpy_helper.from_array(np.zeros((1, 8), np.float32), "B")
    nodes, outputs = [], []
    for k, (first, second) in enumerate((("W1", "W2"), ("W3", "W4"))):
        nodes += [
            helper.make_node("MatMul", ["x", first], [f"h{k}"], name=f"mm{k}"),
            helper.make_node("Add", [f"h{k}", "B"], [f"a{k}"], name=f"add{k}"),
            helper.make_node("Relu", [f"a{k}"], [f"r{k}"], name=f"relu{k}"),
            helper.make_node("MatMul", [f"r{k}", second], [f"y{k}"], name=f"out{k}"),
        ]
        outputs.append(helper.make_tensor_value_info(f"y{k}", TensorProto.FLOAT, ["n", 3]))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 5])],
        outputs,
        [numpy_helper.from_array(v, k) for k, v in wide.items()] + [bias],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), compact


def test_a_shared_per_channel_constant_of_any_rank_ties_no_groups(tmp_path: Path) -> None:
    """A zero bias [1, 8] shared by two branches tied their channel groups into one (a Paddle2ONNX
    model folded twice: 0.925 relative error where the first fold was exact); a per-channel constant
    is a vector whatever its rank, shared by equal values, not by a tie."""
    model, compact = _branches_sharing_a_zero_bias()
    src, out = tmp_path / "m.onnx", tmp_path / "f.onnx"
    onnx.save(model, src)
    groups = onnxfold.analyze(src)
    assert sorted(len(g.producers) for g in groups if g.size == 8) == [1, 1], [g.name for g in groups]
    onnxfold.fold(src, 0.5, out, method="fold", repair="none", round_to=1, validate=False)
    x = np.random.default_rng(3).standard_normal((6, 5)).astype(np.float32)
    got = run_ort(onnx.load(str(out)), {"x": x})
    for k, (first, second) in enumerate((("W1", "W2"), ("W3", "W4"))):
        ref = np.maximum(x @ compact[first], 0) @ compact[second]
        assert rel_err(got[k], ref) < 1e-5, k
