"""How a float input is scaled where the model itself normalizes it, so that random inputs look like it.

Random inputs are standard normal. A model that normalizes its input first expects something else:
skl2onnx's StandardScaler in front of an MLP turned N(0, 1) draws of features that range over 0-50
into an almost constant -1.6 after ``(x - 25)·0.07``, every hidden unit saw nearly one value, and a
data-free search removed 77% of the parameters at a proxy fidelity of 0.976 while the real task was
lost (R² -1.18). Where the graph says how the input is normalized, the draws are made so that the
normalized values, not the raw input, are standard normal: ``x = mean + std · z``, z ~ N(0, 1), from

- ``ai.onnx.ml`` Scaler (offset o, scale s): y = (x − o)·s, so mean o and std 1/s;
- Sub(x, c), then optionally Div(·, d) or Mul(·, e): mean c, std d (or 1/e);
- Mul(x, e) then Add(·, b): y = x·e + b, so mean −b/e and std 1/e; Div(x, d) then Sub(·, c):
  mean c·d and std d;
- an inference BatchNormalization: mean and √(var + eps) on axis 1.

Only an input whose single reader is such a node, with constant operands that broadcast against it,
gets a scale; every other input stays standard normal. Transposes between the input and the node
(each the single reader of what it reads) are looked through: the constants are moved back to the
input's axes. tf2onnx writes a Keras model's NHWC input as Transpose(0, 3, 1, 2) before its first
BatchNormalization: crema's chord recogniser reads log-CQT dB whose BN mean is -38, and its N(0, 1)
draws measured a fold that kept the chords (judged 0.923 against the original's 0.919) at 0.0000.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np


class InputScale(NamedTuple):
    """x = mean + std · z, mean and std broadcast against the input (numpy rules)."""

    mean: np.ndarray
    std: np.ndarray

    def draw(self, z: np.ndarray) -> np.ndarray:
        """``z`` (standard normal, the input's shape) as the input; ``z`` itself where the constants
        do not broadcast to its shape or give a non-finite value."""
        try:
            x = self.mean + self.std * z
        except ValueError:
            return z
        if x.shape != z.shape or not np.all(np.isfinite(x)):
            return z
        return x.astype(z.dtype)


def _const(t: Any) -> np.ndarray | None:
    import onnx_graphsurgeon as gs

    if not isinstance(t, gs.Constant):
        return None
    try:
        value = np.asarray(t.values, dtype=np.float64)
    except Exception:  # an unreadable external value: no scale
        return None
    return value if value.size and np.all(np.isfinite(value)) else None


def _only_reader(t: Any) -> Any:
    return t.outputs[0] if len(t.outputs) == 1 else None


def _operand(node: Any, t: Any) -> np.ndarray | None:
    """The constant operand of a binary ``node`` whose other input is ``t`` (``t`` first for Sub/Div)."""
    if len(node.inputs) != 2:
        return None
    if node.op in ("Sub", "Div") and node.inputs[0] is not t:
        return None
    other = node.inputs[1] if node.inputs[0] is t else node.inputs[0]
    return _const(other)


def _safe_inverse(v: np.ndarray) -> np.ndarray | None:
    return None if np.any(v == 0) else 1.0 / v


def _scale_of(node: Any, x: Any, rank: int | None) -> InputScale | None:
    """The :class:`InputScale` that normalization ``node`` (reading ``x``, of ``rank`` axes, None where
    not known) implies, else None."""
    op = node.op
    if op == "Scaler" and (node.domain or "") == "ai.onnx.ml":
        offset = np.asarray(node.attrs.get("offset", [0.0]), dtype=np.float64)
        scale = _safe_inverse(np.asarray(node.attrs.get("scale", [1.0]), dtype=np.float64))
        return InputScale(offset, np.abs(scale)) if scale is not None else None
    if op == "BatchNormalization" and len(node.inputs) >= 5 and not node.attrs.get("training_mode", 0):
        mean, var = _const(node.inputs[3]), _const(node.inputs[4])
        if mean is None or var is None or mean.ndim != 1:
            return None
        eps = float(node.attrs.get("epsilon", 1e-5))
        shape = (-1,) + (1,) * max(0, rank - 2) if rank else (-1,)
        return InputScale(mean.reshape(shape), np.sqrt(np.maximum(var, 0) + eps).reshape(shape))
    value = _operand(node, x)
    if value is None or op not in ("Sub", "Mul", "Div"):
        return None
    after = _only_reader(node.outputs[0])
    follow = _operand(after, node.outputs[0]) if after is not None else None
    if op == "Sub":
        if after is not None and after.op == "Div" and follow is not None:
            return InputScale(value, np.abs(follow))
        if after is not None and after.op == "Mul" and follow is not None:
            inv = _safe_inverse(follow)
            return InputScale(value, np.abs(inv)) if inv is not None else None
        return InputScale(value, np.ones_like(value))
    if op == "Mul" and after is not None and after.op == "Add" and follow is not None:
        inv = _safe_inverse(value)
        return InputScale(-follow * inv, np.abs(inv)) if inv is not None else None
    if op == "Div" and after is not None and after.op == "Sub" and follow is not None:
        return InputScale(follow * value, np.abs(value))
    return None


def input_scales(model: Any) -> dict[str, InputScale]:
    """Graph input → its :class:`InputScale` (``model``: an IR Model or a graphsurgeon graph), for
    the float inputs a model normalizes itself (module docstring)."""
    graph = getattr(model, "graph", model)
    found = {}
    for x in graph.inputs:
        dtype = getattr(x, "dtype", None)
        if dtype is None or np.dtype(dtype).kind != "f":
            continue
        rank = len(x.shape) if x.shape else None
        node, read, perm = _only_reader(x), x, list(range(rank or 0))
        while (
            node is not None and node.op == "Transpose" and rank and len(node.attrs.get("perm", ())) == rank
        ):
            perm = [perm[a] for a in node.attrs["perm"]]  # read's axis i is x's axis perm[i]
            read = node.outputs[0]
            node = _only_reader(read)
        if node is None:
            continue
        scale = _scale_of(node, read, rank)
        if scale is not None and read is not x:
            scale = _moved_back(scale, perm)
        if scale is not None:
            found[x.name] = scale
    return found


def _moved_back(scale: InputScale, perm: list[int]) -> InputScale | None:
    """``scale``, whose constants broadcast against x transposed by ``perm``, on x's own axes."""
    back = np.argsort(perm)

    def moved(a: np.ndarray) -> np.ndarray | None:
        if a.ndim > len(perm):
            return None
        return np.transpose(a.reshape((1,) * (len(perm) - a.ndim) + a.shape), back)

    mean, std = moved(np.asarray(scale.mean)), moved(np.asarray(scale.std))
    return None if mean is None or std is None else InputScale(mean, std)


def has_tokens(draws: dict | None) -> bool:
    """Whether ``draws`` (:func:`~onnxfold.folding.samples.token_draws`) hold an embedding's token
    chances, not only input scales: a token model's outputs are judged per position."""
    return bool(vocabularies(draws))


def vocabularies(draws: dict | None) -> frozenset[int]:
    """The row counts of the embedding tables whose ids ``draws`` hold: an output with as many classes
    per position predicts tokens (a language model's logits); one with another count tags positions."""
    return frozenset(len(v) for v in (draws or {}).values() if isinstance(v, np.ndarray))
