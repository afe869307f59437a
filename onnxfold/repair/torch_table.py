"""The torch executor's op table and its error, shared by the per-family op modules
(:mod:`onnxfold.repair.torch_ops_nn`, :mod:`onnxfold.repair.torch_ops_tensor`), which fill it."""

from __future__ import annotations

from collections.abc import Callable


class UnsupportedGraph(ValueError):
    """The graph uses an op (or attribute) the torch executor does not implement."""


#: op type -> implementation ``fn(executor, node, args, attrs)``, filled by :func:`torch_op`
TORCH_OPS: dict[str, Callable] = {}


def torch_op(*names: str) -> Callable:
    """Register the decorated function as the torch implementation of the ONNX ops ``names``."""

    def register(fn: Callable) -> Callable:
        for name in names:
            if name in TORCH_OPS:
                raise ValueError(f"torch implementation of {name} registered twice")
            TORCH_OPS[name] = fn
        return fn

    return register
