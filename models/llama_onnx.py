"""A LLaMA-shaped decoder written straight into ONNX (no torch), random weights streamed to disk.

``build_llama_onnx(path, ...)`` writes ``path`` (the graph) and ``path.data`` (every tensor of
1 KiB or more, 4 KiB aligned). Weights are generated and written one tensor at a time, the big
ones in row chunks, so memory stays bounded whatever the size: the 7B configuration (the
defaults, ~13.5 GB of float16) never holds more than one chunk of weights in RAM.

The graph follows what torch's dynamo exporter emits for ``transformers.LlamaModel`` + lm_head
(eager attention), written out op by op:

* embedding: ``Gather(embed_tokens, input_ids)``;
* RMSNorm: (Cast to float32) → Pow 2 → ReduceMean(-1) → Add eps → Sqrt → Reciprocal → Mul
  (→ Cast back) → Mul by the weight;
* projections: ``MatMul`` with weights stored ``[in, out]`` (the exporter's transposed constants);
* heads: ``Reshape`` to ``[batch, seq, -1, head_dim]`` with the target built from
  ``Shape(input_ids)`` slices and constants (Concat), then ``Transpose(0, 2, 1, 3)``;
* RoPE: cos/sin computed from ``Range(seq)`` and the ``inv_freq`` constant, rotate_half as
  Slice/Neg/Concat; grouped-query attention (``kv_heads < heads``) repeats K/V with
  Unsqueeze → Expand → Reshape (``repeat_kv``);
* scores: ``MatMul(q, Transpose(k))`` → Mul by 1/sqrt(head_dim) → Add a causal mask
  (``Trilu`` of a ``ConstantOfShape([seq, seq], min)``) → Softmax (in float32 for float16
  models) → MatMul with V → Transpose back → Reshape ``[batch, seq, -1]`` → o_proj → residual Add;
* MLP: gate/up MatMul, SiLU as ``x * Sigmoid(x)``, Mul, down MatMul, residual Add;
* final RMSNorm and the lm_head MatMul: output ``logits`` ``[batch, seq, vocab]``.

Weights: projections, embedding and lm_head ~ N(0, std²); norm weights 1 (+ N(0, norm_std²)).
The normal samples come from a 16-bit quantile table: each value is Φ⁻¹((u + ½)/65536)·std for a
uniform 16-bit integer u (a normal quantised to 65536 equiprobable levels, |z| ≤ 4.3), about
five times faster than numpy's ziggurat. Every tensor draws from its own generator seeded by
(seed, crc32(name)), in row chunks of about ``CHUNK_VALUES`` values, so a tensor's values depend
only on the seed, its name and its shape (and that constant).

``duplicate=True`` writes the exact-duplicate oracle: a model with twice the heads (and KV
heads) and twice the MLP width whose every head / neuron is a copy of the one in the model the
same arguments build without ``duplicate`` (producer columns copied, consumer rows copied and
halved), so folding it at sparsity 0.5 must give that compact model back.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["LlamaSpec", "PRESETS", "build_llama_onnx", "llama_weight_shapes", "random_weights"]

DTYPES = {"float16": (np.float16, TensorProto.FLOAT16), "float32": (np.float32, TensorProto.FLOAT)}
INLINE_LIMIT = 1024  # bytes: smaller tensors stay inside the .onnx
ALIGN = 4096  # external tensors start on page boundaries (memory-mapping friendly)
CHUNK_VALUES = 1 << 23  # values generated and written at a time (16 MiB of float16)

#: Named configurations (keyword arguments of :func:`build_llama_onnx`).
PRESETS: dict[str, dict] = {
    "7b": dict(layers=32, hidden=4096, intermediate=11008, heads=32, vocab=32000),
    "1b": dict(
        layers=22, hidden=2048, intermediate=5632, heads=32, kv_heads=4, vocab=32000
    ),  # TinyLlama-1.1B
    "tiny": dict(layers=2, hidden=64, intermediate=128, heads=4, vocab=100, dtype="float32"),
}


@dataclass(frozen=True)
class LlamaSpec:
    """The shape of the decoder. ``kv_heads`` None: multi-head attention (= ``heads``);
    ``head_dim`` None: hidden // heads."""

    layers: int = 32
    hidden: int = 4096
    intermediate: int = 11008
    heads: int = 32
    kv_heads: int | None = None
    head_dim: int | None = None
    vocab: int = 32000
    dtype: str = "float16"
    rope: bool = True
    rope_theta: float = 10000.0
    eps: float = 1e-6
    lm_head: bool = True
    opset: int = 18

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if min(self.layers, self.hidden, self.intermediate, self.heads, self.vocab) < 1:
            raise ValueError("layers, hidden, intermediate, heads and vocab must be positive")
        if self.head_dim is None and self.hidden % self.heads:
            raise ValueError(f"hidden {self.hidden} is not a multiple of heads {self.heads}; give head_dim")
        if self.heads % self.n_kv:
            raise ValueError(f"heads {self.heads} is not a multiple of kv_heads {self.n_kv}")
        if self.rope and self.dh % 2:
            raise ValueError(f"RoPE needs an even head_dim, got {self.dh}")
        if self.opset < 18:
            raise ValueError("opset must be at least 18 (ReduceMean takes its axes as an input)")

    @property
    def n_kv(self) -> int:
        return self.kv_heads or self.heads

    @property
    def dh(self) -> int:
        return self.head_dim or self.hidden // self.heads

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(DTYPES[self.dtype][0])

    @property
    def onnx_dtype(self) -> int:
        return DTYPES[self.dtype][1]

    def doubled(self) -> LlamaSpec:
        """The wide twin of the duplicate oracle: 2× heads, 2× KV heads, 2× MLP width."""
        return replace(
            self,
            heads=2 * self.heads,
            kv_heads=2 * self.kv_heads if self.kv_heads else None,
            intermediate=2 * self.intermediate,
            head_dim=self.dh,
        )


