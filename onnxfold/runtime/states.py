"""Recurrent states: the inputs a model takes back from its own outputs at the next step (a streaming
VAD's LSTM state, a decoder's hidden state), told by their names, dtypes and shapes."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import onnx
from onnx import helper

from onnxfold.ir.model import Model


def _stem(name: str) -> str:
    """A tensor name without its step or direction mark: a trailing one (state / stateN, h0 / hn,
    c_in / c_out, hidden / hidden_out) or a leading one, whose index then stays (FunASR's FSMN VAD
    feeds in_cache0 … in_cache3 back from out_cache0 … out_cache3)."""
    lead = re.fullmatch(r"(in|out|input|output|new|next|prev)_(.+)", name.lower())
    if lead:
        return lead.group(2)
    stem = name[:-1] if len(name) > 1 and name.endswith("N") else name  # silero's stateN
    stem = re.sub(r"(_?(in|out|new|next|prev)|_?[0-9]+)$", "", stem.lower())
    if re.fullmatch(r"[a-z]n", stem):  # an LSTM's hn, cn
        return stem[0]
    return stem or name.lower()  # "in" and "out" are not one state


def recurrent_state(model: Model | onnx.ModelProto) -> list[tuple[str, str]]:
    """(input, output) pairs that carry a recurrent state: the same floating dtype, declared shapes of
    the same rank ≥ 2 that agree where both give a number, and the same name but for a step mark
    (silero-vad's state / stateN, an LSTM's h0 / hn). A mask or ids passed through (a romanizer's
    encoder returns its src_mask as src_mask_out) is not a state."""
    inputs, outputs = _interface(model)
    pairs = []
    for i in inputs:
        if i.shape is None or len(i.shape) < 2 or i.dtype is None or np.dtype(i.dtype).kind != "f":
            continue
        for o in outputs:
            if (
                o.name != i.name
                and o.shape is not None
                and len(o.shape) == len(i.shape)
                and all(
                    a == b or not (isinstance(a, int) and isinstance(b, int))
                    for a, b in zip(o.shape, i.shape, strict=True)
                )
                and o.dtype == i.dtype
                and _stem(o.name) == _stem(i.name)
            ):
                pairs.append((i.name, o.name))
    return pairs


def _interface(model: Model | onnx.ModelProto) -> tuple[list, list]:
    """The graph's inputs and outputs, each with ``name``, ``shape`` (numbers, symbols, None) and
    ``dtype`` (None where unknown), from a Model or a ModelProto's value infos."""
    if isinstance(model, Model):
        return list(model.graph.inputs), list(model.graph.outputs)

    def read(vi: onnx.ValueInfoProto) -> SimpleNamespace:
        t = vi.type.tensor_type
        shape = (
            tuple(d.dim_value if d.HasField("dim_value") else d.dim_param or None for d in t.shape.dim)
            if t.HasField("shape")
            else None
        )
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)) if t.elem_type else None
        except (KeyError, TypeError, ValueError):
            dtype = None
        return SimpleNamespace(name=vi.name, shape=shape, dtype=dtype)

    inits = {i.name for i in model.graph.initializer}
    return [read(v) for v in model.graph.input if v.name not in inits], [read(v) for v in model.graph.output]
