"""Sequence outputs: where an output holds its samples, CTC's signature in argmax paths, and the
agreement of greedy CTC decodings (the ``sequence`` metric of :mod:`onnxfold.runtime.fidelity`)."""

from __future__ import annotations

import numpy as np

#: share of positions whose argmax is one class (the blank) from which ``ctc_like`` calls an output CTC
BLANK_SHARE = 0.5
#: fewest steps per sample of CTC logits (a recogniser emits more steps than characters)
MIN_CTC_STEPS = 8


def ctc_like(ref: np.ndarray, samples: int | None = None) -> bool:
    """Whether a float [B, T, C] / [T, B, C] output looks like a recogniser's CTC logits when neither
    its name nor its op says so (ddddocr's recogniser writes output ``387`` from a Gemm and Reshape):
    C ≥ 3 classes on the last axis, T ≥ :data:`MIN_CTC_STEPS` steps per sample (an LSTM's state
    [layers, B, hidden] has 1–4 "steps"), and the blank, the first or the last class as every CTC
    exporter puts it, the argmax at ≥ :data:`BLANK_SHARE` of the positions but not at all of them.
    On that recogniser r2 0.965 on its logits kept 89% of new lines. With as many steps as classes
    or more, the argmax paths must also look like CTC's (:func:`blank_separated`): a detector's [B,
    anchors, attributes] has far more anchors than attributes, and so has a reader of a small
    alphabet (a captcha CRNN, 37 steps of 36 characters and the blank: r2 0.9595 stood for a fold
    that changed 45% of its readings); paths need the sample count."""
    ref = np.asarray(ref)
    if ref.dtype.kind != "f" or ref.ndim != 3 or ref.shape[-1] < 3 or ref.size == 0:
        return False
    positions = ref.shape[0] * ref.shape[1]
    paths_known = bool(samples) and positions % samples == 0
    steps = positions // samples if paths_known else max(ref.shape[:2])
    if steps < MIN_CTC_STEPS:
        return False
    top = np.bincount(ref.argmax(axis=-1).ravel(), minlength=ref.shape[-1])
    blank = int(top.argmax())
    if not (blank in (0, ref.shape[-1] - 1) and BLANK_SHARE * positions <= top[blank] < positions):
        return False
    if steps >= ref.shape[-1] and ref.shape[-1] < MIN_PATH_CLASSES:  # points of 3 coordinates (trial 161)
        return False
    return steps < ref.shape[-1] or (paths_known and blank_separated(ref, samples))


#: the fewest classes of an unnamed output with as many steps as classes or more read as CTC by its paths:
#: the blank and three symbols. MediaPipe's face mesh writes its 468 points [N, 468, 3]; on random faces
#: the argmax of (x, y, z) ran like a blank's between short emissions, and its landmarks were read as
#: text lines, so a 17% fold measured 0.03 and the data-free search kept the model whole
MIN_PATH_CLASSES = 4


#: share of a signal model's emissions (runs of a class other than the dominant one) that the dominant
#: class must separate for named sequence logits to count as CTC
SEPARATED_SHARE = 0.5


def blank_separated(ref: np.ndarray, samples: int | None = None) -> bool:
    """Whether the argmax paths of [B, T, C] / [T, B, C] logits look like CTC's: the class most often
    the argmax (the blank) is the first or the last class, as every CTC exporter puts it; it ends at
    least :data:`SEPARATED_SHARE` of the runs of the other classes that it does not end the path
    with, and those runs are short (:func:`separated_paths`); or no other class is ever the argmax
    (:func:`one_class` then decides). CTC separates its emissions with the blank (PP-OCRv4's recogniser on 32 rendered
    lines: 81% of them); a frame classifier moves from class to class (FunASR's FSMN VAD, a Softmax
    named logits over 248 states: 2.5%, the most common state the argmax at only 26% of the frames),
    and compared whole lines of its frames as if they were text, so that no fold kept 0.95 of
    them while every speech segment stayed."""
    ref = np.asarray(ref)
    paths = per_sample_paths(ref.argmax(axis=-1), samples)
    blank = int(np.bincount(paths.ravel()).argmax())
    return blank in (0, ref.shape[-1] - 1) and separated_paths(paths)


#: the longest median run of an emission (a class other than the blank) in CTC paths, in steps
MAX_EMISSION_RUN = 8


