"""What a search's report says about outputs its samples do not exercise: the data-free proxy's
(:func:`~onnxfold.runtime.exercised.unexercised`) and the user's samples that all decide one way
(:func:`~onnxfold.runtime.exercised.decided_one_way`), and the classes no given sample shows
(:func:`~onnxfold.runtime.classes_reached.classes_reached`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def exercise_notes(unexercised: Mapping[str, str], metrics: Mapping[str, str], proxy: bool) -> list[str]:
    """The report's lines: one note for the proxy's outputs; on given samples a warning for outputs
    judged by their decisions alone, a note for those whose scores are judged too (``top1+r2``, or r2
    where every sample decides one class: the scores still show the fold, but no sample shows the
    other classes)."""
    if not unexercised:
        return []
    if proxy:
        on = "; ".join(f"on {name} the proxy {why}" for name, why in unexercised.items())
        its = "its" if len(unexercised) == 1 else "their"
        return [
            f"note: {on}: it exercises none of {its} decisions, so this fidelity says little about them "
            "either way (PP-OCRv4's text detector: 6.7% fewer parameters data-free and 74% with 32 pages; "
            "silero-vad at 512 samples: 22.9% data-free and 41% of its speech decisions kept); judge the "
            "result on your task, or give --inputs"
        ]
    alone = {n: why for n, why in unexercised.items() if _decisions_alone(metrics.get(n, "r2"))}
    guarded = {n: why for n, why in unexercised.items() if n not in alone}
    said = {
        "warning": "this fidelity can hardly see a fold that lost the other decisions (malvizv1's malware "
        "classifier judged by top1 on 32 benign files: 1.0000 at 90% fewer parameters, and it called "
        "every file benign); give samples of every kind, scaled as the model's own code scales them, or "
        "judge the scores too (--metric top1+r2)",
        "note": "the fidelity sees the other decisions only through the scores, and no sample shows them "
        "(malvizv1's malware classifier fitted on 32 benign files kept 2 of its 3 malware labels on new "
        "files at 10.3% fewer parameters); give samples of every kind, scaled as the model's own code "
        "scales them (dlib's age predictor fed caffe-scaled faces answered age 0 to 94% of them)",
    }
    return [
        f"{kind}: "
        + "; ".join(f"on {name} the given samples {why}" for name, why in outs.items())
        + f": {said[kind]}"
        for kind, outs in (("warning", alone), ("note", guarded))
        if outs
    ]


def _decisions_alone(metric: str) -> bool:
    return "+" not in metric and metric != "r2"


def unexercised_low(outputs: Sequence, unexercised: Mapping[str, str]) -> str:
    """`` (set by softmax_2, which these inputs leave unexercised: 0.8351 on the rest)`` where the
    lowest output's figure says little (MTCNN's face probability read 0.0000 on noise, and headed a
    budget's fold that kept 87% of real crops), else ''."""
    if not outputs:
        return ""
    worst = min(outputs, key=lambda o: o.value)
    rest = [o.value for o in outputs if o.name not in unexercised]
    if worst.name not in unexercised or not rest:
        return ""
    return f" (set by {worst.name}, which these inputs leave unexercised: {min(rest):.4f} on the rest)"


def _listed(classes: list[int], most: int = 8) -> str:
    shown = ", ".join(str(c) for c in classes[:most])
    return shown + (f" and {len(classes) - most} more" if len(classes) > most else "")


def _not_shown(classes: list[int]) -> str:
    return f", class{'es' if len(classes) > 1 else ''} {_listed(classes)} not shown" if classes else ""


def coverage_notes(
    reached: Mapping[str, tuple[int, int]],
    proxy: bool = False,
    missing: Mapping[str, list[int]] | None = None,
    thin: Mapping[str, dict[int, int]] | None = None,
) -> list[str]:
    """The report's notes on :func:`classes_reached` (none when every class is shown), naming the classes
    left out (``missing``), and on the classes one or two given samples show (``thin``,
    :func:`~onnxfold.runtime.classes_reached.class_support`)."""
    missing, notes = missing or {}, []
    if thin and not proxy:
        parts = "; ".join(
            f"on {name} " + ", ".join(f"class {c} by {k}" for c, k in list(few.items())[:6])
            for name, few in list(thin.items())[:3]
        )
        notes.append(
            f"note: some classes are shown by one or two of the given samples ({parts}): the fold is "
            "measured on them by those alone (an ECG beat classifier's PVC class, shown by 1 of 32 samples, "
            "saw its recall fall from 0.989 to 0.956 in a fold that met its target); samples with a few of each class measure them"
        )
    if not reached:
        return notes
    parts = "; ".join(
        f"on {name} {k} of its {n}" + _not_shown(missing.get(name, []))
        for name, (k, n) in list(reached.items())[:3]
    )
    if proxy:
        return [
            f"note: the proxy's random samples reach only a few classes ({parts}): top1 there measures "
            "their decisions alone (tempocnn's 256 tempo classes, 3 on noise: top1 1.0000 for a fold that "
            "moved 8% of real tracks' tempi), so r2 guards it on scores [N, C]; --inputs with samples of "
            "every kind measure them"
        ]
    return [
        f"note: the given samples' argmaxes reach only some classes ({parts}): the others are not "
        "measured, and the fold may lose them (PaddleOCR's English recogniser, fitted on 32 lines that "
        "showed 60 of its 97 characters, measured 1.0000 and read no '#' after); samples that show every "
        "class the task needs measure them"
    ] + notes
