"""Clustering of channel feature vectors: features in, assignment out. No graph knowledge.

Folding channel rows W (n × d) into k clusters minimises ‖W − C W‖²_F with the projector
C = U(UᵀU)⁻¹Uᵀ, which is exactly the k-means objective on the rows (docs/method.md §1.1). The
solvers, all deterministic for a given input and seed (docs/method.md §1.4):

* ``kmeans``: seeded scikit-learn k-means (k-means++ init, several restarts, best inertia kept;
  partitioned when one Lloyd pass is expensive, :func:`partitioned_kmeans`);
* ``ward``: Ward's agglomerative clustering, which merges, bottom up, the two clusters whose
  merge raises the objective least, Δ(a, b) = |a|·|b|/(|a| + |b|)·‖c_a − c_b‖², until k are left.
  Folding keeps k = 50–90% of n, where almost every cluster is a pair or a singleton: there,
  greedy merging beats k-means++ seeding plus Lloyd on the objective itself (on the MLP groups of
  the pretrained all-MiniLM-L6-v2, 7–10% lower objective than k-means with 10 restarts on the
  unreduced features, docs/benchmarks.md) at a fraction of the cost, and it needs no restarts;
* ``auto`` (the default): k-means while one Lloyd pass costs at most :data:`WORK_BUDGET`
  multiply-adds, Ward above that. So "k-means" in names such as :func:`kmeans_labels` means the
  clustering step, whichever solver runs;
* ``kmeans-full``: k-means on the unreduced features with every restart (the slow reference).

A group cut into parts (:func:`labels_in_parts`) is clustered part by part, with Ward under ``auto``
(:data:`PARTS_ALGORITHM`).

Before ``kmeans``/``ward``/``auto``, rows wider than :data:`MAX_DIM` are reduced: with n ≤ MAX_DIM
they are expressed in an orthonormal basis of their centred span (an exact isometry: squared
distances are unchanged), which makes wide consumers (e.g. a Flatten→Gemm with thousands of
columns per channel) cheap; with n > MAX_DIM they are projected on their top MAX_DIM principal
components (a random projection for huge matrices), which is approximate.
"""

from __future__ import annotations

import hashlib
import math
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from onnxfold.report.timing import step

#: The fold's default ``round_to``: folded widths are multiples of 8, which onnxruntime's CPU
#: convolutions (blocked NCHWc layouts) and most GEMM kernels handle on their fast paths.
DEFAULT_ROUND_TO = 8


def rounds(n: int, round_to: int) -> bool:
    """Whether a group of ``n`` channels gets rounded widths: only when it is at least two multiples
    of ``round_to`` wide (n ≥ 2m), so that a narrower group still folds to any width it is asked for."""
    return round_to > 1 and n >= 2 * round_to


def cluster_count(n: int, sparsity: float, round_to: int = 1) -> int:
    """The folded width k of a group of ``n`` channels at ``sparsity`` r, with widths rounded to a
    multiple of m = ``round_to``.

    Unrounded (m = 1, or a narrow group): k₀ = max(1, round(n·(1 − r))), at most n − 1 when r > 0,
    so any positive sparsity removes at least one channel; r = 0 (or n ≤ 1) leaves the group at n.

    Rounded, for groups with n ≥ 2m (:func:`rounds`): k is the multiple of m nearest to k₀ (halves go
    up, to the wider width) from m to m·⌊(n − 1)/m⌋, the widest multiple below n, unless the asked
    width n·(1 − r) is strictly nearer to n itself: then the group stays whole. So:

    * k is a multiple of m or n: a group whose width n is not a multiple of m (say 358) folds to one
      that is (352, 344, …);
    * |k − k₀| ≤ m/2 except at the bottom, where a large r never goes below m (n = 64, r = 0.95 → 8,
      not 3), and where the multiple above is taken (below: up to m wider);
    * rounding removes at most a tenth of the group beyond the asked width (:data:`MOST_ROUNDED_BEYOND`):
      n = 16 at r = 0.3 (11.2 asked) stays 16 rather than 8, which removed half of every such group;
    * a small r whose asked width is nearer n than the widest multiple below it leaves the group whole
      (n = 16, r = 0.1 → 16; n = 512, r = 0.005 → 512): rounding removes no more than about m/2
      channels beyond those asked for, so asking for 5% of a model of 16-channel groups does not
      remove half of every group (it did before: 16 → 8);
    * groups narrower than 2m (n = 6, 12 or 15 with m = 8) are not rounded: the only multiple of m
      below them is m itself, and forcing every sparsity onto it would remove up to half the
      channels of a group asked for 10%, or refuse most of a 90% fold.

    k is non-increasing in r for every n and m: k₀ and n·(1 − r) are, the rounding of k₀ is
    non-decreasing in k₀, and the group stays whole exactly when n·(1 − r) is above a fixed point.
    :func:`widths` lists every value k takes.
    """
    if n <= 1 or sparsity <= 0:
        return n
    k = max(1, int(round(n * (1.0 - sparsity))))
    k = min(k, n - 1)
    if rounds(n, round_to):
        k = _nearest_step(k, round_to, n, n * (1.0 - sparsity))
    return k


