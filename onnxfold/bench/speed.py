"""``onnxfold bench speed``: CPU latency, file size and memory of folded and INT8 models.

For each architecture (random weights; speed does not depend on them) the original export, the
model folded at several channel sparsities (with and without ``round_to=8``) and the 50 %-folded
model quantized to INT8 (static QDQ and dynamic) are timed with onnxruntime on CPU: a fixed
``intra_op_num_threads`` (2) and ``inter_op_num_threads`` (1), batch 1 and batch 8, median of many
runs after warm-up. Idle intra-op threads do not spin (``session.intra_op.allow_spinning=0``;
``--spin`` restores onnxruntime's default): on a machine shared with other processes, spinning
threads take the cores the working thread needs, and latencies grew 2-3x and varied with the
load. The variants of one architecture are timed round-robin in one process, so a change of
machine load hits them alike (the JSON also keeps the 10th percentile and the minimum, the
estimates least disturbed by other processes). File size is the saved size; peak memory is the
peak RSS (``VmHWM``; ``ru_maxrss`` where /proc is missing) of a fresh subprocess that loads the
model into a session and runs both batches, reported whole and less the process's peak just
before the session was created (Python, numpy, onnxruntime and the inputs).

Architectures: ``resnet18`` (torchvision layout at 224×224, plus a natively half-width ResNet-18
exported from torch for the fold-at-50 % comparison), ``vgg11bn`` (VGG-11-BN with the 4096-wide
classifier at 64×64: at 224×224 one batch-8 run takes seconds on two threads; its two 4096-wide FC
groups are not folded because k-means over 4096 channels takes minutes per fold, so only the
convolutions, which hold 95 % of its MACs, are folded), ``mobilenetv2`` (224×224) and ``bert`` (a
2-layer BERT built from a ``transformers`` config offline, only when transformers is installed).
Calibration data of the static INT8 models is random (no data set is bundled): ranges fit noise.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxfold.report.stats import format_table

log = logging.getLogger(__name__)

DEFAULT_MODELS = ("resnet18", "vgg11bn", "mobilenetv2", "bert")
DEFAULT_SPARSITIES = (0.25, 0.5, 0.75)
INT8_SPARSITY = 0.5


@dataclass
class Variant:
    """One timed model file and what it is."""

    arch: str
    name: str
    path: Path
    kind: str  # original, native, fold, int8-static, int8-dynamic
    sparsity: float = 0.0
    round_to: int = 1
    note: str = ""
    build_seconds: float = 0.0
    params: int = 0
    macs: int = 0
    file_bytes: int = 0
    latency_ms: dict[int, float] = field(default_factory=dict)
    latency_p10_ms: dict[int, float] = field(default_factory=dict)
    latency_min_ms: dict[int, float] = field(default_factory=dict)
    runs: dict[int, int] = field(default_factory=dict)
    peak_rss_mib: float | None = None
    session_rss_mib: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


@dataclass
class ArchSpec:
    """How to build and feed one architecture."""

    name: str
    build: Callable[[Path], Path]  # writes original.onnx (and whatever else) into the folder, returns it
    input_shapes: Callable[[int], dict[str, tuple[int, ...]]]
    fold_ignore: tuple[str, ...] = ()
    description: str = ""
    native_half: Callable[[Path], Path] | None = None


# --------------------------------------------------------------------------- architectures


def _export_torch(model: Any, path: Path, shape: tuple[int, ...], seed: int = 0) -> Path:
    import torch

    from onnxfold.models.export import export_onnx

    torch.manual_seed(seed)
    return export_onnx(model, path, torch.randn(*shape), "legacy")


def _resnet18(width: float) -> Callable[[Path], Path]:
    def build(path: Path) -> Path:
        import torch

        from onnxfold.models.imagenet import ResNet18ImageNet, randomize_bn

        torch.manual_seed(0)
        return _export_torch(randomize_bn(ResNet18ImageNet(width=width)), path, (1, 3, 224, 224))

    return build


def _vgg11bn(path: Path) -> Path:
    import torch

    from onnxfold.models.architectures import VGG11BN
    from onnxfold.models.imagenet import randomize_bn

    torch.manual_seed(0)
    model = VGG11BN(num_classes=1000, input_size=64, num_pools=5, hidden=4096)
    return _export_torch(randomize_bn(model), path, (1, 3, 64, 64))


def _mobilenetv2(path: Path) -> Path:
    import torch

    from onnxfold.models.imagenet import MobileNetV2, randomize_bn

    torch.manual_seed(0)
    return _export_torch(randomize_bn(MobileNetV2()), path, (1, 3, 224, 224))


BERT_SEQ = 128


def _bert(path: Path) -> Path:
    """A 2-layer, 256-wide BERT for sequence classification from a transformers config (no download)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from onnxfold.models.export import _quiet

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=8192,
        hidden_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=1024,
        max_position_embeddings=BERT_SEQ,
        num_labels=2,
    )
    model = BertForSequenceClassification(config).eval()
    ids = torch.randint(0, 8192, (1, BERT_SEQ))
    mask = torch.ones(1, BERT_SEQ, dtype=torch.int64)

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).logits

    with _quiet(), torch.no_grad():
        torch.onnx.export(
            Wrapped().eval(),
            (ids, mask),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={"input_ids": {0: "batch"}, "attention_mask": {0: "batch"}, "logits": {0: "batch"}},
        )
    return path


