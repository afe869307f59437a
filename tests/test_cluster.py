"""Clustering: counts, exact duplicates, determinism, and the large-problem paths."""

from __future__ import annotations

import numpy as np
import pytest

from onnxfold.folding import cluster
from onnxfold.folding.cluster import (
    MOST_ROUNDED_BEYOND,
    allocate,
    cluster_count,
    kmeans_labels,
    reduce_dims,
    widths,
)


def blobs(n_centers: int, per: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_centers, dim)) * 10
    truth = np.repeat(np.arange(n_centers), per)
    return centers[truth] + 0.01 * rng.standard_normal((len(truth), dim)), truth


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = {(int(x), int(y)) for x, y in zip(a, b, strict=True)}
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize(
    ("n", "r", "round_to", "k"),
    [
        (64, 0.5, 1, 32),
        (10, 0.01, 1, 9),
        (1, 0.5, 1, 1),
        (64, 0.0, 1, 64),
        (100, 0.3, 8, 72),
        (3, 0.99, 1, 1),
    ],
)
def test_cluster_count(n, r, round_to, k):
    assert cluster_count(n, r, round_to) == k


@pytest.mark.parametrize(
    ("n", "r", "k"),
    [
        (64, 0.3, 48),  # k0 = 45 → the nearest multiple of 8
        (512, 0.3, 360),  # k0 = 358
        (256, 0.3, 176),  # k0 = 179
        (64, 0.25, 48),  # k0 = 48 is already a multiple
        (40, 0.5, 24),  # k0 = 20, halfway between 16 and 24: the wider width
        (512, 0.005, 512),  # k0 = 509 is nearest to 512 = n: the group stays whole
        (512, 0.01, 504),  # k0 = 507 is nearer 504
        (80, 0.02, 80),  # k0 = 78: rounding to 72 would remove 10% where 2% was asked
        (20, 0.05, 20),  # k0 = 19 is nearer the whole group than 16
        (20, 0.2, 16),
        (64, 0.95, 8),  # k0 = 3: never below one multiple
        (358, 0.3, 248),  # a width that is no multiple of 8 folds to one (k0 = 251)
        (358, 0.001, 358),
        (358, 0.02, 352),  # k0 = 351
        (1000, 0.3, 704),  # k0 = 700
        (16, 0.1, 16),  # k0 = 14: nearer 16 than 8, the only multiple below it
        (16, 0.25, 16),  # 12 asked: 8 would take a quarter of the group past it, more than a tenth
        (16, 0.3, 16),  # CREPE-tiny's 16-channel groups went to 8, and the tracker kept 31% of its pitches
        (16, 0.4, 8),  # 9.6 asked: 8 is within a tenth of the group
        (24, 0.3, 16),  # 16.8 asked
        (40, 0.3, 32),  # 28 asked, halfway between 24 and 32: the wider width
        (12, 0.5, 6),  # narrower than 2·8: not rounded
        (12, 0.1, 11),
        (6, 0.5, 3),
        (15, 0.3, 10),
        (8, 0.3, 6),
        (358, 0.0, 358),  # sparsity 0 leaves every group as it is
        (64, 0.0, 64),
    ],
)
def test_cluster_count_rounds_to_eight(n, r, k):
    assert cluster_count(n, r, 8) == k


def test_round_to_one_is_the_unrounded_count():
    for n in (1, 2, 6, 11, 16, 45, 64, 358, 1000):
        for r in np.linspace(0.0, 0.99, 100):
            k0 = n if r <= 0 or n <= 1 else min(max(1, int(round(n * (1 - r)))), n - 1)
            assert cluster_count(n, float(r), 1) == k0, (n, r)


