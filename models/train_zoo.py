"""Train the bundled digits zoo on CPU and export it to ``models/zoo/``: ``python -m onnxfold.models.train_zoo``.

Each model is trained with a fixed seed, SGD + Nesterov momentum, L2 weight decay (added to the gradient as
λ·w), a one-cycle (cosine) learning-rate schedule and ±1-pixel random shifts, then exported with BatchNormalization kept
(``<name>.onnx``, style ``legacy-bn``) and, for CNNs, fused (``<name>-fused.onnx``, style ``legacy``).
Test accuracy is measured with onnxruntime on the exported files and written to ``zoo.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .architectures import build_model
from .digits import SPLIT, load_digits_split, split_indices
from .export import export_onnx

__all__ = ["ZOO", "ZooEntry", "onnx_accuracy", "train_model", "main"]

ZOO_DIR = Path(__file__).resolve().parent / "zoo"


@dataclass(frozen=True)
class ZooEntry:
    """One zoo model: architecture, constructor arguments and training recipe."""

    arch: str
    kwargs: dict[str, Any]
    cnn: bool = True
    epochs: int = 40
    lr: float = 0.05
    weight_decay: float = 5e-4
    batch_size: int = 64
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


ZOO: dict[str, ZooEntry] = {
    "resnet18": ZooEntry("resnet18", {"base_width": 8, "in_channels": 1, "num_classes": 10}),
    "vgg11bn": ZooEntry(
        "vgg11bn",
        {
            "base_width": 8,
            "in_channels": 1,
            "input_size": 8,
            "num_pools": 2,
            "hidden": 128,
            "dropout": 0.3,
            "num_classes": 10,
        },
    ),
    "mlp": ZooEntry(
        "mlp", {"in_features": 64, "hidden": [256, 128], "num_classes": 10}, cnn=False, epochs=100, lr=0.1
    ),
    "lenet5": ZooEntry(
        "lenet5", {"channels": [6, 16], "hidden": [120, 84], "in_channels": 1, "input_size": 8}, epochs=60
    ),
}


def _shift(x: torch.Tensor, generator: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Translate each image by an independent integer offset in [−s, s]² with zero fill."""
    n, _, h, w = x.shape
    s = max_shift
    padded = nn.functional.pad(x, (s, s, s, s))
    off = torch.randint(0, 2 * s + 1, (n, 2), generator=generator)
    return torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(off.tolist())])


def train_model(entry: ZooEntry, x: np.ndarray, y: np.ndarray) -> nn.Module:
    """Train ``entry`` on (x, y) deterministically; returns the model in eval mode."""
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        return _train(entry, x, y)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)


def _train(entry: ZooEntry, x: np.ndarray, y: np.ndarray) -> nn.Module:
    torch.manual_seed(entry.seed)
    g = torch.Generator().manual_seed(entry.seed)
    model = build_model(entry.arch, **entry.kwargs)
    opt = torch.optim.SGD(
        model.parameters(), lr=entry.lr, momentum=0.9, nesterov=True, weight_decay=entry.weight_decay
    )
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    steps = entry.epochs * ((len(xt) + entry.batch_size - 1) // entry.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=entry.lr, total_steps=steps, pct_start=0.15)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(entry.epochs):
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), entry.batch_size):
            idx = perm[i : i + entry.batch_size]
            if len(idx) < 2:  # BatchNorm needs more than one sample
                continue
            xb = _shift(xt[idx], g)
            opt.zero_grad(set_to_none=True)
            loss_fn(model(xb), yt[idx]).backward()
            opt.step()
            sched.step()
    return model.eval()


def onnx_accuracy(path: str | Path, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of the ONNX model at ``path`` on (x, y), run with onnxruntime on CPU."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = sess.run(["logits"], {"input": x})[0]
    return float((logits.argmax(1) == y).mean())


def build_zoo(out_dir: Path = ZOO_DIR, names: list[str] | None = None) -> dict[str, Any]:
    """Train, export and measure the zoo models ``names`` (default all); writes and returns ``zoo.json``."""
    import sklearn

    out_dir.mkdir(parents=True, exist_ok=True)
    x_train, y_train, x_test, y_test = load_digits_split()
    _, test_idx = split_indices()
    manifest_path = out_dir / "zoo.json"
    models: dict[str, Any] = {}
    if manifest_path.exists():
        models = json.loads(manifest_path.read_text()).get("models", {})
    example = torch.from_numpy(x_test[:2])
    for name in names or list(ZOO):
        entry = ZOO[name]
        t0 = time.perf_counter()
        model = train_model(entry, x_train, y_train)
        train_s = time.perf_counter() - t0
        with torch.no_grad():
            torch_acc = float((model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean())
        styles = {f"{name}.onnx": "legacy-bn"}
        if entry.cnn:
            styles[f"{name}-fused.onnx"] = "legacy"
        files = {}
        for fname, style in styles.items():
            path = export_onnx(model, out_dir / fname, example, style)
            files[fname] = {
                "style": style,
                "bytes": path.stat().st_size,
                "accuracy": onnx_accuracy(path, x_test, y_test),
            }
        models[name] = {
            "arch": entry.arch,
            "kwargs": entry.kwargs,
            "params": sum(p.numel() for p in model.parameters()),
            "torch_accuracy": torch_acc,
            "files": files,
            "train": {k: v for k, v in asdict(entry).items() if k not in ("arch", "kwargs", "cnn")},
            "train_seconds": round(train_s, 1),
        }
        print(
            f"{name:10s} params={models[name]['params']:7d} torch_acc={torch_acc:.4f} "
            + " ".join(f"{f}={v['accuracy']:.4f}" for f, v in files.items())
            + f" ({train_s:.1f}s)"
        )
    manifest = {
        "dataset": {
            "source": "sklearn.datasets.load_digits",
            "sklearn_version": sklearn.__version__,
            "split": SPLIT,
            "n_train": len(y_train),
            "n_test": len(y_test),
            "test_indices": "@TEST_INDICES@",  # written on one line below
            "input": {"name": "input", "shape": ["batch", 1, 8, 8], "dtype": "float32"},
            "output": {"name": "logits", "shape": ["batch", 10]},
        },
        "models": {k: models[k] for k in sorted(models)},
    }
    text = json.dumps(manifest, indent=1).replace('"@TEST_INDICES@"', json.dumps(test_idx.tolist()))
    manifest_path.write_text(text + "\n")
    return json.loads(text)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: ``python -m onnxfold.models.train_zoo [--only NAME ...] [--out DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(ZOO), help="models to (re)build; default all")
    parser.add_argument("--out", type=Path, default=ZOO_DIR, help="output folder (default: models/zoo)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # identical float reduction order on every machine
    build_zoo(args.out, args.only)


if __name__ == "__main__":
    main()
