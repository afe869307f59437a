"""Whether a data-free search synthesises DeepInversion samples, and how many, told without synthesising
them: what the fold does (:func:`~onnxfold.folding.samples.deepinversion_samples`) and what ``analyze``
says it will do (trial 190 read one reason from each)."""

from __future__ import annotations

import importlib.util

from onnxfold.folding import samples

NO_TORCH = "torch is not installed for DeepInversion samples"


def deepinversion_plan(
    model, shapes: dict | None = None, budget: float | None = None, counts=(samples.AUTO_DIR_SAMPLES,)
) -> tuple[int, str]:
    """(how many DeepInversion samples :func:`~onnxfold.folding.samples.deepinversion_samples` would
    synthesise, '') or (0, why it would synthesise none), for a search that spends at most ``budget``
    MACs on them (None: :data:`~onnxfold.folding.samples.AUTO_DIR_BUDGET`) and takes the first of
    ``counts`` it pays for."""
    if not samples.has_batchnorm(model):  # before importing torch
        return 0, samples.NO_BN
    from onnxfold.ir.model import to_model_proto
    from onnxfold.repair.deepinversion import bn_running_stats, not_float_input
    from onnxfold.repair.torch_graph import first_unsupported

    proto = to_model_proto(model)
    if not bn_running_stats(proto):
        return 0, samples.NO_BN
    if (bad := first_unsupported(proto)) is not None:  # before torch and the input's shape: crema's
        # chord CNN was told to install torch, then to give --input-shape, then that its GRU cannot run
        return (
            0,
            f"op {bad.op_type} ({bad.name}) is not supported by the torch executor DeepInversion runs on",
        )
    if importlib.util.find_spec("torch") is None:
        return 0, NO_TORCH
    if len(model.graph.inputs) != 1:  # a NER tagger's emb and mask crashed analyze (trial 201)
        return 0, "DeepInversion needs a model with one input"
    if why := not_float_input(model):
        return 0, why
    budget = samples.AUTO_DIR_BUDGET if budget is None else budget
    each = samples.deepinversion_cost(proto, shapes, 1)  # linear in the count: the model's MACs measured once
    if each is None:
        free = any(
            not (isinstance(d, int) and d > 0) for t in model.graph.inputs for d in (t.shape or [None])
        )
        where = "the input's: give --input-shape" if free and not shapes else "inside the graph, not inferred"
        return 0, f"DeepInversion's cost is unknown: some dims are not fixed ({where})"
    count = next((n for n in counts if each * n <= budget), counts[-1])
    if each * count > budget:
        return 0, (
            f"DeepInversion samples would cost {each * count / 1e12:.1f}T MACs, over the {budget / 1e12:g}T "
            "auto spends on them"
            + (" (a search without a time limit spends more)" if budget < samples.UNTIMED_DIR_BUDGET else "")
        )
    return count, ""


__all__ = ["NO_TORCH", "deepinversion_plan"]