@pytest.mark.parametrize("m", [1, 2, 4, 8, 16, 32])
def test_rounded_count_is_monotone_and_on_its_grid(m):
    rs = np.concatenate([[0.0], np.geomspace(1e-4, 0.999, 400)])
    for n in list(range(2, 80)) + [100, 127, 128, 179, 256, 358, 512, 1000, 1001, 4096]:
        ks = [cluster_count(n, float(r), m) for r in rs]
        assert ks[0] == n
        assert np.all(np.diff(ks) <= 0), (n, m)  # non-increasing in the sparsity
        grid = widths(n, m)
        assert set(ks[1:]) <= set(grid) | {n}, (n, m)  # every positive sparsity lands on the grid
        if n < 2 * m or m == 1:
            assert n not in ks[1:]  # unrounded: a positive sparsity removes at least one channel
        for r, k in zip(
            rs[1:], ks[1:], strict=True
        ):  # rounding moves at most half a step from what was asked
            k0 = min(max(1, int(round(n * (1 - r)))), n - 1)
            # the multiple above where the nearest lies more than a tenth of the group below the ask
            assert abs(k - k0) <= m / 2 or k == m > k0 or 0 < k - k0 <= m, (n, m, r, k, k0)
            if n >= 2 * m > 2:  # a rounded group: at most a tenth of it past the asked width
                assert k >= n * (1 - r) - MOST_ROUNDED_BEYOND * n - 1e-9, (n, m, r, k)
        if n >= 2 * m > 2:
            assert all(w % m == 0 for w in grid) and grid[0] > n - 1 - m
        elif n > 1:
            assert grid == list(range(n - 1, 0, -1))  # narrow groups: every width is possible
        for w in grid:  # the search asks for a width by its sparsity 1 - w/n and gets exactly it
            assert cluster_count(n, 1.0 - w / n, m) == w, (n, m, w)


def test_duplicates_are_grouped_exactly_and_labels_are_canonical():
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((6, 20))
    order = [0, 3, 1, 0, 5, 2, 4, 1, 3, 2, 5, 4]
    labels = kmeans_labels(rows[order], 6, seed=0)
    first: dict[int, int] = {}  # canonical: clusters numbered in order of first appearance
    assert labels.tolist() == [first.setdefault(i, len(first)) for i in order]


def test_fewer_distinct_rows_than_k_split_duplicates_to_reach_k():
    x = np.repeat(np.eye(3), 4, axis=0)
    labels = kmeans_labels(x, 5, seed=0)
    assert labels.max() + 1 == 5
    for lab in range(5):  # every cluster still holds identical rows only
        assert len({tuple(r) for r in x[labels == lab]}) == 1


def test_same_seed_same_labels():
    x, _ = blobs(8, 6, 30)
    x = x + np.random.default_rng(1).standard_normal(x.shape)
    assert np.array_equal(kmeans_labels(x, 10, seed=3), kmeans_labels(x, 10, seed=3))


def test_reduce_dims_is_isometric_up_to_n_rows():
    x = np.random.default_rng(0).standard_normal((40, 900))
    e = reduce_dims(x, max_dim=64)
    assert e.shape[1] <= 40
    d_x = np.linalg.norm(x[:, None] - x[None], axis=-1)
    d_e = np.linalg.norm(e[:, None] - e[None], axis=-1)
    assert np.allclose(d_x, d_e, rtol=1e-8, atol=1e-8)


def test_allocate_is_proportional_and_bounded():
    shares = allocate(np.array([10, 30, 60, 1]), 50)
    assert shares.sum() == 50 and (shares >= 1).all() and (shares <= [10, 30, 60, 1]).all()
    # largest remainders by hand: shares 50/101·n = 4.95, 14.85, 29.70, 0.50 → floors (at least 1) 4, 14, 29, 1
    # = 48; the two missing go to the largest remainders 0.95 and 0.85 (the last part is full at 1)
    assert shares.tolist() == [5, 15, 29, 1]
    # and giving back: 10 clusters over parts of 1, 1, 1, 97 → the small parts keep their 1, the big one 7
    assert allocate(np.array([1, 1, 1, 97]), 10).tolist() == [1, 1, 1, 7]


def test_partitioned_kmeans_recovers_well_separated_clusters(monkeypatch):
    monkeypatch.setattr(cluster, "PARTITION", 40)
    monkeypatch.setattr(cluster, "WORK_BUDGET", 1.0)  # force the partitioned path
    x, truth = blobs(30, 8, 16)
    labels = kmeans_labels(x, 30, seed=0)
    assert labels.max() + 1 == 30
    assert same_partition(labels, truth)


def kmeans_objective(x: np.ndarray, labels: np.ndarray) -> float:
    return float(sum(((x[labels == j] - x[labels == j].mean(axis=0)) ** 2).sum() for j in np.unique(labels)))


