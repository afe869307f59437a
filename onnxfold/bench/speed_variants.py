"""The variants that ``onnxfold bench speed`` times: architectures, and the folded and INT8 models built
from each (see :mod:`onnxfold.bench.speed` for what is measured and why)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

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
    #: the Loop/Scan ops the model holds: its MACs count each body once
    bodies: tuple[str, ...] = ()

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


def _fold_pass_kwargs(sparsity: float, round_to: int, ignore: Sequence[str]) -> dict[str, Any]:
    from onnxfold.passes import FoldPass

    kwargs: dict[str, Any] = {"sparsity": sparsity, "round_to": round_to, "ignore": list(ignore)}
    if any(o.name == "n_init" for o in FoldPass.options):
        kwargs["n_init"] = 1  # one k-means run: the widths, hence the speed, do not depend on it
    return kwargs


def _group_widths(path: Path, sparsity: float, round_to: int) -> list[int]:
    from onnxfold.api import analyze
    from onnxfold.folding.cluster import part_cluster_count

    return [part_cluster_count(g.size, sparsity, g.parts, round_to) for g in analyze(path) if g.foldable]


def fill_stats(variant: Variant, shapes: dict | None = None) -> None:
    """Parameters, per-sample MACs (at input ``shapes`` where given) and the saved size of ``variant``.
    The MACs are counted on a canonicalized copy, as a fold's report counts them: shapes that only
    constant folding resolves left a tf2onnx diacritizer's dense heads uncounted in its original
    (10.25M MACs beside its fold's 10.29M; 10.41M counted so)."""
    from onnxfold.api import saved_size
    from onnxfold.ir.model import load_model
    from onnxfold.report.counted import canonical_stats
    from onnxfold.report.stats import model_stats

    proto = onnx.load(str(variant.path), load_external_data=False)
    stats = model_stats(proto, shapes=shapes)
    canonical = canonical_stats(load_model(variant.path), shapes)
    variant.params = stats.params
    variant.macs = canonical.macs if canonical is not None else stats.macs
    variant.bodies = tuple(op for op in ("Loop", "Scan") if stats.op_counts.get(op))
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
