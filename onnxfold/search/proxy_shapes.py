"""How the data-free proxy's samples are described: one sample's shape per input, and which of its
dims were guessed where the model leaves them free (images far smaller than a model reads, token
sequences shorter than most texts)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from onnxfold.folding.samples import sample_axes


def proxy_shapes(model, feed, given: Mapping | None = None) -> str:
    """The shape of one random sample per input as the model reads it (its sample axis 1), and whether
    dims the model leaves free were guessed: e.g. ``each input [1, 16, 16] (free dims guessed:
    --input-shape sets them)``. Without its sample axis, [B, 1, 1024]'s sample read as a rank-2 input
    ``[1, 1024]`` (trial 121). A model with free dims
    beyond the batch gets a guess (16 for a sequence or anything unnamed, 224 for an image side, 8× a
    fixed image height for a free width),
    which may be far from what it reads (madmom's key CNN reads 105 bands, and got 16); ``given``:
    the ``--input-shape`` values, which guess nothing."""
    from onnxfold.runtime.inputs import free_dim, input_specs

    specs = {s.name: s for s in input_specs(model)}
    layout = sample_axes(feed)
    axes = layout[1] if layout else {}
    shown, guessed, small, short = [], False, [], []
    for name, value in feed.items():
        shape = list(np.shape(value))
        if not shape:
            continue
        one = [str(d) for d in shape]
        one[axes.get(name, 0)] = "1"  # the sample axis: the leading one, or a state's second
        shown.append(f"{name} [{', '.join(one)}]")
        del shape[axes.get(name, 0)]
        declared = list(specs[name].shape) if name in specs and name not in (given or {}) else []
        if len(declared) > axes.get(name, 0):
            del declared[axes.get(name, 0)]
        free = [free_dim(d) for d in declared]
        guessed |= any(free)
        sides = small_image(shape, free, np.asarray(value).dtype)
        if sides:
            small.append(f"{name} at {sides[0]}×{sides[1]} pixels")
        elif np.asarray(value).dtype.kind in "iu" and any(
            f and d <= 16 for f, d in zip(free, shape, strict=False)
        ):
            short.append(f"{name} at {max(d for f, d in zip(free, shape, strict=False) if f)} tokens")
    text = "each " + ", ".join(shown) if shown else ""
    if small:  # PP-OCR's recogniser, x [3, ?, ?]: lines 16 pixels wide, 2 time steps
        return text + (
            f" (free dims guessed: {', '.join(small)}, far smaller than the images most models read, so "
            "the proxy may misjudge it; --input-shape sets them)"
        )
    if short:  # rxnfp's reaction BERT read 16 tokens where its reactions hold 100 to 160 (trial 183)
        return text + (
            f" (free dims guessed: {', '.join(short)}, shorter than most texts a model reads, so the proxy "
            "may misjudge longer ones; --input-shape sets them)"
        )
    return text + (" (free dims guessed: --input-shape sets them)" if guessed else "")


#: a guessed image side below this many pixels is far from what an image model reads
SMALL_IMAGE = 32


def small_image(shape: list[int], free: list[bool], dtype) -> tuple[int, int] | None:
    """(height, width) of one sample [C, H, W] or [H, W, C] (C of 1, 3 or 4, floats) where a side was
    guessed below :data:`SMALL_IMAGE` pixels, else None."""
    from onnxfold.runtime.image_dims import image_sides

    if len(free) != 3 or np.dtype(dtype).kind != "f":
        return None
    sides = image_sides(shape, [not f for f in free])
    if sides is None or not any(free[i] and shape[i] < SMALL_IMAGE for i in sides):
        return None
    return shape[sides[0]], shape[sides[1]]
