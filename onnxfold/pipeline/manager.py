"""The pass contract and the manager that runs a pipeline of passes.

A pass has a ``name``, a one-line ``summary``, typed :class:`Option` s with defaults and help,
and ``run(model, ctx) -> PassResult(modified, stats)``. The :class:`PassManager` runs passes in
order, times each, optionally checks the graph after each (``onnx.checker`` full check), and
stops with a :class:`PassError` that names the pass which broke the graph.

Pipelines are data: ``"canonicalize,fold:sparsity=0.5,seed=1,cleanup"`` (a ``key=value`` item
without a pass name continues the options of the pass before it), or a YAML/JSON list whose
items are a pass name or ``{name: {option: value}}``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import onnx

from onnxfold.errors import InputRunError, not_run_on_samples, one_line
from onnxfold.ir.model import PROTO_LIMIT, Model, to_model_proto, weight_bytes
from onnxfold.pipeline.options import Option, PassError, PipelineError

log = logging.getLogger(__name__)


@dataclass
class PassResult:
    """What a pass did: whether it changed the model, and statistics for the report."""

    modified: bool
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class PassContext:
    """State shared by the passes of one pipeline run.

    ``original`` is the input model before any pass (validation compares against it),
    ``data`` holds results passes leave for later passes and the report (e.g. fold groups).
    """

    original: Model | None = None
    seed: int = 0
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    inputs: dict[str, Any] | None = None
    data: dict[str, Any] = field(default_factory=dict)


class Pass:
    """Base class of all passes. Subclasses set ``name``, ``summary``, ``options`` and ``run``."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    options: ClassVar[tuple[Option, ...]] = ()

    def __init__(self, **kwargs: Any):
        known = {o.name: o for o in self.options}
        self.opts: dict[str, Any] = {o.name: o.default for o in self.options}
        for key, value in kwargs.items():
            key = key.replace("-", "_")
            if key not in known:
                raise PipelineError(
                    f"pass {self.name!r} has no option {key!r} (options: {', '.join(known) or 'none'})"
                )
            self.opts[key] = known[key].convert(value)
        self.validate_options()

    def validate_options(self) -> None:
        """Hook for cross-option checks; raise PipelineError."""

    def run(self, model: Model, ctx: PassContext) -> PassResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        changed = {
            k: v for k, v in self.opts.items() if any(o.name == k and o.default != v for o in self.options)
        }
        args = ",".join(f"{k}={v}" for k, v in changed.items())
        return f"{self.name}:{args}" if args else self.name


@dataclass
class PassRecord:
    """One executed pass: name, wall seconds, modified flag and stats."""

    name: str
    seconds: float
    modified: bool
    stats: dict[str, Any]


#: BLAS/OpenMP threads the passes' numpy, scipy and scikit-learn work runs on (onnxruntime and torch keep
#: their own pools). One thread: the reductions then sum in one fixed order, so the output does not
#: depend on OMP_NUM_THREADS or the machine's core count, and nothing oversubscribes the cores that
#: onnxruntime also uses (a 512×512 eigh inside a fold took 1.26 s with default threads, 0.08 s alone).
PASS_THREADS = 1


