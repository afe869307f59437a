"""Recurrent states: the inputs a model takes back from its own outputs at the next step (a streaming
VAD's LSTM state, a decoder's hidden state), told by their names, dtypes and shapes."""

from __future__ import annotations

import re

import numpy as np
import onnx

from onnxfold.ir.model import Model


def _stem(name: str) -> str:
    """A tensor name without its step or direction mark: a trailing one (state / stateN, h0 / hn,
    c_in / c_out, hidden / hidden_out, r1i / r1o after an index) or a leading one, whose index then
    stays (FunASR's FSMN VAD feeds in_cache0 … in_cache3 back from out_cache0 … out_cache3)."""
    lead = re.fullmatch(r"(in|out|input|output|new|next|prev)_(.+)", name.lower())
    if lead:
        return lead.group(2)
    stem = name[:-1] if len(name) > 1 and name.endswith("N") else name  # silero's stateN
    numbered = re.fullmatch(r"(.*[0-9])[io]", stem.lower())  # RVM's r1i … r4i back from r1o … r4o
    if numbered:
        return numbered.group(1)
    stem = re.sub(r"(_?(in|out|new|next|prev)|_?[0-9]+)$", "", stem.lower())
    if re.fullmatch(r"[a-z]n", stem):  # an LSTM's hn, cn
        return stem[0]
    return stem or name.lower()  # "in" and "out" are not one state


def recurrent_state(model: Model | onnx.ModelProto) -> list[tuple[str, str]]:
    """(input, output) pairs that carry a recurrent state: the same floating dtype, declared shapes of
    the same rank ≥ 2 that agree where both give a number, and the same name but for a step mark
    (silero-vad's state / stateN, an LSTM's h0 / hn). A mask or ids passed through (a romanizer's
    encoder returns its src_mask as src_mask_out) is not a state."""
    from onnxfold.runtime.inputs import input_specs, output_specs

    outputs = output_specs(model)
    pairs = []
    for i in input_specs(model):
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