def llama_weight_shapes(spec: LlamaSpec) -> dict[str, tuple[int, ...]]:
    """Every weight of the model, in file order (the order of a LLaMA state dict)."""
    h, dh = spec.hidden, spec.dh
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (spec.vocab, h)}
    for i in range(spec.layers):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (h,)
        shapes[p + "self_attn.q_proj.weight"] = (h, spec.heads * dh)
        shapes[p + "self_attn.k_proj.weight"] = (h, spec.n_kv * dh)
        shapes[p + "self_attn.v_proj.weight"] = (h, spec.n_kv * dh)
        shapes[p + "self_attn.o_proj.weight"] = (spec.heads * dh, h)
        shapes[p + "post_attention_layernorm.weight"] = (h,)
        shapes[p + "mlp.gate_proj.weight"] = (h, spec.intermediate)
        shapes[p + "mlp.up_proj.weight"] = (h, spec.intermediate)
        shapes[p + "mlp.down_proj.weight"] = (spec.intermediate, h)
    shapes["model.norm.weight"] = (h,)
    if spec.lm_head:
        shapes["lm_head.weight"] = (h, spec.vocab)
    return shapes


# ----------------------------------------------------------------------------- weights
#: ``source(name, shape, dtype)`` → chunks of whole rows (axis 0) that together make the tensor
WeightSource = Callable[[str, tuple[int, ...], np.dtype], Iterator[np.ndarray]]


@lru_cache(maxsize=8)
def _quantile_table(std: float, dtype: str) -> np.ndarray:
    from scipy.special import ndtri  # scipy comes with scikit-learn

    z = ndtri((np.arange(65536, dtype=np.float64) + 0.5) / 65536.0)
    return (z * std).astype(dtype)


