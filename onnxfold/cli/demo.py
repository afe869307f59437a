"""``onnxfold demo``: fold the bundled digits ResNet-18 at several sparsities and show what it costs.

Works offline and without torch: the model ships in ``onnxfold/models/zoo`` and the digits test
split comes from scikit-learn's bundled copy.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from onnxfold.models import bundled_model
from onnxfold.report.stats import format_table, human_count

DEMO_SPARSITIES = (0.0, 0.1, 0.25, 0.5)
#: Unlabeled training images given to ``--method auto`` (the column "auto, 32 samples").
DEMO_SAMPLES = 32


def accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    from onnxfold.runtime.session import make_session

    session = make_session(str(path))
    logits = session.run(None, {session.get_inputs()[0].name: x})[0]
    pred = logits.argmax(axis=1)
    return float((pred == y).mean()), pred


def run_demo(out_dir: str | None = None) -> list[dict]:
    from onnxfold.api import fold
    from onnxfold.models.digits import load_digits_split

    src = bundled_model()
    x_train, _, x_test, y_test = load_digits_split()
    samples = {"input": x_train[:DEMO_SAMPLES]}  # unlabeled training images, none of the test images
    base_acc, base_pred = accuracy(src, x_test, y_test)
    print(
        f"onnxfold demo: {src.name} (CIFAR-style ResNet-18 trained on scikit-learn digits, "
        f"{len(y_test)} test images, accuracy {base_acc:.2%})\n"
    )
    folder = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="onnxfold-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    rows, results = [], []
    for sparsity in DEMO_SPARSITIES:
        naive = folder / f"resnet18-fold{int(sparsity * 100):02d}-naive.onnx"
        fold(src, sparsity, naive, validate=False, repair="none")
        naive_acc, _ = accuracy(naive, x_test, y_test)
        out = folder / f"resnet18-fold{int(sparsity * 100):02d}.onnx"
        start = time.perf_counter()
        _, report = fold(src, sparsity, out, validate=False)
        seconds = time.perf_counter() - start
        acc, pred = accuracy(out, x_test, y_test)
        agree = float((pred == base_pred).mean())
        auto = folder / f"resnet18-fold{int(sparsity * 100):02d}-auto.onnx"
        fold(src, sparsity, auto, validate=False, method="auto", inputs=samples)
        auto_acc, _ = accuracy(auto, x_test, y_test)
        folded = sum(p.status == "folded" for p in report.plans)
        rows.append(
            [
                f"{sparsity:.2f}",
                human_count(report.after.params),
                f"{report.param_sparsity:.1%}",
                human_count(report.after.macs),
                f"{folded}/{len(report.plans)}",
                f"{naive_acc:.2%}",
                f"{acc:.2%}",
                f"{agree:.2%}",
                f"{auto_acc:.2%}",
                f"{seconds:.2f} s",
            ]
        )
        results.append(
            {
                "sparsity": sparsity,
                "params": report.after.params,
                "accuracy": acc,
                "accuracy_naive": naive_acc,
                "accuracy_auto": auto_acc,
                "seconds": seconds,
            }
        )
    print(
        format_table(
            [
                "channel sparsity",
                "params",
                "param sparsity",
                "MACs",
                "groups folded",
                "accuracy (naive)",
                "accuracy (ar)",
                "ar agrees with original",
                "accuracy (auto, 32 samples)",
                "fold time (ar)",
            ],
            rows,
            align="rrrrrrrrrr",
        )
    )
    print(
        "\nnaive = Fold-Naive (cluster means only); ar = data-free Fold-AR variance repair (the default);\n"
        f"auto = --method auto --inputs with {DEMO_SAMPLES} unlabeled training images: per group, fold, fold + ar,\n"
        "a least-squares merge or an activation-scored pruning, whichever keeps the outputs closest (docs/method.md §5b)."
    )
    print(f"\nfolded models written to {folder}")
    print("Fold your own model:  onnxfold fold model.onnx -o small.onnx --sparsity 0.5")
    print("With a few samples:   onnxfold fold model.onnx -o small.onnx --method auto --inputs samples.npy")
    return results