def separated_paths(paths: np.ndarray) -> bool:
    """:func:`blank_separated` of argmax paths [samples, steps], whose emissions are also short: CTC's
    are peaks of a few steps (a character), where a frame classifier's events last (a seizure
    detector's [time, B, 4] logits, background the class between "pre" and "seizure": seizures of a
    median 168 half-second steps, separated by the background, were read as lines of text, and one
    flickering step failed a whole 300 s window)."""
    blank = int(np.bincount(paths.ravel()).argmax())
    change = paths[:, 1:] != paths[:, :-1]  # a run ends at t where the path changes after it
    ends = change & (paths[:, :-1] != blank)
    emissions = int(ends.sum())
    if emissions == 0:
        return True
    separated = int((ends & (paths[:, 1:] == blank)).sum())
    if separated < SEPARATED_SHARE * emissions:
        return False
    return bool(np.median(_emission_runs(paths, blank)) <= MAX_EMISSION_RUN)


def _emission_runs(paths: np.ndarray, blank: int) -> list[int]:
    """The lengths of the runs of classes other than ``blank`` in each path."""
    runs = []
    for row in paths:
        edges = np.flatnonzero(np.diff(row)) + 1
        starts, stops = np.concatenate([[0], edges]), np.concatenate([edges, [len(row)]])
        runs += [int(b - a) for a, b in zip(starts, stops, strict=True) if row[a] != blank]
    return runs or [0]


def ctc_paths(labels: np.ndarray, samples: int | None = None) -> bool:
    """Whether integer labels [B, T] are greedy CTC paths decoded inside the graph (an ArgMax over a
    recogniser's logits, as trueocr's writes its character ids): at least :data:`MIN_CTC_STEPS`
    steps, one class (the blank) at ≥ :data:`BLANK_SHARE` of the positions but not all, and
    separating the other classes' runs (:func:`separated_paths`). A line is then read whole
    (``sequence``): per position, blanks agree everywhere, and trueocr's ids kept 0.973 of the
    positions where 32.8% of the lines were still read alike."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu" or labels.ndim != 2 or labels.size == 0 or labels.min() < 0:
        return False
    paths = per_sample_paths(labels, samples)
    if paths.shape[1] < MIN_CTC_STEPS:
        return False
    counts = np.bincount(paths.ravel())
    if not BLANK_SHARE * paths.size <= counts.max() < paths.size:
        return False
    return separated_paths(paths)


def sample_axis(shape: tuple[int, ...], samples: int) -> str | None:
    """Where an output over ``samples`` samples holds them: ``leading`` (batch major), ``second``
    (time major [T, B, ...]), ``blocks`` (a leading axis of ``samples`` equal blocks: a fixed-batch
    time-major model run sample by sample, outputs joined), or None."""
    if not shape or not samples:
        return None
    if shape[0] == samples:
        return "leading"
    if len(shape) >= 2 and shape[1] == samples:
        return "second"
    return "blocks" if shape[0] % samples == 0 else None


def per_sample_paths(paths: np.ndarray, samples: int | None) -> np.ndarray:
    """argmax paths as [samples, steps], the samples found by :func:`sample_axis` (the leading axis
    when it does not find them)."""
    paths = np.asarray(paths)
    if paths.ndim < 2:  # class scores: one step per sample
        return paths.reshape(-1, 1)
    n = samples or paths.shape[0]
    where = sample_axis(paths.shape, n)
    if where == "second":
        return np.moveaxis(paths, 1, 0).reshape(n, -1)
    if where == "blocks":
        return paths.reshape(n, -1)
    return paths.reshape(paths.shape[0], -1)


def sequence_agreement(ref_paths: np.ndarray, cand_paths: np.ndarray, samples: int | None) -> float:
    """Fraction of samples whose greedy CTC decodings are identical: per sample the argmax path, repeats
    merged, the blank (the class most often the argmax in the reference) dropped."""
    ref_rows, cand_rows = per_sample_paths(ref_paths, samples), per_sample_paths(cand_paths, samples)
    blank = int(np.bincount(ref_rows.ravel()).argmax())

    def decode(row: np.ndarray) -> tuple[int, ...]:
        keep = np.ones(row.shape, bool)
        keep[1:] = row[1:] != row[:-1]
        return tuple(row[keep & (row != blank)].tolist())

    same = [decode(a) == decode(b) for a, b in zip(ref_rows, cand_rows, strict=True)]
    return float(np.mean(same))
