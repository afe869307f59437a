"""Targeted folding on the digits zoo: ``python -m onnxfold.search.digits_bench [--target 0.99]``.

For each model: ``min_fidelity`` with the first 32 test images as the search inputs, and data-free
(validation's random inputs); accuracy judged on the remaining 508 test images; next to uniform
fold sparsity at the same parameter count (sparsity bisected to match). Default repair (ar);
``--round-to`` as in ``onnxfold fold`` (default 8), for the search and the uniform fold alike.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from onnxfold.folding.cluster import DEFAULT_ROUND_TO

MODELS = ("resnet18.onnx", "vgg11bn.onnx", "lenet5.onnx")


def _accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    from onnxfold.runtime.session import make_session

    sess = make_session(str(path), providers=["CPUExecutionProvider"], threads=1)
    return float(np.mean(sess.run(None, {sess.get_inputs()[0].name: x})[0].argmax(-1) == y))


def _uniform_at(model: Path, reduction: float, out: Path, round_to: int) -> tuple[float, float]:
    """(sparsity, measured reduction) of the uniform fold whose parameter reduction is closest."""
    import onnxfold

    lo, hi, best = 0.0, 0.95, (0.0, 0.0)
    for _ in range(10):
        mid = (lo + hi) / 2
        _, rep = onnxfold.fold(model, mid, out, validate=False, overwrite=True, round_to=round_to)
        if abs(rep.param_sparsity - reduction) < abs(best[1] - reduction):
            best = (mid, rep.param_sparsity)
        lo, hi = (mid, hi) if rep.param_sparsity < reduction else (lo, mid)
    onnxfold.fold(model, best[0], out, validate=False, overwrite=True, round_to=round_to)
    return best


def run(target: float = 0.99, n_search: int = 32, round_to: int = DEFAULT_ROUND_TO) -> list[dict]:
    import onnxfold
    from onnxfold.models import bundled_model
    from onnxfold.models.digits import load_digits_split

    _, _, x, y = load_digits_split()
    xs, xj, yj = x[:n_search], x[n_search:], y[n_search:]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            model = bundled_model(name)
            base = _accuracy(model, xj, yj)
            for label, inputs in ((f"{n_search} samples", {"input": xs}), ("data-free", None)):
                out = Path(tmp) / f"t-{name}"
                start = time.perf_counter()
                try:
                    _, rep = onnxfold.fold(
                        model,
                        output=out,
                        min_fidelity=target,
                        inputs=inputs,
                        overwrite=True,
                        round_to=round_to,
                    )
                except ValueError as exc:
                    rows.append({"model": name, "inputs": label, "error": str(exc)})
                    continue
                seconds = time.perf_counter() - start
                uni = Path(tmp) / f"u-{name}"
                s, red = _uniform_at(model, rep.param_sparsity, uni, round_to)
                rows.append(
                    {
                        "model": name,
                        "inputs": label,
                        "round_to": round_to,
                        "accuracy_original": base,
                        "param_reduction": rep.param_sparsity,
                        "accuracy": _accuracy(out, xj, yj),
                        "search_fidelity": rep.search.chosen.fidelity,
                        "seconds": seconds,
                        "uniform_sparsity": s,
                        "uniform_reduction": red,
                        "uniform_accuracy": _accuracy(uni, xj, yj),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--target", type=float, default=0.99)
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--round-to", type=int, default=DEFAULT_ROUND_TO)
    a = p.parse_args(argv)
    run(a.target, a.samples, a.round_to)


if __name__ == "__main__":
    main()
