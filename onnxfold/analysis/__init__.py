"""The channel analysis: which tensor axes of an ONNX graph fold with one shared assignment.

>>> from onnxfold.analysis import analyze_graph, register_rule   # doctest: +SKIP

:func:`analyze_graph` walks the graph (:mod:`onnxfold.analysis.walk`) applying each node's rule from
the registry (:mod:`onnxfold.analysis.registry`); the built-in rules live in
:mod:`onnxfold.analysis.rules`. :func:`register_rule` adds a rule for a custom op. A group that
cannot fold lists :class:`BlockReason` records, each with one of the codes below.
"""

from __future__ import annotations

from onnxfold.analysis import rules  # noqa: F401  (registers the built-in rules)
from onnxfold.analysis.groups import (
    ATTENTION_HEADS,
    CLAIM_CONFLICT,
    COMPUTED_WEIGHT,
    GRAPH_INPUT,
    GRAPH_OUTPUT,
    GROUPED_CONV,
    MIXES_CHANNELS,
    NO_CONSUMER,
    OTHER_AXIS,
    REASON_CODES,
    RESHAPES_CHANNELS,
    ROLLBACK,
    SECONDARY_OUTPUT,
    SHAPE_READ,
    SHARED_SHAPE,
    SHARED_TENSOR,
    SPLITS_UNITS,
    SUBGRAPH_USE,
    TRACKED_PARAMETER,
    UNALIGNED,
    UNKNOWN_SHAPE,
    UNSUPPORTED_FORM,
    UNSUPPORTED_OP,
    UNTRACED_RESHAPE,
    UNTRACED_SHAPE,
    UNTRACKED_TENSOR,
    WIDTH_MISMATCH,
    BlockReason,
    ChannelGroup,
    Member,
)
from onnxfold.analysis.registry import OpInfo, op_info, register_op, register_rule, unregister_rule
from onnxfold.analysis.walk import Analysis, analyze_graph

__all__ = [
    "ATTENTION_HEADS",
    "CLAIM_CONFLICT",
    "COMPUTED_WEIGHT",
    "GRAPH_INPUT",
    "GRAPH_OUTPUT",
    "GROUPED_CONV",
    "MIXES_CHANNELS",
    "NO_CONSUMER",
    "OTHER_AXIS",
    "REASON_CODES",
    "RESHAPES_CHANNELS",
    "ROLLBACK",
    "SECONDARY_OUTPUT",
    "SHAPE_READ",
    "SHARED_SHAPE",
    "SHARED_TENSOR",
    "SPLITS_UNITS",
    "SUBGRAPH_USE",
    "TRACKED_PARAMETER",
    "UNALIGNED",
    "UNKNOWN_SHAPE",
    "UNSUPPORTED_FORM",
    "UNSUPPORTED_OP",
    "UNTRACED_RESHAPE",
    "UNTRACED_SHAPE",
    "UNTRACKED_TENSOR",
    "WIDTH_MISMATCH",
    "Analysis",
    "BlockReason",
    "ChannelGroup",
    "Member",
    "OpInfo",
    "analyze_graph",
    "op_info",
    "register_op",
    "register_rule",
    "unregister_rule",
]
