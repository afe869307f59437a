"""The note that validation on the given samples measured what was fitted to them."""

from __future__ import annotations

from typing import Any


def in_sample_note(report: Any) -> str:
    """A note where validation on the given samples is in-sample, for a fold report: the fold fitted its
    activation statistics to them (``auto``, ``lsq``, ``wanda``, ``hybrid``; a fold that folds nothing
    fits nothing), or static quantization its ranges (flashvad's voice detector, calibrated and
    validated on one stream: r2 0.9997, and 75% false alarms on new audio); '' otherwise."""
    passes = report.passes
    if report.any_folded and any(p.name == "fold" and p.stats.get("fitted_on_inputs") for p in passes):
        what, fix = (
            "the fold also fitted and judged its merges on",
            "--min-fidelity F --inputs holds half of them out",
        )
    elif any(p.name == "quantize" and p.stats.get("calibration") == "pipeline inputs" for p in passes):
        what, fix = (
            "static quantization calibrated its ranges on",
            "quantize:calibration=FILE with other samples measures new ones",
        )
    else:
        return ""
    return f"(measured on the given samples, which {what}: an in-sample figure that new inputs can read lower; {fix})"
