"""Checking a folded model against its source, and rolling back the groups whose rewrite breaks it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from onnxfold.analysis.groups import ROLLBACK, BlockReason
from onnxfold.errors import one_line
from onnxfold.ir.external import weight_bytes
from onnxfold.ir.model import PROTO_LIMIT, Model

if TYPE_CHECKING:
    from onnxfold.folding.apply import FoldPlan

log = logging.getLogger(__name__)


#: Above this many weight bytes, verification skips the in-memory checker and the onnxruntime run.
VERIFY_MAX_BYTES = PROTO_LIMIT


def model_weight_bytes(model: Model) -> int:
    """Bytes of every constant of the model (:func:`onnxfold.ir.external.weight_bytes`): no value is read."""
    return weight_bytes(model.graph)


class Verifier:
    """Checks a folded model against its source: full ``onnx.checker``, onnxruntime loads it and one
    run on small random inputs gives the source's output shapes. Each check is used only where the
    source itself passes it (so a failure is the fold's), and both are skipped above 2 GB."""

    def __init__(self, source: Model, input_shapes: dict | None = None):
        from onnxfold.ir.model import to_model_proto

        self.checker = self.ort = False
        self.inputs: dict | None = None
        self.shapes: dict[str, tuple] = {}
        self.decided: set[str] = set()
        if model_weight_bytes(source) > VERIFY_MAX_BYTES:
            log.info("fold verify: model above 2 GB, skipping the checker and the onnxruntime run")
            return
        proto = to_model_proto(source)
        try:
            import onnx

            onnx.checker.check_model(proto, full_check=True)
            self.checker = True
        except Exception as exc:
            log.info("fold verify: the input fails onnx.checker (%s); not used to verify", one_line(exc, 300))
        try:
            from onnxfold.folding.samples import token_draws
            from onnxfold.runtime.inputs import make_inputs
            from onnxfold.runtime.session import measurement_session

            sess = measurement_session(proto, optimize=False, providers=["CPUExecutionProvider"])
            self.inputs = make_inputs(
                sess, shapes=input_shapes or None, batch=1, id_draws=token_draws(source)
            )
            self.shapes = {
                o.name: v.shape for o, v in zip(sess.get_outputs(), sess.run(None, self.inputs), strict=True)
            }
            self.decided = decided_lengths(proto)
            self.ort = True
        except Exception as exc:
            log.info(
                "fold verify: the input does not run in onnxruntime (%s); not used to verify",
                one_line(exc, 300),
            )

    def error(self, model: Model) -> str | None:
        """None if ``model`` passes every check this verifier uses, else a one-line reason."""
        if not (self.checker or self.ort):
            return None
        from onnxfold.ir.model import to_model_proto

        try:
            proto = to_model_proto(model)
            if self.checker:
                import onnx

                onnx.checker.check_model(proto, full_check=True)
            if self.ort:
                from onnxfold.runtime.session import measurement_session

                sess = measurement_session(proto, optimize=False, providers=["CPUExecutionProvider"])
                got = {
                    o.name: v.shape
                    for o, v in zip(sess.get_outputs(), sess.run(None, self.inputs), strict=True)
                }
                if any(not _alike(got.get(k), v, k in self.decided) for k, v in self.shapes.items()):
                    return f"output shapes changed: {got} != {self.shapes}"
        except Exception as exc:
            return f"{type(exc).__name__}: {one_line(exc, 300)}"
        return None


#: ops whose output's length their input values decide (a decoding loop stops at its end token)
DECIDING_OPS = frozenset({"Loop", "NonZero", "NonMaxSuppression", "Compress", "Unique"})


def decided_lengths(proto) -> set[str]:
    """The graph outputs behind an op of :data:`DECIDING_OPS`: their lengths may change with the
    values, so a fold that changes a decision changes them (SLANet's table decoder wrote 48 steps for
    58 on noise, and 30 of its 52 groups were rolled back as broken rewrites)."""
    made = {o: n for n in proto.graph.node for o in n.output}
    out = set()
    for output in proto.graph.output:
        stack, seen = [output.name], set()
        while stack:
            node = made.get(stack.pop())
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            if node.op_type in DECIDING_OPS:
                out.add(output.name)
                break
            stack.extend(node.input)
    return out


def _alike(got: tuple | None, want: tuple, decided: bool) -> bool:
    """Whether a rewritten model's output shape ``got`` is the source's ``want``; one whose length the
    values decide (``decided``) need only keep its rank."""
    return got is not None and (len(got) == len(want) if decided else tuple(got) == tuple(want))


def rewrite_copy(
    source: Model, plans: Sequence[FoldPlan], rewrite: Callable[[Model, Sequence[FoldPlan]], list[str]]
) -> tuple[Model, list[str]]:
    """A fresh copy of ``source`` with ``plans`` applied by ``rewrite``."""
    model = source.copy()
    return model, rewrite(model, plans)


def rollback_failures(
    source: Model,
    plans: list[FoldPlan],
    verifier: Verifier,
    rewrite: Callable[[Model, Sequence[FoldPlan]], list[str]],
    error: str,
) -> tuple[Model, list[str]]:
    """Find the folded groups whose rewrite breaks the model and block them (``reason`` "rollback: …").

    Bisects the folded plans (a subset is tried on a fresh copy of ``source``); if the groups left still
    fail together, adds them back one at a time, keeping those that verify. Returns the model with every
    surviving plan applied and the rewritten tensor names."""

    def attempt(subset: Sequence[FoldPlan]) -> tuple[str | None, Model | None, list[str]]:
        try:
            model, names = rewrite_copy(source, subset, rewrite)
        except Exception as exc:
            return f"{type(exc).__name__}: {one_line(exc, 300)}", None, []
        return verifier.error(model), model, names

    folded = [p for p in plans if p.status == "folded"]
    bad: dict[int, str] = {}

    def search(cands: list[FoldPlan], err: str | None = None) -> None:
        if not cands:
            return
        if err is None:
            err = attempt(cands)[0]
            if err is None:
                return
        if len(cands) == 1:
            bad[id(cands[0])] = err
            return
        half = len(cands) // 2
        search(cands[:half])
        search(cands[half:])

    search(folded, error)
    keep = [p for p in folded if id(p) not in bad]
    err, model, names = attempt(keep)
    if err is not None:  # groups that only fail together: add them back one at a time
        keep = []
        for p in folded:
            trial_err = attempt(keep + [p])[0]
            if trial_err is None:
                keep.append(p)
            else:
                bad.setdefault(id(p), trial_err)
        err, model, names = attempt(keep)
    kept = {id(p) for p in keep}
    for p in folded:
        if id(p) not in kept:
            reason = bad.get(id(p), "breaks the model together with other groups")
            log.warning("fold: rolled back group %s: %s", p.group.name, reason)
            p.status, p.k, p.labels = "blocked", p.group.size, None
            p.reason = f"rollback: {reason}"
            p.reasons = [BlockReason(ROLLBACK, p.reason)]
    if err is not None or model is None:  # nothing verifies: return the source untouched
        return source.copy(), []
    return model, names