def _transformers_available() -> bool:
    try:
        import transformers  # noqa: F401
    except Exception:
        return False
    return True


def arch_specs() -> dict[str, ArchSpec]:
    return {
        "resnet18": ArchSpec(
            "resnet18",
            _resnet18(1.0),
            lambda b: {"input": (b, 3, 224, 224)},
            description="torchvision-style ResNet-18, 224x224",
            native_half=_resnet18(0.5),
        ),
        "vgg11bn": ArchSpec(
            "vgg11bn",
            _vgg11bn,
            lambda b: {"input": (b, 3, 64, 64)},
            fold_ignore=("classifier",),
            description="VGG-11-BN, 64x64 input, 4096-wide classifier (not folded)",
        ),
        "mobilenetv2": ArchSpec(
            "mobilenetv2",
            _mobilenetv2,
            lambda b: {"input": (b, 3, 224, 224)},
            description="MobileNetV2, 224x224",
        ),
        "bert": ArchSpec(
            "bert",
            _bert,
            lambda b: {"input_ids": (b, BERT_SEQ), "attention_mask": (b, BERT_SEQ)},
            description=f"BERT 2x256 (transformers config), sequence {BERT_SEQ}",
        ),
    }


# --------------------------------------------------------------------------- building variants


def _fold_pass_kwargs(sparsity: float, round_to: int, ignore: Sequence[str]) -> dict[str, Any]:
    from onnxfold.passes import FoldPass

    kwargs: dict[str, Any] = {"sparsity": sparsity, "round_to": round_to, "ignore": list(ignore)}
    if any(o.name == "n_init" for o in FoldPass.options):
        kwargs["n_init"] = 1  # one k-means run: the widths, hence the speed, do not depend on it
    return kwargs


def _group_widths(path: Path, sparsity: float, round_to: int) -> list[int]:
    from onnxfold.api import analyze
    from onnxfold.folding.cluster import cluster_count

    return [cluster_count(g.size, sparsity, round_to) for g in analyze(path) if g.foldable]


def fill_stats(variant: Variant) -> None:
    from onnxfold.api import saved_size
    from onnxfold.report.stats import model_stats

    proto = onnx.load(str(variant.path), load_external_data=False)
    stats = model_stats(proto)
    variant.params, variant.macs = stats.params, stats.macs
    variant.file_bytes = saved_size(variant.path)


