"""One group's assignment (clustering or magnitude ranking of its features), in this process or in
joblib workers: the labels depend only on the group's tensors and the options, never on the process,
the worker count or the order in which groups finish."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx_graphsurgeon as gs

from onnxfold.analysis.groups import SHAPE, ChannelGroup
from onnxfold.folding.cluster import PARTS_ALGORITHM, kmeans_labels, labels_in_parts
from onnxfold.folding.features import group_features
from onnxfold.folding.prune import PRUNE_METHODS, magnitude_labels
from onnxfold.report.timing import collecting, step

ValueFn = Callable[[str], np.ndarray]


def cluster_labels(feats: np.ndarray, k: int, seed: int, cluster: str, n_init: int) -> np.ndarray:
    """:func:`~onnxfold.folding.cluster.kmeans_labels` of the rows with the fold's options."""
    return kmeans_labels(feats, k, seed=seed, n_init=n_init, algorithm=cluster)


def assign_labels(
    group: ChannelGroup,
    values: ValueFn | dict[str, np.ndarray],
    k: int,
    method: str,
    features: str,
    graph: gs.Graph | None,
    seed: int,
    n_init: int,
    cluster: str,
    timed: bool = False,
):
    """The labels of one group: clustering (``method`` fold) or magnitude ranking (l1/l2) of its
    features, part by part for a group cut into parts. Depends only on its arguments (the same
    labels in any process, in any order of groups). ``timed``: returns (labels, wall seconds by step,
    CPU seconds by step)."""
    if timed:
        with collecting(propagate=False) as seconds:
            labels = assign_labels(group, values, k, method, features, graph, seed, n_init, cluster)
        return labels, dict(seconds), dict(seconds.cpu)
    lookup = values.__getitem__ if isinstance(values, dict) else values
    feats = group_features(group, lookup, features, graph)
    with step("cluster"):
        if method in PRUNE_METHODS:
            if group.parts == 1:
                return magnitude_labels(feats, k, method)
            return labels_in_parts(feats, k, group.parts, lambda x, k_p: magnitude_labels(x, k_p, method))
        if group.parts == 1:
            return cluster_labels(feats, k, seed, cluster, n_init)
        algorithm = PARTS_ALGORITHM if cluster == "auto" else cluster
        return labels_in_parts(
            feats, k, group.parts, lambda x, k_p: cluster_labels(x, k_p, seed, algorithm, n_init)
        )


def _assign_in_worker(group, arrays, k, method, features, graph, seed, n_init, cluster):
    """:func:`assign_labels` in a worker (a thread or another process): BLAS/OpenMP pools limited to
    :data:`~onnxfold.pipeline.manager.PASS_THREADS` there too, so jobs × threads ≤ cores and every
    reduction sums in the same order as in the main process."""
    from threadpoolctl import threadpool_limits

    from onnxfold.pipeline.manager import PASS_THREADS

    with threadpool_limits(limits=PASS_THREADS):
        return assign_or_error(group, arrays, k, method, features, graph, seed, n_init, cluster)


def assign_or_error(group, values, k, method, features, graph, seed, n_init, cluster):
    """(labels, wall seconds by step, CPU seconds by step) of :func:`assign_labels`, or (the exception,
    {}, {}) where it raised: one group's failure is that group's (the caller leaves it whole)."""
    try:
        return assign_labels(group, values, k, method, features, graph, seed, n_init, cluster, timed=True)
    except Exception as exc:
        return exc, {}, {}


def parallel_assign(jobs, values, method, features, graph, seed, n_init, cluster, workers: int):
    """:func:`assign_labels` of every (index, group, k) job with joblib, results in job order.

    Each task carries only its group's feature tensors: memory-mapped (external-data) tensors travel as
    references to their file (joblib reopens the map in the worker), in-memory ones as copies of that
    group's arrays, never the model. No backend is named, so ``joblib.parallel_config`` (e.g. Dask or
    Ray) decides where tasks run; processes (loky) are preferred otherwise."""
    from joblib import Parallel, delayed

    tasks = (
        delayed(_assign_in_worker)(
            group,
            {m.tensor: values(m.tensor) for m in group.members if m.feature and m.role != SHAPE},
            k,
            method,
            features,
            None,  # raw and blocknorm features need no graph
            seed,
            n_init,
            cluster,
        )
        for _, group, k in jobs
    )
    return Parallel(n_jobs=workers, prefer="processes", return_as="generator")(tasks)
