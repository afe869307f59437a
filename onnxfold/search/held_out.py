"""What a search's held-out samples say: given samples are split, half fitted and judged on, half
held out, and the chosen candidate is also scored on the held-out half alone, since the samples a
merge was fitted on flatter it."""

from __future__ import annotations

from typing import Any

HELD_OUT_GAP = 0.02  #: held-out fidelity this far below the chosen one's warns that the fit may not carry


def held_out_lines(chosen: Any, held: int = 0) -> list[str]:
    """The report's lines on ``chosen``'s held-out scores (``held``: how many samples, where known: a
    trial asked how many of its 32 the line meant): each output's figure, and a warning where
    one falls more than :data:`HELD_OUT_GAP` below the same output's same metric on all samples (a
    VGG16's held-out top1 0.8125 was set against its r2 0.8513 on all, the model's minimum, while its
    held-out r2 was 0.9181); none without held-out scores."""
    if not chosen.unseen:
        return []
    total = max((getattr(o, "samples", 0) or 0 for o in chosen.outputs), default=0)
    # "32 of 32" beside "the 16 held-out samples" read as two sets to a trial's user: the 16 are of the 32
    which = f"{held} held-out samples alone" if held else "held-out samples alone"
    if held and total > held:
        which = f"{held} of those {total} samples held out"
    lines = [
        f"on the {which} (no merge was fitted and no method per group chosen on them): "
        + ", ".join(f"{o.name} {o.metric} {o.value:.4f}" for o in chosen.unseen)
    ]
    on_all = {(o.name, o.metric): o.value for o in chosen.outputs}
    counts = {(o.name, o.metric): o.samples for o in chosen.outputs if getattr(o, "samples", 0)}
    drops = [
        (on_all[o.name, o.metric] - o.value, o)
        for o in chosen.unseen
        if (o.name, o.metric) in on_all
        and not _one_miss(o, on_all[o.name, o.metric], counts.get((o.name, o.metric)))
    ]
    gap, worst = max(drops, key=lambda d: d[0], default=(0.0, None))
    if worst is not None and gap > HELD_OUT_GAP:  # NSNet2 at 30%: 0.924 against 0.954
        lines.append(
            f"warning: the held-out samples score lower ({worst.name} {worst.metric} {worst.value:.4f} "
            f"against {on_all[worst.name, worst.metric]:.4f} on all): what was fitted may not carry "
            "to new inputs; more --inputs samples make the figure more reliable"
        )
    return lines


def _one_miss(unseen: Any, on_all: float, total: int | None) -> bool:
    """Whether a count's held-out drop is a single miss more than the fitted half's rate predicts: a
    sample is no evidence (russtress's stress tagger warned at 15 of 16 held out against 31 of 32)."""
    held = getattr(unseen, "samples", 0) or 0
    if not total or not held or total <= held:
        return False
    missed_held = round((1.0 - unseen.value) * held)
    missed_fitted = round((1.0 - on_all) * total) - missed_held
    return missed_held - missed_fitted * held / (total - held) < 2
