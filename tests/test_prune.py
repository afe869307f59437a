"""Baselines through the fold machinery (issue: repair modes and baselines): structured L1/L2 magnitude
pruning with dropped channels (labels −1), and the clustering inputs ``features`` = raw/blocknorm/fused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import onnxfold
from onnxfold.analysis import analyze_graph
from onnxfold.analysis.groups import AVERAGE, SHAPE, SUM
from onnxfold.folding.features import group_features
from onnxfold.folding.prune import channel_scores, magnitude_labels
from onnxfold.folding.rewrite import SliceEdit, apply_edits, merge_rows
from onnxfold.ir.model import model_from_proto, to_model_proto
from onnxfold.runtime.session import make_session

ZOO = Path(__file__).resolve().parents[1] / "models" / "zoo"
EPS = 1e-5

# conv1 (2 → 4 channels, 1×1) rows, bias and conv2 (4 → 2) columns. Feature vector of channel c =
# [W1[c] | b1[c] | (γ[c], β[c]) | W2[:, c]]; the norms are built so that L1 and L2 disagree:
#   L1 ≈ [3.01, 4.02, 0.33, 2.54] → keeps {1, 0};  L2 ≈ [3.0, 2.0, 0.17, 2.06] → keeps {0, 3}.
W1 = np.array([[3.0, 0.0], [1.0, 1.0], [0.1, 0.1], [2.0, 0.0]], np.float32)
B1 = np.array([0.01, 0.02, 0.03, 0.04], np.float32)
W2 = np.array([[0.0, 1.0, 0.1, 0.0], [0.0, 1.0, 0.0, 0.5]], np.float32)
B2 = np.array([0.5, -0.5], np.float32)


def prune_model(bn: bool) -> onnx.ModelProto:
    """x[N,2,3,3] → conv1 → [bn1] → Relu → conv2 → GAP → Flatten → y[N,2]."""
    init = {"w1": W1[:, :, None, None], "b1": B1, "w2": W2[:, :, None, None], "b2": B2}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1")]
    act = "c1"
    if bn:
        init.update(
            gamma=np.ones(4, np.float32),
            beta=np.zeros(4, np.float32),
            mean=np.array([0.1, 0.2, 0.3, 0.4], np.float32),
            var=np.array([1.0, 2.0, 3.0, 4.0], np.float32),
        )
        nodes.append(
            helper.make_node(
                "BatchNormalization", ["c1", "gamma", "beta", "mean", "var"], ["n1"], name="bn1", epsilon=EPS
            )
        )
        act = "n1"
    nodes += [
        helper.make_node("Relu", [act], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2"),
        helper.make_node("GlobalAveragePool", ["c2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["y"], name="flatten"),
    ]
    graph = helper.make_graph(
        nodes,
        "prune",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 2, 3, 3])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in init.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def weights(model) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in to_model_proto(model).graph.initializer}


def reference(x: np.ndarray, keep: list[int], bn: bool) -> np.ndarray:
    """The compact network with only channels ``keep`` of conv1, computed in numpy."""
    h = np.einsum("oc,nchw->nohw", W1[keep].astype(np.float64), x) + B1[keep, None, None]
    if bn:
        mean, var = np.array([0.1, 0.2, 0.3, 0.4])[keep], np.array([1.0, 2.0, 3.0, 4.0])[keep]
        h = (h - mean[:, None, None]) / np.sqrt(var[:, None, None] + EPS)
    z = np.einsum("oc,nchw->nohw", W2[:, keep].astype(np.float64), np.maximum(h, 0.0)) + B2[:, None, None]
    return z.mean(axis=(2, 3))


def test_magnitude_labels_keep_the_largest_in_order() -> None:
    feats = np.array([[3.0, 0.0], [1.0, 1.0], [0.1, 0.1], [2.0, 0.5]])
    np.testing.assert_allclose(channel_scores(feats, "l1"), [3.0, 2.0, 0.2, 2.5])
    assert magnitude_labels(feats, 2, "l1").tolist() == [0, -1, -1, 1]
    assert magnitude_labels(feats, 2, "l2").tolist() == [0, -1, -1, 1]
    assert magnitude_labels(feats, 1, "l1").tolist() == [0, -1, -1, -1]
    assert magnitude_labels(np.ones((3, 2)), 2, "l2").tolist() == [0, 1, -1]  # ties: lower index wins
    with pytest.raises(ValueError, match="unknown pruning norm"):
        channel_scores(feats, "l3")


def test_dropped_labels_remove_entries_for_every_role() -> None:
    x = np.arange(12.0).reshape(4, 3)
    labels = np.array([0, -1, 1, -1])
    np.testing.assert_array_equal(merge_rows(x, labels, 2, AVERAGE), x[[0, 2]])
    np.testing.assert_array_equal(merge_rows(x, labels, 2, SUM), x[[0, 2]])
    w = np.arange(24.0).reshape(2, 12)  # a Flatten consumer: 4 channels × block 3 on axis 1, offset 0
    out = apply_edits(w, [SliceEdit(1, 0, 3, SUM, labels, 2)])
    np.testing.assert_array_equal(out, w[:, [0, 1, 2, 6, 7, 8]])
    shape = apply_edits(np.array([0, 12]), [SliceEdit(0, 1, 3, SHAPE, labels, 2)])
    assert shape.tolist() == [0, 6]


@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize(
    ("method", "sparsity", "keep"),
    [("l1", 0.5, [0, 1]), ("l2", 0.5, [0, 3]), ("l1", 0.75, [1]), ("l2", 0.75, [0])],
)
def test_pruning_keeps_the_right_channels(method: str, sparsity: float, keep: list[int], bn: bool) -> None:
    proto = prune_model(bn)
    model, report = onnxfold.fold(proto, sparsity, validate=False, method=method)
    (plan,) = [p for p in report.plans if p.status == "folded"]
    assert plan.method == method and plan.k == len(keep)
    assert np.flatnonzero(plan.labels >= 0).tolist() == keep
    w = weights(model)
    np.testing.assert_array_equal(w["w1"][:, :, 0, 0], W1[keep])  # producer rows removed, order kept
    np.testing.assert_array_equal(w["b1"], B1[keep])
    np.testing.assert_array_equal(w["w2"][:, :, 0, 0], W2[:, keep])  # consumer columns removed, not summed
    if bn:
        node = next(n for n in model.graph.nodes if n.op == "BatchNormalization")
        mean, var = (np.asarray(t.values) for t in node.inputs[3:5])
        np.testing.assert_array_equal(mean, np.array([0.1, 0.2, 0.3, 0.4], np.float32)[keep])
        np.testing.assert_array_equal(var, np.array([1.0, 2.0, 3.0, 4.0], np.float32)[keep])
    x = np.random.default_rng(0).standard_normal((5, 2, 3, 3)).astype(np.float32)
    got = make_session(to_model_proto(model).SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )[0]
    np.testing.assert_allclose(got, reference(x.astype(np.float64), keep, bn), rtol=1e-5, atol=1e-6)


def test_pruning_a_zoo_model_matches_folding_widths() -> None:
    path = ZOO / "vgg11bn.onnx"
    _, folded = onnxfold.fold(path, 0.5, validate=False, n_init=1)
    for method in ("l1", "l2"):
        _, pruned = onnxfold.fold(path, 0.5, validate=False, method=method)
        assert [p.k for p in pruned.plans] == [p.k for p in folded.plans]
        assert pruned.after.params == folded.after.params < 0.4 * pruned.before.params
        assert all(p.method == method for p in pruned.plans if p.status == "folded")


# --------------------------------------------------------------------------- what is clustered


def test_features_raw_blocknorm_fused() -> None:
    graph = model_from_proto(prune_model(bn=True)).graph
    (group,) = [g for g in analyze_graph(graph) if g.foldable]
    tensors = graph.tensors()

    def values(name: str) -> np.ndarray:
        return np.asarray(tensors[name].values)

    raw = group_features(group, values, "raw")
    # [W1 row (2) | b1 | γ | β | W2 column (2)]
    np.testing.assert_allclose(
        raw, np.hstack([W1, B1[:, None], np.ones((4, 1)), np.zeros((4, 1)), W2.T]), rtol=1e-6
    )
    blocks = group_features(group, values, "blocknorm")
    for lo, hi in ((0, 2), (2, 3), (3, 4), (5, 7)):
        assert np.linalg.norm(blocks[:, lo:hi]) == pytest.approx(1.0)
    np.testing.assert_array_equal(blocks[:, 4], 0.0)  # an all-zero block (β) stays zero
    fused = group_features(group, values, "fused", graph)
    sigma = np.sqrt(np.array([1.0, 2.0, 3.0, 4.0]) + EPS)
    np.testing.assert_allclose(fused[:, :2], W1 / sigma[:, None], rtol=1e-6)
    np.testing.assert_allclose(fused[:, 2], (B1 - np.array([0.1, 0.2, 0.3, 0.4])) / sigma, rtol=1e-5)
    np.testing.assert_allclose(fused[:, 3:], raw[:, 3:])
    with pytest.raises(ValueError, match="unknown features"):
        group_features(group, values, "pca")


@pytest.mark.parametrize("features", ["blocknorm", "fused"])
def test_features_and_n_init_reach_the_fold(features: str, monkeypatch) -> None:
    import sklearn.cluster

    restarts = []

    class SpyKMeans(sklearn.cluster.KMeans):
        def fit(self, x, *args, **kwargs):
            restarts.append(self.n_init)
            return super().fit(x, *args, **kwargs)

    monkeypatch.setattr(sklearn.cluster, "KMeans", SpyKMeans)
    from onnxfold.folding import cluster

    monkeypatch.setattr(cluster, "_memo", type(cluster._memo)())  # no labels kept from earlier folds
    proto = prune_model(bn=True)
    model, report = onnxfold.fold(proto, 0.5, validate=False, features=features, n_init=3)
    assert restarts == [3]  # the one group's clustering ran with the requested restarts
    (plan,) = [p for p in report.plans if p.status == "folded"]
    assert plan.k == 2 and report.passes[1].stats["features"] == features
    assert weights(model)["w1"].shape == (2, 2, 1, 1)


def _objective(x: np.ndarray, labels: np.ndarray) -> float:
    """The k-means objective of a labelling: Σ_c Σ_{i ∈ c} ‖x_i − mean_c‖² (the means are its best centres)."""
    return float(sum(((x[labels == c] - x[labels == c].mean(0)) ** 2).sum() for c in np.unique(labels)))


def test_more_restarts_never_give_a_worse_kmeans_objective() -> None:
    """With a fixed seed, restart 1 of ``n_init=10`` is the single run of ``n_init=1`` (same random stream) and
    the best restart is kept: the objective can only go down, and on some data it does."""
    from onnxfold.folding.cluster import kmeans_labels

    better = 0
    for seed in range(12):
        x = np.random.default_rng(seed).standard_normal((40, 3))
        one = _objective(x, kmeans_labels(x, 6, seed=seed, n_init=1, algorithm="kmeans"))
        ten = _objective(x, kmeans_labels(x, 6, seed=seed, n_init=10, algorithm="kmeans"))
        assert ten <= one * (1 + 1e-9), (seed, one, ten)
        better += ten < one * (1 - 1e-6)
    assert better > 0
