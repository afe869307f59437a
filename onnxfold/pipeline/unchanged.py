"""A fold that folded nothing is written as given when rewriting would only grow it."""

from __future__ import annotations

from onnxfold.ir.model import Model
from onnxfold.pipeline.manager import PassContext

#: passes that rewrite the model without changing what it computes, and the fold and search
SIMPLIFYING = ("canonicalize", "fold", "search", "repair", "cleanup", "validate")


def unchanged_but_grown(model: Model, ctx: PassContext, records) -> str:
    """Why the input is written as given ('' when not): nothing was folded and the model written would
    hold more nodes or parameters than the input. Canonicalize's rewrites that cleanup does not undo (a
    tf2onnx graph's shared vectors copied per reader, its shape arithmetic made constant) grew LEADER's
    fingerprint model by 13 nodes and 8 parameters in a fold that removed nothing. Only the fold's own
    passes may have run."""
    if any(r.modified and r.name not in SIMPLIFYING for r in records):
        return ""
    if any(p.status == "folded" for p in ctx.data.get("fold_plans", [])) or ctx.original is None:
        return ""
    from onnxfold.report.fold_report import stats_of

    now, given = stats_of(model), stats_of(ctx.original)
    if now.params <= given.params and now.node_count <= given.node_count:
        return ""
    return f"rewritten it would hold {now.node_count} nodes and {now.params:,} parameters, against {given.node_count} and {given.params:,}"
