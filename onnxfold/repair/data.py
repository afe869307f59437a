"""Fold-R on a folded graph: repair with a few calibration samples (docs/method.md §2.4, §2.5, §6.2).

Repair *sites* are the places whose input distribution the fold changed (any tensor downstream
of a rewritten constant):

* every inference BatchNormalization: its statistics are re-estimated (:func:`onnxfold.repair.stats.
  bn_stats_for_goal`) so that the folded channel's normalised statistics equal the mean over its
  members of the original model's normalised statistics on the same data (``goal=members``), or
  are simply reset to the measured batch statistics (``goal=reset``, the paper's Fold-R);
* every BN-free producer (Conv/Gemm/MatMul) of a non-blocked group: a per-channel affine maps its
  output to the goal (mean over the members of the original output's mean and std; REPAIR), folded
  into its rows and bias (MatMul: scale only, it has no bias slot). A producer whose weight other
  nodes read too (a shared or tied weight) is left naive: the affine is measured on its own output,
  and editing the weight for it would edit it for the other readers too.

Statistics of the original model are measured once (the fold record's source model). Sites are
repaired **sequentially in topological order** as §6.2 recommends, batched by *level*: a site's
level is the number of sites on the longest path above it, so one run measures every site of a
level with all sites above it already repaired — the same result as one site at a time.
``sequential=False`` measures every site in one run of the naive fold instead.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from onnxfold.analysis.group_producers import (
    BatchNorm,
    Producer,
    batchnorm_of,
    effective_bias,
    group_producers,
    is_shared,
    scale_along,
    write_bias,
    write_input,
)
from onnxfold.analysis.groups import AVERAGE
from onnxfold.folding.apply import FoldRecord
from onnxfold.folding.rewrite import SliceEdit, apply_edits
from onnxfold.ir.model import Model
from onnxfold.repair.stats import affine_to_goal, bn_normalized_stats, bn_stats_for_goal
from onnxfold.report.progress import progress_bar
from onnxfold.runtime.activations import Feeds, channel_moments

GOALS = ("members", "reset")


@dataclass(frozen=True)
class Site:
    """A BN to re-estimate (``bn``) or a BN-free producer to correct (``producer``); ``tensor`` is
    what is measured (the BN input or the producer output) on channel axis ``axis``."""

    node: str
    tensor: str
    axis: int
    edits: tuple[SliceEdit, ...]
    bn: BatchNorm | None = None
    producer: Producer | None = None


def changed_tensors(graph: gs.Graph, rewritten: set[str]) -> set[str]:
    """Every tensor that depends on a rewritten constant."""
    changed = set(rewritten)
    for node in graph.nodes:
        if any(t.name in changed for t in node.inputs):
            changed.update(t.name for t in node.outputs)
    return changed


def _channel_edits(edits: list[SliceEdit], axis: int) -> tuple[SliceEdit, ...]:
    """A tensor's edits on ``axis``, as edits of a 1-D per-channel vector (averaged)."""
    return tuple(SliceEdit(0, e.offset, e.block, AVERAGE, e.labels, e.k) for e in edits if e.axis == axis)


def find_sites(graph: gs.Graph, record: FoldRecord, skipped: list[str] | None = None) -> list[Site]:
    """The repair sites of the folded ``graph`` in topological order. A BN-free producer whose weight
    other nodes read too is no site (its affine would edit the weight for it alone); its name is
    appended to ``skipped``."""
    graph.toposort()
    nodes = {n.name: n for n in graph.nodes}
    changed = changed_tensors(graph, set(record.edits))
    sites: dict[str, Site] = {}
    for node in graph.nodes:
        bn = batchnorm_of(node)
        if bn is not None and node.inputs[0].name in changed:
            sites[node.name] = Site(
                node.name, node.inputs[0].name, 1, _channel_edits(record.edits.get(bn.scale, []), 0), bn=bn
            )
    for plan in record.plans:
        if plan.status == "blocked":
            continue
        for p in group_producers(plan.group, graph):
            if p.bn is None and p.output in changed and p.node not in sites:
                if is_shared(nodes[p.node].inputs[1]):
                    if skipped is not None and p.node not in skipped:
                        skipped.append(p.node)
                    continue
                sites[p.node] = Site(
                    p.node,
                    p.output,
                    p.out_axis,
                    _channel_edits(record.edits.get(p.weight, []), p.axis),
                    producer=p,
                )
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    return sorted(sites.values(), key=lambda s: order[s.node])


