"""Input sizes a model's own metadata states, taken where its image inputs leave their sides free.

Ultralytics writes the size a model was trained and exported at as ``imgsz`` (``[64, 64]``,
``[640, 640]``) in the ONNX metadata; exported with dynamic axes, its ``images [batch, 3, height,
width]`` leaves the sides free. chessvision's piece classifier reads 64×64 squares, and its data-free
proxy ran on 224×224 noise (disclosed only as "free dims guessed"). Where no ``--input-shape`` and no
samples are given, such sides are taken from the metadata instead of guessed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from onnxfold.runtime.image_dims import free_dim, free_image_sides

#: metadata keys that state an image input's (height, width), by exporter
SIZE_KEYS = ("imgsz",)


def stated_size(metadata: Mapping[str, str]) -> tuple[int, int] | None:
    """(height, width) from ``imgsz``: ``[64, 64]``, ``(640, 480)``, or one side ``320``; else None."""
    for key in SIZE_KEYS:
        numbers = [int(n) for n in re.findall(r"\d+", str(metadata.get(key, "")))]
        if len(numbers) == 1 and numbers[0] > 0:
            return numbers[0], numbers[0]
        if len(numbers) == 2 and min(numbers) > 0:
            return numbers[0], numbers[1]
    return None


def metadata_shapes(model: Any) -> dict[str, tuple[int, ...]]:
    """{input: its whole shape} for each float image input whose height and width are free and whose
    other dims are fixed but a leading batch (taken as 1), at the size the metadata states
    (:func:`stated_size`); {} where it states none."""
    from onnxfold.runtime.inputs import input_specs

    size = stated_size(getattr(model, "metadata", None) or {})
    if size is None:
        return {}
    shapes = {}
    for spec in input_specs(model):
        dims = list(spec.shape or ())
        sides = free_image_sides(dims, spec.dtype)
        if not sides or any(free_dim(d) for i, d in enumerate(dims) if i and i not in sides):
            continue
        shape = [1 if free_dim(d) else int(d) for d in dims]
        shape[sides[0]], shape[sides[1]] = size
        shapes[spec.name] = tuple(shape)
    return shapes
