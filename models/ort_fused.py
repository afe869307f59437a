"""Models in onnxruntime's fused transformer form (com.microsoft contrib ops), for the coverage bench.

* :func:`build_ort_bert`: a small ``transformers.BertModel`` built from a config (random weights, no
  download), exported by torch's legacy exporter and rewritten by onnxruntime's transformer optimizer
  (``onnxruntime.transformers.optimizer.optimize_model(..., model_type="bert")``): EmbedLayerNormalization,
  com.microsoft Attention (packed QKV weight and bias), BiasGelu, SkipLayerNormalization.
* :func:`build_gqa_decoder`: a LLaMA-style decoder written with ``onnx.helper`` in the form
  onnxruntime-genai's builder gives it: RMSNorm as SkipSimplifiedLayerNormalization (the first one as
  opset-23 RMSNormalization: genai's SimplifiedLayerNormalization sits in the default domain, which
  onnx.checker does not know), separate q/k/v MatMuls into com.microsoft GroupQueryAttention (rotary inside, KV cache as
  graph inputs ``past_key_values.*`` and outputs ``present.*``), a SiLU-gated MLP and an lm_head. The
  cache lengths come from the shapes (``total_sequence_length`` = past + new tokens). The past inputs are
  declared empty (the prompt step): onnxruntime's CPU kernel takes a past together with several new tokens
  only for batch 1, and the coverage check runs batch 2.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: coverage-bench name -> the exporter label its rows show
ORT_FUSED_MODELS = {"bert-ort": "ort-optimizer", "gqa-decoder": "onnx.helper"}


def build_ort_bert(path: Path, small: bool = False, seed: int = 0) -> Path:
    """A BertModel (hidden 256, 4 heads, 4 layers, MLP 1024; small: 64, 4 heads, 2 layers, MLP 128) with
    random weights, exported (opset 17, dynamic batch and sequence, output ``last_hidden_state``) and fused
    by onnxruntime's BERT optimizer; writes ``path``."""
    import torch
    import transformers
    from onnxruntime.transformers.optimizer import optimize_model

    hidden, heads, layers, mlp = (64, 4, 2, 128) if small else (256, 4, 4, 1024)
    config = transformers.BertConfig(
        vocab_size=512,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=mlp,
        max_position_embeddings=128,
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    bert = transformers.BertModel(config, add_pooling_layer=False).eval()

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    names = ["input_ids", "attention_mask", "token_type_ids"]
    feeds = (
        torch.randint(0, 100, (2, 16)),
        torch.ones(2, 16, dtype=torch.int64),
        torch.zeros(2, 16, dtype=torch.int64),
    )
    raw = path.with_name(path.stem + "-raw.onnx")
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Hidden(),
            feeds,
            str(raw),
            dynamo=False,
            input_names=names,
            output_names=["last_hidden_state"],
            opset_version=17,
            dynamic_axes={n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]},
        )
        optimized = optimize_model(
            str(raw), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0
        )
    optimized.save_model_to_file(str(path))
    raw.unlink(missing_ok=True)
    return path


