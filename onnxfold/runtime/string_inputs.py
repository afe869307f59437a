"""Random values for a string input: words from the vocabulary the model itself reads it with.

A string input (skl2onnx's categorical columns, a grapheme-to-phoneme model's letters) cannot be drawn
from N(0, 1). The ``ai.onnx.ml`` ops that read one name the strings they know: a LabelEncoder maps
``keys_strings`` (``classes_strings`` in ai.onnx.ml opset 1), a OneHotEncoder and a CategoryMapper
``cats_strings``; every other string falls to their default (an all-zero row, one fixed label).
Drawing uniformly from the union of those keys exercises every category the model can tell apart. An
input read by no such op gets random lowercase words of 1 to 8 letters.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

#: Ops that pass a tensor on without reading its values: a vocabulary is looked for behind them.
_PASS_THROUGH = {"Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Transpose", "Slice", "Gather"}
#: ``ai.onnx.ml`` ops that read strings, with the attribute that lists the strings they know.
_KEYS = {"LabelEncoder": "keys_strings", "OneHotEncoder": "cats_strings", "CategoryMapper": "cats_strings"}
_LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz"))


class Vocabulary(NamedTuple):
    """The strings a model's ops know for one input, drawn uniformly."""

    words: tuple[str, ...]

    def draw(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        """An object array of ``shape`` holding words drawn uniformly from :attr:`words`."""
        picks = rng.integers(0, len(self.words), size=shape)
        out = np.empty(shape, dtype=object)
        out.flat[:] = [self.words[i] for i in picks.flat]
        return out


def random_words(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """An object array of ``shape`` holding random lowercase words of 1 to 8 letters."""
    lengths = rng.integers(1, 9, size=int(np.prod(shape, dtype=np.int64)))
    out = np.empty(shape, dtype=object)
    out.flat[:] = ["".join(rng.choice(_LETTERS, size=n)) for n in lengths]
    return out


def _known(node: Any) -> list[str]:
    """The strings ``node`` (an ``ai.onnx.ml`` string reader) knows, decoded; [] for any other op."""
    key = _KEYS.get(node.op)
    if key is None or node.domain != "ai.onnx.ml":
        return []
    values = node.attrs.get(key)
    if values is None and node.op == "LabelEncoder":  # opset 1 names them classes; opset 4 a tensor
        values = node.attrs.get("classes_strings", getattr(node.attrs.get("keys_tensor"), "values", None))
    if values is None:
        return []
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in np.ravel(values)]


def string_vocabularies(model: Any) -> dict[str, Vocabulary]:
    """String graph input → the :class:`Vocabulary` of the ops that read it, directly or behind ops
    that only move values (``model``: an IR Model or a graphsurgeon graph); inputs read by no such op
    are left out."""
    graph = getattr(model, "graph", model)
    found = {}
    for x in graph.inputs:
        dtype = getattr(x, "dtype", None)
        try:
            if dtype is None or np.dtype(dtype).kind not in "OUS":
                continue
        except TypeError:
            continue
        words: dict[str, None] = {}
        todo, seen = [x], set()
        while todo:
            t = todo.pop()
            for node in t.outputs:
                if id(node) in seen:
                    continue
                seen.add(id(node))
                words.update(dict.fromkeys(_known(node)))
                if node.op in _PASS_THROUGH and node.inputs and node.inputs[0] is t:
                    todo.extend(node.outputs)
        if words:
            found[x.name] = Vocabulary(tuple(words))
    return found
