"""Token ids outside the embedding table they index are refused when the samples are read.

onnxruntime's Gather does not check its indices on every build, and a fold measured on ids past the
table's end reads memory that is no row of it: all-MiniLM-L6-v2 given ids + 40000 (30,522 rows) went
straight into clustering, with no word, for minutes (trial 121). Gather takes ids in
[−rows, rows − 1]; anything else is a sample encoded for another model.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import numpy as np


def check_id_ranges(arrays: Mapping[str, np.ndarray], model: Any, where: Mapping[str, str]) -> None:
    """Raise a one-line ValueError when an integer input of ``arrays`` that indexes an embedding
    table of ``model`` (a Model or graph; a session has no graph to read: nothing is checked) holds
    an id outside it; ``where``: input → the file or source it came from."""
    import onnx_graphsurgeon as gs

    from onnxfold.folding.samples import embedding_tables

    graph = model if isinstance(model, gs.Graph) else getattr(model, "graph", None)
    if not isinstance(graph, gs.Graph):
        return
    for name, table in embedding_tables(
        SimpleNamespace(graph=graph), largest=True
    ).items():  # it reads model.graph
        ids = arrays.get(name)
        if ids is None or ids.dtype.kind not in "iu" or not ids.size:
            continue
        rows = int(table.shape[0])
        lo, hi = int(ids.min()), int(ids.max())
        if hi >= rows or lo < -rows:
            raise ValueError(
                f"{where.get(name, 'the samples')}: input {name!r} holds ids {lo} to {hi}, outside the {rows} "
                f"rows of the embedding table it indexes ({table.name}): encode the samples with this "
                "model's own tokenizer"
            )
