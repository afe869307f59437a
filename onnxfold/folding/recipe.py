"""Per-layer sparsity recipes: sparsity by block range and by group kind (attention heads, MLP).

A recipe is YAML or JSON::

    default: 0.0                # groups that no rule matches
    rules:                      # later rules win
      - layers: 11-21           # block index range (from names like layers.11. / blocks/3/ / h.7)
        heads: 0.1              # groups whose units are attention heads
        mlp: 0.4                # every other group (MLP intermediate, conv channels)
      - match: "lm_head|embed"  # regex on the group or producer names
        sparsity: 0.0           # any kind
      - group: /conv1/Conv      # one group, by its whole name (as analyze and the report print it)
        sparsity: 0.25

``sparsity`` in a rule applies to both kinds unless ``heads``/``mlp`` (alias ``channels``) say
otherwise. Groups of unknown block index only match rules without ``layers``. Without ``default``,
groups that no rule matches keep the fold's ``sparsity``. The fold applies ``--ignore`` first, then
the recipe, then ``--override`` (the last matching override wins over the recipe).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from onnxfold.analysis.groups import ChannelGroup
from onnxfold.pipeline.manager import read_structured_file


class RecipeError(ValueError):
    """A recipe that cannot be read; the message is one line."""


def _ratio(value: object, where: str) -> float:
    try:
        r = float(value)
    except (TypeError, ValueError):
        raise RecipeError(f"recipe {where}: {value!r} is not a number") from None
    if not 0.0 <= r < 1.0:
        raise RecipeError(f"recipe {where}: sparsity {r} is not in [0, 1)")
    return r


def _layers(value: object, where: str) -> set[int] | None:
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    out: set[int] = set()
    for item in items:
        text = str(item).strip()
        match = re.fullmatch(r"(\d+)\s*(?:-|\.\.|:)\s*(\d+)", text)
        if match:
            lo, hi = int(match.group(1)), int(match.group(2))
            if hi < lo:
                raise RecipeError(f"recipe {where}: empty layer range {text!r}")
            out.update(range(lo, hi + 1))
        elif text.isdigit():
            out.add(int(text))
        else:
            raise RecipeError(f"recipe {where}: layers {text!r} is not N, A-B or a list of them")
    return out


@dataclass(frozen=True)
class Rule:
    layers: frozenset[int] | None
    match: re.Pattern | None
    heads: float | None
    channels: float | None
    group: str | None = None

    def applies(self, group: ChannelGroup) -> float | None:
        """This rule's sparsity for ``group``'s kind, or None when the rule does not match it."""
        if self.layers is not None and group.layer not in self.layers:
            return None
        if self.match is not None and not any(self.match.search(n) for n in [group.name, *group.producers]):
            return None
        if self.group is not None and group.name != self.group:
            return None
        return self.heads if group.kind == "heads" else self.channels


@dataclass(frozen=True)
class Recipe:
    default: float | None
    rules: tuple[Rule, ...]

    def sparsity(self, group: ChannelGroup) -> float | None:
        """The recipe's sparsity for ``group`` (None: the recipe says nothing, use the fold default)."""
        result = self.default
        for rule in self.rules:
            r = rule.applies(group)
            if r is not None:
                result = r
        return result


KNOWN_KEYS = {"layers", "match", "group", "sparsity", "heads", "mlp", "channels"}


def parse_recipe(data: object, source: str = "recipe") -> Recipe:
    """A :class:`Recipe` from parsed YAML/JSON (see the module docstring); :class:`RecipeError` names
    ``source`` and the rule when a key, ratio, layer range or regex is invalid."""
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: expected a mapping with 'rules'")
    unknown = set(data) - {"default", "rules"}
    if unknown:
        raise RecipeError(f"{source}: unknown keys {sorted(unknown)}")
    default = _ratio(data["default"], "default") if data.get("default") is not None else None
    rules = []
    for i, item in enumerate(data.get("rules") or []):
        where = f"rule {i + 1}"
        if not isinstance(item, dict) or set(item) - KNOWN_KEYS:
            raise RecipeError(f"{source} {where}: expected keys among {sorted(KNOWN_KEYS)}")
        base = _ratio(item["sparsity"], where) if "sparsity" in item else None
        heads = _ratio(item["heads"], where) if "heads" in item else base
        chan_key = "mlp" if "mlp" in item else "channels"
        channels = _ratio(item[chan_key], where) if chan_key in item else base
        try:
            pattern = re.compile(item["match"]) if "match" in item else None
        except re.error as exc:
            raise RecipeError(f"{source} {where}: bad regex {item['match']!r} ({exc})") from None
        layers = _layers(item.get("layers"), where)
        name = str(item["group"]) if "group" in item else None
        rules.append(Rule(frozenset(layers) if layers is not None else None, pattern, heads, channels, name))
    return Recipe(default, tuple(rules))


def load_recipe(path: str | Path) -> Recipe:
    """Read and parse the YAML or JSON recipe at ``path``."""
    return parse_recipe(read_structured_file(path, "recipe", RecipeError), str(path))


def allocation_recipe(allocation: dict[str, float]) -> dict:
    """The recipe that folds ``allocation`` ({group name: sparsity}, as a search chose it) and nothing
    else: one ``group`` rule per group it narrows, every other group at 0."""
    rules = [{"group": name, "sparsity": r} for name, r in sorted(allocation.items()) if r > 0]
    return {"default": 0.0, "rules": rules}
