"""Padded positions are not measured: a candidate that differs from the original only where the
attention mask pads a sentence keeps fidelity 1 under every metric, in the search's evaluator and in
validation, and one that differs at a token position does not (onnxfold.runtime.padding)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxfold.runtime.compare import validate
from onnxfold.runtime.fidelity import fidelity_value
from onnxfold.runtime.padding import padding_mask, token_positions
from onnxfold.runtime.r2 import r2, r2_on
from onnxfold.runtime.resample import low_value
from onnxfold.search.evaluate import Evaluator

N, L = 16, 7


def _mask() -> np.ndarray:
    lengths = np.random.default_rng(3).integers(2, L + 1, N)
    lengths[0] = L
    return (np.arange(L)[None] < lengths[:, None]).astype(np.int64)


def _feed() -> dict[str, np.ndarray]:
    mask = _mask()
    ids = np.random.default_rng(4).integers(1, 50, (N, L)) * mask
    return {"input_ids": ids.astype(np.int64), "attention_mask": mask}


def _proto(on_padding: float, at_token: tuple[int, float] | None = None):
    """hidden = E[ids] + on_padding·(1 − mask), logits = T[ids] + the same (T: 5 tag classes); with
    ``at_token`` (row r of E and T, shift s), that row is moved by s: a change at token positions."""
    rng = np.random.default_rng(1)
    table, tags = rng.standard_normal((50, 8)), rng.standard_normal((50, 5)) * 3
    if at_token is not None:
        table[at_token[0]] += at_token[1]
        tags[at_token[0], :] = 0
        tags[at_token[0], int(np.argmin(tags[at_token[0] - 1]))] = 50.0
    nodes = [
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["one", "m"], ["pad"]),
        helper.make_node("Mul", ["pad", "shift"], ["moved"]),
        helper.make_node("Unsqueeze", ["moved", "axis"], ["moved3"]),
    ]
    for name, weights in (("hidden", "E"), ("logits", "T")):
        nodes += [
            helper.make_node("Gather", [weights, "input_ids"], [f"{name}_rows"]),
            helper.make_node("Add", [f"{name}_rows", "moved3"], [name]),
        ]
    inits = [
        numpy_helper.from_array(table.astype(np.float32), "E"),
        numpy_helper.from_array(tags.astype(np.float32), "T"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array(on_padding, np.float32), "shift"),
        numpy_helper.from_array(np.array([-1], np.int64), "axis"),
    ]
    outputs = [
        helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", "seq", 8]),
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", 5]),
    ]
    return _token_model(nodes, inits, ("input_ids", "attention_mask"), outputs)


def _token_model(nodes, inits, inputs: tuple[str, str], outputs):
    """An opset-17 model of ``nodes`` reading two int64 [batch, seq] inputs (the ids and their mask)."""
    ints = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in inputs]
    graph = helper.make_graph(nodes, "tokens", ints, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_change_at_padded_positions_alone_keeps_every_output_whole() -> None:
    feed = _feed()
    assert not feed["attention_mask"].all()
    evaluator = Evaluator(_proto(0.0), feed)
    assert evaluator.metrics == {"hidden": "r2", "logits": "tags"}
    value, per = evaluator(_proto(5.0))
    assert value == 1.0, per
    assert all(p.low in (None, 1.0) for p in per), per
    report = validate(_proto(0.0), _proto(5.0), inputs=feed)
    assert {m.name: m.fidelity for m in report.outputs} == {"hidden": 1.0, "logits": 1.0}


def test_a_change_at_token_positions_is_still_measured() -> None:
    feed = _feed()
    row = int(feed["input_ids"][0, 0])
    value, per = Evaluator(_proto(0.0), feed)(_proto(0.0, at_token=(row, 2.0)))
    got = {p.name: p.value for p in per}
    assert got["hidden"] < 0.999 and got["logits"] < 1.0, got


@pytest.mark.parametrize("metric", ["top1", "tags", "sequence", "cosine", "relerr", "r2", "binary", "mask"])
def test_every_metric_leaves_padding_out(metric: str) -> None:
    rng = np.random.default_rng(0)
    mask = _mask().astype(bool)
    ref = rng.standard_normal((N, L, 4))
    if metric in ("binary", "mask"):
        ref = 1 / (1 + np.exp(-3 * ref))
    cand = np.where(mask[..., None], ref, -ref + 0.3)
    keep = token_positions(ref, mask)
    assert keep is not None
    assert fidelity_value(metric, ref, cand, N, keep) == 1.0
    assert fidelity_value(metric, ref, cand, N) < 1.0
    low = low_value(metric, ref, cand, N, keep)
    assert low in (None, 1.0)


def test_weighted_r2_is_r2_on_the_token_rows() -> None:
    """Channels on the last axis: weighing padding 0 gives r2 on the token positions alone, as the
    compacted rows [P, C] measure it."""
    rng = np.random.default_rng(2)
    mask = _mask().astype(bool)
    ref = rng.standard_normal((N, L, 6)) * np.arange(1, 7)
    cand = ref + rng.standard_normal(ref.shape) * 0.4
    weight = np.broadcast_to(mask[..., None], ref.shape)
    assert r2_on(ref, cand, 2, weight) == pytest.approx(r2_on(ref[mask], cand[mask], 1), rel=1e-12)
    assert r2(ref, cand, np.ones(ref.shape)) == pytest.approx(r2(ref, cand), rel=1e-12)


def test_the_mask_is_found_only_when_it_pads() -> None:
    feed = _feed()
    mask = padding_mask(feed)
    assert mask is not None and token_positions(np.zeros((N, L, 3)), mask) is not None
    assert token_positions(np.zeros((N, 3)), mask) is None  # pooled: one row per sample
    assert token_positions(np.zeros((N, L, 3)), np.ones((N, L), bool)) is None


def test_a_key_padding_mask_marks_padding_with_true() -> None:
    """torch's key_padding_mask: True = padding; the longest sample, unpadded, is a row of False."""
    attention = _mask()
    assert (padding_mask({"attention_mask": attention}) == attention.astype(bool)).all()
    key_padding = attention == 0
    assert (padding_mask({"key_padding_mask": key_padding}) == attention.astype(bool)).all()
    # every sample padded (to a fixed length beyond the longest): no row is whole, the name decides
    longer = np.pad(attention, ((0, 0), (0, 3)))
    assert (padding_mask({"attention_mask": longer}) == longer.astype(bool)).all()
    assert (padding_mask({"padding_mask": longer.astype(bool)}) == longer.astype(bool)).all()  # KerasNLP's
    assert (padding_mask({"src_key_padding_mask": longer == 0}) == longer.astype(bool)).all()


