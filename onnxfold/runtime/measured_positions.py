"""The positions of each sample that the task reads, given beside the samples.

A tagger's outputs hold a decision at every position, but its task may read a few of them: g2pM's
polyphone BiLSTM writes one of 876 pinyin classes at every character, and its package reads the
class only at the polyphonic ones. Counting every position, a fold that kept 92.6% of the
polyphones' readings measured top1 0.5449 (the other positions, which nobody reads, kept 38.8%),
and no target above one half could pass.

A ``.npz`` of samples (or a mapping given to the API) may hold, beside one array per model input,
an array :data:`POSITIONS` of shape [N, L] (booleans or integers; non-zero: the task reads that
position) for inputs whose samples are [N, L, ...]. Those inputs are marked as onnxfold marks its
own padding (:func:`~onnxfold.runtime.padding.mark_padding`, intersected with any padding already
known), so that every metric measures outputs [N, L, ...] at the marked positions alone
(:mod:`onnxfold.runtime.padding`).
"""

from __future__ import annotations

import numpy as np

#: the name of the array of measured positions in a ``.npz`` of samples (module docstring)
POSITIONS = "onnxfold_positions"


def take_positions(arrays: dict, names: list[str]) -> tuple[np.ndarray, str] | None:
    """Remove :data:`POSITIONS` (an (array, where) pair) from ``arrays`` and return it, unless the model
    has an input of that name; None where there is none."""
    if POSITIONS in names or POSITIONS not in arrays:
        return None
    return arrays.pop(POSITIONS)


def mark_positions(out: dict[str, np.ndarray], positions: np.ndarray, where: str) -> list[str]:
    """Mark each input of ``out`` (replaced in place) whose first two dims are ``positions``' shape
    with the positions it marks (and the padding already known); the inputs marked. One-line
    ``ValueError`` s for an array that marks nothing, or matches no input."""
    from onnxfold.runtime.padding import mark_padding, padding_mask

    keep = np.asarray(positions)
    if keep.ndim != 2 or keep.dtype.kind not in "biu":
        raise ValueError(
            f"{where}: {POSITIONS} must be booleans or integers of shape [samples, positions], "
            f"got {keep.dtype} of shape {keep.shape}"
        )
    keep = keep != 0
    if not keep.any(axis=1).all():
        empty = int((~keep.any(axis=1)).sum())
        raise ValueError(f"{where}: {POSITIONS} marks no position in {empty} of its {len(keep)} samples")
    known = padding_mask(out)
    if known is not None and known.shape == keep.shape:
        keep = keep & known
    marked = [n for n, v in out.items() if np.ndim(v) >= 2 and np.shape(v)[:2] == keep.shape]
    if not marked:
        shapes = ", ".join(f"{n} {list(np.shape(v))}" for n, v in out.items())
        raise ValueError(
            f"{where}: {POSITIONS} of shape {list(keep.shape)} matches no input's samples and positions "
            f"(the first two dims of {shapes})"
        )
    for name in marked:
        out[name] = mark_padding(out[name], keep)
    return marked
