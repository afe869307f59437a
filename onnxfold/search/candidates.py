"""Building and measuring a search's candidates (:mod:`onnxfold.search.target`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from onnxfold.ir.model import Model
from onnxfold.report.counted import counted_stats
from onnxfold.search.evaluate import Evaluator


@dataclass
class Candidate:
    """One really built and measured candidate."""

    steps: int
    fidelity: float
    params: int
    macs: int
    reduction: float  # fraction of parameters removed
    macs_reduction: float
    outputs: list = field(default_factory=list)
    model: Model | None = None
    data: dict = field(default_factory=dict)
    unseen: list = field(default_factory=list)  # per output, on the held-out samples alone
    #: False for the unchanged model (0 steps) taken unmeasured once the time limit has passed: a fold
    #: that removes nothing reproduces the model bit for bit, so its fidelity is 1
    measured: bool = True
    #: a uniform rival's or a detour's allocation (:mod:`onnxfold.search.uniform`,
    #: :func:`~onnxfold.search.bisect.detour_candidate`); None: the path's at ``steps``
    allocation: dict | None = None
    detour: bool = False  #: found past a step that missed, with that step's group held
    sparsities: dict | None = None  #: what it was built from (a quantized check rebuilds it)

    def meets(self, target: float) -> bool:
        """Every output meets ``target`` (:meth:`~onnxfold.runtime.fidelity.OutputFidelity.meets`)
        on all samples, and reaches it on the held-out samples alone: a merge fitted on the other
        half can score well on its own samples only."""
        if not self.outputs:
            return self.fidelity >= target
        return all(o.meets(target) for o in self.outputs) and all(u.value >= target for u in self.unseen)

    def to_dict(self) -> dict:
        return {
            "steps": self.steps,
            "fidelity": self.fidelity,
            "param_reduction": self.reduction,
            "mac_reduction": self.macs_reduction,
            "outputs": [o.to_dict() for o in self.outputs],
            **({"unseen": [o.to_dict() for o in self.unseen]} if self.unseen else {}),
            "measured": self.measured,
            **({"detour": True} if self.detour else {}),
            **(
                {"uniform": max(self.allocation.values(), default=0.0)}
                if self.allocation and not self.detour
                else {}
            ),
        }


def next_key(path_steps: int, tried: dict[int, Candidate]) -> int:
    """A key for a candidate off the path (a detour's, a uniform rival's): past every step of a path of
    ``path_steps`` steps and every candidate ``tried``."""
    return max([path_steps, *tried]) + 1


def measured(
    steps: int, built: tuple[Model, dict], evaluator: Evaluator | None, base, shapes: dict | None = None
) -> Candidate:
    """The candidate of a built (model, pass data) pair: its fidelity, size and reductions from ``base``
    (MACs at ``shapes``). ``evaluator`` None: the unchanged model, fidelity 1 without a measurement."""
    model, data = built
    fid, per = evaluator(model) if evaluator is not None else (1.0, [])
    unseen = list(evaluator.last_unseen) if getattr(evaluator, "unseen", None) is not None else []
    st = counted_stats(model, shapes)  # MACs counted as the base's are, on the canonical graph
    return Candidate(
        steps,
        fid,
        st.params,
        st.macs,
        1.0 - st.params / base.params if base.params else 0.0,
        1.0 - st.macs / base.macs if base.macs else 0.0,
        per,
        model,
        data,
        unseen,
        measured=evaluator is not None,
    )


def refined(
    chosen: Candidate, built: tuple[Model, dict], evaluator: Evaluator, base, shapes: dict | None = None
) -> Candidate | None:
    """The refined build as a candidate when it measures at least as well as ``chosen`` with no more
    parameters (:func:`as_well`), else None."""
    cand = measured(chosen.steps, built, evaluator, base, shapes)
    if not as_well(cand, chosen) or cand.params > chosen.params:
        return None
    cand.data = {**cand.data, "refined_from": chosen.fidelity}  # the first fit's, which progress showed
    cand.allocation = chosen.allocation
    return cand


def as_well(cand: Candidate, than: Candidate) -> bool:
    """Whether ``cand`` measures at least as well as ``than``: its fidelity is no lower, or where
    counts over samples (top1's k of n) are all it loses, by one sample on an output at most, and its
    continuous figures (r2, mask) are all at least as high. One sample of 32 is no evidence: a FER
    CNN's refit read top1 31 of 32 beside r2 0.9848 (0.9821 first) and was dropped, where on 500 faces
    it kept 99.4% of the labels and the first fit 94.6% (trial 202)."""
    if cand.fidelity >= than.fidelity:
        return True
    mine = {(o.name, o.metric): o for o in cand.outputs}
    theirs = {(o.name, o.metric): o for o in than.outputs}
    if not mine or mine.keys() != theirs.keys() or all(o.samples for o in theirs.values()):
        return False
    for key, o in theirs.items():
        slack = 1.0 / o.samples if o.samples else 0.0
        if mine[key].value < o.value - slack - 1e-12:
            return False
    return True
