"""``onnxfold bench quality``: accuracy against parameter sparsity, per method, plus variance ratios.

For every model, channel sparsity r and method (fold with a repair mode, or l1/l2 magnitude
pruning through the same groups), the model is compressed and scored on labelled data. The
variance ratio of a folded layer (docs/method.md §2.1, Def. 3.1) is

    VR_l = mean_c Var(x̃_{l,c}) / mean_c Var(x_{l,c}),

the mean per-channel variance (over samples and positions) of the layer's output after
compression, over the same before compression; Fold-Naive drives it towards 0 (variance
collapse), a good repair keeps it near 1. A layer's output is its normalisation's output when the
producer feeds a BatchNormalization, else the producer's output.

Widths are not rounded (``round_to=1``, unlike ``onnxfold fold``'s default of 8): the bench compares
methods at the sparsities it names, and on the digits zoo (groups of 8 to 64 channels) rounding to
multiples of 8 would put several of them on the same widths.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from onnxfold.errors import one_line
from onnxfold.report.progress import progress_bar
from onnxfold.report.stats import format_table

DEFAULT_SPARSITIES = (0.1, 0.25, 0.4, 0.5, 0.6, 0.75)
DEFAULT_METHODS = ("fold:none", "fold:ar", "fold:dir", "fold:data", "l1", "l2")
ZOO_MODELS = ("resnet18", "resnet18-fused", "vgg11bn", "vgg11bn-fused", "mlp", "lenet5")


@dataclass(frozen=True)
class MethodSpec:
    """``fold:ar`` → method fold with repair ar; ``l1`` → magnitude pruning with L1 norms."""

    label: str
    method: str
    repair: str

    @classmethod
    def parse(cls, text: str) -> MethodSpec:
        method, _, repair = text.partition(":")
        if method not in ("fold", "l1", "l2"):
            raise ValueError(f"unknown method {text!r} (fold:REPAIR, l1 or l2)")
        return cls(text, method, repair or "none")

    def kwargs(self, calibration: np.ndarray | None, synthetic: np.ndarray | None = None) -> dict:
        """fold() keyword arguments. ``dir`` reuses one synthesised batch per model (the synthesis
        depends only on the original model), applied exactly as the dir repair applies it."""
        out: dict = {"round_to": 1}  # exact widths: see the module docstring
        if self.method != "fold":
            out["method"] = self.method
        if self.repair == "data":
            out.update(repair="data", calibration=calibration)
        elif self.repair == "dir" and synthetic is not None:
            out.update(repair="data", calibration=synthetic)
        else:
            out["repair"] = self.repair  # explicit, also for none: fold() repairs with ar by default
        return out


def predict(path: Path, x: np.ndarray, batch: int = 256) -> np.ndarray:
    from onnxfold.runtime.session import make_session

    session = make_session(str(path))
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)])


def layer_outputs(model_path: Path, plans) -> list[tuple[str, str]]:
    """(layer name, tensor) for each producer of a folded group: its BN output if it feeds one."""
    proto = onnx.load(str(model_path), load_external_data=False)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in proto.graph.node:
        for t in node.input:
            consumers.setdefault(t, []).append(node)
    by_name = {n.name: n for n in proto.graph.node}
    out = []
    for plan in plans:
        if plan.status != "folded":
            continue
        for producer in plan.group.producers:
            node = by_name.get(producer)
            if node is None:
                continue
            tensor = node.output[0]
            users = consumers.get(tensor, [])
            if len(users) == 1 and users[0].op_type == "BatchNormalization":
                tensor = users[0].output[0]
            out.append((producer, tensor))
    return out


def channel_variances(
    model_path: Path, tensors: Sequence[str], x: np.ndarray, axis_of=None
) -> dict[str, float]:
    """Mean over channels of the per-channel variance of each tensor (channel axis 1, or last for rank 3)."""
    from onnxfold.runtime.session import make_session

    proto = onnx.load(str(model_path))
    existing = {o.name for o in proto.graph.output}
    for t in tensors:
        if t not in existing:
            proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
    session = make_session(proto.SerializeToString(), optimize=False)  # keep exposed intermediates
    values = session.run(list(tensors), {session.get_inputs()[0].name: x})
    result = {}
    for name, v in zip(tensors, values, strict=True):
        axis = 1 if v.ndim != 3 else 2
        moved = np.moveaxis(v.astype(np.float64), axis, 0).reshape(v.shape[axis], -1)
        result[name] = float(moved.var(axis=1).mean())
    return result


def synthetic_batch(path: Path, count: int = 128, iterations: int = 200) -> np.ndarray | None:
    """The DeepInversion batch of ``path`` (None when it has no BN statistics or torch is missing)."""
    try:
        from onnxfold.repair.deepinversion import synthesize
    except ImportError:
        return None
    try:
        return synthesize(onnx.load(str(path)), count=count, iterations=iterations)
    except (ValueError, ImportError):
        return None


def sweep_model(
    path: Path,
    x: np.ndarray,
    y: np.ndarray,
    sparsities: Sequence[float],
    methods: Sequence[MethodSpec],
    seeds: Sequence[int],
    calibration: np.ndarray | None,
    variance_at: float = 0.5,
    variance_samples: int = 256,
) -> dict:
    """Compress ``path`` at every (sparsity, method, seed) and score it; returns a JSON-able dict."""
    from onnxfold.api import fold

    synthetic = None
    if any(spec.repair == "dir" for spec in methods):
        synthetic = synthetic_batch(path)
    base_pred = predict(path, x).argmax(axis=1)
    base_acc = float((base_pred == y).mean())
    rows = []
    variance: dict[str, dict] = {}
    xv = x[:variance_samples]
    with tempfile.TemporaryDirectory() as tmp:
        for r in progress_bar(sparsities, "bench quality", unit="sparsity"):
            for spec in methods:
                accs, param_sp, secs = [], [], []
                for seed in seeds if spec.method == "fold" else seeds[:1]:  # pruning is deterministic
                    out = Path(tmp) / "c.onnx"
                    start = time.perf_counter()
                    try:
                        if spec.repair == "dir" and synthetic is None:
                            raise ValueError("dir does not apply (no BatchNormalization statistics)")
                        _, report = fold(
                            path, r, out, seed=seed, validate=False, **spec.kwargs(calibration, synthetic)
                        )
                    except Exception as exc:  # a method that does not apply (e.g. no BN): recorded, not fatal
                        rows.append({"sparsity": r, "method": spec.label, "error": one_line(exc)})
                        break
                    secs.append(time.perf_counter() - start)
                    accs.append(float((predict(out, x).argmax(axis=1) == y).mean()))
                    param_sp.append(report.param_sparsity)
                    if abs(r - variance_at) < 1e-9 and seed == seeds[0] and spec.method == "fold":
                        layers = layer_outputs(out, report.plans)
                        tensors = [t for _, t in layers]
                        if tensors:
                            before = channel_variances(path, tensors, xv)
                            after = channel_variances(out, tensors, xv)
                            variance[spec.label] = {
                                layer: after[t] / before[t] if before[t] > 0 else float("nan")
                                for layer, t in layers
                            }
                else:
                    rows.append(
                        {
                            "sparsity": r,
                            "method": spec.label,
                            "param_sparsity": float(np.mean(param_sp)),
                            "accuracy_mean": float(np.mean(accs)),
                            "accuracy_std": float(np.std(accs)),
                            "accuracy_min": float(np.min(accs)),
                            "accuracy_max": float(np.max(accs)),
                            "seeds": len(accs),
                            "seconds": float(np.mean(secs)),
                        }
                    )
    return {
        "model": path.name,
        "accuracy": base_acc,
        "rows": rows,
        "variance_ratio": variance,
        "variance_sparsity": variance_at,
    }


def format_sweep(result: dict) -> str:
    methods = list(dict.fromkeys(r["method"] for r in result["rows"]))
    sparsities = sorted({r["sparsity"] for r in result["rows"]})
    cell = {(r["sparsity"], r["method"]): r for r in result["rows"]}
    rows = []
    for s in sparsities:
        ps = next(
            (cell[(s, m)]["param_sparsity"] for m in methods if "param_sparsity" in cell.get((s, m), {})),
            None,
        )
        line = [f"{s:.2f}", f"{ps:.1%}" if ps is not None else "-"]
        for m in methods:
            r = cell.get((s, m))
            if r is None or "error" in r:
                line.append("n/a")
            elif r["seeds"] > 1:
                line.append(f"{r['accuracy_mean']:.1%}±{r['accuracy_std']:.1%}")
            else:
                line.append(f"{r['accuracy_mean']:.1%}")
        rows.append(line)
    head = f"{result['model']}: original accuracy {result['accuracy']:.2%}"
    table = format_table(["channel r", "param sparsity"] + methods, rows)
    parts = [head, table]
    if result["variance_ratio"]:
        vr = result["variance_ratio"]
        layers = list(next(iter(vr.values())))
        last = layers[-1]
        parts.append(
            f"variance ratio at r={result['variance_sparsity']} (mean over layers / last layer): "
            + ", ".join(
                f"{m} {np.nanmean(list(v.values())):.2f}/{v.get(last, float('nan')):.2f}"
                for m, v in vr.items()
            )
        )
    return "\n".join(parts)


def plot_sweeps(results: Sequence[dict], path: Path) -> Path | None:
    """Accuracy vs parameter sparsity (one panel per model, one line per method) and variance ratios."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    n = len(results)
    fig, axes = plt.subplots(2, n, figsize=(4.2 * n, 7.5), squeeze=False)
    for i, res in enumerate(results):
        ax = axes[0][i]
        methods = list(dict.fromkeys(r["method"] for r in res["rows"]))
        for m in methods:
            pts = sorted(
                (r["param_sparsity"], r["accuracy_mean"])
                for r in res["rows"]
                if r["method"] == m and "accuracy_mean" in r
            )
            if pts:
                ax.plot([p[0] * 100 for p in pts], [p[1] * 100 for p in pts], marker="o", ms=3, label=m)
        ax.axhline(res["accuracy"] * 100, color="gray", ls=":", lw=1)
        ax.axhline(10, color="gray", ls="--", lw=0.8)
        ax.set_title(res["model"])
        ax.set_xlabel("parameter sparsity (%)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(0, 100)
        ax.legend(fontsize=7)
        ax = axes[1][i]
        for m, ratios in res["variance_ratio"].items():
            ax.plot(range(len(ratios)), list(ratios.values()), marker=".", label=m)
        ax.axhline(1.0, color="gray", ls=":", lw=1)
        ax.set_xlabel("folded layer (topological order)")
        ax.set_ylabel(f"variance ratio at r={res['variance_sparsity']}")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bench_quality(
    models: Sequence[str] = (),
    data: str | None = None,
    labels: str | None = None,
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
    methods: Sequence[str] = DEFAULT_METHODS,
    seeds: Sequence[int] = (0, 1, 2),
    out_dir: str = "bench-quality",
    calibration: str | None = None,
) -> list:
    """Run the sweep over ``models`` (default: the bundled digits zoo) and write JSON + PNG to ``out_dir``."""
    from onnxfold.models import bundled_model

    specs = [MethodSpec.parse(m) for m in methods]
    if models:
        if data is None or labels is None:
            raise ValueError("bench quality on your own model needs --data X.npy and --labels Y.npy")
        x, y = np.load(data), np.load(labels)
        calib = np.load(calibration) if calibration else x[: min(256, len(x))]
        paths = [Path(m) for m in models]
    else:
        from onnxfold.models.digits import load_digits_split

        x_train, _, x, y = load_digits_split()
        calib = x_train[:256]
        paths = [bundled_model(f"{name}.onnx") for name in ZOO_MODELS]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for path in paths:
        res = sweep_model(path, x, y, sparsities, specs, seeds, calib)
        print(format_sweep(res) + "\n", flush=True)
        results.append(res)
    (out / "quality.json").write_text(json.dumps(results, indent=1) + "\n")
    png = plot_sweeps(results, out / "quality.png")
    print(f"wrote {out / 'quality.json'}" + (f" and {png}" if png else " (matplotlib missing: no plot)"))
    return results


def bench_int8(
    out_dir: str = "bench-quality",
    sparsities: Sequence[float] = (0.25, 0.5),
    names: Sequence[str] = ("resnet18", "vgg11bn", "mlp", "lenet5"),
) -> list[dict]:
    """Accuracy of the digits zoo: original, INT8 alone, fold (ar) and fold + INT8, side by side.

    INT8 is onnxruntime's static QDQ quantization (per-channel weights), calibrated on 256 training
    images; folding itself uses no data."""
    from onnxfold.api import run_pipeline
    from onnxfold.models import bundled_model
    from onnxfold.models.digits import load_digits_split
    from onnxfold.passes import CanonicalizePass, CleanupPass, FoldPass, QuantizePass, RepairPass

    x_train, _, x, y = load_digits_split()
    feeds = {"input": x_train[:256]}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            path = bundled_model(f"{name}.onnx")

            def acc(p: Path) -> float:
                return float((predict(p, x).argmax(axis=1) == y).mean())

            row = {"model": name, "original": acc(path)}
            q = Path(tmp) / "q.onnx"
            run_pipeline(path, [CanonicalizePass(), QuantizePass(mode="static")], q, inputs=feeds)
            row["int8"] = acc(q)
            row["int8_size_ratio"] = q.stat().st_size / path.stat().st_size
            for r in sparsities:
                f = Path(tmp) / "f.onnx"
                fold_passes = [
                    CanonicalizePass(),
                    FoldPass(sparsity=r, round_to=1),  # exact widths, like the sweep
                    RepairPass(mode="ar"),
                    CleanupPass(),
                ]
                run_pipeline(path, fold_passes, f)
                row[f"fold{r}"] = acc(f)
                run_pipeline(path, fold_passes + [QuantizePass(mode="static")], f, inputs=feeds)
                row[f"fold{r}+int8"] = acc(f)
                row[f"fold{r}+int8_size_ratio"] = f.stat().st_size / path.stat().st_size
            rows.append(row)
    headers = ["model", "original", "INT8"] + [
        h for r in sparsities for h in (f"fold {r}", f"fold {r} + INT8")
    ]
    table = format_table(
        headers,
        [
            [r["model"], f"{r['original']:.1%}", f"{r['int8']:.1%}"]
            + [f"{r[k]:.1%}" for s in sparsities for k in (f"fold{s}", f"fold{s}+int8")]
            for r in rows
        ],
    )
    print(table)
    (out / "int8.json").write_text(json.dumps(rows, indent=1) + "\n")
    return rows
