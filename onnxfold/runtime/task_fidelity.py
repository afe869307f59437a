"""The task fidelity of validation's outputs: each output's figure under the metric a target search
would pick (or the one a search that ran used), and whether the inputs exercised its decisions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from onnxfold.runtime.labels import is_labels

#: metrics whose outputs vary little from sample to sample whatever the inputs, so that how little says
#: nothing of whether the inputs exercised them: a detector's raw rows hold its anchors' pixel
#: coordinates beside the scores; its boxes decide
SPREAD_BLIND_METRICS = frozenset({"boxes"})


def task_fidelity(
    metrics: list[Any],
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    original: Any,
    feed: Mapping[str, np.ndarray],
    vocab: frozenset[int],
    given: bool = False,
    searched: Mapping[str, str] | None = None,
    metric: str = "auto",
) -> None:
    """Fill each float or label output's ``fidelity`` (``metrics``, validation's
    :class:`~onnxfold.runtime.compare.OutputMetrics`) under the metric a target search picks (``given``:
    on the user's samples) or the one a search that ran used (``searched``); ``metric``: the user's
    ``--metric`` (an output it leaves out gets no fidelity, and no warning); ``vocab``: the row counts
    of the embedding tables the model's token ids index."""
    from onnxfold.folding.samples import samples_in
    from onnxfold.runtime import fidelity as fid
    from onnxfold.runtime.anchors import AnchorView, softmax_heads
    from onnxfold.runtime.exercised import bounded_by, judged_one_way, unexercised_by_both
    from onnxfold.runtime.padding import padded_tags, padding_mask
    from onnxfold.runtime.producers import free_last_axes, producers_of
    from onnxfold.runtime.states import recurrent_state

    measured = {  # scores and features, and labels (integers, compared by equality: labels.py)
        m.name: reference[m.name]
        for m in metrics
        if m.shape_match and np.asarray(reference[m.name]).dtype.kind in "fbiu"
    }
    if not measured:
        return
    samples = samples_in(feed)
    producers = producers_of(original)
    bounds = bounded_by(original)
    default, named = fid.parse_metric(metric)
    spec = ",".join([default, *(f"{k}={v}" for k, v in named.items() if k in measured)])
    token_inputs = bool(vocab)
    states = frozenset(o for _, o in recurrent_state(original))
    chosen = fid.output_metrics(
        measured,
        spec,
        producers,
        token_inputs,
        samples,
        given,
        bounds,
        vocab,
        states,
        free_last_axes(original),
    )
    if given and default == "auto":  # a tagger fed a padding mask reads each sample's labels together
        chosen.update(padded_tags(measured, chosen, padding_mask(feed), named))
    chosen.update({k: v for k, v in (searched or {}).items() if k in chosen})
    if not given and not searched:  # random inputs: class scores guarded as the search's proxy guards them
        from onnxfold.runtime.classes_reached import PROXY_CLASS_SHARE, classes_reached, proxy_guarded

        reached = classes_reached(measured, chosen, PROXY_CLASS_SHARE)  # rxnfp's BERT: 2 of 50 classes
        for name in proxy_guarded(reached, chosen, measured, {n for n, m in named.items() if m != "auto"}):
            chosen[name] = "top1+r2"  # read "top1 100.0%" at cosine 0.845, and 35% of its labels moved
    mask = padding_mask(feed) if given else None  # the user's samples' padding is not measured
    anchor_scores = softmax_heads(measured, samples) if given else {}  # an SSD's, read once
    view = AnchorView(reference, chosen, samples, mask)
    for m in metrics:
        ref = np.asarray(measured.get(m.name, ()))
        if m.name in measured and ref.size and not is_labels(ref):
            finite = ref[np.isfinite(ref)] if ref.dtype.kind == "f" else ref
            m.span = (float(finite.min()), float(finite.max())) if finite.size else None
            m.unexercised = unexercised_by_both(
                m.name,
                ref,
                candidate[m.name],
                producers.get(m.name),
                token_inputs,
                samples,
                bounds.get(m.name),
                given,
            )
        if m.name in chosen:
            m.fidelity_metric = chosen[m.name]
            if given and not m.unexercised and ref.size:
                # as the search refuses them: raw 0..255 pixels made an emotion CNN answer one class on 31
                # of 32 faces, and a fold at -s 0.2 fitted on them read top1 100% and kept 27% (trial 156)
                m.unexercised = judged_one_way(
                    m.name, chosen[m.name], ref, producers.get(m.name), token_inputs, samples, anchor_scores
                )
            keep = view.tokens[m.name]  # the token positions of padded samples
            parts = [
                (p, *view(m.name, p, reference[m.name], candidate[m.name]))
                for p in fid.metric_parts(chosen[m.name])
            ]
            values = {p: fid.fidelity_value(p, a, b, samples, kept) for p, a, b, kept in parts}
            m.fidelity, m.parts = min(values.values()), values if len(values) > 1 else {}
            decided = {p for p, *_ in parts} & SPREAD_BLIND_METRICS
            if m.unexercised and m.unexercised.startswith("varied") and decided and m.fidelity < 1.0:
                # its decisions moved: a YOLOv8's raw [1, 151, 8400] (pixel coordinates, alike from sample
                # to sample) read "exercise none" beside boxes 0.1361, and -s 0.1 lost 95% of its boxes
                m.unexercised = None
            if keep is not None and m.top1_agreement is not None:  # equal or top1 on the tokens alone
                m.top1_agreement = fid.fidelity_value(
                    "top1", reference[m.name], candidate[m.name], samples, keep
                )
            m.counted = fid.counted(chosen[m.name], reference[m.name], samples)
            automatic = default == "auto" and named.get(m.name, "auto") == "auto"
            argmaxes = set(fid.metric_parts(chosen[m.name])) & set(fid.COUNTS_OF_CLASSES)
            if not is_labels(ref) and automatic and not argmaxes:
                # auto reads no prediction in its argmax: a feature vector, a confidence per position
                m.top1_agreement = None