def build_variants(
    spec: ArchSpec,
    folder: Path,
    sparsities: Sequence[float],
    round_tos: Sequence[int],
    int8: bool,
    seed: int = 0,
) -> list[Variant]:
    """Export the original (and native half-width) model, fold and quantize it; files go into ``folder``."""
    import onnxfold
    from onnxfold.passes import CanonicalizePass, CleanupPass, FoldPass, QuantizePass

    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    original = spec.build(folder / "original.onnx")
    variants = [
        Variant(spec.name, "original", original, "original", build_seconds=time.perf_counter() - start)
    ]
    if spec.native_half is not None:
        start = time.perf_counter()
        path = spec.native_half(folder / "native-half.onnx")
        variants.append(
            Variant(
                spec.name,
                "native x0.5",
                path,
                "native",
                0.5,
                build_seconds=time.perf_counter() - start,
                note="exported from torch at width 0.5",
            )
        )
    folded: dict[tuple[float, int], Path] = {}
    for s in sparsities:
        for r in round_tos:
            if r > 1 and (s, 1) in folded and _group_widths(original, s, r) == _group_widths(original, s, 1):
                variants.append(
                    Variant(
                        spec.name,
                        f"fold {s:g} r{r}",
                        folded[(s, 1)],
                        "fold",
                        s,
                        r,
                        note="same widths as round_to=1",
                    )
                )
                folded[(s, r)] = folded[(s, 1)]
                continue
            path = folder / f"fold-{s:g}-r{r}.onnx"
            start = time.perf_counter()
            passes = [
                CanonicalizePass(),
                FoldPass(**_fold_pass_kwargs(s, r, spec.fold_ignore)),
                CleanupPass(),
            ]
            onnxfold.run_pipeline(original, passes, path, seed=seed)
            folded[(s, r)] = path
            variants.append(
                Variant(
                    spec.name,
                    f"fold {s:g}" + (f" r{r}" if r > 1 else ""),
                    path,
                    "fold",
                    s,
                    r,
                    build_seconds=time.perf_counter() - start,
                )
            )
    if int8:
        if (INT8_SPARSITY, 1) in folded:
            base_s, base = INT8_SPARSITY, folded[(INT8_SPARSITY, 1)]
        elif folded:
            (base_s, _), base = next(iter(folded.items()))
        else:
            base_s, base = 0.0, original
        rng = np.random.default_rng(seed)
        calib = {k: _random_input(k, shape, rng) for k, shape in spec.input_shapes(16).items()}
        for mode in ("static", "dynamic"):
            path = folder / f"fold-{base_s:g}-int8-{mode}.onnx"
            start = time.perf_counter()
            onnxfold.run_pipeline(base, [QuantizePass(mode=mode, batch=8)], path, inputs=calib, seed=seed)
            variants.append(
                Variant(
                    spec.name,
                    f"fold {base_s:g} + int8 {mode}",
                    path,
                    f"int8-{mode}",
                    base_s,
                    build_seconds=time.perf_counter() - start,
                    note="random calibration data" if mode == "static" else "",
                )
            )
    for v in variants:
        fill_stats(v)
    for v in variants:  # quantization keeps the MACs; shapes ORT's pre-processing pinned would skew the count
        if v.kind.startswith("int8"):
            v.macs = next(u.macs for u in variants if u.path == base)
    return variants