def test_an_unnamed_attention_mask_beside_the_ids_is_found() -> None:
    """sudachi-b-imitator's ALBERT tagger takes input.1 (ids), onnx::Unsqueeze_1 (its attention mask,
    named by a legacy export) and input.3 (token types, all 0): top1 counted its 91.6% padding, and a
    search at 0.9615 wrote a model that split 32% of words right."""
    attention = _mask()
    ids = np.where(attention == 1, 7, 0)
    feed = {"input.1": ids, "onnx::Unsqueeze_1": attention, "input.3": np.zeros_like(ids)}
    assert (padding_mask(feed) == attention.astype(bool)).all()
    assert padding_mask({"input.1": ids, "onnx::Unsqueeze_1": np.ones_like(ids)}) is None  # pads nothing
    assert padding_mask({"onnx::Unsqueeze_1": attention}) is None  # no ids beside it
    segments = 1 - attention  # 0 then 1 along a row: token types, not a mask
    assert padding_mask({"input.1": ids, "input.3": segments}) is None
    gapped = attention.copy()
    gapped[0, 1] = 0  # a hole inside a row: not a prefix of tokens
    assert padding_mask({"input.1": ids, "m": gapped}) is None


def test_random_masks_of_the_proxy_are_not_read_as_padding() -> None:
    """Data-free: a random boolean mask is a prefix under either convention, so nothing is left out."""
    evaluator = Evaluator(_proto(0.0))
    assert evaluator.proxy and evaluator.mask is None


