"""Whether a pipeline's result is the model it was given: then the file is written back byte for byte
and there is nothing to validate."""

from __future__ import annotations

from pathlib import Path

from onnxfold.ir.model import Model
from onnxfold.pipeline.manager import PassContext

#: passes that leave a model whose groups all stayed whole as it was (they only look, or simplify
#: nothing a kept model needs changed)
LOOKING = frozenset({"canonicalize", "search", "fold", "cleanup", "validate"})
#: the key of ``PassContext.data`` where :func:`onnxfold.api.fold` leaves the (node count, parameters)
#: of the model as given, when it writes a file a kept model may be written back as
GIVEN_COUNTS = "given_counts"


def only_looked(records) -> bool:
    """Whether no pass but the :data:`LOOKING` ones changed the model."""
    return not any(r.modified and r.name not in LOOKING for r in records)


def written_as_given(records, ctx: PassContext, model: Model) -> Path | None:
    """The source file, where the model to write is it, whole: no group folded, no pass but the
    :data:`LOOKING` ones changed it, and no fewer nodes or parameters than the source (``ctx.data``'s
    :data:`GIVEN_COUNTS`): a simplification that saves neither (a tf2onnx VGG16's Gather of a Shape
    spelled as a Slice and a Concat, one node more) is not worth a file that differs from the one
    given. Written back byte for byte: re-exported, chars2vec's kept model differed from its own by
    75 bytes (a trial's cmp)."""
    from onnxfold.report.fold_report import stats_of

    counts = ctx.data.get(GIVEN_COUNTS)
    if counts is None or model.source_path is None or not model.source_path.is_file():
        return None
    if any(p.status == "folded" for p in ctx.data.get("fold_plans", [])):
        return None
    if not only_looked(records):
        return None
    now = stats_of(model)
    nodes, params = counts
    return model.source_path if now.node_count >= nodes and now.params >= params else None
