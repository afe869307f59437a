"""Models that feed a state back (a streaming VAD's LSTM state, a recogniser's h0 / hn), measured over
streams.

One step from the given states hides what a stream meets: the folded model runs on its own state,
so its errors compound from chunk to chunk (silero-vad at r2 0.99 per step kept 93% of its speech
decisions over 2 s streams). When the given samples are consecutive steps of streams, which the
original model itself tells (its output state for sample i is the input state of sample i + 1), a
candidate is rolled out along each stream: the first sample with its given state, every later one
with the state the candidate itself produced.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from onnxfold.folding.samples import Feeds, sample_axes, take
from onnxfold.runtime.compare import run_feed
from onnxfold.runtime.sequences import sample_axis
from onnxfold.runtime.states import _stem, recurrent_state  # noqa: F401 (read from here too)
from onnxfold.search.evaluate import take_samples

#: An output state matches the next sample's input state within this fraction of its largest value.
LINK_TOLERANCE = 1e-3


def stream_chains(
    feed: Feeds, reference: Mapping[str, np.ndarray], pairs: Sequence[tuple[str, str]]
) -> list[list[int]]:
    """The given samples as streams: runs of consecutive samples i, i + 1, ... where the original's
    output state of each (``reference``, from one run on the whole feed) is, within
    :data:`LINK_TOLERANCE`, the input state given with the next. Every sample is in exactly one chain
    (a lone sample is a chain of one); [] when the feed cannot be cut into samples."""
    layout = sample_axes(feed)
    if layout is None or not pairs:
        return []
    n = layout[0]
    chains, current = [], [0]
    for i in range(n - 1):
        nxt = take(feed, [i + 1])
        linked = True
        for state_in, state_out in pairs:
            produced = take_samples(reference[state_out], np.array([i]), n)
            given = np.asarray(nxt[state_in])
            if produced is None or produced.shape != given.shape:
                linked = False
                break
            scale = float(np.abs(given).max(initial=0.0))
            if scale == 0.0 or not np.allclose(produced, given, rtol=0.0, atol=LINK_TOLERANCE * scale):
                linked = False  # a zero state is a stream's start, not a continuation
                break
        if linked:
            current.append(i + 1)
        else:
            chains.append(current)
            current = [i + 1]
    chains.append(current)
    return chains


def rollout(
    session,
    names: Sequence[str],
    feed: Feeds,
    pairs: Sequence[tuple[str, str]],
    chains: Sequence[Sequence[int]],
    axes: Mapping[str, int],
) -> dict[str, np.ndarray]:
    """Every output of ``names`` over the samples of ``feed`` (:func:`stream_chains`), each chain run
    sample by sample: its first sample with the given state, the others with the state the model
    produced on the sample before. Outputs joined in sample order along ``axes`` (their sample axis in
    a run on the whole feed: :func:`output_axes`; a state [1, 1, hidden] of one sample cannot tell)."""
    steps: dict[int, list[np.ndarray]] = {}
    feeds_to = dict(pairs)
    for chain in chains:
        carried: dict[str, np.ndarray] = {}
        for i in chain:
            step = {**take(feed, [i]), **carried}
            out = run_feed(session, "rolled-out", list(names), step)
            got = dict(zip(names, out, strict=True))
            carried = {state_in: got[feeds_to[state_in]] for state_in in feeds_to}
            steps[i] = out
    order = [steps[i] for i in sorted(steps)]
    joined = {}
    for k, name in enumerate(names):
        joined[name] = np.concatenate([np.atleast_1d(o[k]) for o in order], axis=axes.get(name, 0))
    return joined


def output_axes(outputs: Mapping[str, np.ndarray], samples: int) -> dict[str, int]:
    """The axis that holds the samples of each output of a run on ``samples`` samples: 1 for a time-
    major or [layers, batch, hidden] output, else 0."""
    return {k: 1 if sample_axis(np.shape(v), samples) == "second" else 0 for k, v in outputs.items()}