def test_held_out_r2_is_judged_against_the_spread_over_every_sample() -> None:
    """ocrspine's orientation classifier: 32 samples alternating upright and turned, the held-out
    (odd) half all turned, so each probability barely varies there; r2 on that half alone read 0.84
    for a fold that kept every label (and r2 0.9989 on all). Against the spread over every sample,
    the same errors read as what they are."""
    rng = np.random.default_rng(0)
    probs = np.zeros((32, 2))
    probs[::2, 0] = probs[1::2, 1] = 1.0
    probs = np.abs(probs - rng.random((32, 2)) * 0.02)
    cand = probs + rng.standard_normal((32, 2)) * 0.01
    half = slice(1, None, 2)
    assert r2(probs[half], cand[half]) < 0.5  # the half's own spread is the noise
    on_all = r2(probs, cand)
    assert r2(probs[half], cand[half], spread=probs) == pytest.approx(on_all, abs=2e-3)
    assert r2(probs[half], cand[half], spread=probs[:, :1]) == r2(probs[half], cand[half])  # shapes differ
    assert fidelity_value("top1+r2", probs[half], cand[half], 16, spread=probs) == pytest.approx(
        on_all, abs=2e-3
    )
    model = helper.make_model(
        helper.make_graph(
            [helper.make_node("Softmax", ["x"], ["p"], axis=-1)],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
            [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 2])],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    logits = np.log(probs).astype(np.float32)
    evaluator = Evaluator(model, {"x": logits}, unseen=np.arange(1, 32, 2))
    moved_logits = logits + (rng.standard_normal((32, 2)) * 0.05).astype(np.float32)
    shifted = helper.make_model(
        helper.make_graph(
            [
                helper.make_node("Add", ["x", "d"], ["z"]),
                helper.make_node("Softmax", ["z"], ["p"], axis=-1),
            ],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
            [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 2])],
            [numpy_helper.from_array(moved_logits - logits, "d")],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    fidelity, per = evaluator(shifted)
    unseen = {o.metric: o.value for o in evaluator.last_unseen}
    every = {o.metric: o.value for o in per}
    assert unseen["top1"] == 1.0 and abs(unseen["r2"] - every["r2"]) < 0.02


