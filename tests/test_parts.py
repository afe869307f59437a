"""Groups cut into equal parts (a grouped Conv's convolution groups): k per part, clustering per part,
split members in the features and in the rewrite. The graph-level oracles are in test_grouped_conv.py."""

from __future__ import annotations

import numpy as np
import pytest

from onnxfold.analysis.groups import AVERAGE, SUM, ChannelGroup, Member
from onnxfold.folding.apply import plan_folds
from onnxfold.folding.cluster import cluster_count, kmeans_labels, labels_in_parts, part_cluster_count
from onnxfold.folding.features import feature_width, group_features, member_matrix
from onnxfold.folding.prune import magnitude_labels
from onnxfold.folding.rewrite import SliceEdit, apply_edits


@pytest.mark.parametrize(
    ("n", "r", "parts", "round_to", "k"),
    [
        (16, 0.5, 4, 1, 8),  # 4 → 2 per part
        (24, 0.3, 3, 1, 18),  # 8 → round(5.6) = 6 per part
        (8, 0.5, 8, 1, 8),  # one channel per part: nothing to merge
        (32, 0.9, 4, 1, 4),  # at least one per part
        (64, 0.5, 4, 8, 32),  # 16 → 8 per part; 32 is a multiple of 8
        (48, 0.3, 6, 4, 36),  # 8 → 5.6 → a multiple of lcm(4, 6)/6 = 2 → 6 per part, k = 36 = 9·4
        (96, 0.5, 32, 8, 64),  # 3 → round(1.5) = 2 per part, step lcm(8, 32)/32 = 1: k = 64
        (12, 0.0, 3, 1, 12),
    ],
)
def test_part_cluster_count(n, r, parts, round_to, k):
    got = part_cluster_count(n, r, parts, round_to)
    assert got == k
    assert got % parts == 0 and (round_to == 1 or got % round_to == 0 or got == n)


def test_part_cluster_count_without_parts_is_cluster_count():
    for n in (1, 5, 16, 100):
        for r in (0.0, 0.1, 0.3, 0.5, 0.9):
            for round_to in (1, 4, 8):
                assert part_cluster_count(n, r, 1, round_to) == cluster_count(n, r, round_to)


def test_labels_never_cross_parts_and_every_part_keeps_k_over_parts():
    rng = np.random.default_rng(0)
    # the two nearest rows of every part sit in *another* part: a global clustering would pair across
    x = rng.standard_normal((24, 5))
    x[6:12] = x[0:6] + 1e-3
    labels = labels_in_parts(x, 12, 4, lambda rows, k: kmeans_labels(rows, k, seed=0))
    assert np.array_equal(kmeans_labels(x, 12, seed=0)[[0, 6]], [0, 0])  # the global one does pair them
    for p in range(4):
        part = labels[p * 6 : (p + 1) * 6]
        assert set(part.tolist()) == set(range(3 * p, 3 * p + 3))
    # labels are canonical over the whole group: part by part, first appearance
    assert labels[0] == 0 and np.all(np.diff(np.maximum.accumulate(labels)) <= 1)


def test_labels_in_parts_tops_up_a_part_left_with_fewer_clusters():
    x = np.ones((8, 3))  # each part holds identical rows: a solver may return one cluster
    labels = labels_in_parts(x, 4, 2, lambda rows, k: np.zeros(len(rows), dtype=np.int64))
    assert sorted(set(labels[:4].tolist())) == [0, 1] and sorted(set(labels[4:].tolist())) == [2, 3]


def test_labels_in_parts_keeps_dropped_channels_dropped():
    x = np.arange(12, dtype=float)[:, None]
    labels = labels_in_parts(x, 6, 3, lambda rows, k: magnitude_labels(rows, k, "l1"))
    assert labels.tolist() == [-1, -1, 0, 1, -1, -1, 2, 3, -1, -1, 4, 5]


def test_labels_in_parts_rejects_unequal_parts():
    with pytest.raises(ValueError, match="equal parts"):
        labels_in_parts(np.zeros((10, 2)), 4, 3, lambda rows, k: np.arange(len(rows)))


def grouped_weight(rng, c_out=8, per_group=3, group=4):
    return rng.standard_normal((c_out, per_group, 2, 2))


def test_split_member_features_read_each_channel_in_its_own_slab():
    w = grouped_weight(np.random.default_rng(1))
    m = Member("w", 1, SUM, split=4, split_axis=0)
    feats = member_matrix(m, w, 12)
    assert feats.shape == (12, 2 * 2 * 2) and feature_width(m, lambda _: w) == 8
    for c in range(12):  # channel c = 3·g + j is column j of the rows of convolution group g
        g, j = divmod(c, 3)
        np.testing.assert_array_equal(feats[c], w[2 * g : 2 * g + 2, j].reshape(-1))


def test_split_edit_sums_columns_within_each_slab():
    w = grouped_weight(np.random.default_rng(2))
    labels = np.array([0, 1, 0, 2, 3, 3, 4, 4, 5, 6, 7, 6])  # 2 clusters per part of 3
    out = apply_edits(w, [SliceEdit(1, 0, 1, SUM, labels, 8, split=4, split_axis=0)])
    assert out.shape == (8, 2, 2, 2)
    for g in range(4):
        local = labels[3 * g : 3 * g + 3] - 2 * g
        for j in range(2):
            want = w[2 * g : 2 * g + 2][:, local == j].sum(axis=1)
            np.testing.assert_allclose(out[2 * g : 2 * g + 2, j], want)


