"""The shapes a model is written with: as its source recorded them, wherever the passes left them true.

onnxruntime fuses by what the shapes in a file prove: a residual Add becomes SkipLayerNormalization only
where both operands' shapes are known equal. A fold that folds nothing must reproduce the model bit for
bit, and shapes inferred again say more than an exporter or a simplifier wrote: an extra output written
with its dims where the source gave only its type, or ``[batch, seq, 4, 4]`` where onnxsim wrote four
unknown dims, fused one more SkipLayerNormalization and moved a BERT layer's outputs by up to 7.2e-7.
So a tensor the source recorded keeps the source's entry while the entry still holds (every dim the
source gave as a number is still that number), and takes the inferred one where a fold changed a width.
A tensor the source did not record is written without one; a graph output the source declared by its
type alone gets its rank with every dim unknown (the checker requires a shape there).
"""

from __future__ import annotations

from collections.abc import Mapping

import onnx


def _dims(vi: onnx.ValueInfoProto) -> list | None:
    """The numbers of ``vi``'s dims (None for a symbol or an unknown dim); None without a shape."""
    from onnxfold.ir.shapes import value_info_dims  # shapes imports model, which imports this module

    dims = value_info_dims(vi)
    return None if dims is None else [d if isinstance(d, int) else None for d in dims]


def still_holds(source: onnx.ValueInfoProto, now: onnx.ValueInfoProto | None) -> bool:
    """Whether the source's entry is true of the tensor as it is ``now`` (inferred; None where
    inference gave nothing): the same element type, and each dim the source gave as a number the same
    number now. Without an inferred entry, only a source entry that gives no number holds."""
    src_dims = _dims(source)
    if now is None:
        return src_dims is None or all(d is None for d in src_dims)
    if source.type.tensor_type.elem_type != now.type.tensor_type.elem_type:
        return False
    if src_dims is None:
        return True
    now_dims = _dims(now)
    if now_dims is None or len(now_dims) != len(src_dims):
        return False
    return all(s is None or s == n for s, n in zip(src_dims, now_dims, strict=True))


def as_recorded(
    graph: onnx.GraphProto, value_info: Mapping[str, bytes], outputs: Mapping[str, bytes]
) -> None:
    """Rewrite ``graph``'s ``value_info`` (as inferred on export) and its outputs' types to the
    source's entries (serialized ValueInfoProtos by name: ``value_info``, ``outputs``) where they still
    hold (:func:`still_holds`); drop inferred entries of tensors the source did not record."""
    inferred = {vi.name: vi for vi in graph.value_info}
    made = [o for node in graph.node for o in node.output if o]
    outputs_now = {o.name for o in graph.output}
    kept = []
    for name in made:
        if name in outputs_now or name not in value_info:
            continue
        source = onnx.ValueInfoProto.FromString(value_info[name])
        now = inferred.get(name)
        if still_holds(source, now):
            kept.append(source)
        elif now is not None:
            kept.append(now)
    del graph.value_info[:]
    graph.value_info.extend(kept)
    for i, out in enumerate(graph.output):
        if out.name in outputs:
            source = onnx.ValueInfoProto.FromString(outputs[out.name])
            if not still_holds(source, out):
                continue
            now = out.type.tensor_type
            if not source.type.tensor_type.HasField("shape") and now.HasField("shape"):
                # the checker wants a graph output's shape: its rank, every dim unknown, proves no more
                # than none (an exposed LayerNorm output so kept -s 0 exact)
                unknown = [onnx.TensorShapeProto.Dimension() for _ in now.shape.dim]
                source.type.tensor_type.shape.CopyFrom(onnx.TensorShapeProto(dim=unknown))
            graph.output[i].CopyFrom(source)
