"""Block reasons that say what blocks: an ArgMax (or ArgMin) over a group's channels picks a channel by
its index (a class decision, which merged channels would renumber), or, over another axis, turns the
channels into indices; an untracked operand names where its channels stopped being followed."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxfold


@pytest.mark.parametrize(("axis", "says"), [(1, "picks one of these channels by index"), (0, "into indices")])
def test_an_argmax_blocks_its_channels_with_what_it_does(axis: int, says: str) -> None:
    """text2tashkeel's tagger ends in an ArgMax over its 75 classes: the reason read 'reaches
    unsupported op ArgMax', as if a rule were missing."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "W1"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("Gemm", ["r", "W2"], ["scores"]),
            helper.make_node("ArgMax", ["scores"], ["ids"], axis=axis, keepdims=0),
        ],
        "argmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 6])],
        [helper.make_tensor_value_info("ids", TensorProto.INT64, None)],
        [
            numpy_helper.from_array(rng.standard_normal((6, 8)).astype(np.float32), "W1"),
            numpy_helper.from_array(rng.standard_normal((8, 5)).astype(np.float32), "W2"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    groups = {g.name: g for g in onnxfold.analyze(model)}
    head = next(g for g in groups.values() if g.size == 5)
    assert any(says in r.message for r in head.blocked), head.blocked
    assert not any("unsupported" in r.message for r in head.blocked)
    assert next(g for g in groups.values() if g.size == 8).foldable


def _normed(nodes: list, weights: dict[str, tuple[int, int]], out: list) -> onnx.ModelProto:
    """x [2, 4] -> ``nodes``, which read W1 [4, 8], a LayerNorm's g and b [8] and ``weights`` (name ->
    shape, random); ``out``: the output's name and shape."""
    rng = np.random.default_rng(0)
    shapes = {"W1": (4, 8), **weights}
    arrays = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}
    arrays.update(g=np.ones(8, np.float32), b=np.zeros(8, np.float32))
    graph = helper.make_graph(
        nodes,
        "normed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info(out[0], TensorProto.FLOAT, out[1:])],
        [numpy_helper.from_array(v, k) for k, v in arrays.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_an_untracked_operand_names_where_its_channels_stopped_being_followed() -> None:
    """minimol's blocks read "Add node_add_316 combines channels with untracked tensor gelu_1": gelu_1
    was untracked because a LayerNorm over the channels came before it, which the reason did not say."""
    model = _normed(
        [
            helper.make_node("MatMul", ["x", "W1"], ["h"]),
            helper.make_node("LayerNormalization", ["h", "g", "b"], ["n"], axis=-1, name="norm"),
            helper.make_node("Relu", ["n"], ["a"]),
            helper.make_node("MatMul", ["x", "W2"], ["side"]),
            helper.make_node("Add", ["a", "side"], ["s"], name="join"),
            helper.make_node("MatMul", ["s", "W3"], ["y"]),
        ],
        {"W2": (4, 8), "W3": (8, 3)},
        ["y", 2, 3],
    )
    reasons = [r.message for g in onnxfold.analyze(model) for r in g.blocked]
    joined = [m for m in reasons if "combines channels with untracked tensor a" in m]
    assert (
        joined and "(LayerNormalization norm normalises over its channels, so they stay whole)" in joined[0]
    )


def test_a_post_norm_stream_is_named_as_such() -> None:
    """ruaccent's nn.Transformer (post-norm): every Add read "combines channels with untracked tensor
    …LayerNormalization_output_0 (its channels are not followed past …", cut at the table's width."""
    model = _normed(
        [
            helper.make_node("MatMul", ["x", "W1"], ["h"]),
            helper.make_node("LayerNormalization", ["h", "g", "b"], ["n"], axis=-1, name="norm1"),
            helper.make_node("MatMul", ["n", "W2"], ["f"]),
            helper.make_node("Relu", ["f"], ["a"]),
            helper.make_node("MatMul", ["a", "W3"], ["o"]),
            helper.make_node("Add", ["n", "o"], ["s"], name="residual"),
            helper.make_node("LayerNormalization", ["s", "g", "b"], ["y"], axis=-1, name="norm2"),
        ],
        {"W2": (8, 16), "W3": (16, 8)},
        ["y", 2, 8],
    )
    groups = {g.size: g for g in onnxfold.analyze(model)}
    assert groups[16].foldable  # the MLP's hidden channels fold; the stream's 8 do not
    (reason,) = [r.message for r in groups[8].blocked if "residual" in r.message]
    assert reason == (
        "Add residual combines channels with untracked tensor n (LayerNormalization norm1 normalises over its "
        "channels, so they stay whole; a post-norm residual stream keeps its width)"
    )


def _masked_attention(axes: list[int], wq: np.ndarray, wo: np.ndarray, heads: int, width: int):
    """x [B, S, 6] → q = x·Wq split into heads (k = v = q) → softmax(q·kᵀ + mask) · v → merged → ·Wo,
    the mask [B, S] unsqueezed to [B, 1, 1, S] and cut by a Slice along ``axes`` with a computed end."""
    nodes = [
        helper.make_node("MatMul", ["x", "Wq"], ["q"]),
        helper.make_node("Reshape", ["q", "split"], ["qh"]),
        helper.make_node("Transpose", ["qh"], ["qt"], perm=[0, 2, 1, 3]),  # [B, H, S, D]
        helper.make_node("Transpose", ["qh"], ["kt"], perm=[0, 2, 3, 1]),  # [B, H, D, S]
        helper.make_node("MatMul", ["qt", "kt"], ["scores"]),  # [B, H, S, S]
        helper.make_node("Shape", ["x"], ["xs"]),
        helper.make_node("Gather", ["xs", "one"], ["seq"], axis=0),  # a computed end: S
        helper.make_node("Unsqueeze", ["mask", "m12"], ["m4"]),  # [B, 1, 1, S]
        helper.make_node("Slice", ["m4", "zero", "seq", "cut"], ["m4s"]),
        helper.make_node("Add", ["scores", "m4s"], ["biased"], name="add_mask"),
        helper.make_node("Softmax", ["biased"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "qt"], ["ctx"]),
        helper.make_node("Transpose", ["ctx"], ["ct"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["ct", "merge"], ["cm"]),
        helper.make_node("MatMul", ["cm", "Wo"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(wq.astype(np.float32), "Wq"),
        numpy_helper.from_array(wo.astype(np.float32), "Wo"),
        numpy_helper.from_array(np.array([0, 0, heads, width], np.int64), "split"),
        numpy_helper.from_array(np.array([0, 0, heads * width], np.int64), "merge"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
        numpy_helper.from_array(np.array([1, 2], np.int64), "m12"),
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array(axes, np.int64), "cut"),
    ]
    graph = helper.make_graph(
        nodes,
        "masked",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "S", 6]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["B", "S"]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", "S", 6])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(("axes", "foldable"), [([3], True), ([1], False)])
def test_a_mask_sliced_along_another_axis_still_broadcasts_over_the_heads(axes, foldable) -> None:
    """traceforge's T5 encoder adds to every head's scores its attention mask [B, 1, 1, S] cut by a
    Slice along S with a computed end: shape inference left the Slice's dims unknown, so the mask read
    as a tensor of untracked channels and all 6 heads of all 8 layers stayed blocked. A Slice keeps the
    dims of the axes it does not cut; one that cuts the head axis proves nothing."""
    rng = np.random.default_rng(0)
    model = _masked_attention(axes, rng.standard_normal((6, 8)), rng.standard_normal((8, 6)), 2, 4)
    heads_group = next(g for g in onnxfold.analyze(model) if g.unit == 4 or g.size == 8)
    assert heads_group.foldable is foldable, heads_group.blocked


def test_twin_heads_behind_a_sliced_mask_fold_to_the_one_head_net_exactly(tmp_path) -> None:
    """The duplicate oracle: 2 heads, the second a copy of the first (its rows of Wo too), fold at 0.5
    to the net of one head whose Wo rows are the two summed."""
    from onnxfold.runtime.session import make_session

    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((6, 4)), rng.standard_normal((4, 6))
    twin = _masked_attention([3], np.concatenate([a, a], axis=1), np.concatenate([b, b]), 2, 4)
    small = _masked_attention([3], a, 2 * b, 1, 4)
    out = tmp_path / "folded.onnx"
    onnxfold.fold(twin, 0.5, str(out), method="fold", repair="none", round_to=1)
    shapes = {t.name: tuple(t.dims) for t in onnx.load(str(out)).graph.initializer}
    assert shapes["Wq"] == (6, 4) and shapes["Wo"] == (4, 6), shapes  # one head left
    x = rng.standard_normal((3, 5, 6)).astype(np.float32)
    mask = np.where(rng.random((3, 5)) < 0.3, -1e4, 0.0).astype(np.float32)
    want = make_session(small.SerializeToString()).run(None, {"x": x, "mask": mask})[0]
    got = make_session(str(out)).run(None, {"x": x, "mask": mask})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_a_weight_holding_minus_inf_blocks_its_group_with_the_reason() -> None:
    """chython's reaction mapper looks up a per-head bias in a distance table whose padding row is -inf:
    its fold failed three times in clustering (LinAlgError) after the duplicate search had looped. The
    group is blocked up front, named after the weight, and the other groups still fold."""
    rng = np.random.default_rng(0)
    table = rng.standard_normal((5, 8)).astype(np.float32)
    table[0] = -np.inf
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["T", "ids"], ["e"]),  # [N, 8] from the table
            helper.make_node("Relu", ["e"], ["r"]),
            helper.make_node("Gemm", ["r", "W"], ["h"]),
            helper.make_node("Relu", ["h"], ["hr"]),
            helper.make_node("Gemm", ["hr", "W2"], ["y"]),
        ],
        "table",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [
            numpy_helper.from_array(table, "T"),
            numpy_helper.from_array(rng.standard_normal((8, 6)).astype(np.float32), "W"),
            numpy_helper.from_array(rng.standard_normal((6, 3)).astype(np.float32), "W2"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    groups = onnxfold.analyze(model)
    table_group = next(g for g in groups if g.size == 8)
    assert [r.code for r in table_group.blocked] == ["nonfinite-weight"], table_group.blocked
    assert "weight T holds -inf" in table_group.blocked[0].message
    assert next(g for g in groups if g.size == 6).foldable
    finite = onnx.ModelProto()
    finite.CopyFrom(model)
    finite.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.nan_to_num(table, neginf=-5.0), "T"))
    assert next(g for g in onnxfold.analyze(finite) if g.size == 8).foldable
