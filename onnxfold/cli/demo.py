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
from onnxfold.passes.search import DATA_FREE_MIN_FIDELITY, DEFAULT_MIN_FIDELITY
from onnxfold.report.stats import format_table, human_count
from onnxfold.search.regression import REGRESSION_MIN_FIDELITY

DEMO_SPARSITIES = (0.0, 0.1, 0.25, 0.5)
#: Unlabeled training images given to ``--method auto`` (the column "auto, 32 samples").
DEMO_SAMPLES = 32


def accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    from onnxfold.runtime.session import make_session

    session = make_session(str(path))
    logits = session.run(None, {session.get_inputs()[0].name: x})[0]
    pred = logits.argmax(axis=1)
    return float((pred == y).mean()), pred


def report_samples(report) -> str:
    """Where the fold pass's activation samples came from, or why it measured none."""
    for record in report.passes:
        if record.name == "fold":
            return str(record.stats.get("activation_samples") or record.stats.get("auto", ""))
    return ""


def synthesised(source: str) -> bool:
    """Whether the fold pass's samples, as :func:`report_samples` gives them, were synthesised (without
    torch the line names DeepInversion as what it could not run, and the demo said its first fold's
    time included synthesising them)."""
    return "DeepInversion samples from" in source


def run_demo(out_dir: str | None = None) -> list[dict]:
    """The demo's folds and tables, its models written to ``out_dir``, else to a temporary folder
    removed when it ends (each run left 8.6 MB in /tmp)."""
    if out_dir:
        return _demo(Path(out_dir), kept=True)
    with tempfile.TemporaryDirectory(prefix="onnxfold-demo-") as folder:
        return _demo(Path(folder), kept=False)


def _demo(folder: Path, kept: bool) -> list[dict]:
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
    folder.mkdir(parents=True, exist_ok=True)
    rows, results = [], []
    for sparsity in DEMO_SPARSITIES:
        tag = f"resnet18-fold{int(sparsity * 100):02d}"
        naive = folder / f"{tag}-naive.onnx"
        fold(src, sparsity, naive, validate=False, method="fold", repair="none")
        naive_acc, _ = accuracy(naive, x_test, y_test)
        ar = folder / f"{tag}-ar.onnx"
        fold(src, sparsity, ar, validate=False, method="fold")
        ar_acc, _ = accuracy(ar, x_test, y_test)
        out = folder / f"{tag}.onnx"
        start = time.perf_counter()
        _, report = fold(src, sparsity, out, validate=False)  # the default: auto, data-free
        seconds = time.perf_counter() - start
        acc, pred = accuracy(out, x_test, y_test)
        agree = float((pred == base_pred).mean())
        auto = folder / f"{tag}-auto32.onnx"
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
                f"{ar_acc:.2%}",
                f"{acc:.2%}",
                f"{agree:.2%}",
                f"{auto_acc:.2%}",
                f"{seconds:.1f} s",
            ]
        )
        results.append(
            {
                "sparsity": sparsity,
                "params": report.after.params,
                "accuracy": acc,
                "accuracy_naive": naive_acc,
                "accuracy_ar": ar_acc,
                "accuracy_auto": auto_acc,
                "seconds": seconds,
                "samples": report_samples(report),
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
                "fold (naive)",
                "fold + ar",
                "default",
                "default agrees with original",
                "auto, 32 samples",
                "default fold time",
            ],
            rows,
            align="rrrrrrrrrrr",
        )
    )
    source = next((r["samples"] for r in results if r.get("samples")), "")
    print(
        "\naccuracy on the digits test images. naive = fold, cluster means only; + ar = the data-free Fold-AR\n"
        "variance repair; default = onnxfold fold -s R with no other option: --method auto without data, which\n"
        "keeps, per group, the candidate whose outputs stay closest on samples it synthesises"
        + (f"\n({source.removeprefix('data-free: ')})" if source else "")
        + f";\nauto, 32 samples = the same given {DEMO_SAMPLES} unlabeled training images (docs/method.md §5b)."
        + (
            "\nThe first default fold's time includes synthesising the samples; later folds of the same "
            "model in one process reuse them."
            if synthesised(source)
            else ""
        )
    )
    print(
        f"\nonnxfold fold with no -s: the smallest model at fidelity {DATA_FREE_MIN_FIDELITY:g} data-free, "
        f"{DEFAULT_MIN_FIDELITY:g} on samples (accuracy on the test images)"
    )
    rows = []
    for label, given in (("data-free proxy", None), (f"{DEMO_SAMPLES} unlabeled images", samples)):
        out = folder / f"resnet18-search-{'free' if given is None else 'inputs'}.onnx"
        start = time.perf_counter()
        _, report = fold(src, output=out, validate=False, inputs=given)  # the default: the search
        seconds = time.perf_counter() - start
        acc, pred = accuracy(out, x_test, y_test)
        rows.append(
            [
                label,
                human_count(report.after.params),
                f"{report.param_sparsity:.1%}",
                f"{report.search.chosen.fidelity:.4f}",
                f"{acc:.2%}",
                f"{float((pred == base_pred).mean()):.2%}",
                f"{seconds:.1f} s",
            ]
        )
        results.append(
            {
                "search": "data-free" if given is None else "inputs",
                "params": report.after.params,
                "param_sparsity": report.param_sparsity,
                "fidelity": report.search.chosen.fidelity,
                "accuracy": acc,
                "seconds": seconds,
            }
        )
    print(
        format_table(
            [
                "measured on",
                "params",
                "param sparsity",
                "fidelity",
                "accuracy",
                "agrees with original",
                "time",
            ],
            rows,
            align="lrrrrrr",
        )
    )
    print(
        f"\nfolded models written to {folder}"
        if kept
        else "\nthe folded models were written to a temporary folder, removed now (--out DIR keeps them)"
    )
    print(
        f"The smallest model that still agrees with yours (fidelity {DATA_FREE_MIN_FIDELITY:g} data-free, "
        f"{DEFAULT_MIN_FIDELITY:g} on samples, {REGRESSION_MIN_FIDELITY:g} for a regression's values; "
        "--min-fidelity F for another):"
    )
    print("  onnxfold fold model.onnx -o small.onnx                        # on a data-free proxy")
    print(
        "  onnxfold fold model.onnx -o small.onnx --inputs samples/      # on your samples (.npy, .npz, or a"
    )
    print(
        "                      folder of images with --image-preprocess unit|pm1|imagenet|caffe|raw|mean=M,std=S)"
    )
    print("A fixed sparsity in every group:  onnxfold fold model.onnx -o small.onnx --sparsity 0.3")
    return results