def test_split_edit_commutes_with_the_row_edit():
    w = grouped_weight(np.random.default_rng(3))
    cols = SliceEdit(1, 0, 1, SUM, np.array([0, 0, 1, 2, 3, 2, 4, 5, 5, 7, 6, 6]), 8, 4, 0)
    rows = SliceEdit(0, 0, 1, AVERAGE, np.array([0, 0, 1, 1, 2, 2, 3, 3]), 4)  # 1 row per part of 2
    a = apply_edits(apply_edits(w, [rows]), [cols])
    b = apply_edits(apply_edits(w, [cols]), [rows])
    np.testing.assert_allclose(a, b)
    np.testing.assert_allclose(apply_edits(w, [cols, rows]), a)
    assert a.shape == (4, 2, 2, 2)


def test_split_edit_refuses_labels_that_leave_their_part():
    w = grouped_weight(np.random.default_rng(4))
    crossing = np.array([0, 1, 2, 1, 2, 3, 4, 5, 4, 6, 7, 6])  # channel 2 (part 0) joins part 1's cluster
    with pytest.raises(ValueError, match="leave their part"):
        apply_edits(w, [SliceEdit(1, 0, 1, SUM, crossing, 8, split=4, split_axis=0)])


def test_plan_folds_clusters_within_parts():
    rng = np.random.default_rng(5)
    values = {"w": rng.standard_normal((16, 6)), "v": rng.standard_normal((5, 16))}
    members = [Member("w", 0, AVERAGE, kind="weight"), Member("v", 1, SUM, kind="weight")]
    group = ChannelGroup("g", 16, members, ["p"], ["c"], parts=4)
    for method in ("fold", "l1"):
        (plan,) = plan_folds([group], values.__getitem__, 0.5, method=method)
        assert plan.status == "folded" and plan.k == 8
        for p in range(4):
            part = plan.labels[4 * p : 4 * p + 4]
            assert set(part[part >= 0].tolist()) == {2 * p, 2 * p + 1}
    features = group_features(group, values.__getitem__)
    assert features.shape == (16, 11)


def test_auto_clusters_parts_with_ward_and_an_explicit_solver_is_kept():
    rng = np.random.default_rng(1)
    values = {"w": rng.standard_normal((64, 9)), "v": rng.standard_normal((5, 64))}
    members = [Member("w", 0, AVERAGE, kind="weight"), Member("v", 1, SUM, kind="weight")]
    group = ChannelGroup("g", 64, members, ["p"], ["c"], parts=4)
    feats = group_features(group, values.__getitem__)
    got = {}
    for cluster, solver in (("auto", "ward"), ("kmeans", "kmeans"), ("ward", "ward")):
        (plan,) = plan_folds([group], values.__getitem__, 0.5, cluster=cluster)
        want = labels_in_parts(feats, plan.k, 4, lambda x, k, a=solver: kmeans_labels(x, k, algorithm=a))
        assert np.array_equal(plan.labels, want), cluster
        got[cluster] = plan.labels
    assert not np.array_equal(got["auto"], got["kmeans"])  # the two solvers disagree here


def test_part_counts_follow_the_rounding_rules_of_plain_groups() -> None:
    """With the default round of 8: a group narrower than 16 is not rounded; a rounded part keeps
    the rounded width nearest to the one asked for, or stays whole where that is nearer (a tie goes
    to the wider), never removing a part's channels down to nothing."""
    import math

    from onnxfold.folding.cluster import cluster_count, part_cluster_count

    assert part_cluster_count(12, 0.5, 2, 8) == 6  # narrow: 3 per part, as asked
    assert part_cluster_count(16, 0.5, 4, 8) == 8  # 2 per part: a multiple of lcm(8, 4)/4 = 2
    assert part_cluster_count(16, 0.05, 4, 8) == 16  # 4 → 3.8: whole, not halved
    for n, parts in ((16, 4), (32, 4), (64, 8), (96, 3)):
        step = math.lcm(8, parts) // parts
        for r in (0.05, 0.3, 0.5, 0.7):
            k = part_cluster_count(n, r, parts, 8)
            asked = cluster_count(n // parts, r)
            assert k <= n and k % parts == 0 and k // parts >= 1, (n, parts, r, k)
            assert k % 8 == 0 or k == n or k // parts == asked, (n, parts, r, k)
            assert abs(k // parts - asked) <= step / 2 or k // parts == step > asked, (n, parts, r, k)
            assert r < 0.5 or k < n, (n, parts, r, k)


def test_rows_holding_infinities_are_compared_and_the_search_ends() -> None:
    """A producer row holding -inf (an attention mask's fill among a group's per-channel constants, in
    chython's reaction mapper) made the duplicate search loop forever: inf − inf is NaN, so no row,
    not even the first, was ever close to the first. Equal infinities now compare equal, and a row
    with NaN is a channel of its own; run in a child process, so that a regression fails, not hangs."""
    import subprocess
    import sys

    code = (
        "import numpy as np\n"
        "from onnxfold.folding.features import same_activations as same\n"
        "inf = np.inf\n"
        "print(same([np.array([[-inf, 1.0, 2.0], [-inf, 1.0, 2.0], [-inf, 3.0, 4.0]])]).tolist())\n"
        "print(same([np.array([[np.nan, 1.0], [np.nan, 1.0]])]))\n"
        "ids = same([np.array([[inf, 1.0], [-inf, 1.0], [inf, 1.0 + 1e-12]])])\n"
        "print(ids[0] == ids[2] != ids[1])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:3] == ["[0, 0, 1]", "None", "True"], proc.stdout