#: rounding takes a group at most this share of its width below the asked width; a nearest multiple
#: further below gives way to the next one up (16-channel groups at ``-s 0.3`` went to 8, half of each:
#: CREPE-tiny kept 31% of its pitches, a RetinaFace-style plate detector found no plate)
MOST_ROUNDED_BEYOND = 0.1


def _nearest_step(k: int, step: int, whole: int, target: float) -> int:
    """The multiple of ``step`` nearest to k (ties to the wider) from ``step`` up to the widest below
    ``whole``, or ``whole`` itself where the asked width ``target`` (n·(1 − r), unrounded) is
    strictly nearer to it; where that multiple lies more than :data:`MOST_ROUNDED_BEYOND` · ``whole``
    below ``target``, the narrowest width of those (multiples, ``whole``) at or above ``target``."""
    widest = (whole - 1) // step * step
    if whole - target < target - widest:
        return whole
    k = min(max(step, (2 * k + step) // (2 * step) * step), widest)  # m·⌊k/m + ½⌋, clipped
    if k < target - MOST_ROUNDED_BEYOND * whole:
        up = int(np.ceil(target / step - 1e-9)) * step
        return up if up <= widest else whole
    return k


def widths(n: int, round_to: int = 1) -> list[int]:
    """Every width below n that :func:`cluster_count` gives a group of ``n`` channels at a sparsity in
    (0, 1), widest first: the multiples of ``round_to`` below n when the group is rounded, else
    n − 1, …, 1 (a rounded group may also stay whole at a small sparsity).
    For each w of them, ``cluster_count(n, 1 − w/n, round_to) == w``."""
    if n <= 1:
        return []
    if rounds(n, round_to):
        return list(range((n - 1) // round_to * round_to, 0, -round_to))
    return list(range(n - 1, 0, -1))


def part_cluster_count(n: int, sparsity: float, parts: int, round_to: int = 1) -> int:
    """k for a group of n units cut into ``parts`` equal parts that each keep k/parts clusters (the
    convolution groups of a grouped Conv; ``parts`` 1: :func:`cluster_count`): k/parts is
    :func:`cluster_count` of one part. With
    round_to > 1, k must be a multiple of both round_to and parts, so k/parts is rounded to a multiple
    of lcm(round_to, parts)/parts, or left whole, as :func:`cluster_count` rounds; as there, a group
    narrower than 2·round_to (:func:`rounds`) is not rounded."""
    if parts <= 1:
        return cluster_count(n, sparsity, round_to)
    size = n // parts
    per = cluster_count(size, sparsity)
    step = math.lcm(max(round_to, 1), parts) // parts
    if rounds(n, round_to) and step > 1 and size > step and per < size:
        per = _nearest_step(per, step, size, size * (1.0 - sparsity))
    return per * parts


def labels_in_parts(
    features: np.ndarray, k: int, parts: int, solve: Callable[[np.ndarray, int], np.ndarray]
) -> np.ndarray:
    """Cluster each of ``parts`` equal contiguous row ranges of ``features`` on its own with
    ``solve(rows, k/parts)``; part p's labels are offset by p·k/parts, so they never meet another
    part's and the merged units of part p come out as the p-th block of k/parts (a dropped row, −1,
    stays −1). A part that the solver leaves with fewer than k/parts clusters is split up to that
    count (:func:`split_to_count`): every part must keep exactly k/parts."""
    n = len(features)
    if parts < 1 or n % parts or k % parts:
        raise ValueError(f"{n} rows and k = {k} cannot be cut into {parts} equal parts")
    size, per = n // parts, k // parts
    labels = np.empty(n, dtype=np.int64)
    for p in range(parts):
        part = np.asarray(solve(features[p * size : (p + 1) * size], per), dtype=np.int64)
        if (part >= 0).all() and int(part.max()) + 1 < per:
            part = split_to_count(canonical_labels(part), per)
        labels[p * size : (p + 1) * size] = np.where(part >= 0, part + p * per, -1)
    return labels


def isometric_embedding(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` in an orthonormal basis of their (centred) span: same pairwise distances, ≤ n columns."""
    n, d = x.shape
    if d <= n:
        return x
    centred = x - x.mean(axis=0, keepdims=True)
    gram = centred @ centred.T
    vals, vecs = np.linalg.eigh(gram)
    keep = vals > vals.max(initial=0.0) * 1e-12
    return vecs[:, keep] * np.sqrt(vals[keep])


def canonical_labels(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters by first appearance, so cluster j's lowest channel precedes cluster j+1's."""
    mapping: dict[int, int] = {}
    out = np.empty(len(labels), dtype=np.int64)
    for i, lab in enumerate(labels.tolist()):
        out[i] = mapping.setdefault(lab, len(mapping))
    return out


def duplicate_ids(x: np.ndarray) -> np.ndarray:
    """Id per row such that rows with identical bytes share an id (ids in first-appearance order)."""
    seen: dict[bytes, int] = {}
    ids = np.empty(len(x), dtype=np.int64)
    for i, row in enumerate(np.ascontiguousarray(x)):
        ids[i] = seen.setdefault(hashlib.blake2b(row.tobytes(), digest_size=20).digest(), len(seen))
    return ids


def split_to_count(labels: np.ndarray, k: int) -> np.ndarray:
    """Split the largest clusters (moving their last member out) until there are exactly k.

    Used when there are fewer distinct rows than k: splitting identical rows keeps the fold exact.
    """
    labels = labels.copy()
    count = int(labels.max()) + 1 if len(labels) else 0
    while count < k:
        sizes = np.bincount(labels, minlength=count)
        big = int(np.argmax(sizes))
        if sizes[big] <= 1:
            break
        labels[np.nonzero(labels == big)[0][-1]] = count
        count += 1
    return canonical_labels(labels)


#: above this many dimensions, rows are projected onto their top principal components
MAX_DIM = 512
#: n·k·d multiply-adds of one Lloyd pass above which ``auto`` uses Ward and ``kmeans`` a partitioned k-means
WORK_BUDGET = 4e8
#: rows per partition of the partitioned k-means
PARTITION = 512
#: feature matrices with more entries than this are randomly projected instead of PCA-reduced
RANDOM_PROJECTION_ABOVE = 2e8
#: feature matrices with more entries than this are kept and reduced in float32 (fewer power iterations):
#: a 7B MLP group (11008 × 12288) takes 0.5 GB instead of 1.1 GB
FLOAT32_ABOVE = 5e7
#: rows above which a Ward problem is split by a coarse k-means first (memory and time grow as n²)
WARD_MAX = 4096
ALGORITHMS = ("auto", "kmeans", "ward", "kmeans-full")
#: the solver ``auto`` uses for each part of a group cut into parts (a grouped Conv's convolution groups):
#: many tiny problems (RegNetX: ~800 parts of 8 channels), where k-means' 10 k-means++ restarts cost
#: ~20 ms each and Ward's merges well under 1 ms, at an objective within 0.1% of k-means or up to 2%
#: below it (RegNetX-200MF, ResNeXt-50 at sparsity 0.3 and 0.5, docs/benchmarks.md)
PARTS_ALGORITHM = "ward"


#: bytes of results :func:`remembered` keeps (oldest dropped first)
MEMO_BYTES = 256 * 2**20
_memo: OrderedDict[tuple, np.ndarray] = OrderedDict()
_memo_lock = threading.Lock()


def remembered(kind: str, x: np.ndarray, compute: Callable[[], np.ndarray], *key) -> np.ndarray:
    """``compute()``, or its result for the same ``kind``, ``key`` and bytes of ``x`` when one is
    kept (read-only). A search plans every group at several sparsities from the same weights: the
    principal components and Ward's merge tree do not depend on k, and recomputing them took a
    quarter of a MiniLM search."""
    tag = (
        kind,
        x.shape,
        x.dtype.str,
        hashlib.blake2b(np.ascontiguousarray(x).data, digest_size=20).digest(),
        key,
    )
    with _memo_lock:  # --jobs plans groups in threads
        if tag in _memo:
            _memo.move_to_end(tag)
            return _memo[tag]
    out = np.asarray(compute())
    if out.nbytes <= MEMO_BYTES // 4:
        out.flags.writeable = False
        with _memo_lock:
            _memo[tag] = out
            while sum(v.nbytes for v in _memo.values()) > MEMO_BYTES:
                _memo.popitem(last=False)
    return out


def reduce_dims(x: np.ndarray, max_dim: int = MAX_DIM, seed: int = 0) -> np.ndarray:
    """At most ``max_dim`` columns: exact (isometric) when the rows span ≤ max_dim dimensions,
    else the projection onto the top ``max_dim`` principal components (randomised SVD);
    :func:`remembered`."""
    n, d = x.shape
    if d <= max_dim:
        return x
    return remembered("reduce", x, lambda: _reduce_dims(x, max_dim, seed), max_dim, seed)


def _reduce_dims(x: np.ndarray, max_dim: int, seed: int) -> np.ndarray:
    n, d = x.shape
    if n <= max_dim:
        return isometric_embedding(x)
    if n * d > RANDOM_PROJECTION_ABOVE:  # too large for an SVD: Johnson-Lindenstrauss projection
        rng = np.random.default_rng(seed)
        return x @ (rng.standard_normal((d, max_dim)) / np.sqrt(max_dim))
    from sklearn.utils.extmath import randomized_svd

    fast = n * d > FLOAT32_ABOVE  # a 7B MLP group (11008 × 12288): ~10x cheaper, same subspace to ~1e-3
    x = x.astype(np.float32, copy=False) if fast else x
    centred = x - x.mean(axis=0, keepdims=True)
    u, s, _ = randomized_svd(centred, max_dim, n_iter=2 if fast else 4, random_state=seed)
    return (u * s).astype(np.float64)


def _kmeans(x: np.ndarray, k: int, seed: int, n_init: int, max_iter: int, budget: bool = True) -> np.ndarray:
    from sklearn.cluster import KMeans

    if k >= len(x):
        return np.arange(len(x))
    if k <= 1:
        return np.zeros(len(x), dtype=np.int64)
    # fewer restarts when one run is already expensive (the best inertia over restarts is kept)
    work = len(x) * k * x.shape[1]
    restarts = max(1, min(n_init, int(1e9 // max(work, 1)))) if budget else n_init
    # scikit-learn's OpenMP threads busy-wait: on a loaded machine small problems ran 5-10x slower
    # with them, so only large problems get more than one thread
    threads = None if work > 1e8 else 1
    with warnings.catch_warnings(), threadpool_limits(limits=threads):
        warnings.simplefilter("ignore")
        return KMeans(n_clusters=k, n_init=restarts, max_iter=max_iter, random_state=seed).fit_predict(x)


def pairwise_distances(x: np.ndarray) -> np.ndarray:
    """Condensed Euclidean distances of the rows (scipy's ``pdist`` layout), through one BLAS product:
    ‖a − b‖² = ‖a‖² + ‖b‖² − 2·a·b."""
    from scipy.spatial.distance import squareform

    sq = np.einsum("ij,ij->i", x, x)
    full = x @ x.T
    full *= -2.0
    full += sq[:, None]
    full += sq[None, :]
    np.maximum(full, 0.0, out=full)
    np.sqrt(full, out=full)
    np.fill_diagonal(full, 0.0)
    full = 0.5 * (full + full.T)  # exactly symmetric
    return squareform(full, checks=False)


def cut_merges(merges: np.ndarray, n: int, k: int) -> np.ndarray:
    """Labels after the first n − k merges of a linkage (row i joins nodes a_i, b_i into node n + i);
    exactly k clusters, unlike a height cut, which ties can make coarser."""
    parent = np.arange(2 * n - 1)

    def find(i: int) -> int:
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    for i in range(n - k):
        a, b = int(merges[i, 0]), int(merges[i, 1])
        parent[find(a)] = n + i
        parent[find(b)] = n + i
    return np.array([find(i) for i in range(n)])


def ward_labels(x: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Ward's agglomerative clustering of the rows into exactly k clusters (see the module docstring).
    More than :data:`WARD_MAX` rows are first split by a coarse k-means, each part getting a share of
    k proportional to its size (recursively), which bounds memory at WARD_MAX² distances."""
    from scipy.cluster.hierarchy import linkage

    n = len(x)
    if k >= n:
        return np.arange(n)
    if k <= 1:
        return np.zeros(n, dtype=np.int64)
    if n > WARD_MAX:
        parts = _kmeans(x, int(np.ceil(n / WARD_MAX)) + 1, seed, 1, 100)
        if len(np.unique(parts)) > 1:
            return solve_in_parts(x, parts, k, lambda rows, k_i: ward_labels(rows, k_i, seed))
    x = np.asarray(x, dtype=np.float64)
    merges = remembered("ward", x, lambda: linkage(pairwise_distances(x), "ward"))  # the tree for any k
    return canonical_labels(cut_merges(merges, n, k))


def allocate(sizes: np.ndarray, k: int) -> np.ndarray:
    """Split k clusters over partitions proportionally to their sizes (largest remainders), 1 ≤ k_i ≤ n_i."""
    share = sizes * (k / sizes.sum())
    out = np.clip(np.floor(share).astype(np.int64), 1, sizes)
    while out.sum() < k:
        room = np.where(out < sizes, share - out, -np.inf)
        out[int(np.argmax(room))] += 1
    while out.sum() > k:
        spare = np.where(out > 1, out - share, -np.inf)
        out[int(np.argmax(spare))] -= 1
    return out


def partitioned_kmeans(x: np.ndarray, k: int, seed: int, n_init: int, max_iter: int) -> np.ndarray:
    """Coarse k-means into ⌈n/PARTITION⌉ partitions, then k-means inside each with a share of k
    proportional to its size. Clusters never span partitions; cost ≈ n·(n/PARTITION + PARTITION·k/n)·d."""
    parts = _kmeans(x, int(np.ceil(len(x) / PARTITION)), seed, 1, max_iter)
    return solve_in_parts(x, parts, k, lambda rows, k_i: _kmeans(rows, k_i, seed, n_init, max_iter))


def solve_in_parts(
    x: np.ndarray, parts: np.ndarray, k: int, solve: Callable[[np.ndarray, int], np.ndarray]
) -> np.ndarray:
    """Cluster each part (rows sharing a ``parts`` id) on its own with ``solve(rows, k_i)``, the k_i
    proportional to the part sizes and summing to k (:func:`allocate`); labels of different parts
    never coincide."""
    ids = np.unique(parts)
    shares = allocate(np.array([(parts == i).sum() for i in ids]), k)
    labels = np.empty(len(x), dtype=np.int64)
    offset = 0
    for i, k_i in zip(ids, shares, strict=True):
        rows = np.nonzero(parts == i)[0]
        labels[rows] = solve(x[rows], int(k_i)) + offset
        offset += int(k_i)
    return labels


def kmeans_labels(
    features: np.ndarray,
    k: int,
    seed: int = 0,
    n_init: int = 10,
    max_iter: int = 300,
    algorithm: str = "auto",
) -> np.ndarray:
    """Cluster the n rows of ``features`` into at most k groups; returns canonical labels (n,).

    Exact duplicate rows always share a cluster when k ≥ the number of distinct rows (no solver
    runs then). Rows beyond :data:`MAX_DIM` dimensions are reduced first (:func:`reduce_dims`:
    exact while n ≤ MAX_DIM, else principal components or a random projection). ``algorithm``: ``kmeans`` (restarts shrink when one run is expensive, and when one
    Lloyd pass would exceed :data:`WORK_BUDGET` multiply-adds the clustering is partitioned,
    :func:`partitioned_kmeans`), ``ward`` (:func:`ward_labels`), or ``auto``: kmeans up to
    WORK_BUDGET, Ward above it. ``kmeans-full`` is the reference the others are measured against:
    k-means on the full features, never reduced or partitioned, all ``n_init`` restarts (slow).
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(
            f"unknown clustering algorithm {algorithm!r} (expected one of {', '.join(ALGORITHMS)})"
        )
    features = np.asarray(features)
    big = features.size > FLOAT32_ABOVE
    x = features.astype(np.float32 if big and features.dtype != np.float64 else np.float64, copy=False)
    n = x.shape[0]
    if k >= n:
        return np.arange(n, dtype=np.int64)
    if k <= 1:
        return np.zeros(n, dtype=np.int64)
    x = x.reshape(n, -1)
    with step("duplicates"):
        inverse = duplicate_ids(x)
    if int(inverse.max()) + 1 <= k:
        # every distinct row gets its own cluster: the fold is exact
        return split_to_count(canonical_labels(inverse), k)
    if algorithm == "kmeans-full":
        return canonical_labels(_kmeans(x, k, seed, n_init, max_iter, budget=False))
    with step("reduce"):
        emb = reduce_dims(x, MAX_DIM, seed)
    large = n * k * emb.shape[1] > WORK_BUDGET
    if algorithm == "ward" or (algorithm == "auto" and large):
        labels = ward_labels(emb, k, seed)
    else:  # a search plans the same group at the same width again and again: the labels are kept
        solve = partitioned_kmeans if large and n > 2 * PARTITION else _kmeans
        labels = remembered(
            solve.__name__, emb, lambda: solve(emb, k, seed, n_init, max_iter), k, n_init, max_iter, seed
        )
    return canonical_labels(labels)
