"""Notes the fold report adds where a fidelity search's target and validation's figures tell a user more
than either alone."""

from __future__ import annotations

from typing import Any


def below_target(validation: Any, search: Any) -> str | None:
    """A note when a fidelity search met its target on its samples and validation, on other inputs
    (other random draws where the search's could not be reused), reads an output below it: a
    romanizer's encoder met 0.95 at r2 0.9628 on the search's proxy and validation read 0.9443, with
    no word (the task warning starts at 0.9)."""
    if search is None or search.mode != "min_fidelity" or not search.met:
        return None
    low = [
        o
        for o in getattr(validation, "outputs", ())
        if o.fidelity is not None and o.fidelity < search.target and not o.unexercised
    ]
    if not low:
        return None
    shown = ", ".join(f"{o.name} {o.fidelity_metric} {o.fidelity:.4f}" for o in low[:3])
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
    1, 3 or 4 channels first or last, both other dims at least 32) by r2: a fraction of its variance
    left over reads as a loss of detail."""
    if search is None or search.mode != "min_fidelity" or search.target >= IMAGE_TARGET:
        return None

    def image(shape: tuple) -> bool:
        if len(shape) != 4:
            return False
        return any(
            shape[c] in (1, 3, 4) and min(d for k, d in enumerate(shape[1:], 1) if k != c) >= 32
            for c in (1, 3)
        )

    names = [
        o.name
        for o in getattr(validation, "outputs", ())
        if o.fidelity_metric == "r2" and image(tuple(o.shape))
    ]
    if not names:
        return None
    return (
        f"note: {', '.join(names[:3])} is an image judged by r2 at {search.target:g}: what it leaves out reads as "
        "lost detail (waifu2x's CUNet at r2 0.976 lost 0.94 dB of PSNR; at --min-fidelity 0.99 it kept 98% of its "
        "images within 0.5 dB at 49.3% fewer parameters); --min-fidelity 0.99 keeps an image closer"
    )