def _row_chunks(shape: tuple[int, ...]) -> Iterator[tuple[int, int]]:
    rows = shape[0] if shape else 1
    per_row = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    step = max(1, CHUNK_VALUES // max(per_row, 1)) if len(shape) > 1 else rows
    for lo in range(0, rows, step):
        yield lo, min(rows, lo + step)


def random_weights(seed: int = 0, std: float = 0.02, norm_std: float = 0.0) -> WeightSource:
    """The default source: N(0, std²) for matrices, 1 + N(0, norm_std²) for norm vectors."""

    def source(name: str, shape: tuple[int, ...], dtype: np.dtype) -> Iterator[np.ndarray]:
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        is_norm = len(shape) == 1 and name.endswith("norm.weight")
        if is_norm and norm_std == 0.0:
            yield np.ones(shape, dtype=dtype)
            return
        table = _quantile_table(float(norm_std if is_norm else std), np.dtype(dtype).name)
        for lo, hi in _row_chunks(shape):
            u = rng.integers(0, 65536, size=(hi - lo, *shape[1:]), dtype=np.uint16)
            chunk = table[u]
            if is_norm:
                chunk += dtype.type(1)
            yield chunk

    return source


def _materialise(source: WeightSource, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    return np.concatenate([c.reshape(-1) for c in source(name, shape, dtype)]).reshape(shape)


def duplicated_weights(compact: LlamaSpec, base: WeightSource) -> WeightSource:
    """Weights of ``compact.doubled()`` that duplicate ``compact``'s: an axis twice as long as in the
    compact tensor is the compact one tiled twice, halved when it is axis 0 of a 2-D ``[in, out]``
    weight (a consumer: o_proj, down_proj). Head h and h + heads (KV head g and g + kv_heads,
    neuron j and j + intermediate) are then copies, and repeat_kv pairs copies with copies."""
    small = llama_weight_shapes(compact)

    def source(name: str, shape: tuple[int, ...], dtype: np.dtype) -> Iterator[np.ndarray]:
        base_shape = small[name]
        if tuple(base_shape) == tuple(shape):
            yield from base(name, shape, dtype)
            return
        w = _materialise(base, name, base_shape, dtype)
        for axis, (n, m) in enumerate(zip(base_shape, shape, strict=True)):
            if m == n:
                continue
            if m != 2 * n:
                raise ValueError(f"{name}: axis {axis} has {m} entries, compact {n}")
            w = np.concatenate([w, w], axis=axis)
            if axis == 0 and len(shape) == 2:
                w = w * dtype.type(0.5)
        yield w

    return source


# ----------------------------------------------------------------------------- file writing
class _DataFile:
    """Appends tensors to the external data file and returns their (data-less) TensorProtos."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle = open(path, "wb")
        self.offset = 0

    def write(
        self, name: str, shape: tuple[int, ...], dtype: np.dtype, elem_type: int, chunks: Iterator[np.ndarray]
    ) -> TensorProto:
        pad = (-self.offset) % ALIGN
        if pad:
            self.handle.write(b"\0" * pad)
            self.offset += pad
        start = self.offset
        expected = int(np.prod(shape)) * dtype.itemsize
        for chunk in chunks:
            chunk = np.ascontiguousarray(chunk, dtype=dtype.newbyteorder("<"))
            self.handle.write(memoryview(chunk).cast("B"))
            self.offset += chunk.nbytes
        if self.offset - start != expected:
            raise ValueError(f"{name}: wrote {self.offset - start} bytes, shape {shape} needs {expected}")
        tensor = TensorProto(name=name, data_type=elem_type, dims=list(shape))
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", self.path.name), ("offset", str(start)), ("length", str(expected))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        return tensor

    def close(self) -> None:
        self.handle.close()


class _Graph:
    """Nodes and small constants of the graph under construction."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.names: set[str] = set()

    def const(self, name: str, value: np.ndarray) -> str:
        if name in self.names:
            raise ValueError(f"duplicate constant {name}")
        self.names.add(name)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str, **attrs) -> str:
        out = f"{name}_output_0"
        if name in self.names:
            raise ValueError(f"duplicate node name {name}")
        self.names.add(name)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out


def _ints(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def _graph(spec: LlamaSpec, weights: dict[str, str]) -> _Graph:
    """Every node of the decoder; ``weights`` maps weight names to the names used in the graph."""
    g = _Graph()
    dt, fp16 = spec.np_dtype, spec.dtype == "float16"
    heads, kv, dh = spec.heads, spec.n_kv, spec.dh
    f32 = TensorProto.FLOAT

    # shared scalars and shape pieces (computed once, like the exporter does)
    one_d = g.const("const_axes_last", _ints(-1))
    batch1 = g.op("Shape", ["input_ids"], "/model/Shape_batch", start=0, end=1)  # [batch]
    seq1 = g.op("Shape", ["input_ids"], "/model/Shape_seq", start=1, end=2)  # [seq]
    heads_shape = g.op(
        "Concat",
        [batch1, seq1, g.const("const_minus1", _ints(-1)), g.const("const_head_dim", _ints(dh))],
        "/model/heads_shape",
        axis=0,
    )
    merged_shape = g.op(
        "Concat", [batch1, seq1, g.const("const_minus1_merge", _ints(-1))], "/model/merged_shape", axis=0
    )
    eps = g.const("const_eps", np.array(spec.eps, dtype=np.float32 if fp16 else dt))
    two = g.const("const_two", np.array(2.0, dtype=np.float32 if fp16 else dt))

    x = g.op(
        "Gather", [weights["model.embed_tokens.weight"], "input_ids"], "/model/embed_tokens/Gather", axis=0
    )

    # causal mask [seq, seq]: dtype-min above the diagonal, 0 elsewhere
    ss = g.op("Concat", [seq1, seq1], "/model/mask/Concat", axis=0)
    full = g.op(
        "ConstantOfShape",
        [ss],
        "/model/mask/ConstantOfShape",
        value=numpy_helper.from_array(np.array([np.finfo(dt).min], dtype=dt)),
    )
    mask = g.op(
        "Trilu", [full, g.const("const_mask_k", np.array(1, dtype=np.int64))], "/model/mask/Trilu", upper=1
    )

    cos = sin = None
    if spec.rope:
        seq0 = g.op("Squeeze", [seq1, g.const("const_axes0", _ints(0))], "/model/rotary/Squeeze")
        pos = g.op(
            "Range",
            [
                g.const("const_i0", np.array(0, dtype=np.int64)),
                seq0,
                g.const("const_i1", np.array(1, dtype=np.int64)),
            ],
            "/model/rotary/Range",
        )
        pos = g.op(
            "Unsqueeze", [pos, g.const("const_axes_0", _ints(0))], "/model/rotary/Unsqueeze_pos"
        )  # [1,S]
        pos = g.op("Cast", [pos], "/model/rotary/Cast", to=f32)
        pos = g.op("Unsqueeze", [pos, g.const("const_axes_m1", _ints(-1))], "/model/rotary/Unsqueeze_freq")
        inv_freq = 1.0 / (spec.rope_theta ** (np.arange(0, dh, 2, dtype=np.float64) / dh))
        freqs = g.op(
            "Mul",
            [pos, g.const("model.rotary_emb.inv_freq", inv_freq.astype(np.float32))],
            "/model/rotary/Mul",
        )  # [1, S, dh/2]
        emb = g.op("Concat", [freqs, freqs], "/model/rotary/Concat", axis=-1)  # [1, S, dh]
        trig = []
        for fn in ("Cos", "Sin"):
            t = g.op(fn, [emb], f"/model/rotary/{fn}")
            if fp16:
                t = g.op("Cast", [t], f"/model/rotary/Cast_{fn.lower()}", to=spec.onnx_dtype)
            trig.append(
                g.op(
                    "Unsqueeze",
                    [t, g.const(f"const_axes_1_{fn}", _ints(1))],
                    f"/model/rotary/Unsqueeze_{fn.lower()}",
                )
            )  # [1, 1, S, dh]
        cos, sin = trig
        half0, half1 = g.const("const_zero", _ints(0)), g.const("const_half", _ints(dh // 2))
        end = g.const("const_end", _ints(np.iinfo(np.int64).max))
        axis3, step = g.const("const_axis3", _ints(3)), g.const("const_step", _ints(1))

    def rmsnorm(x: str, weight: str, scope: str) -> str:
        y = g.op("Cast", [x], f"{scope}/Cast", to=f32) if fp16 else x
        p = g.op("Pow", [y, two], f"{scope}/Pow")
        m = g.op("ReduceMean", [p, one_d], f"{scope}/ReduceMean", keepdims=1)
        r = g.op(
            "Reciprocal",
            [g.op("Sqrt", [g.op("Add", [m, eps], f"{scope}/Add")], f"{scope}/Sqrt")],
            f"{scope}/Reciprocal",
        )
        y = g.op("Mul", [y, r], f"{scope}/Mul")
        if fp16:
            y = g.op("Cast", [y], f"{scope}/Cast_1", to=spec.onnx_dtype)
        return g.op("Mul", [weights[weight], y], f"{scope}/Mul_1")

    def rotate(t: str, scope: str) -> str:
        a = g.op("Slice", [t, half0, half1, axis3, step], f"{scope}/Slice")
        b = g.op("Slice", [t, half1, end, axis3, step], f"{scope}/Slice_1")
        rot = g.op("Concat", [g.op("Neg", [b], f"{scope}/Neg"), a], f"{scope}/Concat", axis=-1)
        return g.op(
            "Add",
            [g.op("Mul", [t, cos], f"{scope}/Mul"), g.op("Mul", [rot, sin], f"{scope}/Mul_1")],
            f"{scope}/Add",
        )

    scale = 1.0 / math.sqrt(dh)
    for i in range(spec.layers):
        p, s = f"model.layers.{i}.", f"/model/layers.{i}"
        hn = rmsnorm(x, p + "input_layernorm.weight", f"{s}/input_layernorm")
        proj = {}
        for name in ("q", "k", "v"):
            t = g.op(
                "MatMul",
                [hn, weights[f"{p}self_attn.{name}_proj.weight"]],
                f"{s}/self_attn/{name}_proj/MatMul",
            )
            t = g.op("Reshape", [t, heads_shape], f"{s}/self_attn/Reshape_{name}", allowzero=1)
            proj[name] = g.op("Transpose", [t], f"{s}/self_attn/Transpose_{name}", perm=[0, 2, 1, 3])
        q, k, v = proj["q"], proj["k"], proj["v"]
        if spec.rope:
            q, k = rotate(q, f"{s}/self_attn/rotary_q"), rotate(k, f"{s}/self_attn/rotary_k")
        if kv != heads:  # repeat_kv: [B, kv, S, dh] → [B, kv, rep, S, dh] → [B, heads, S, dh]
            rep = heads // kv
            expand_shape = g.op(
                "Concat",
                [
                    batch1,
                    g.const(f"{s}/const_kv", _ints(kv)),
                    g.const(f"{s}/const_rep", _ints(rep)),
                    seq1,
                    g.const(f"{s}/const_dh", _ints(dh)),
                ],
                f"{s}/self_attn/expand_shape",
                axis=0,
            )
            rep_shape = g.op(
                "Concat",
                [
                    batch1,
                    g.const(f"{s}/const_heads", _ints(heads)),
                    seq1,
                    g.const(f"{s}/const_dh_1", _ints(dh)),
                ],
                f"{s}/self_attn/repeat_shape",
                axis=0,
            )
            two_ax = g.const(f"{s}/const_axes_2", _ints(2))
            for name in ("k", "v"):
                t = g.op(
                    "Unsqueeze", [k if name == "k" else v, two_ax], f"{s}/self_attn/repeat_{name}/Unsqueeze"
                )
                t = g.op("Expand", [t, expand_shape], f"{s}/self_attn/repeat_{name}/Expand")
                t = g.op("Reshape", [t, rep_shape], f"{s}/self_attn/repeat_{name}/Reshape", allowzero=1)
                k, v = (t, v) if name == "k" else (k, t)
        kt = g.op("Transpose", [k], f"{s}/self_attn/Transpose_kt", perm=[0, 1, 3, 2])
        scores = g.op("MatMul", [q, kt], f"{s}/self_attn/MatMul")
        scores = g.op(
            "Mul", [scores, g.const(f"{s}/const_scale", np.array(scale, dtype=dt))], f"{s}/self_attn/Mul"
        )
        scores = g.op("Add", [scores, mask], f"{s}/self_attn/Add_mask")
        if fp16:
            scores = g.op("Cast", [scores], f"{s}/self_attn/Cast", to=f32)
        probs = g.op("Softmax", [scores], f"{s}/self_attn/Softmax", axis=-1)
        if fp16:
            probs = g.op("Cast", [probs], f"{s}/self_attn/Cast_1", to=spec.onnx_dtype)
        ctx = g.op("MatMul", [probs, v], f"{s}/self_attn/MatMul_1")
        ctx = g.op("Transpose", [ctx], f"{s}/self_attn/Transpose_out", perm=[0, 2, 1, 3])
        ctx = g.op("Reshape", [ctx, merged_shape], f"{s}/self_attn/Reshape_out", allowzero=1)
        o = g.op("MatMul", [ctx, weights[p + "self_attn.o_proj.weight"]], f"{s}/self_attn/o_proj/MatMul")
        x = g.op("Add", [x, o], f"{s}/Add")

        hn = rmsnorm(x, p + "post_attention_layernorm.weight", f"{s}/post_attention_layernorm")
        gate = g.op("MatMul", [hn, weights[p + "mlp.gate_proj.weight"]], f"{s}/mlp/gate_proj/MatMul")
        act = g.op("Mul", [gate, g.op("Sigmoid", [gate], f"{s}/mlp/act_fn/Sigmoid")], f"{s}/mlp/act_fn/Mul")
        up = g.op("MatMul", [hn, weights[p + "mlp.up_proj.weight"]], f"{s}/mlp/up_proj/MatMul")
        mid = g.op("Mul", [act, up], f"{s}/mlp/Mul")
        down = g.op("MatMul", [mid, weights[p + "mlp.down_proj.weight"]], f"{s}/mlp/down_proj/MatMul")
        x = g.op("Add", [x, down], f"{s}/Add_1")

    x = rmsnorm(x, "model.norm.weight", "/model/norm")
    if spec.lm_head:
        x = g.op("MatMul", [x, weights["lm_head.weight"]], "/lm_head/MatMul")
    # name the final tensor as the graph output
    g.nodes[-1].output[0] = "logits" if spec.lm_head else "last_hidden_state"
    return g


def build_llama_onnx(
    path: str | os.PathLike,
    layers: int = 32,
    hidden: int = 4096,
    intermediate: int = 11008,
    heads: int = 32,
    kv_heads: int | None = None,
    head_dim: int | None = None,
    vocab: int = 32000,
    dtype: str = "float16",
    seed: int = 0,
    rope: bool = True,
    *,
    lm_head: bool = True,
    std: float = 0.02,
    norm_std: float = 0.0,
    eps: float = 1e-6,
    rope_theta: float = 10000.0,
    opset: int = 18,
    duplicate: bool = False,
    weights: WeightSource | None = None,
    progress: bool = False,
) -> Path:
    """Write a LLaMA-shaped decoder to ``path`` (+ ``path.data``) and return ``path``.

    Input ``input_ids`` int64 ``[batch, seq]``; output ``logits`` ``[batch, seq, vocab]`` (or
    ``last_hidden_state`` ``[batch, seq, hidden]`` with ``lm_head=False``). ``dtype``: float16 or
    float32 (weights and activations; RMSNorm statistics and softmax run in float32, as in
    transformers). ``weights`` replaces the random source (see :data:`WeightSource`).
    ``duplicate``: write the wide exact-duplicate twin of this configuration (module docstring).
    """
    spec = LlamaSpec(
        layers=layers,
        hidden=hidden,
        intermediate=intermediate,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        vocab=vocab,
        dtype=dtype,
        rope=rope,
        rope_theta=rope_theta,
        eps=eps,
        lm_head=lm_head,
        opset=opset,
    )
    source = weights or random_weights(seed, std, norm_std)
    if duplicate:
        source = duplicated_weights(spec, source)
        spec = spec.doubled()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data_path = path.with_name(path.name + ".data")
    tmp_model, tmp_data = path.with_name(path.name + ".tmp"), data_path.with_name(data_path.name + ".tmp")
    dt, elem = spec.np_dtype, spec.onnx_dtype

    shapes = llama_weight_shapes(spec)
    tensors: list[TensorProto] = []
    data = _DataFile(tmp_data)
    start = time.time()
    ok = False
    try:
        for n, (name, shape) in enumerate(shapes.items()):
            if int(np.prod(shape)) * dt.itemsize >= INLINE_LIMIT:
                tensors.append(data.write(name, shape, dt, elem, source(name, shape, dt)))
            else:
                tensors.append(
                    numpy_helper.from_array(_materialise(source, name, shape, dt).astype(dt), name)
                )
            if progress and (n % 9 == 0 or n == len(shapes) - 1):
                print(
                    f"\r{n + 1}/{len(shapes)} tensors, {data.offset / 2**30:.1f} GiB, "
                    f"{time.time() - start:.0f} s",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
        ok = True
    finally:
        data.close()
        if not ok:
            tmp_data.unlink(missing_ok=True)
    if progress:
        print(file=sys.stderr)
    # the external location must name the final data file
    for t in tensors:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = data_path.name

    g = _graph(spec, {name: name for name in shapes})
    out_name = "logits" if spec.lm_head else "last_hidden_state"
    out_dim = spec.vocab if spec.lm_head else spec.hidden
    graph = helper.make_graph(
        g.nodes,
        "llama",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info(out_name, elem, ["batch", "seq", out_dim])],
        initializer=tensors + g.initializers,
    )
    opsets = [helper.make_opsetid("", spec.opset)]
    model = helper.make_model(
        graph,
        opset_imports=opsets,
        producer_name="onnxfold.models.llama_onnx",
        ir_version=helper.find_min_ir_version_for(opsets),
    )
    model.doc_string = (
        f"LLaMA-shaped decoder with random weights: {spec}, seed={seed}, std={std}, "
        f"norm_std={norm_std}, duplicate={duplicate}"
    )
    tmp_model.write_bytes(model.SerializeToString())
    os.replace(tmp_data, data_path)
    os.replace(tmp_model, path)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m onnxfold.models.llama_onnx", description=__doc__.splitlines()[0]
    )
    ap.add_argument("output", help="path of the .onnx to write (its data goes to OUTPUT.data)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="7b")
    for key in ("layers", "hidden", "intermediate", "heads", "kv-heads", "head-dim", "vocab", "seed"):
        ap.add_argument(f"--{key}", type=int)
    ap.add_argument("--dtype", choices=sorted(DTYPES))
    ap.add_argument("--no-rope", action="store_true")
    ap.add_argument("--no-lm-head", action="store_true")
    args = ap.parse_args(argv)
    kwargs = dict(PRESETS[args.preset])
    for key in (
        "layers",
        "hidden",
        "intermediate",
        "heads",
        "kv_heads",
        "head_dim",
        "vocab",
        "seed",
        "dtype",
    ):
        if getattr(args, key) is not None:
            kwargs[key] = getattr(args, key)
    start = time.time()
    path = build_llama_onnx(
        args.output, rope=not args.no_rope, lm_head=not args.no_lm_head, progress=True, **kwargs
    )
    size = path.stat().st_size + path.with_name(path.name + ".data").stat().st_size
    print(f"wrote {path} ({size / 1e9:.2f} GB) in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
