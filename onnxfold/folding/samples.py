"""Samples to measure activations on: the user's cut into runs, or data-free ones.

* :func:`chunked`: the user's samples (``--inputs``) in runs a model takes (:func:`run_size`);
* :func:`synthetic_feeds`: validation's random inputs (Gaussian floats, small integer ids);
* :func:`deepinversion_samples`: inputs optimised so that a BN model's batch statistics match its
  running statistics (docs/method.md §2.3);
* :func:`token_samples`: random token sequences over a token model's embedding table.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from onnxfold.folding.embedding_tables import INDEX_KEEPING, embedding_tables, token_tables  # noqa: F401 (read from here too)

Feeds = dict[str, np.ndarray]

#: Samples of the data-free estimate, and per onnxruntime run.
SYNTHETIC_SAMPLES = 32
CHUNK = 8
#: MACs one measurement of a candidate may cost: a model above MEASURE_MACS / 32 per sample is
#: measured on fewer samples, never under MIN_MEASURED (a 16-GMAC YOLO segmenter at 640x640 on 4
#: images, not 32: it spent hours in sensitivity). The sensitivity and the auto judge, which only
#: rank, take a quarter: at the whole a spindle detector measured 11 of 60 group levels in time.
MEASURE_MACS, SENSITIVITY_MACS = 1 << 36, 1 << 34
MIN_MEASURED = 4


def sample_axes(inputs: Feeds) -> tuple[int, dict[str, int]] | None:
    """(samples, the axis of each non-scalar input that holds them): the leading axis, or a later one
    but the last whose every axis before holds fewer (a recurrent state [layers, batch, hidden], as
    ONNX's LSTM and GRU take it; GTCRN's caches [2, batch, 16, 16, 33] and [2, 3, batch, 1, 16]); at
    one sample, the first axis of 1; the axis a model's declared shapes name a batch where it is not
    the first (:mod:`onnxfold.runtime.batch_axes`: a time-major [30, batch]). The largest count that
    every input holds on one of those axes; None when no count does (the feed is then run whole).
    Scalar inputs (a sample rate) hold no samples."""
    from onnxfold.runtime.batch_axes import declared_axis

    shapes = {k: np.shape(v) for k, v in inputs.items() if np.ndim(v)}
    if not shapes:
        return None
    named = {k: a for k, s in shapes.items() if (a := declared_axis(k, s)) is not None}  # time major
    for n in sorted({s[named.get(k, 0)] for k, s in shapes.items()}, reverse=True):
        axes = {}
        for k, s in shapes.items():
            if k in named:
                axis = named[k] if s[named[k]] == n else None
            else:
                axis = 0 if s[0] == n else _later_axis(s, n)
            if axis is None:
                break
            axes[k] = axis
        else:
            return n, axes
    return None


def _later_axis(shape: tuple[int, ...], n: int) -> int | None:
    """The axis after the leading one and before the last that holds ``n`` samples, every axis before
    it holding fewer (layers, directions), or any at ``n`` = 1; None where none does."""
    return next(
        (i for i in range(1, len(shape) - 1) if shape[i] == n and (n == 1 or max(shape[:i]) < n)), None
    )


def sample_count(inputs: Feeds) -> int:
    """Samples of a feed (:func:`sample_axes`; the largest leading dim when it finds none)."""
    layout = sample_axes(inputs)
    if layout is not None:
        return layout[0]
    return max((len(v) for v in inputs.values() if np.ndim(v)), default=1)


def splittable(inputs: Feeds) -> bool:
    """Whether the feed can be cut into samples (:func:`sample_axes`)."""
    return sample_axes(inputs) is not None


def samples_in(inputs: Feeds) -> int | None:
    """Samples of a feed that can be cut into samples (:func:`sample_axes`), else None."""
    layout = sample_axes(inputs)
    return None if layout is None else layout[0]


def take(inputs: Feeds, index) -> Feeds:
    """The samples ``index`` (a slice or indices) of a :func:`splittable` feed, each input cut along
    its own sample axis; scalar inputs whole."""
    layout = sample_axes(inputs)
    assert layout is not None, "take: the feed cannot be cut into samples"
    cut = {}
    for k, v in inputs.items():
        if k in layout[1]:
            where = [slice(None)] * np.ndim(v)
            where[layout[1][k]] = index
            v = np.asarray(v)[tuple(where)]
        cut[k] = v
    return cut


def fixed_batch(model) -> int | None:
    """The leading dim the model's inputs fix (an export at batch 1), None when it is free; ``model``:
    anything :func:`~onnxfold.runtime.inputs.input_specs` reads (a Model, a ModelProto, a session).
    Inputs with a named batch whose every output declares a leading 1 were exported at batch 1 too
    (khmersm's transformer: inputs [batch, seq], output [1, seq, 2]; it fails on 2 samples)."""
    from onnxfold.runtime.inputs import fixed_batches, input_specs, output_specs

    fixed = fixed_batches(input_specs(model))
    if fixed:
        return min(fixed)
    leading = [s.shape[0] for s in output_specs(model) if len(s.shape) >= 2]
    return 1 if leading and all(d == 1 for d in leading) else None


def run_size(model) -> int:
    """Samples per run: a model whose inputs fix their leading dim takes exactly that many;
    otherwise :data:`CHUNK`."""
    return fixed_batch(model) or CHUNK


def chunked(inputs: Feeds, size: int = CHUNK) -> list[Feeds]:
    """The user's samples (:func:`sample_axes`) as runs of at most ``size`` samples; a scalar input
    goes whole into every run. A feed that cannot be cut into samples is run whole, once."""
    if not splittable(inputs):
        return [dict(inputs)]
    total = sample_count(inputs)
    return [take(inputs, slice(i, i + size)) for i in range(0, total, max(1, size))]


def random_runs(
    session,
    samples: int,
    batch: int,
    seed: int = 0,
    shapes: dict | None = None,
    dim: int = 16,
    id_draws: dict | None = None,
) -> list[Feeds]:
    """Runs of ``batch`` deterministic random samples each (:func:`~onnxfold.runtime.inputs.make_inputs`
    with seeds ``seed``, ``seed`` + 1, …; ``dim`` for symbolic non-batch dims; token ids and normalized
    float inputs drawn by ``id_draws``, :func:`token_draws`),
    drawn until they hold at least ``samples`` samples. Validation's random inputs, the data-free
    proxy and ``auto``'s synthetic samples are all drawn here; a model exported at a smaller fixed
    batch gets runs of its own batch, which the caller joins (:func:`merged_feeds`) or keeps apart."""
    from onnxfold.runtime.inputs import make_inputs

    runs, got = [], 0
    while got < samples:
        feed = make_inputs(
            session,
            shapes=shapes or None,
            batch=batch,
            seed=seed + len(runs),
            id_draws=id_draws,
            default_dim=dim,
            sequence=dim,
        )
        got += sample_count(feed)
        runs.append(feed)
    return runs


def synthetic_feeds(
    model, shapes: dict | None = None, samples: int = SYNTHETIC_SAMPLES, seed: int = 0
) -> list[Feeds]:
    """Data-free samples: :func:`random_runs` of :data:`CHUNK` samples (ids that index an embedding
    table drawn by :func:`token_draws`; symbolic dims of a size the model runs at), ``samples`` of them."""
    from onnxfold.ir.model import to_model_proto
    from onnxfold.runtime.session import measurement_session

    session = measurement_session(to_model_proto(model), optimize=False)
    tables = token_draws(model)  # ids that index an embedding are drawn from its rows
    from onnxfold.folding.signal_dims import guessed_dim

    dim = runnable_dim(session, shapes, seed, tables, guessed_dim(model))
    return random_runs(session, samples, CHUNK, seed, shapes, dim, tables)


def merged_feeds(feeds: Sequence[Feeds]) -> Feeds | None:
    """Runs of samples joined into one feed, each input along its sample axis (:func:`sample_axes`;
    scalar inputs taken once); None when the runs do not share their inputs and sample axes."""
    feeds = list(feeds)
    layouts = [sample_axes(f) for f in feeds]
    if not feeds or any(set(f) != set(feeds[0]) for f in feeds) or None in layouts:
        return None
    axes = layouts[0][1]
    if any(lay[1] != axes for lay in layouts):
        return None
    return {
        k: np.concatenate([f[k] for f in feeds], axis=axes[k]) if k in axes else feeds[0][k] for k in feeds[0]
    }


def runnable_dim(session, shapes: dict | None, seed: int, tables: dict, start: int = 16) -> int:
    """The size of symbolic non-batch dims on which the model runs, as validation finds it (``start``,
    else larger: a reflect Pad of 20, a detector's strides); ``start`` when none does (the caller's
    run then fails with its own message)."""
    from onnxfold.runtime.runnable import runnable_dims

    try:
        return runnable_dims(session, shapes or None, 1, seed, tables, start)[0]
    except RuntimeError:
        return start


#: DeepInversion samples ``auto`` synthesises without ``--inputs`` (BN models, torch installed); a
#: search twice as many where the budget allows, fitting on half and judging on the other half too
AUTO_DIR_SAMPLES = 32
AUTO_DIR_ITERATIONS = 200
#: why a model gets no DeepInversion samples, where it has no BN (a fused-BN MobileNetV2's search read
#: "32 random samples", where the docs promise DeepInversion's, and did not say why: trial 181)
NO_BN = (
    "no BatchNormalization nodes to synthesise samples from their statistics, which an eval-mode export "
    "usually fuses into its convolutions"
)
#: the most input bytes DeepInversion optimises at once: autograd holds ~90x that (PP-LCNet's 64 samples at
#: 224x224: 3.4 GB; in 3 batches 2.1 GB); split only where memory asks, as a batch matching the BN
#: statistics alone leaves a search less (the digits ResNet's kept 35% on 64, 17% on 2 x 32, 3 seeds)
DIR_BATCH_BYTES = 16 << 20


def dir_batches(count: int, sample_bytes: int) -> list[int]:
    """Sizes of the fewest near-equal batches of ``count`` samples within :data:`DIR_BATCH_BYTES`."""
    parts = max(1, min(count, -(-count * sample_bytes // DIR_BATCH_BYTES)))
    return [count // parts + (i < count % parts) for i in range(parts)]


#: Most multiply-accumulates ``auto`` spends synthesising them (a forward and a backward pass, about
#: 3× the forward MACs, per sample and iteration): up to 3 minutes on 2 CPU cores (a PP-LCNet's
#: depthwise convolutions ran at about 10 GMAC/s) ...
AUTO_DIR_BUDGET = 2e12
#: ... or, for a search without a time limit (an explicit target), up to about 13 minutes: at 200
#: iterations a PP-LCNet at 224×224 (3.0T) is a better proxy than random inputs (its data-free search
#: kept every label at 76.8% fewer parameters, against 12.0% on random inputs); at 134, which 2T pays
#: for, it misled the search (80.5%, 0.875 of the labels kept)
UNTIMED_DIR_BUDGET = 8e12


#: DeepInversion batches synthesised in this process, by (digest of the model, shape, seed, count,
#: iterations): the batch depends on nothing else (the same seed gives the same bytes), and a demo, a
#: bench or a sweep folds one model many times (the demo synthesised the same batch 4 times, 19 s).
#: The :data:`SYNTHESISED_KEPT` latest are kept.
_SYNTHESISED: OrderedDict[tuple, np.ndarray] = OrderedDict()
SYNTHESISED_KEPT = 4


def deepinversion_cost(proto, shapes: dict | None = None, count: int = AUTO_DIR_SAMPLES) -> float | None:
    """MACs of synthesising ``count`` samples in :data:`AUTO_DIR_ITERATIONS` iterations, None where
    the per-sample MACs are unknown (input dims not fixed, or not inferred)."""
    from onnxfold.report.stats import model_stats

    if shapes:
        import onnx

        proto = onnx.ModelProto.FromString(proto.SerializeToString())
        for vi in proto.graph.input:
            if vi.name in shapes:
                dims = vi.type.tensor_type.shape.dim
                for d, v in zip(dims, shapes[vi.name], strict=False):
                    d.ClearField("dim_param")
                    d.dim_value = int(v)
    fixed = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in proto.graph.input}
    fixed = {k: v for k, v in fixed.items() if v and all(d > 0 for d in v)}
    # pinned at its fixed sizes, the shape arithmetic inside is computed: BatDetect2's Resize targets
    # read from Shape left three dims free, and its cost read unknown at a static [1, 1, 128, 512]
    stats = model_stats(proto, shapes=fixed or None)
    if stats.symbolic_dims or stats.macs_unknown_nodes or not stats.macs:
        return None
    return 3.0 * stats.macs * count * AUTO_DIR_ITERATIONS


def has_batchnorm(model) -> bool:
    """Whether the graph keeps BatchNormalization nodes (statistics to synthesise samples from)."""
    return any(n.op == "BatchNormalization" for n in model.graph.nodes)


def deepinversion_samples(
    model, shapes: dict | None = None, seed: int = 0, budget: float | None = None, counts=(AUTO_DIR_SAMPLES,)
) -> tuple[Feeds | None, str]:
    """(samples, where they come from), or (None, why there are none:
    :func:`~onnxfold.folding.synthesis_plan.deepinversion_plan`): a
    DeepInversion batch whose BatchNormalization statistics match the model's running statistics
    (docs/method.md §2.3), of the first of ``counts`` samples whose synthesis costs at most ``budget``
    MACs (:func:`deepinversion_cost`; None: :data:`AUTO_DIR_BUDGET`)."""
    from onnxfold.folding.synthesis_plan import NO_TORCH, deepinversion_plan

    count, why = deepinversion_plan(model, shapes, budget, counts)
    if why:
        return None, why
    try:
        import torch  # noqa: F401
    except ImportError:  # found, but not importable
        return None, NO_TORCH
    from onnxfold.errors import one_line
    from onnxfold.ir.model import to_model_proto
    from onnxfold.repair.deepinversion import input_shape, synthesize
    from onnxfold.repair.torch_graph import UnsupportedGraph

    proto = to_model_proto(model)
    shape = next(iter(shapes.values())) if shapes else None
    given = getattr(model, "input_values", {}).get(model.graph.inputs[0].name)
    bounds = tuple(map(float, given)) if isinstance(given, (tuple, list)) else None  # --input-value's range
    key = (
        hashlib.sha256(proto.SerializeToString(deterministic=True)).hexdigest(),
        None if shape is None else tuple(shape),
        seed,
        count,
        AUTO_DIR_ITERATIONS,
        bounds,
    )
    batch = _SYNTHESISED.get(key)
    if batch is None:
        try:
            sizes = dir_batches(count, 4 * int(np.prod(input_shape(proto, 1, shape)[1])))
            batch = np.concatenate(
                [
                    synthesize(proto, n, AUTO_DIR_ITERATIONS, seed=seed + i, shape=shape, bounds=bounds)
                    for i, n in enumerate(sizes)
                ]
            )
        except (UnsupportedGraph, ValueError) as exc:
            return None, f"no DeepInversion samples: {one_line(exc, 200)}"
        batch.setflags(write=False)
        _SYNTHESISED[key] = batch
        while len(_SYNTHESISED) > SYNTHESISED_KEPT:
            _SYNTHESISED.popitem(last=False)
    _SYNTHESISED.move_to_end(key)
    name = model.graph.inputs[0].name
    return {name: batch.copy()}, f"data-free: {count} DeepInversion samples from the BN statistics"


#: Random token samples ``auto`` draws without ``--inputs`` on a model whose inputs are token ids.
AUTO_TOKEN_SAMPLES = 32


def token_weights(table) -> np.ndarray:
    """p(id = i) ∝ ‖E_i‖², the chance that a data-free sample draws row i of embedding table E.
    Rows that training never reached keep their small initial scale: LAC's 50,000 word rows, which
    its character-level input never indexes, have norm 0.24 against 6.7 for common characters, and
    BERT's [unused] rows 0.45 against 1.1. Drawn uniformly, 86% of LAC's proxy ids were such rows and
    its data-free search kept r2 0.965 on them where new sentences kept 0.931 of their tags."""
    from onnxfold.ir.model import peek_values

    rows = np.asarray(peek_values(table))
    weight = np.empty(len(rows), dtype=np.float64)
    for start in range(0, len(rows), 4096):  # a LLaMA table is 131M floats: no float64 copy of it
        block = rows[start : start + 4096].astype(np.float64)
        weight[start : start + 4096] = np.einsum("ij,ij->i", block, block)
    total = weight.sum()
    if not np.isfinite(total) or total <= 0:
        return np.full(len(rows), 1.0 / len(rows))
    return weight / total


def token_draws(model) -> dict[str, object]:
    """Graph input → the chance of each row of the embedding table it indexes (:func:`token_weights`),
    for a float input the scale the model normalizes it by
    (:func:`~onnxfold.runtime.input_scales.input_scales`), for a string input the words its ops know
    (:func:`~onnxfold.runtime.string_inputs.string_vocabularies`), and the value ``--input-value``
    gives an input (``Model.input_values``): how validation and the data-free samples draw their
    random inputs."""
    from onnxfold.runtime.input_scales import input_scales
    from onnxfold.runtime.random_values import value_draw
    from onnxfold.runtime.string_inputs import string_vocabularies

    draws: dict[str, object] = dict(input_scales(model))
    draws.update(string_vocabularies(model))
    draws.update({k: value_draw(v) for k, v in getattr(model, "input_values", {}).items()})
    draws.update({name: token_weights(table) for name, table in embedding_tables(model).items()})
    return draws


def token_samples(model, shapes: dict | None = None, seed: int = 0) -> tuple[Feeds | None, str]:
    """(samples, where they come from) for a model whose inputs are all integer and whose id inputs
    index an embedding table: :func:`synthetic_feeds` (masks 1, token types 0, positions 0…L−1, the
    ids drawn over the table's rows by :func:`token_weights`); (None, why not) otherwise."""
    tables, why = token_tables(model)
    if why:
        return None, why
    feeds = synthetic_feeds(model, shapes, AUTO_TOKEN_SAMPLES, seed=seed)  # ids by token_draws
    merged = {k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]}
    got = sample_count(merged)
    rows = max(int(t.shape[0]) for t in tables.values())
    return merged, (
        f"data-free: {got} random token sequences over the embedding's {rows} rows, "
        "each row drawn in proportion to its squared norm"
    )


def sample_macs(model, feed: Feeds, in_place: bool = False) -> int | None:
    """MACs of one sample of ``feed`` through ``model`` (a Model or a ModelProto): the model's input
    dims set to the feed's shapes, then counted per sample (a Model's small constant computations
    folded first: ukis-csmask's computed pads hid 4.65 G of a tile's MACs, leaving 602 K); None when
    they cannot be counted.
    ``in_place``: a ModelProto the caller no longer needs is changed instead of copied."""
    import onnx

    from onnxfold.report.stats import model_stats

    try:
        if isinstance(model, onnx.ModelProto):
            fixed = model if in_place else onnx.ModelProto()
            if not in_place:
                fixed.CopyFrom(model)
        else:  # constants computed from constants (a same-padding's pads) as values: shapes see through
            from onnxfold.ir.constant_fold import fold_small_constants

            model = model.copy()
            if fold_small_constants(model.graph, model.opset_imports):
                model.graph.cleanup(remove_unused_graph_inputs=False)
            fixed = model.to_onnx()  # a fresh proto already
        for vi in fixed.graph.input:
            if vi.name in feed and vi.type.HasField("tensor_type"):
                dims = vi.type.tensor_type.shape.dim
                if len(dims) == np.ndim(feed[vi.name]):
                    for d, v in zip(dims, np.shape(feed[vi.name]), strict=True):
                        d.Clear()
                        d.dim_value = int(v)
        del fixed.graph.value_info[:]
        macs = model_stats(fixed).macs
    except Exception:
        return None
    return int(macs) if macs else None


#: MACs one onnxruntime run may cost: a feed of samples costing more is run in smaller runs, since
#: onnxruntime holds every activation of a run at once (DNSMOS, 19 GMACs per 9 s clip: 32 clips in
#: one run peaked at 12 GB)
RUN_MACS = 1 << 33


def samples_per_run(per: int) -> int:
    """The most samples of ``per`` MACs each that one onnxruntime run may take (:data:`RUN_MACS`; at
    least 1)."""
    return max(1, RUN_MACS // per)


def samples_measured(per: int, budget: int | None = None) -> int:
    """The most samples of ``per`` MACs each that one measurement may use within ``budget`` MACs
    (default :data:`MEASURE_MACS`; at least :data:`MIN_MEASURED`)."""
    return max(MIN_MEASURED, (MEASURE_MACS if budget is None else budget) // per)


def run_limit(model, feed: Feeds) -> int | None:
    """The most samples of ``feed`` one onnxruntime run of ``model`` may take
    (:func:`samples_per_run`), or None: no limit needed, or the MACs cannot be counted."""
    if not splittable(feed):
        return None
    per = sample_macs(model, feed)
    if not per:
        return None
    most = samples_per_run(per)
    return most if most < sample_count(feed) else None


def measured_limit(model, feed: Feeds, budget: int | None = None, in_place: bool = False) -> int | None:
    """How many samples a measurement may use within ``budget`` MACs (default :data:`MEASURE_MACS`;
    at least :data:`MIN_MEASURED`); None if uncountable (``in_place`` as :func:`sample_macs`)."""
    per = sample_macs(model, feed, in_place)
    return samples_measured(per, budget) if per else None


def leading_measured(model, feed: Feeds, budget: int | None = None) -> int | None:
    """Leading samples of ``feed`` one measurement may use (whole runs of a fixed batch); None: all."""
    limit, batch = measured_limit(model, feed, budget), fixed_batch(model) or 1
    limit = limit and max(batch, limit // batch * batch)
    return limit if limit and limit < sample_count(feed) else None


def runs_on(model, samples: Feeds) -> bool:
    """Whether ``model`` (a pipeline's input, before any rewrite) runs on the first run of ``samples``:
    where it does and the rewritten graph does not, the samples are not to blame."""
    from onnxfold.ir.model import to_model_proto
    from onnxfold.runtime.session import measurement_session

    if model is None:
        return False
    try:
        session = measurement_session(to_model_proto(model), optimize=False)
        session.run(None, chunked(samples, run_size(model))[0])
    except Exception:
        return False
    return True