def gqa_decoder_model(
    hidden: int = 128,
    heads: int = 8,
    kv_heads: int = 2,
    layers: int = 2,
    mlp: int = 256,
    vocab: int = 256,
    max_positions: int = 256,
    seed: int = 0,
) -> onnx.ModelProto:
    """The decoder of the module docstring with N(0, 0.05²) weights (RMSNorm weights 1 + N(0, 0.05²))."""
    rng = np.random.default_rng(seed)
    head_dim = hidden // heads
    inits: list[onnx.TensorProto] = []

    def weight(name: str, *shape: int, base: float = 0.0) -> str:
        inits.append(
            numpy_helper.from_array((base + 0.05 * rng.standard_normal(shape)).astype(np.float32), name)
        )
        return name

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    inv_freq = 1.0 / (10000.0 ** (np.arange(0, head_dim, 2) / head_dim))
    angles = np.outer(np.arange(max_positions), inv_freq)
    const("cos_cache", np.cos(angles).astype(np.float32))
    const("sin_cache", np.sin(angles).astype(np.float32))
    const("axis_0", np.array([0], np.int64))
    const("axis_1", np.array([1], np.int64))
    const("index_2", np.array([2], np.int64))
    const("one", np.array(1, np.int64))
    batch_and_sequence = ["batch_size", "sequence_length"]
    cache_shape = ["batch_size", kv_heads, 0, head_dim]  # the prompt step: an empty cache
    cache_total = ["batch_size", kv_heads, "total_sequence_length", head_dim]
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, batch_and_sequence)]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [*batch_and_sequence, vocab])]
    nodes = [
        # total length = past + new tokens; seqlens_k[b] = total − 1 for every sequence of the batch
        helper.make_node("Shape", ["input_ids"], ["ids_shape"], name="ids_shape"),
        helper.make_node("Shape", ["past_key_values.0.key"], ["past_shape"], name="past_shape"),
        helper.make_node("Gather", ["ids_shape", "axis_1"], ["new_len"], name="new_len", axis=0),
        helper.make_node("Gather", ["ids_shape", "axis_0"], ["batch"], name="batch", axis=0),
        helper.make_node("Gather", ["past_shape", "index_2"], ["past_len"], name="past_len", axis=0),
        helper.make_node("Add", ["past_len", "new_len"], ["total_1d"], name="total_1d"),
        helper.make_node("Squeeze", ["total_1d", "axis_0"], ["total_i64"], name="total_scalar"),
        helper.make_node(
            "Cast", ["total_i64"], ["total_sequence_length"], name="total_cast", to=TensorProto.INT32
        ),
        helper.make_node("Sub", ["total_1d", "one"], ["last_1d"], name="last_index"),
        helper.make_node("Expand", ["last_1d", "batch"], ["seqlens_i64"], name="seqlens_expand"),
        helper.make_node("Cast", ["seqlens_i64"], ["seqlens_k"], name="seqlens_cast", to=TensorProto.INT32),
        helper.make_node(
            "Gather", [weight("model.embed_tokens.weight", vocab, hidden), "input_ids"], ["embeds"]
        ),
    ]
    nodes[-1].name = "model.embed_tokens"
    ms = "com.microsoft"
    residual = "embeds"
    normed = "layers.0.input_norm"
    nodes.append(
        helper.make_node(
            "RMSNormalization",
            [residual, weight("model.layers.0.input_layernorm.weight", hidden, base=1.0)],
            [normed],
            name="model.layers.0.input_layernorm",
            axis=-1,
            epsilon=1e-6,
        )
    )
    for i in range(layers):
        p = f"model.layers.{i}"
        past = [f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
        present = [f"present.{i}.key", f"present.{i}.value"]
        inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, cache_shape) for n in past]
        outputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, cache_total) for n in present]
        for proj, width in (("q", heads * head_dim), ("k", kv_heads * head_dim), ("v", kv_heads * head_dim)):
            nodes.append(
                helper.make_node(
                    "MatMul",
                    [normed, weight(f"{p}.attn.{proj}_proj.weight", hidden, width)],
                    [f"{p}.{proj}"],
                    name=f"{p}.attn.{proj}_proj",
                )
            )
        nodes.append(
            helper.make_node(
                "GroupQueryAttention",
                [
                    f"{p}.q",
                    f"{p}.k",
                    f"{p}.v",
                    *past,
                    "seqlens_k",
                    "total_sequence_length",
                    "cos_cache",
                    "sin_cache",
                ],
                [f"{p}.attn", *present],
                name=f"{p}.attn",
                domain=ms,
                num_heads=heads,
                kv_num_heads=kv_heads,
                do_rotary=1,
                rotary_interleaved=0,
            )
        )
        nodes.append(
            helper.make_node(
                "MatMul",
                [f"{p}.attn", weight(f"{p}.attn.o_proj.weight", heads * head_dim, hidden)],
                [f"{p}.o"],
                name=f"{p}.attn.o_proj",
            )
        )
        nodes.append(
            helper.make_node(
                "SkipSimplifiedLayerNormalization",
                [f"{p}.o", residual, weight(f"{p}.post_attention_layernorm.weight", hidden, base=1.0)],
                [f"{p}.mlp_in", "", "", f"{p}.attn_residual"],
                name=f"{p}.post_attention_layernorm",
                domain=ms,
                epsilon=1e-6,
            )
        )
        for proj in ("gate", "up"):
            nodes.append(
                helper.make_node(
                    "MatMul",
                    [f"{p}.mlp_in", weight(f"{p}.mlp.{proj}_proj.weight", hidden, mlp)],
                    [f"{p}.{proj}"],
                    name=f"{p}.mlp.{proj}_proj",
                )
            )
        nodes += [
            helper.make_node("Sigmoid", [f"{p}.gate"], [f"{p}.gate_sigmoid"], name=f"{p}.mlp.act.sigmoid"),
            helper.make_node(
                "Mul", [f"{p}.gate", f"{p}.gate_sigmoid"], [f"{p}.silu"], name=f"{p}.mlp.act.mul"
            ),
            helper.make_node("Mul", [f"{p}.silu", f"{p}.up"], [f"{p}.gated"], name=f"{p}.mlp.gate_mul"),
            helper.make_node(
                "MatMul",
                [f"{p}.gated", weight(f"{p}.mlp.down_proj.weight", mlp, hidden)],
                [f"{p}.down"],
                name=f"{p}.mlp.down_proj",
            ),
        ]
        last = i == layers - 1
        norm_name = "model.norm" if last else f"model.layers.{i + 1}.input_layernorm"
        normed = "final_norm" if last else f"layers.{i + 1}.input_norm"
        residual_out = f"{p}.mlp_residual"
        nodes.append(
            helper.make_node(
                "SkipSimplifiedLayerNormalization",
                [f"{p}.down", f"{p}.attn_residual", weight(f"{norm_name}.weight", hidden, base=1.0)],
                [normed, "", "", "" if last else residual_out],
                name=norm_name,
                domain=ms,
                epsilon=1e-6,
            )
        )
        residual = residual_out
    nodes.append(
        helper.make_node(
            "MatMul", [normed, weight("lm_head.weight", hidden, vocab)], ["logits"], name="lm_head"
        )
    )
    graph = helper.make_graph(nodes, "gqa_decoder", inputs, outputs, inits)
    opsets = [helper.make_opsetid("", 23), helper.make_opsetid(ms, 1)]
    return helper.make_model(
        graph, opset_imports=opsets, ir_version=9, producer_name="onnxfold.models.ort_fused"
    )


def build_gqa_decoder(path: Path, small: bool = False, seed: int = 0) -> Path:
    """:func:`gqa_decoder_model` (hidden 512, 8 heads over 2 KV heads, 4 layers, MLP 1536; small: hidden 128,
    8 heads over 2 KV heads, 2 layers, MLP 256) written to ``path``."""
    sizes = dict(hidden=128, heads=8, kv_heads=2, layers=2, mlp=256)
    if not small:
        sizes = dict(hidden=512, heads=8, kv_heads=2, layers=4, mlp=1536)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(gqa_decoder_model(**sizes, seed=seed), str(path))
    return path


BUILDERS = {"bert-ort": build_ort_bert, "gqa-decoder": build_gqa_decoder}


def build_ort_fused(name: str, path: Path, small: bool = False) -> Path:
    """Write model ``name`` of :data:`ORT_FUSED_MODELS` to ``path``."""
    try:
        return BUILDERS[name](Path(path), small)
    except KeyError:
        raise ValueError(f"unknown onnxruntime-fused model {name!r}; known: {sorted(BUILDERS)}") from None
