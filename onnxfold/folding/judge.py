"""Measured choice between a group's candidate plans: each applied alone, output error on samples.

For ``method=auto`` the fold pass builds, per group, a cluster fold and a least-squares merge
(:mod:`onnxfold.folding.compensate`); the weight- and moment-based estimates rank keep sets well
but misjudge a fold, whose merged channel is the activation of averaged pre-activations, not the
average of activations. So each candidate is applied alone to a copy of the model (the fold once
as it is and once followed by the ``ar`` repair when the pipeline repairs with ``ar``), and
scored by the relative output error on the measurement samples,

    e = Σ_o ‖y_o − ŷ_o‖² / Σ_o ‖y_o‖²     (every float output, every sample; padded positions of
                                           a token model, per its attention mask, left out),

where an integer output an ArgMax (ArgMin) makes counts by the scores it reads: a character tagger
whose only output is its ArgMax ids measured every candidate at 0 and chose fold by the tie (word
split F1 0.80 at -s 0.3, where wanda chosen on its scores kept 0.95),

and the lowest wins (a tie goes to the earlier candidate: fold). A fold whose error ``ar`` does
not lower is marked so that ``ar`` leaves it alone (``FoldPlan.repair``): repair is applied only
where it measurably helps.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np

from onnxfold.folding import samples as budgets
from onnxfold.folding.moments import token_rows
from onnxfold.folding.samples import (
    chunked,
    sample_count,
    sample_macs,
    samples_measured,
    samples_per_run,
    splittable,
)
from onnxfold.ir.model import Model, to_model_proto
from onnxfold.runtime.padding import padding_mask

Feeds = dict[str, np.ndarray]

#: At most this many measurement samples are used to judge (whole runs, at least one), and no more
#: than fit the sensitivity's MAC budget (:data:`~onnxfold.folding.samples.SENSITIVITY_MACS`, a
#: quarter of a candidate's measurement): the judge only ranks a group's plans, as the sensitivity
#: ranks groups. At the whole budget a PP-OCRv5 detector's judge ran 16 pages of 480×640 for every
#: plan, three quarters of a sensitivity level's time.
MAX_SAMPLES = 32
#: ... and only as many runs as keep the original's outputs under this many values: a causal LM's
#: logits (8 sequences of 64 tokens over 49,152 ids: 2.5·10⁷ values) are judged on one run, a
#: classifier or a detector on all 32 samples. Every judged candidate runs each of these runs once.
MAX_OUTPUT_VALUES = 1 << 25


def first_samples(feeds: Sequence[Feeds], limit: int = MAX_SAMPLES) -> list[Feeds]:
    """The leading runs of ``feeds`` holding at most ``limit`` samples (at least one run): a model
    exported at batch 1 is judged on as many samples as one with a free batch."""
    out, got = [], 0
    for feed in feeds:
        n = sample_count(feed)
        if out and got + n > limit:
            break
        out.append(feed)
        got += n
    return out


def squared_norm(x: np.ndarray, block: int = 1 << 20) -> float:
    """Σ x², accumulated in float64 over blocks of ``block`` elements that are summed in their own
    dtype: an LLM's logits (10⁸ floats per judged candidate) are never copied to float64 whole."""
    flat = np.ravel(x)
    if flat.dtype.itemsize < 4:
        flat = flat.astype(np.float32)
    return float(sum(float(np.dot(part, part)) for part in np.split(flat, range(block, flat.size, block))))


#: ops between an ArgMax and the graph output it makes that keep its ids as they are
_CARRY_IDS = ("Cast", "Squeeze", "Unsqueeze", "Reshape", "Identity", "Flatten")


def label_scores(proto) -> dict[str, str]:
    """Graph output -> the float tensor an ArgMax or ArgMin reads to make it, directly or through
    casts and reshapes (module docstring); outputs made otherwise are left out."""
    return read_by(proto, ("ArgMax", "ArgMin"))


def read_by(proto, ops: Sequence[str]) -> dict[str, str]:
    """Graph output -> the tensor that the node making it, one of ``ops``, reads (its first input),
    directly or through casts and reshapes; outputs made otherwise, or from another output, are left out."""
    outputs = [o.name for o in proto.graph.output]
    producer = {o: n for n in proto.graph.node for o in n.output if o}
    found = {}
    for name in outputs:
        node = producer.get(name)
        while node is not None and node.op_type in _CARRY_IDS:
            node = producer.get(node.input[0])
        if node is not None and node.op_type in ops and node.input[0] not in outputs:
            found[name] = node.input[0]
    return found


def decided_scores(proto) -> list[str]:
    """The float tensors of :func:`label_scores`, each once."""
    return list(dict.fromkeys(label_scores(proto).values()))


def with_outputs(proto, names: Sequence[str]):
    """``proto`` (changed in place) with the tensors ``names`` added as graph outputs."""
    from onnx import helper

    have = {o.name for o in proto.graph.output}
    proto.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names if n not in have)
    return proto


