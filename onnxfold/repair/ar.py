"""Fold-AR on a folded graph: the data-free repair of docs/method.md §2.2 (BN kept) and §2.5 (no BN).

It runs after the naive fold and reuses its assignment (a :class:`~onnxfold.folding.apply.FoldRecord`).
For every folded group and every producer of it (Conv, Gemm or MatMul, see
:mod:`onnxfold.analysis.group_producers`):

* producer → BN: the pair is put in normalised form on the channels of multi-member clusters
  (W/σ, b/σ, BN μ/σ and var = 1 − eps, :func:`onnxfold.repair.stats.normalized_pair`; no bias is ever
  added) and the producer's and BN's merged tensors are re-derived from those normalised originals
  with the fold's own edits — exactly "normalise, then fold naively". The BN γ of cluster c is then
  multiplied by
  s_c = sqrt(N_c / (1 + (N_c − 1)·E[c])), E[c] the mean pairwise cosine of the members' original
  rows (the same for W and W/σ: σ scales whole rows).
  **Per BN**: in a group tied by residual Adds, every BN gets the factor of its own producer's rows,
  because each branch's merged channel collapses according to its own members' correlation
  before the branches are added (the authors' CV code gives every BN one factor from the whole
  feature vector).
* producer without BN: the merged rows are rescaled to the members' mean norm (§2.5), bias kept.
  A weight that several producers share (directly or through a Transpose) is rescaled once, in place:
  the factors depend on the weight's rows alone, so every reader takes the same edit.

A producer→BN pair whose weight other nodes read too stays naive (``shared_weight_skipped``):
normalising the weight by one reader's BN would give that reader a copy of its own.

A plan whose ``repair`` is False is skipped (the fold pass measured that ar makes it worse); one
whose ``repair`` is :data:`CONV_ONLY` (not measured) is repaired on its Conv producers only.

Singleton clusters are never rewritten (factor exactly 1); groups that were not folded, pruned
groups (all clusters singletons) and producers whose output axis is split over several groups
(a Split partition) stay naive.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx_graphsurgeon as gs

from onnxfold.analysis.group_producers import (
    Producer,
    group_producers,
    is_shared,
    rows,
    scale_along,
    write_bias,
    write_input,
)
from onnxfold.analysis.groups import AVERAGE
from onnxfold.folding.apply import FoldPlan, FoldRecord
from onnxfold.folding.rewrite import SliceEdit, apply_edits
from onnxfold.ir.model import peek_values, set_values
from onnxfold.repair.stats import (
    ar_factors,
    cluster_sizes,
    mean_cosine,
    multi_member,
    norm_factors_along,
    normalized_pair,
)

#: ``FoldPlan.repair`` of a fold whose ar effect was not measured: ar on its convolution producers only
#: (the paper's CNN setting); a transformer's MLP rescaled by row norms can explode (SmolLM2 at 5%
#: fewer MLP channels: perplexity 1,866 without ar, 8.9e7 with it).
CONV_ONLY = "conv"


def _original_bias(record: FoldRecord, node: gs.Node, p: Producer) -> np.ndarray | None:
    if p.bias is None:
        return None
    b = record.original(p.bias).astype(np.float64).reshape(-1)
    return b * float(node.attrs.get("beta", 1.0)) if p.op == "Gemm" else b


def _merged(record: FoldRecord, name: str, values: np.ndarray, fallback: list[SliceEdit]) -> np.ndarray:
    return apply_edits(values, record.edits.get(name, fallback))


def repair_bn_pair(
    graph: gs.Graph, nodes: dict[str, gs.Node], record: FoldRecord, plan: FoldPlan, p: Producer
) -> float:
    """Normalise, re-merge and rescale one producer→BN pair; returns the mean γ factor over clusters."""
    labels, k, bn = plan.labels, plan.k, p.bn
    mask = multi_member(labels, k)
    node, bn_node = nodes[p.node], nodes[bn.node]
    w0 = record.original(p.weight)
    b0 = _original_bias(record, node, p)
    mean0, var0 = record.original(bn.mean), record.original(bn.var)
    w1, b1, m1, v1 = normalized_pair(w0, p.axis, b0, mean0, var0, bn.eps, mask)
    average = [SliceEdit(0, 0, 1, AVERAGE, labels, k)]
    write_input(graph, node, 1, _merged(record, p.weight, w1, []).astype(w0.dtype))
    if b1 is not None:  # edited flat: a Gemm C may be [1, n]
        bias_edits = [SliceEdit(0, 0, 1, e.role, e.labels, e.k) for e in record.edits.get(p.bias, average)]
        write_bias(graph, node, p, apply_edits(b1, bias_edits), w0.dtype)
    write_input(graph, bn_node, 3, _merged(record, bn.mean, m1, average).astype(mean0.dtype))
    write_input(graph, bn_node, 4, _merged(record, bn.var, v1, average).astype(var0.dtype))
    factors = ar_factors(mean_cosine(rows(w0, p.axis), labels, k), cluster_sizes(labels, k))
    gamma = np.asarray(bn_node.inputs[1].values)
    write_input(graph, bn_node, 1, (gamma.astype(np.float64) * factors).astype(gamma.dtype))
    return float(factors.mean())


def repair_norm(
    graph: gs.Graph, nodes: dict[str, gs.Node], record: FoldRecord, plan: FoldPlan, p: Producer
) -> float:
    """Rescale a BN-free producer's merged rows to its members' mean norm (§2.5); returns the mean factor."""
    node = nodes[p.node]
    factors = norm_factors_along(record.original(p.weight), p.axis, plan.labels, plan.k)
    weight = node.inputs[1]
    current = peek_values(weight)
    scaled = scale_along(current, p.axis, factors).astype(current.dtype)
    if is_shared(weight):  # every reader produces these rows of this group: one edit serves them all
        set_values(weight, scaled)
    else:
        write_input(graph, node, 1, scaled)
    return float(factors.mean())


def whole_axis(plan: FoldPlan, p: Producer, graph: gs.Graph) -> bool:
    """Whether ``plan``'s group owns the producer's entire output axis, one channel per row
    (``graph``: the graph before folding)."""
    member = next((m for m in plan.group.members if m.tensor == p.weight and m.role == AVERAGE), None)
    if member is None or member.offset != 0 or member.block != 1:
        return False
    shape = graph.tensors()[p.weight].shape
    return shape is not None and int(shape[member.axis]) == plan.group.size


def apply_ar(graph: gs.Graph, record: FoldRecord) -> dict:
    """Fold-AR on every folded group of ``record`` (see the module docstring); returns statistics."""
    nodes = {n.name: n for n in graph.nodes}
    counts: Counter[str] = Counter()
    bn_factors: list[float] = []
    norm: list[float] = []
    done: set[str] = set()
    compensated = record.compensated_nodes()
    for plan in record.plans:
        if plan.status != "folded" or plan.labels is None or not multi_member(plan.labels, plan.k).any():
            continue
        if not plan.repair:  # the fold pass measured that ar makes this group worse
            counts["groups_skipped_measured_worse"] += 1
            continue
        counts["groups"] += 1
        for p in group_producers(plan.group, graph):
            if p.node in done:
                continue
            done.add(p.node)
            if plan.repair == CONV_ONLY and nodes[p.node].op not in ("Conv", "ConvTranspose"):
                counts["unmeasured_non_conv_producers_skipped"] += 1
                continue
            if p.node in compensated:  # its bias holds a compensation the originals do not
                counts["compensated_producers_skipped"] += 1
                continue
            if not whole_axis(
                plan, p, record.source.graph
            ):  # a producer split over several groups (Split partition)
                counts["partial_producers_skipped"] += 1
                continue
            if p.bn is not None and is_shared(nodes[p.node].inputs[1]):
                # normalising by this producer's BN would edit the weight for this reader alone
                counts["shared_weight_skipped"] += 1
            elif p.bn is not None:
                bn_factors.append(repair_bn_pair(graph, nodes, record, plan, p))
                counts["bn_pairs"] += 1
            else:
                norm.append(repair_norm(graph, nodes, record, plan, p))
                counts["bn_free_producers"] += 1
    stats = dict(counts)
    if bn_factors:
        stats["mean_gamma_factor"] = float(np.mean(bn_factors))
    if norm:
        stats["mean_norm_factor"] = float(np.mean(norm))
    return stats
