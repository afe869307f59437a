"""The op registry: everything onnxfold knows about an op type, in one record per (domain, op).

An :class:`OpInfo` holds up to four hooks, each optional:

* ``rule(walk, node)``: how channels flow through the node during the analysis
  (:class:`onnxfold.analysis.walk.Analysis` is ``walk``). An op without a rule blocks the groups
  that reach it (code ``unsupported-op``).
* ``macs(node, shape, dim)``: multiply-accumulates of one ``onnx.NodeProto`` for a whole run, for
  :func:`onnxfold.report.stats.model_stats`; ``shape(i, outputs=False)`` is the dim list of input
  (or output) ``i`` or None, ``dim(d)`` resolves one dim to an int. None if shapes are missing.
* ``fix_attrs(node, folds, tensors)``: after a fold rewrote its members, bring the node's
  attributes in line (a depthwise Conv's ``group``, a fused attention's ``num_heads``);
  ``folds`` lists (group, k) for every folded group that names the node.
* ``weight_axes(node)``: for a producer with a constant weight input 1, the weight axis holding the
  output channels and the one holding the input channels, or None if the node is no such producer.

Rules of the built-in ops live in :mod:`onnxfold.analysis.rules` (one module per op family) and
register on import. The domains ``""`` and ``"ai.onnx"`` are the same.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Rule = Callable[[Any, Any], None]
MacsFn = Callable[..., "int | None"]
FixAttrsFn = Callable[..., None]
WeightAxesFn = Callable[[Any], "tuple[int, int] | None"]
HOOKS = ("rule", "macs", "fix_attrs", "weight_axes")


@dataclass(frozen=True)
class OpInfo:
    """What onnxfold knows about one op type (see the module docstring for each hook's contract)."""

    op_type: str
    domain: str = ""
    rule: Rule | None = None
    macs: MacsFn | None = None
    fix_attrs: FixAttrsFn | None = None
    weight_axes: WeightAxesFn | None = None


_OPS: dict[tuple[str, str], OpInfo] = {}


def canonical_domain(domain: str | None) -> str:
    """``""`` for the default ONNX domain (also spelled ``"ai.onnx"``), else ``domain`` itself."""
    return "" if domain in (None, "", "ai.onnx") else domain


def register_op(op_type: str, domain: str = "", *, replace: bool = False, **hooks: Callable) -> None:
    """Set hooks (``rule``, ``macs``, ``fix_attrs``, ``weight_axes``) of ``op_type`` in ``domain``.

    Raises ValueError when a hook is already set and ``replace`` is false, or for an unknown hook."""
    unknown = set(hooks) - set(HOOKS)
    if unknown:
        raise ValueError(f"unknown op hooks {sorted(unknown)} (expected some of {', '.join(HOOKS)})")
    key = (canonical_domain(domain), op_type)
    info = _OPS.get(key, OpInfo(op_type, key[0]))
    taken = [h for h in hooks if getattr(info, h) is not None]
    if taken and not replace:
        where = f"{key[0]}.{op_type}" if key[0] else op_type
        raise ValueError(f"{where} already has a {taken[0]}; pass replace=True to override it")
    _OPS[key] = dataclasses.replace(info, **hooks)


def register_rule(op_type: str, domain: str = "", *, replace: bool = False) -> Callable[[Rule], Rule]:
    """Decorator: make ``rule(walk, node)`` the channel rule of ``op_type`` in ``domain``.

    The rule reads the node's inputs' layouts and sets its outputs' (see the helper methods of
    :class:`onnxfold.analysis.walk.Analysis`). Registering an op that already has a rule raises
    ValueError unless ``replace=True``; :func:`unregister_rule` removes one."""

    def decorate(rule: Rule) -> Rule:
        register_op(op_type, domain, replace=replace, rule=rule)
        return rule

    return decorate


def unregister_rule(op_type: str, domain: str = "") -> Rule | None:
    """Remove the rule of ``op_type`` in ``domain`` (its other hooks stay); returns the rule removed."""
    key = (canonical_domain(domain), op_type)
    info = _OPS.get(key)
    if info is None or info.rule is None:
        return None
    _OPS[key] = dataclasses.replace(info, rule=None)
    return info.rule


def op_info(op_type: str, domain: str | None = "") -> OpInfo | None:
    """The registered record of ``op_type`` in ``domain``, or None."""
    return _OPS.get((canonical_domain(domain), op_type))


def rule_for(op_type: str, domain: str | None = "") -> Rule | None:
    """The channel rule of ``op_type`` in ``domain``, or None when the op is not supported."""
    info = _OPS.get((canonical_domain(domain), op_type))
    return info.rule if info is not None else None


def hook(name: str, op_type: str, domain: str | None = "") -> Callable | None:
    """Hook ``name`` (one of :data:`HOOKS`) of ``op_type`` in ``domain``, or None."""
    info = _OPS.get((canonical_domain(domain), op_type))
    return getattr(info, name) if info is not None else None


def registered_ops(name: str = "rule") -> list[tuple[str, str]]:
    """(domain, op_type) of every op with hook ``name`` set, sorted."""
    return sorted(key for key, info in _OPS.items() if getattr(info, name) is not None)