def test_cut_merges_gives_exactly_k_clusters_even_with_tied_heights():
    x = np.repeat(np.eye(4), 2, axis=0)  # four pairs of identical rows: every pair merges at height 0
    for k in range(1, 9):
        labels = cluster.ward_labels(x + 0.0, k)
        assert labels.max() + 1 == k
        if k >= 4:  # an identical pair is never split while another cluster can merge at zero cost
            assert all(len({tuple(r) for r in x[labels == j]}) == 1 for j in range(k))


def test_ward_recovers_planted_clusters_and_is_deterministic():
    x, truth = blobs(12, 5, 40)
    labels = cluster.ward_labels(x, 12)
    assert same_partition(labels, truth)
    assert np.array_equal(labels, cluster.ward_labels(x, 12))


def test_ward_beats_or_matches_kmeans_objective_at_folding_widths():
    """At k = 50-70% of n (folding's regime) greedy merging should not lose to restarted k-means."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 24)) @ rng.standard_normal((24, 24))
    for k in (150, 210):
        ward = kmeans_objective(x, kmeans_labels(x, k, algorithm="ward"))
        km = kmeans_objective(x, kmeans_labels(x, k, algorithm="kmeans"))
        assert ward <= km * 1.02, (k, ward, km)


def test_partitioned_ward_keeps_k_and_duplicates(monkeypatch):
    monkeypatch.setattr(cluster, "WARD_MAX", 50)
    x, truth = blobs(40, 4, 16)
    labels = kmeans_labels(x, 40, algorithm="ward")
    assert labels.max() + 1 == 40 and same_partition(labels, truth)


def test_pairwise_distances_match_scipy():
    from scipy.spatial.distance import pdist

    x = np.random.default_rng(0).standard_normal((30, 7))
    assert np.allclose(cluster.pairwise_distances(x), pdist(x), atol=1e-10)


def test_unknown_algorithm_is_refused():
    with pytest.raises(ValueError, match="unknown clustering algorithm"):
        kmeans_labels(np.eye(5), 2, algorithm="spectral")


def test_a_remembered_reduction_and_merge_tree_give_the_labels_a_fresh_one_gives(monkeypatch):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 700))  # n and d above MAX_DIM: principal components
    fresh = {}
    monkeypatch.setattr(cluster, "_memo", type(cluster._memo)())  # whatever earlier tests kept: gone
    monkeypatch.setattr(cluster, "MEMO_BYTES", 0)  # nothing kept
    for k in (300, 450):
        fresh[k] = kmeans_labels(x, k, algorithm="ward")
    emb = reduce_dims(x)
    assert not cluster._memo
    monkeypatch.setattr(cluster, "MEMO_BYTES", 256 * 2**20)
    monkeypatch.setattr(cluster, "_memo", type(cluster._memo)())
    for k in (300, 450, 300):
        np.testing.assert_array_equal(kmeans_labels(x, k, algorithm="ward"), fresh[k])
    kept = reduce_dims(x)
    assert kept is reduce_dims(x) and not kept.flags.writeable  # one result, read-only
    np.testing.assert_array_equal(kept, emb)
    assert {tag[0] for tag in cluster._memo} == {"reduce", "ward"}
    other = x.copy()
    other[0, 0] += 1.0  # other bytes: computed anew
    assert reduce_dims(other) is not kept


def test_kmeans_labels_are_remembered_per_features_and_width(monkeypatch):
    """A search plans the same group at the same width in many candidates: k-means runs once per
    (features, k, seed), and the kept labels are the ones a fresh run gives."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 12))
    monkeypatch.setattr(cluster, "_memo", type(cluster._memo)())
    calls = []
    solver = cluster._kmeans

    def counted(*args, **kwargs):
        calls.append(args[1])
        return solver(*args, **kwargs)

    monkeypatch.setattr(cluster, "_kmeans", counted)
    first = kmeans_labels(x, 10, algorithm="kmeans")
    again = kmeans_labels(x, 10, algorithm="kmeans")
    np.testing.assert_array_equal(first, again)
    assert calls == [10]
    kmeans_labels(x, 12, algorithm="kmeans")
    kmeans_labels(x, 10, seed=1, algorithm="kmeans")
    assert calls == [10, 12, 10]  # another width or seed: solved anew
    monkeypatch.setattr(cluster, "_memo", type(cluster._memo)())
    np.testing.assert_array_equal(kmeans_labels(x, 10, algorithm="kmeans"), first)
