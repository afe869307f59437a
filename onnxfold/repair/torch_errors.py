"""The error of the torch executor, in a module of its own so that the op tables can raise it."""

from __future__ import annotations


class UnsupportedGraph(ValueError):
    """The graph uses an op (or attribute) the torch executor does not implement."""
