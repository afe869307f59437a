"""Image inputs' dims: which axes of an input are an image's sides, and the sizes random images take
where the model leaves them free (a text line's width beside a fixed height; both sides unnamed)."""

from __future__ import annotations

import numpy as np

#: Default value for symbolic dims that look like an image height/width.
SPATIAL_DIM = 224

#: a free image width beside a fixed height h is guessed as LINE_RATIO·h: a text line (PaddleOCR's
#: recognisers read 48 × 320, CRNNs 32 × 100 to 32 × 320)
LINE_RATIO = 8


#: channel counts that make a float input an image (grey, RGB, RGBA)
IMAGE_CHANNELS = (1, 3, 4)


def free_dim(d) -> bool:
    """Whether a declared dim is free: symbolic, unnamed, or negative (Paddle2ONNX writes -1)."""
    return not isinstance(d, (int, np.integer)) or d < 0


def image_sides(sample, fixed) -> tuple[int, int] | None:
    """(height axis, width axis) of one sample [C, H, W] or [H, W, C] whose C is fixed (``fixed[i]``:
    axis i's size is known) at one of :data:`IMAGE_CHANNELS`, the first layout that fits; else None."""
    if len(sample) != 3:
        return None
    for channels, sides in ((0, (1, 2)), (2, (0, 1))):
        if fixed[channels] and sample[channels] in IMAGE_CHANNELS:
            return sides
    return None


def _sides_in(dims, dtype) -> tuple[int, int] | None:
    """(height axis, width axis) in ``dims`` of float images [N, C, H, W] or [N, H, W, C]
    (:func:`image_sides`), else None."""
    dims = list(dims or ())
    if len(dims) != 4 or dtype is None or np.dtype(dtype).kind != "f":
        return None
    sides = image_sides(dims[1:], [not free_dim(d) for d in dims[1:]])
    return None if sides is None else (sides[0] + 1, sides[1] + 1)


def line_width(dims, dtype) -> tuple[int, int] | None:
    """(the axis, its guess) of a free width beside a fixed height in float images [N, C, H, W] or
    [N, H, W, C] (:func:`image_sides`), else None. Guessed at 16 as any unnamed dim, PP-OCRv3's
    English recogniser (x [N, 3, 48, ?]) read lines of 2 time steps: its data-free search kept 32 of
    32 such lines at 42.9% fewer parameters, and 42% of real lines read the same."""
    sides = _sides_in(dims, dtype)
    if sides is None:
        return None
    h, w = sides
    if not free_dim(dims[h]) and dims[h] >= 8 and free_dim(dims[w]):
        return w, LINE_RATIO * int(dims[h])
    return None


def free_image_sides(dims, dtype) -> tuple[int, int]:
    """The axes of both sides of float images [N, C, H, W] or [N, H, W, C] (:func:`image_sides`) where
    both are free, else (). They are guessed at :data:`SPATIAL_DIM` unless named otherwise: PaddleOCR's
    orientation classifier declares x [-1, 3, -1, -1], and its data-free proxy ran on 16×16 images
    (636K MACs where the 48×192 lines it reads take 16.3M)."""
    sides = _sides_in(dims, dtype)
    return sides if sides is not None and all(free_dim(dims[i]) for i in sides) else ()
