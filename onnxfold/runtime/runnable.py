"""Random inputs a model runs on: when the guessed sizes of its free dims do not run, larger ones and
other batches are tried in turn (:func:`runnable_dims`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from onnxfold.runtime.image_dims import SPATIAL_DIM, free_dim
from onnxfold.runtime.inputs import default_shapes, input_specs, make_inputs

#: symbolic non-batch dims tried in turn when the defaults do not run (e.g. a reflect Pad that needs
#: more than 16 samples, a fixed-size window; a raw-audio model whose framing reads 12,400 samples or
#: more: Google's speech-embedding CNN, 16000 being one second at 16 kHz)
FALLBACK_DIMS = (16, 64, 256, 1024, 4096, 16000)
#: batches tried at the first of them when the asked batch runs at none: a model that reads its rows
#: in blocks runs only on a multiple of their count (ICLabel: 4 views of every component), one
#: exported at batch 1 with a batch it declares free only on 1
FALLBACK_BATCHES = (1, 4, 8)
#: a size is not tried where an input would hold more elements than this (two free dims at 16000)
MOST_ELEMENTS = 1 << 24
#: sizes above this are tried only where every input with a free dim holds floats (a signal): token
#: ids at 4096 or 16000 would run a transformer's attention over that many tokens
SIGNAL_ONLY_ABOVE = 1024


def elements_bound(specs: Sequence, shapes: Mapping[str, Sequence[int]] | None, batch: int, dim: int) -> int:
    """An upper bound on the elements of the largest random input at free dims ``dim``: a given
    shape's own, else fixed dims as declared, the leading free one ``batch``, any other free one the
    larger of ``dim`` and an image side (:data:`~onnxfold.runtime.image_dims.SPATIAL_DIM`)."""
    largest = 0
    for spec in specs:  # the session's inputs (input_specs)
        if shapes and spec.name in shapes:
            count = int(np.prod(shapes[spec.name], dtype=np.int64))
        else:
            sizes = [
                (batch if i == 0 else max(dim, SPATIAL_DIM)) if free_dim(d) else int(d)
                for i, d in enumerate(spec.shape or ())
            ]
            count = int(np.prod(sizes, dtype=np.int64))
        largest = max(largest, count)
    return largest


def runnable_dims(
    session: Any,
    shapes: Mapping[str, Sequence[int]] | None,
    batch: int,
    seed: int,
    id_draws: Mapping[str, object] | None = None,
    start: int = FALLBACK_DIMS[0],
) -> tuple[int, dict[str, np.ndarray], list[np.ndarray], int]:
    """The first size, ``start`` then the larger ones of :data:`FALLBACK_DIMS` (those that keep every
    input within :data:`MOST_ELEMENTS`; above :data:`SIGNAL_ONLY_ABOVE` only for float inputs), for
    symbolic non-batch dims on which ``session`` runs, with
    the random feed and the outputs; when none runs at ``batch``, the first of
    :data:`FALLBACK_BATCHES` that runs at ``start`` (returned last). Raises a one-line RuntimeError
    naming the inputs first tried, the other sizes tried, and the shape hint, when none runs."""
    from onnxfold.runtime.compare import SHAPE_HINT, run_feed

    first: Exception | None = None
    outputs = [o.name for o in session.get_outputs()]
    specs = input_specs(session)
    signal = all(
        spec.dtype is not None and spec.dtype.kind == "f"
        for spec in specs
        if any(free_dim(d) for d in (spec.shape or ())[1:])
    )
    larger = [
        d
        for d in FALLBACK_DIMS
        if d > start
        and (signal or d <= SIGNAL_ONLY_ABOVE)
        and elements_bound(specs, shapes, batch, d) <= MOST_ELEMENTS
    ]
    tries = [(dim, batch) for dim in (start, *larger)]
    tries += [(start, b) for b in FALLBACK_BATCHES if b != batch]
    for dim, size in tries:
        feed = make_inputs(
            session, shapes=shapes, batch=size, seed=seed, default_dim=dim, sequence=dim, id_draws=id_draws
        )
        try:
            return dim, feed, run_feed(session, "original", outputs, feed), size
        except RuntimeError as exc:
            first = first or exc
    message = str(first).splitlines()[0]
    if larger and not shapes:  # before the hint, which ends the line
        hint = f" ({SHAPE_HINT})"
        cut = message.endswith(hint)
        message = message.removesuffix(hint) + f"; nor did its free dims at {', '.join(map(str, larger))}"
        message += hint if cut else ""
    raise RuntimeError(message) from None


def shapes_that_run(model: Any, seed: int = 0) -> dict[str, tuple[int, ...]]:
    """One sample's shape of each input with free dims (:func:`~onnxfold.runtime.inputs.default_shapes`)
    at the first size the data-free proxy and validation find the model runs at (:func:`runnable_dims`
    from the guessed size on). PaddleOCR's English recogniser ``x [N, 3, ?, ?]`` was warned about as
    2.2 GMACs at 224×224, where it does not run, while everything measured it at 64×64 (177M MACs)."""
    from onnxfold.folding.samples import runnable_dim, token_draws
    from onnxfold.folding.signal_dims import guessed_dim
    from onnxfold.ir.model import to_model_proto
    from onnxfold.runtime.session import measurement_session

    session = measurement_session(to_model_proto(model), optimize=False)
    return default_shapes(model, runnable_dim(session, None, seed, token_draws(model), guessed_dim(model)))