def site_levels(graph: gs.Graph, sites: list[Site]) -> dict[str, int]:
    """Level of each site: the number of sites on the longest path from the inputs to it."""
    names = {s.node for s in sites}
    depth: dict[str, int] = {}
    levels: dict[str, int] = {}
    for node in graph.nodes:
        d = max((depth.get(t.name, 0) for t in node.inputs), default=0)
        if node.name in names:
            levels[node.name] = d
            d += 1
        for t in node.outputs:
            depth[t.name] = d
    return levels


def _goals(
    record: FoldRecord, sites: list[Site], feeds: Feeds, batch_size: int, goal: str
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per site: (goal std, goal mean) of the folded channels, from the original model's statistics."""
    wanted = {s.tensor: s.axis for s in sites if s.producer is not None or goal == "members"}
    stats = channel_moments(record.source, wanted, feeds, batch_size)
    source = record.source.graph.tensors()
    out = {}
    for s in sites:
        if s.bn is not None and goal == "reset":
            out[s.node] = (np.array(1.0), np.array(0.0))
            continue
        mean, var = stats[s.tensor]
        if s.bn is not None:
            bn_mean = np.asarray(source[s.bn.mean].values, dtype=np.float64)
            bn_var = np.asarray(source[s.bn.var].values, dtype=np.float64)
            std, mean = bn_normalized_stats(mean, var, bn_mean, bn_var, s.bn.eps)
        else:
            std = np.sqrt(var)
        out[s.node] = (apply_edits(std, s.edits), apply_edits(mean, s.edits))
    return out


def _repair_site(
    graph: gs.Graph,
    node: gs.Node,
    site: Site,
    measured: tuple[np.ndarray, np.ndarray],
    goal: tuple[np.ndarray, np.ndarray],
) -> None:
    mean_hat, var_hat = measured
    goal_std, goal_mean = goal
    if site.bn is not None:
        mu, var = bn_stats_for_goal(mean_hat, var_hat, goal_std, goal_mean, site.bn.eps)
        for index, values in ((3, mu), (4, var)):
            dtype = np.asarray(node.inputs[index].values).dtype
            write_input(graph, node, index, values.astype(dtype))
        return
    p = site.producer
    a, b = affine_to_goal(mean_hat, np.sqrt(var_hat), goal_mean=goal_mean, goal_std=goal_std)
    weight = np.asarray(node.inputs[1].values)
    write_input(graph, node, 1, scale_along(weight, p.axis, a).astype(weight.dtype))
    if p.op != "MatMul":
        bias = effective_bias(node, p)
        write_bias(graph, node, p, b if bias is None else a * bias + b, weight.dtype)


def apply_data(
    model: Model,
    record: FoldRecord,
    feeds: Feeds,
    batch_size: int = 64,
    goal: str = "members",
    sequential: bool = True,
) -> dict:
    """Fold-R on the folded ``model`` (see the module docstring); returns statistics."""
    if goal not in GOALS:
        raise ValueError(f"unknown goal {goal!r} (expected one of {', '.join(GOALS)})")
    graph = model.graph
    skipped: list[str] = []
    sites = find_sites(graph, record, skipped)
    extra = {"shared_weight_skipped": len(skipped)} if skipped else {}
    if not sites:
        return {"sites": 0, **extra}
    goals = _goals(record, sites, feeds, batch_size, goal)
    levels = site_levels(graph, sites) if sequential else {s.node: 0 for s in sites}
    nodes = {n.name: n for n in graph.nodes}
    counts: Counter[str] = Counter()
    with progress_bar(desc="repair", total=len(sites), unit="site") as bar:
        for level in sorted(set(levels.values())):
            batch = [s for s in sites if levels[s.node] == level]
            measured = channel_moments(model, {s.tensor: s.axis for s in batch}, feeds, batch_size)
            for s in batch:
                _repair_site(graph, nodes[s.node], s, measured[s.tensor], goals[s.node])
                counts["batchnorms" if s.bn is not None else "producers"] += 1
            bar.update(len(batch))
    return {"sites": len(sites), "levels": len(set(levels.values())), **counts, **extra}