def _id_tagger(on_padding: float):
    """ids [N, L] and an unnamed mask -> ArgMax(T[ids] + on_padding·(1 − mask)·e_4): labels whose padded
    positions become class 4 when ``on_padding`` is large, as a fold may leave them."""
    table = np.random.default_rng(1).standard_normal((50, 5)).astype(np.float32)
    table[0] = [5, 0, 0, 0, 0]  # the padding id's class is 0
    nodes = [
        helper.make_node("Cast", ["onnx::Unsqueeze_1"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["one", "m"], ["pad"]),
        helper.make_node("Unsqueeze", ["pad", "axis"], ["pad3"]),
        helper.make_node("Mul", ["pad3", "e4"], ["moved"]),
        helper.make_node("Gather", ["T", "input.1"], ["rows"]),
        helper.make_node("Add", ["rows", "moved"], ["scores"]),
        helper.make_node("ArgMax", ["scores"], ["tags"], axis=-1, keepdims=0),
    ]
    inits = [
        numpy_helper.from_array(table, "T"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array([0, 0, 0, 0, on_padding], np.float32), "e4"),
        numpy_helper.from_array(np.array([-1], np.int64), "axis"),
    ]
    tags = [helper.make_tensor_value_info("tags", TensorProto.INT64, ["batch", "seq"])]
    return _token_model(nodes, inits, ("input.1", "onnx::Unsqueeze_1"), tags)


def test_validation_counts_equal_labels_on_the_tokens_alone() -> None:
    """The ALBERT tagger's validation line read "equal 8.3%" for a fold that kept 98.5% of its real
    characters' tags: the other positions were padding."""
    feed = _feed()
    feed = {"input.1": feed["input_ids"], "onnx::Unsqueeze_1": feed["attention_mask"]}
    report = validate(_id_tagger(0.0), _id_tagger(100.0), inputs=feed)
    (tags,) = report.outputs
    assert tags.top1_agreement == 1.0 and tags.fidelity == 1.0, tags.summary()
    assert "equal 100.0%" in tags.summary()


def test_padded_positions_are_no_channels_of_r2() -> None:
    """A per-character score [N, L] of sentences padded to the longest: r2 pools every sample's
    positions, as r2 over [N, L, C] takes its channels on C alone. With each position a channel the
    last ones hold one or two sentences, and a candidate as close as any read far lower (a Thai word
    segmenter: 0.85 where pooled 0.998)."""
    rng = np.random.default_rng(5)
    lengths = np.concatenate([[40], rng.integers(3, 12, 31)])
    keep = np.arange(40)[None] < lengths[:, None]
    ref = rng.standard_normal((32, 40)) * 4
    cand = ref + rng.standard_normal(ref.shape) * 0.4  # r2 about 0.99 at every position
    pooled = r2_on(ref[keep][:, None], cand[keep][:, None], None)
    assert pooled == pytest.approx(0.99, abs=0.005)
    assert fidelity_value("r2", ref, cand, 32, keep) == pytest.approx(pooled, rel=1e-12)
    assert r2_on(ref, cand, 1, keep) < 0.9  # each position a channel: the last hold one sentence
    low = low_value("r2", ref, cand, 32, keep)
    assert low is not None and 0.98 < low <= pooled
    wide = np.repeat(ref[..., None], 3, axis=2) * np.array([1.0, 10.0, 100.0])
    moved = wide + rng.standard_normal(wide.shape) * 0.4 * np.array([1.0, 10.0, 100.0])
    per_channel = np.mean([r2_on(wide[keep][:, c], moved[keep][:, c], None) for c in range(3)])
    assert fidelity_value("r2", wide, moved, 32, keep) == pytest.approx(per_channel, rel=1e-12)


def _float_tagger(shift: float = 0.0):
    """natasha's NER tagger's shape (trial 201): float embeddings emb [batch, seq, 6] and a float mask
    [batch, seq] of 0 and 1; logits [batch, seq, 4] = (emb·W + shift·column 0)·mask."""
    w = np.random.default_rng(2).standard_normal((6, 4)).astype(np.float32)
    w[:, 0] += shift
    nodes = [
        helper.make_node("MatMul", ["emb", "W"], ["z"]),
        helper.make_node("Unsqueeze", ["mask", "axis"], ["m3"]),
        helper.make_node("Mul", ["z", "m3"], ["logits"]),
    ]
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.array([-1], np.int64), "axis")]
    graph = helper.make_graph(
        nodes,
        "ner",
        [
            helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["batch", "seq", 6]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", 4])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_tagger_fed_a_float_padding_mask_reads_each_sentence_whole() -> None:
    """natasha's NER tagger: no ids, so onnxfold did not call it a token model, and its float mask was
    not read as padding: top1 counted positions, a fifth of them padding (0.9688 for a fold that kept
    76.8% of sentences' entities, trial 201). Its labels per token are now read by tags on given
    samples, over the tokens alone; validation reads them alike; a metric given still wins."""
    mask = _mask().astype(np.float32)
    feed = {
        "emb": np.random.default_rng(5).standard_normal((N, L, 6)).astype(np.float32) * mask[..., None],
        "mask": mask,
    }
    assert (padding_mask(feed) == mask.astype(bool)).all()
    evaluator = Evaluator(_float_tagger(), feed)
    assert evaluator.metrics == {"logits": "tags"}
    value, per = evaluator(_float_tagger(0.8))  # some tokens' tag moves to class 0
    ref = evaluator.reference["logits"].argmax(-1)
    got = np.asarray(run_logits(_float_tagger(0.8), feed)).argmax(-1)
    whole = np.mean([(ref[i][mask[i] > 0] == got[i][mask[i] > 0]).all() for i in range(N)])
    assert value == pytest.approx(whole) and whole < 1.0
    assert Evaluator(_float_tagger(), feed, metric="top1").metrics == {"logits": "top1"}
    report = validate(_float_tagger(), _float_tagger(0.8), inputs=feed)
    (out,) = report.outputs
    assert out.fidelity_metric == "tags" and out.fidelity == pytest.approx(whole)


def run_logits(proto, feed):
    from onnxfold.runtime.session import make_session

    return make_session(proto.SerializeToString()).run(None, feed)[0]


def test_random_inputs_hold_a_float_mask_at_one() -> None:
    """The data-free proxy drew natasha's float NER mask from N(0, 1), so its tokens were scaled by
    noise (the first step measured 0.8398; with --input-value mask=1, 0.9941; trial 201). A float
    input named like a mask [N, L] is drawn as integer masks are, every token kept."""
    from onnxfold.runtime.inputs import make_inputs
    from onnxfold.runtime.session import make_session

    feed = make_inputs(make_session(_float_tagger().SerializeToString()), batch=3)
    assert feed["mask"].dtype == np.float32 and (feed["mask"] == 1.0).all()
    assert feed["emb"].std() > 0.5  # the embeddings stay N(0, 1)
