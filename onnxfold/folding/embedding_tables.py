"""Which embedding table each token-id input of a model indexes (:func:`embedding_tables`): what the
data-free proxy draws ids over, what the id-range check and the padding found in a user's samples
read."""

from __future__ import annotations

#: ops through which ids still index a table: shape and type changes, and the arithmetic of
#: tf2onnx's wrap of negative ids (where(ids < 0, ids + rows, ids), written with Add and Mul), which
#: hid a Keras character model's embedding (slovorez): its proxy drew ids in [0, 4)
INDEX_KEEPING = (
    "Cast",
    "Unsqueeze",
    "Reshape",
    "Squeeze",
    "Identity",
    "Add",
    "Sub",
    "Mul",
    "Where",
    "Mod",
    "Clip",
)


def embedding_tables(model, largest: bool = False) -> dict[str, object]:
    """Graph input → the embedding table (a constant [rows, dim]) it indexes: a Gather of a constant
    whose indices are the input, directly or through :data:`INDEX_KEEPING` ops or a Gather or Slice of
    some of its ids (spaCy's hash embeddings, exported: ids [B, T, 4, 4], each column indexing its own
    table); the smallest table where it indexes several (every id drawn fits all), the largest with
    ``largest`` (no valid id refused)."""
    import onnx_graphsurgeon as gs

    found: dict[str, gs.Constant] = {}
    for inp in model.graph.inputs:
        frontier, seen = [inp], set()
        while frontier:
            t = frontier.pop()
            if id(t) in seen:
                continue
            seen.add(id(t))
            for node in t.outputs:
                if node.op == "Gather" and len(node.inputs) > 1 and node.inputs[1] is t:
                    table = node.inputs[0]
                    if isinstance(table, gs.Constant) and len(table.shape or ()) == 2 and table.shape[0] > 1:
                        held = found.get(inp.name)
                        if held is None or (table.shape[0] > held.shape[0]) == largest:
                            found[inp.name] = table
                elif node.op in INDEX_KEEPING or (
                    node.op in ("Gather", "Slice")
                    and node.inputs[0] is t
                    and all(_constant(x) for x in node.inputs[1:] if x.name)
                ):
                    frontier += list(node.outputs)
    return found


def _constant(t) -> bool:
    """Whether ``t`` is a stored constant or a Constant node's output (a model not canonicalized yet)."""
    import onnx_graphsurgeon as gs

    return isinstance(t, gs.Constant) or (len(t.inputs) == 1 and t.inputs[0].op == "Constant")


__all__ = ["INDEX_KEEPING", "embedding_tables"]


def token_tables(model) -> tuple[dict[str, object], str]:
    """(the embedding tables its ids index, '') for a token model, whose inputs are all integer ids and
    index an embedding table; ({}, why not) otherwise."""
    from onnxfold.runtime.inputs import input_specs

    specs = input_specs(model)
    if not specs or any(s.dtype is None or s.dtype.kind not in "iu" for s in specs):
        return {}, "not a model whose inputs are all integer token ids"
    tables = embedding_tables(model)
    return tables, "" if tables else "no input indexes an embedding table"