def _random_input(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if "ids" in name:
        return rng.integers(0, 1000, size=shape).astype(np.int64)
    if "mask" in name:
        return np.ones(shape, dtype=np.int64)
    return rng.standard_normal(shape).astype(np.float32)


# --------------------------------------------------------------------------- measuring


def make_bench_session(path: Path, threads: int, spinning: bool = False) -> Any:
    """A CPU session with ``threads`` intra-op threads, one inter-op thread, full graph optimisation."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def time_variants(
    variants: Sequence[Variant],
    feeds: dict[int, dict[str, np.ndarray]],
    threads: int,
    budget_s: float,
    rounds: int = 20,
    min_runs: int = 20,
    max_runs: int = 400,
    spinning: bool = False,
) -> None:
    """Median latency per variant and batch. The runs of each variant are spread over ``rounds``
    round-robin passes over all variants (order reversed every other pass)."""
    sessions = {id(v): make_bench_session(v.path, threads, spinning) for v in variants}
    for batch, feed in feeds.items():
        per_round: dict[int, int] = {}
        for v in variants:
            sess = sessions[id(v)]
            for _ in range(2):
                sess.run(None, feed)  # warm-up (first runs allocate buffers and pack weights)
            start = time.perf_counter()
            sess.run(None, feed)
            once = max(time.perf_counter() - start, 1e-5)
            per_round[id(v)] = max(1, int(np.clip(budget_s / once, min_runs, max_runs)) // rounds)
        samples: dict[int, list[float]] = {id(v): [] for v in variants}
        for r in range(rounds):
            for v in variants if r % 2 == 0 else list(reversed(variants)):
                sess = sessions[id(v)]
                for _ in range(per_round[id(v)]):
                    start = time.perf_counter()
                    sess.run(None, feed)
                    samples[id(v)].append(time.perf_counter() - start)
        for v in variants:
            ts = np.array(samples[id(v)]) * 1000.0
            v.latency_ms[batch] = float(np.median(ts))
            v.latency_p10_ms[batch] = float(np.percentile(ts, 10))
            v.latency_min_ms[batch] = float(ts.min())
            v.runs[batch] = len(ts)


_RSS_CHILD = r"""
import json, sys
import numpy as np
import onnxruntime as ort


def hwm_kib():
    # VmHWM: peak RSS of this process image (ru_maxrss would carry the parent's peak over fork+exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


path, threads, feeds = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
arrays = []
for f in feeds:
    with np.load(f) as data:
        arrays.append({k: data[k] for k in data.files})
before = hwm_kib()
opts = ort.SessionOptions()
opts.intra_op_num_threads = threads
opts.inter_op_num_threads = 1
opts.log_severity_level = 3
sess = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
for feed in arrays:
    sess.run(None, feed)
print(json.dumps({"before_kib": before, "peak_kib": hwm_kib()}))
"""


def measure_memory(variant: Variant, feed_files: Sequence[Path], threads: int) -> None:
    """Peak RSS of a fresh process that creates the session and runs every feed once."""
    cmd = [sys.executable, "-c", _RSS_CHILD, str(variant.path), str(threads), *map(str, feed_files)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
        data = json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as exc:
        log.warning("memory of %s not measured: %s", variant.name, exc)
        return
    variant.peak_rss_mib = data["peak_kib"] / 1024.0
    variant.session_rss_mib = (data["peak_kib"] - data["before_kib"]) / 1024.0


# --------------------------------------------------------------------------- report


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def summarize(variants: Sequence[Variant]) -> list[dict[str, Any]]:
    """Rows with speedups and MAC/size ratios against the architecture's original."""
    rows = []
    for v in variants:
        orig = next(o for o in variants if o.arch == v.arch and o.kind == "original")
        row = v.to_dict()
        row["mac_ratio"] = _ratio(orig.macs, v.macs)
        row["size_ratio"] = _ratio(v.file_bytes, orig.file_bytes)
        row["speedup"] = {b: _ratio(orig.latency_ms.get(b), v.latency_ms.get(b)) for b in v.latency_ms}
        row["speedup_p10"] = {
            b: _ratio(orig.latency_p10_ms.get(b), v.latency_p10_ms.get(b)) for b in v.latency_ms
        }
        rows.append(row)
    return rows


def format_rows(rows: Sequence[dict[str, Any]], batches: Sequence[int]) -> str:
    head = ["model", "variant", "params", "MACs", "MAC x", "size MiB", "size ratio"]
    for b in batches:
        head += [f"b{b} ms", f"b{b} x"]
    head += ["peak RSS MiB", "session MiB"]
    table = []
    for r in rows:
        line = [
            r["arch"],
            r["name"],
            f"{r['params'] / 1e6:.2f}M",
            f"{r['macs'] / 1e6:.0f}M",
            f"{r['mac_ratio']:.2f}" if r["mac_ratio"] else "-",
            f"{r['file_bytes'] / 2**20:.2f}",
            f"1/{1 / r['size_ratio']:.1f}"
            if r["size_ratio"] and r["size_ratio"] < 1
            else (f"{r['size_ratio']:.2f}" if r["size_ratio"] else "-"),
        ]
        for b in batches:
            ms, sp = r["latency_ms"].get(b), r["speedup"].get(b)
            line += [f"{ms:.2f}" if ms else "-", f"{sp:.2f}" if sp else "-"]
        line += [
            f"{r['peak_rss_mib']:.0f}" if r["peak_rss_mib"] else "-",
            f"{r['session_rss_mib']:.0f}" if r["session_rss_mib"] else "-",
        ]
        table.append(line)
    return format_table(head, table, align="ll" + "r" * (len(head) - 2))


def acceptance(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """ResNet-18: fold-50 % speedup at batch 1 (≥ 3x), latency vs the native half width (within 10 %),
    folded+INT8 file size vs the original (< 1/12)."""
    res = [r for r in rows if r["arch"] == "resnet18"]
    if not res:
        return {}
    fold50 = next(
        (r for r in res if r["kind"] == "fold" and r["sparsity"] == 0.5 and r["round_to"] == 1), None
    )
    native = next((r for r in res if r["kind"] == "native"), None)
    out: dict[str, Any] = {}
    if fold50:
        for b in fold50["latency_ms"]:
            out[f"fold50_speedup_b{b}"] = fold50["speedup"].get(b)
            out[f"fold50_speedup_p10_b{b}"] = fold50["speedup_p10"].get(b)
        out["fold50_speedup_ok"] = bool(out.get("fold50_speedup_b1") and out["fold50_speedup_b1"] >= 3.0)
        if native:
            for b in fold50["latency_ms"]:
                out[f"fold50_over_native_b{b}"] = _ratio(fold50["latency_ms"][b], native["latency_ms"].get(b))
                out[f"fold50_over_native_p10_b{b}"] = _ratio(
                    fold50["latency_p10_ms"][b], native["latency_p10_ms"].get(b)
                )
            ratio = out.get("fold50_over_native_b1")
            out["fold50_vs_native_ok"] = bool(ratio and abs(ratio - 1.0) <= 0.10)
            out["native_macs_over_fold50"] = _ratio(native["macs"], fold50["macs"])
    for mode in ("static", "dynamic"):
        q = next((r for r in res if r["kind"] == f"int8-{mode}"), None)
        if q:
            out[f"int8_{mode}_size_ratio"] = q["size_ratio"]
            out[f"int8_{mode}_size_ok"] = bool(q["size_ratio"] and q["size_ratio"] < 1 / 12)
    return out


def plot(rows: Sequence[dict[str, Any]], path: Path, batches: Sequence[int]) -> Path | None:
    """Speedup vs channel sparsity per architecture (fold round_to 1 and 8, MAC ratio, INT8, native)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    archs = list(dict.fromkeys(r["arch"] for r in rows))
    fig, axes = plt.subplots(1, len(archs), figsize=(4.6 * len(archs), 4.2), squeeze=False)
    for ax, arch in zip(axes[0], archs, strict=True):
        rs = [r for r in rows if r["arch"] == arch]
        for b, style in zip(batches, ("-", "--", ":"), strict=False):
            for rt, marker in ((1, "o"), (8, "s")):
                pts = sorted(
                    [(0.0, 1.0)]
                    + [
                        (r["sparsity"], r["speedup"].get(b))
                        for r in rs
                        if r["kind"] == "fold" and r["round_to"] == rt and r["speedup"].get(b)
                    ]
                )
                if len(pts) > 1:
                    ax.plot(
                        [p[0] for p in pts],
                        [p[1] for p in pts],
                        style,
                        marker=marker,
                        ms=4,
                        label=f"fold r{rt} b{b}",
                    )
            for r in rs:
                if r["kind"].startswith("int8") and r["speedup"].get(b):
                    ax.plot(
                        r["sparsity"],
                        r["speedup"][b],
                        "^" if "static" in r["kind"] else "v",
                        ms=7,
                        label=f"{r['kind']} b{b}",
                    )
                if r["kind"] == "native" and r["speedup"].get(b):
                    ax.plot(r["sparsity"], r["speedup"][b], "*", ms=11, label=f"native x0.5 b{b}")
        macs = sorted(
            [(0.0, 1.0)]
            + [
                (r["sparsity"], r["mac_ratio"])
                for r in rs
                if r["kind"] == "fold" and r["round_to"] == 1 and r["mac_ratio"]
            ]
        )
        ax.plot([p[0] for p in macs], [p[1] for p in macs], color="gray", lw=1, label="MAC ratio")
        ax.set_title(arch)
        ax.set_xlabel("channel sparsity")
        ax.set_ylabel("speedup over original (x)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def environment(threads: int) -> dict[str, Any]:
    import onnxruntime as ort

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "onnxruntime": ort.__version__,
        "onnx": onnx.__version__,
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "intra_op_threads": threads,
        "inter_op_threads": 1,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


# --------------------------------------------------------------------------- entry points


def bench_speed(
    out_dir: str | os.PathLike = "bench-speed",
    models: Sequence[str] = DEFAULT_MODELS,
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
    round_tos: Sequence[int] = (1, 8),
    batches: Sequence[int] = (1, 8),
    threads: int = 2,
    budget_s: float = 2.0,
    int8: bool = True,
    memory: bool = True,
    seed: int = 0,
    spinning: bool = False,
) -> dict[str, Any]:
    """Build, time and measure every variant of ``models``; write speed.json and speed.png to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specs = arch_specs()
    unknown = [m for m in models if m not in specs]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; known: {sorted(specs)}")
    skipped: dict[str, str] = {}
    all_variants: list[Variant] = []
    env = environment(threads)
    env["intra_op_spinning"] = spinning
    started = time.perf_counter()
    for name in models:
        spec = specs[name]
        if name == "bert" and not _transformers_available():
            skipped[name] = "transformers is not installed"
            print(f"{name}: skipped ({skipped[name]})", flush=True)
            continue
        t0 = time.perf_counter()
        try:
            variants = build_variants(spec, out / name, sparsities, round_tos, int8, seed)
        except Exception as exc:  # one architecture failing must not lose the others
            skipped[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            print(f"{name}: failed ({skipped[name]})", flush=True)
            continue
        t1 = time.perf_counter()
        rng = np.random.default_rng(seed)
        feeds = {b: {k: _random_input(k, s, rng) for k, s in spec.input_shapes(b).items()} for b in batches}
        unique = list({v.path: v for v in variants}.values())
        time_variants(unique, feeds, threads, budget_s, spinning=spinning)
        for v in variants:  # aliases (same file) share the measurement
            src = next(u for u in unique if u.path == v.path)
            v.latency_ms, v.runs = dict(src.latency_ms), dict(src.runs)
            v.latency_p10_ms, v.latency_min_ms = dict(src.latency_p10_ms), dict(src.latency_min_ms)
        if memory:
            with tempfile.TemporaryDirectory() as tmp:
                files = []
                for b, feed in feeds.items():
                    f = Path(tmp) / f"feed{b}.npz"
                    np.savez(f, **feed)
                    files.append(f)
                for v in unique:
                    measure_memory(v, files, threads)
            for v in variants:
                src = next(u for u in unique if u.path == v.path)
                v.peak_rss_mib, v.session_rss_mib = src.peak_rss_mib, src.session_rss_mib
        all_variants += variants
        rows = summarize(variants)
        print(
            f"\n{spec.description}: built in {t1 - t0:.0f} s, measured in {time.perf_counter() - t1:.0f} s",
            flush=True,
        )
        print(format_rows(rows, batches), flush=True)
    rows = summarize(all_variants)
    result = {
        "environment": env,
        "models": {m: specs[m].description for m in models if m not in skipped},
        "skipped": skipped,
        "batches": list(batches),
        "sparsities": list(sparsities),
        "round_to": list(round_tos),
        "rows": rows,
        "acceptance": acceptance(rows),
        "seconds": time.perf_counter() - started,
    }
    (out / "speed.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    png = plot(rows, out / "speed.png", batches) if rows else None
    acc = result["acceptance"]
    if acc:
        print(
            "\nacceptance (ResNet-18): "
            + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in acc.items())
        )
    print(
        f"wrote {out / 'speed.json'}" + (f" and {png}" if png else "") + f" in {result['seconds']:.0f} s",
        flush=True,
    )
    return result


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Arguments of ``onnxfold bench speed`` (also ``python -m onnxfold.bench.speed``)."""
    parser = parser or argparse.ArgumentParser(
        prog="onnxfold bench speed", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", default="bench-speed", help="output folder (models, speed.json, speed.png)")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=list(DEFAULT_MODELS))
    parser.add_argument("--sparsities", nargs="+", type=float, default=list(DEFAULT_SPARSITIES))
    parser.add_argument("--round-to", nargs="+", type=int, default=[1, 8], dest="round_tos")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of timed runs per model and batch")
    parser.add_argument("--no-int8", action="store_true", help="skip the INT8 variants")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument(
        "--spin",
        action="store_true",
        help="let idle intra-op threads spin (onnxruntime's default; off here because on a shared "
        "machine spinning makes latency depend on the other load)",
    )
    return parser


def run_from_args(args: argparse.Namespace) -> dict[str, Any]:
    return bench_speed(
        args.out,
        args.models,
        args.sparsities,
        args.round_tos,
        args.batches,
        args.threads,
        args.budget,
        not args.no_int8,
        not args.no_memory,
        spinning=args.spin,
    )


def main(argv: Sequence[str] | None = None) -> int:
    # onnxruntime's quantizer warns on the root logger about every 1-D weight of a per-channel run
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("onnxfold").setLevel(logging.WARNING)
    logging.getLogger("onnxfold.passes.quantize").setLevel(logging.ERROR)  # "random calibration data"
    run_from_args(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
