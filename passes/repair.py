"""repair: restore the activation statistics that folding collapses (docs/method.md §2). Runs after ``fold``.

Modes:

* ``none``  Fold-Naive: nothing changes (the fold's averaged BN statistics stay).
* ``ar``    Fold-AR, data-free: BN-kept pairs are normalised and their γ rescaled by
            sqrt(N/(1 + (N − 1)·E)); BN-free producers get their merged rows rescaled to the
            members' mean norm (:mod:`onnxfold.repair.ar`).
* ``data``  Fold-R with a few samples (``calibration``): BN statistics re-estimated, BN-free
            producers corrected by a per-channel affine towards the members' original statistics,
            sequentially in topological order (:mod:`onnxfold.repair.data`).
* ``dir``   Fold-DIR, data-free: a batch is synthesised from the *original* model's BatchNorm
            statistics (DeepInversion, :mod:`onnxfold.repair.deepinversion`; needs torch), then used as
            calibration data exactly like ``data``. The batch is left in ``ctx.data["calibration"]``
            for later passes (e.g. static quantization). Graphs without BN statistics: an error.

The pass consumes the fold pass's record (``ctx.data["fold_record"]``); groups the fold left
unchanged are never touched, so ``fold:sparsity=0`` followed by any repair is bit-exact.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxfold.ir.model import Model
from onnxfold.ir.shapes import clear_shapes, infer_shapes
from onnxfold.pipeline.manager import Option, Pass, PassContext, PassError, PassResult, PipelineError
from onnxfold.runtime.sample_files import load_inputs

REPAIR_MODES = ("none", "ar", "data", "dir")


class RepairNotApplicable(PassError, ValueError):
    """The chosen repair mode cannot run on this model; raised by :meth:`RepairPass.preflight` before
    any pass runs. A :class:`PassError` (as when the pass itself fails) and a ValueError (a bad input)."""


class RepairPass(Pass):
    name = "repair"
    summary = "repair the variance collapse of a fold: none, ar (data-free), data (calibration samples) or dir (synthetic inputs from BN statistics)"
    options = (
        Option(
            "mode",
            str,
            "ar",
            "none (Fold-Naive), ar (Fold-AR, data-free), data (Fold-R: needs calibration), "
            "dir (Fold-DIR: synthetic batch from the BN statistics, needs torch)",
            REPAIR_MODES,
        ),
        Option(
            "calibration",
            str,
            "",
            "mode data: input samples, a .npy/.npz file or a folder of .npy files "
            "(format: onnxfold.runtime.sample_files.load_inputs)",
        ),
        Option("batch_size", int, 64, "mode data: samples per onnxruntime run"),
        Option(
            "goal",
            str,
            "members",
            "mode data, BN statistics: members (the members' original normalised "
            "statistics) or reset (the measured batch statistics)",
            ("members", "reset"),
        ),
        Option(
            "sequential", bool, True, "mode data: repair in topological order (else all sites in one run)"
        ),
        Option("dir_samples", int, 128, "mode dir: number of synthesised inputs"),
        Option("dir_iterations", int, 200, "mode dir: Adam steps of the synthesis"),
        Option("seed", int, 0, "mode dir: seed of the synthesis"),
    )

    def __init__(self, calibration_data: np.ndarray | dict[str, np.ndarray] | None = None, **kwargs: Any):
        self.calibration_data = calibration_data
        self._feeds: tuple[tuple, dict[str, np.ndarray]] | None = None  # (the inputs read for, the feeds)
        super().__init__(**kwargs)

    def validate_options(self) -> None:
        mode = self.opts["mode"]
        has_data = bool(self.opts["calibration"]) or self.calibration_data is not None
        if mode == "data" and not has_data:
            raise PipelineError("repair mode 'data' needs calibration samples (--calibration FILE.npy|DIR)")
        if mode != "data" and has_data:
            raise PipelineError(f"calibration samples are only used by repair mode 'data', not {mode!r}")
        if self.opts["batch_size"] < 1:
            raise PipelineError("repair: batch_size must be at least 1")

    def feeds(self, model: Model) -> dict[str, np.ndarray]:
        """The calibration samples, read and checked against ``model``'s inputs once (by
        :meth:`preflight` where it ran: the inputs of a folded model are the original's)."""
        inputs = tuple((t.name, str(t.dtype), tuple(t.shape or ())) for t in model.graph.inputs)
        if self._feeds is not None and self._feeds[0] == inputs:  # a pass reused on another model reads again
            return self._feeds[1]
        source = self.calibration_data if self.calibration_data is not None else self.opts["calibration"]
        try:
            self._feeds = (inputs, load_inputs(source, model.graph, chunked=True))
        except (OSError, ValueError) as exc:
            raise PipelineError(f"repair: {exc}") from None
        return self._feeds[1]

    def preflight(self, model: Model, ctx: PassContext) -> None:
        """Before any pass runs: mode ``data`` reads its calibration samples (a file of strings was
        taken without a word where the fold then folded nothing, since only a repair read it); mode
        ``dir`` raises :class:`RepairNotApplicable` (a ValueError) unless ``model`` has
        BatchNormalization statistics, every op is one the torch executor has, torch imports, and
        the executor runs it (one forward pass on a batch of one); what the model lacks first, since
        installing torch would not help (a trial installed it to learn the model had no BN)."""
        if self.opts["mode"] == "data":
            self.feeds(model)
        if self.opts["mode"] != "dir":
            return
        from onnxfold.ir.model import to_model_proto
        from onnxfold.repair.deepinversion import bn_running_stats, input_shape
        from onnxfold.repair.torch_graph import check_executable, first_unsupported

        proto = to_model_proto(model)  # what the model lacks is said first: torch would not help
        if not bn_running_stats(proto):
            convs = any(n.op_type in ("Conv", "ConvTranspose") for n in proto.graph.node)
            raise RepairNotApplicable(  # a transformer was asked about BN in convolutions it has not
                "repair mode 'dir' does not apply: the model has no BatchNormalization statistics to "
                f"invert{' (BN fused into the convolutions?)' if convs else ''}; use --repair ar or data"
            )
        bad = first_unsupported(proto)
        if bad is not None:
            raise RepairNotApplicable(
                f"repair mode 'dir' does not apply: op {bad.op_type} ({bad.name}) is not supported by "
                "the torch executor; use --repair ar or data"
            )
        try:
            import torch  # noqa: F401
        except ImportError:
            raise RepairNotApplicable(
                "repair mode 'dir' needs torch (pip install 'onnxfold[models]'); use --repair ar or data"
            ) from None
        shape = next(iter(ctx.input_shapes.values())) if ctx.input_shapes else None
        try:
            name, dims = input_shape(proto, 1, shape)
            check_executable(proto, {name: np.zeros(dims, np.float32)})
        except Exception as exc:  # noqa: BLE001 - any failure of the dry run means dir cannot run
            raise RepairNotApplicable(
                f"repair mode 'dir' does not apply: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                "; use --repair ar or data"
            ) from None

    def synthesize(self, original: Model, ctx: PassContext) -> dict[str, np.ndarray]:
        """DeepInversion batch from the original model's BN statistics."""
        try:
            import torch  # noqa: F401
        except ImportError:
            raise PassError("repair mode 'dir' needs torch: pip install 'onnxfold[models]'") from None
        from onnxfold.ir.model import to_model_proto
        from onnxfold.repair.deepinversion import synthesize
        from onnxfold.repair.torch_graph import UnsupportedGraph

        proto = to_model_proto(original)
        shape = None
        if ctx.input_shapes:
            shape = next(iter(ctx.input_shapes.values()))
        try:
            batch = synthesize(
                proto,
                count=self.opts["dir_samples"],
                iterations=self.opts["dir_iterations"],
                seed=self.opts["seed"],
                shape=shape,
            )
        except UnsupportedGraph as exc:
            raise PassError(f"repair mode 'dir' does not apply: {exc}") from None
        except ValueError as exc:
            raise PassError(str(exc)) from None
        name = next(t.name for t in original.graph.inputs)
        return {name: batch}

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        mode = self.opts["mode"]
        if mode == "none":
            ctx.data.pop("fold_record", None)
            return PassResult(False, {"mode": mode})
        record = ctx.data.pop("fold_record", None)
        if record is None:
            raise PassError(
                "repair: no fold pass ran before it (use e.g. 'fold:sparsity=0.5,repair:mode=ar')"
            )
        if not record.edits:
            return PassResult(False, {"mode": mode, "groups": 0})
        if mode == "ar":
            from onnxfold.repair.ar import apply_ar

            stats = apply_ar(model.graph, record)
        elif mode == "dir":
            from onnxfold.repair.data import apply_data

            feeds = self.synthesize(record.source, ctx)
            ctx.data["calibration"] = feeds
            stats = apply_data(
                model, record, feeds, self.opts["batch_size"], self.opts["goal"], self.opts["sequential"]
            )
            stats["synthesised"] = int(next(iter(feeds.values())).shape[0])
        else:
            from onnxfold.repair.data import apply_data

            stats = apply_data(
                model,
                record,
                self.feeds(model),
                self.opts["batch_size"],
                self.opts["goal"],
                self.opts["sequential"],
            )
        clear_shapes(model.graph)
        infer_shapes(model)
        return PassResult(True, {"mode": mode, **stats})