def fixed_threads():
    """Context limiting BLAS and OpenMP pools to :data:`PASS_THREADS` while a pass runs."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=PASS_THREADS)


def check_model(model: Model) -> None:
    """Full ``onnx.checker`` check (with shape inference) of the model as it would be saved. Skipped for a
    model above the 2 GB protobuf limit, decided from declared tensor sizes before anything is read."""
    if weight_bytes(model.graph) > PROTO_LIMIT:
        log.info("model holds more than 2 GB of weights; skipping the in-memory checker")
        return
    proto = to_model_proto(model)
    if proto.ByteSize() > PROTO_LIMIT:
        log.info("model exceeds 2 GB in memory; skipping the in-memory checker")
        return
    onnx.checker.check_model(proto, full_check=True)


def passes_after(p: Pass, passes: Sequence[Pass]) -> list[Pass]:
    """The passes that run after ``p`` in ``passes`` (none where ``p`` is not among them): what a pass
    that adapts to its pipeline reads in its ``bind``."""
    passes = list(passes)
    return passes[passes.index(p) + 1 :] if p in passes else []


class PassManager:
    """Runs passes in order, timing each and optionally checking the graph after each."""

    def __init__(
        self, passes: Sequence[Pass], check: bool = False, on_pass: Callable[[PassRecord], None] | None = None
    ):
        self.passes = list(passes)
        for p in self.passes:  # a pass that adapts to the passes around it (fold learns its repair)
            bind = getattr(p, "bind", None)
            if callable(bind):
                bind(self.passes)
        self.check = check
        self.on_pass = on_pass
        self.records: list[PassRecord] = []

    def run(self, model: Model, ctx: PassContext | None = None) -> Model:
        ctx = ctx or PassContext()
        if ctx.original is None:
            ctx.original = model.copy()
        ctx.data["records"] = self.records  # what ran so far, for a pass that asks (validate)
        for p in self.passes:
            if getattr(p, "run_by", None):  # a fold a search runs on every candidate (SearchPass.bind)
                self.records.append(PassRecord(p.name, 0.0, False, {"skipped": f"run within {p.run_by}"}))
                continue
            start = time.perf_counter()
            try:
                with fixed_threads():
                    result = p.run(model, ctx)
            except (PassError, PipelineError):
                raise
            except Exception as exc:
                if isinstance(exc, InputRunError) and ctx.inputs is not None:  # the user's samples
                    raise PassError(not_run_on_samples(p.name, exc.__cause__ or exc, ctx.inputs)) from exc
                # onnxfold's own message on random inputs, its cause already cut: whole, hint and all
                said = one_line(exc, 900) if isinstance(exc, InputRunError) else _first_line(exc)
                raise PassError(f"pass {p.name!r} failed: {type(exc).__name__}: {said}") from exc
            if self.check:
                try:
                    check_model(model)
                except Exception as exc:
                    raise PassError(f"pass {p.name!r} left an invalid graph: {_first_line(exc)}") from exc
            if result.modified:  # validation skips remeasuring a search's pick nothing changed since
                ctx.data["last_modified_by"] = p.name
                from onnxfold.search.provenance import KEEPS_TARGET, KEY

                if p.name not in KEEPS_TARGET:  # the given fold's recorded target no longer describes it
                    given = ctx.original.metadata.get(KEY) if ctx.original is not None else None
                    if given is not None and model.metadata.get(KEY) == given:  # a search here records anew
                        model.metadata.pop(KEY)
            record = PassRecord(p.name, time.perf_counter() - start, result.modified, result.stats)
            self.records.append(record)
            log.info("pass %s: %.3fs modified=%s", p.name, record.seconds, record.modified)
            if self.on_pass:
                self.on_pass(record)
        return model


def _first_line(exc: BaseException) -> str:
    return one_line(exc, 300)


def parse_pipeline(spec: str, registry: dict[str, type[Pass]]) -> list[Pass]:
    """Parse ``"a,b:x=1,y=2,c"`` into pass objects (``y=2`` continues the options of ``b``)."""
    items: list[tuple[str, dict[str, str]]] = []
    for raw in spec.split(","):
        token = raw.strip()
        if not token:
            continue
        if ":" in token:
            name, _, first = token.partition(":")
            items.append((name.strip(), {}))
            token = first
            if not token.strip():
                continue
        elif "=" not in token:
            items.append((token, {}))
            continue
        if not items:
            raise PipelineError(f"pipeline item {token!r} has no pass before it")
        key, eq, value = token.partition("=")
        if not eq:
            raise PipelineError(f"pipeline option {token!r} is not key=value")
        items[-1][1][key.strip()] = value.strip()
    if not items:
        raise PipelineError("the pipeline is empty")
    for (name, opts), (after, more) in zip(items, items[1:], strict=False):
        if name == after and more:  # a trial wrote fold:sparsity=0.3,fold:ignore=x and ran two folds
            first, second = (",".join(f"{k}={v}" for k, v in o.items()) for o in (opts, more))
            joined = ",".join(filter(None, (first, second)))
            raise PipelineError(
                f"pass {name!r} is named twice in a row ({name}:{first or '...'} then {name}:{second}): a "
                f"pass's options go on after commas, as in {name}:{joined}; to run it twice, put "
                "another pass between"
            )
    return [build_pass(name, opts, registry) for name, opts in items]


def build_pass(name: str, opts: dict[str, Any], registry: dict[str, type[Pass]]) -> Pass:
    if name not in registry:
        raise PipelineError(f"unknown pass {name!r} (known: {', '.join(sorted(registry))})")
    return registry[name](**opts)


def read_structured_file(path: str | Path, what: str, error: type[Exception]) -> Any:
    """Parse a JSON (``.json``) or YAML (anything else) file; failures raise ``error`` with one line."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"cannot read {what} {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        import yaml

        return yaml.safe_load(text)
    except Exception as exc:
        kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
        raise error(f"{what} {path} is not valid {kind}: {_first_line(exc)}") from None


def load_pipeline_file(path: str | Path, registry: dict[str, type[Pass]]) -> list[Pass]:
    """Read a YAML or JSON pipeline: a list of names or ``{name: {option: value}}`` mappings."""
    path = Path(path)
    data = read_structured_file(path, "pipeline file", PipelineError)
    if isinstance(data, dict) and "passes" in data:
        data = data["passes"]
    if not isinstance(data, list):
        raise PipelineError(f"pipeline file {path}: expected a list of passes")
    passes = []
    for item in data:
        if isinstance(item, str):
            passes.append(build_pass(item, {}, registry))
        elif isinstance(item, dict) and len(item) == 1:
            ((name, opts),) = item.items()
            passes.append(build_pass(name, dict(opts or {}), registry))
        else:
            raise PipelineError(f"pipeline file {path}: cannot read item {item!r}")
    if not passes:
        raise PipelineError(f"pipeline file {path}: the pipeline is empty")
    return passes