class GroupJudge:
    """Scores candidate plans of one group on ``feeds`` against the ``source`` model's outputs."""

    def __init__(self, source: Model, feeds: Sequence[Feeds], repair: str = "none"):
        from onnxfold.runtime.session import measurement_session

        self.source = source
        self.repair = repair
        proto = to_model_proto(source)
        self.scores = decided_scores(proto)
        sess = measurement_session(with_outputs(proto, self.scores))
        self.names = [o.name for o in sess.get_outputs()]
        self.feeds, self.reference, values = [], [], 0
        feeds = list(feeds)
        # the proto is not needed after the session: its MACs are counted on it, not on a new copy
        per = sample_macs(proto, feeds[0], in_place=True) if feeds else None
        limit = samples_measured(per, budgets.SENSITIVITY_MACS) if per else None  # it only ranks plans
        most = samples_per_run(per) if per else None  # a heavy model's runs take fewer samples
        chosen = first_samples(feeds, min(MAX_SAMPLES, limit or MAX_SAMPLES))
        runs = [part for f in chosen for part in (chunked(f, most) if most and splittable(f) else [f])]
        for feed in runs:
            out = sess.run(self.names, feed)
            self.feeds.append(feed)
            self.reference.append(out)
            values += sum(int(np.size(v)) for v in out)
            if values * (len(self.feeds) + 1) / len(self.feeds) > MAX_OUTPUT_VALUES:
                break  # one more run of this size would pass the cap
        self.runs = 0
        self._chosen: dict[tuple, object] = {}
        from onnxfold.runtime.suffix import suffix_runs

        # candidates run from the nodes they change on
        self.suffix = suffix_runs(source, self.feeds, self.names)

    def rebase(self, model: Model) -> None:
        """Candidates from now on are ``model`` (the source with earlier groups' choices applied, as
        ``auto``'s sequential choice builds them) plus one more group: their suffixes are cut where
        they differ from ``model``. The error is still measured against the source's outputs."""
        from onnxfold.runtime.suffix import suffix_runs

        self.suffix = suffix_runs(model, self.feeds, self.names)

    def error(self, plan, ar: bool = False) -> float:
        """Relative output error with ``plan`` alone applied (then ``ar`` on it); inf if it fails."""
        from onnxfold.folding.apply import FoldRecord, fold_edits
        from onnxfold.passes.fold import rewrite_model

        try:
            model = self.source.copy()
            rewrite_model(model, [plan], shapes=False)  # only run
            if ar:
                from onnxfold.repair.ar import apply_ar

                apply_ar(model.graph, FoldRecord([plan], fold_edits([plan]), self.source))
        except Exception:
            return float("inf")
        return self.error_of(model)

    def error_of(self, model: Model) -> float:
        """Relative output error of ``model`` against the source on the samples; inf if it fails."""
        from onnxfold.runtime.session import measurement_session

        self.runs += 1
        try:
            proto = with_outputs(to_model_proto(model), self.scores)
            outputs = self.suffix.outputs(proto) if self.suffix is not None else None
            if outputs is None:
                sess = measurement_session(proto)
                outputs = [sess.run(self.names, feed) for feed in self.feeds]
            num = den = 0.0
            with np.errstate(invalid="ignore", over="ignore"):  # a reference that is not finite: no warning
                for feed, ref, out in zip(self.feeds, self.reference, outputs, strict=True):
                    mask = padding_mask(feed)
                    for want, got in zip(ref, out, strict=True):
                        if not np.issubdtype(np.asarray(want).dtype, np.floating):
                            continue
                        w = token_rows(np.asarray(want), mask, -1)
                        g = token_rows(np.asarray(got), mask, -1)
                        num += squared_norm(w - g)
                        den += squared_norm(w)
        except Exception:
            return float("inf")
        return num / den if den > 0 else num

    def choose(self, candidates: dict):
        """The candidate plan of least measured error; records every error in its ``estimate``
        (keys ``measured:<method>``, and ``measured:fold+ar``) and sets ``repair``. A group judged
        before at the same width gets the same choice (a copy) without new runs."""
        first = next(iter(candidates.values()))
        key = (first.group.name, first.k, tuple(candidates))
        if key in self._chosen:  # the same width may come from another asked sparsity: keep this one
            chosen = copy.copy(self._chosen[key])
            chosen.sparsity = first.sparsity
            return chosen
        errors: dict[str, float] = {}
        best_name, best_err = None, float("inf")
        for name, plan in candidates.items():
            err = self.error(plan)
            errors[f"measured:{name}"] = err
            if name == "fold" and self.repair == "ar":
                with_ar = self.error(plan, ar=True)
                errors["measured:fold+ar"] = with_ar
                plan.repair = with_ar < err
                err = min(err, with_ar)
            if err < best_err or best_name is None:
                best_name, best_err = name, err
        chosen = candidates[best_name]
        chosen.estimate = {**chosen.estimate, **errors}
        self._chosen[key] = copy.copy(chosen)
        return chosen
