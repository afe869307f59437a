"""The public-architecture zoo (models/public.py) through export → analyze → fold → checker → onnxruntime.

Uses the small variants (``PUBLIC_MODELS_SMALL``: same patterns, reduced widths) so that the file runs in about a
minute: every model with the legacy exporter, a subset with the dynamo exporter. Each (model, exporter) is exported
and folded once per session, through :func:`onnxfold.bench.coverage.coverage_row`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxscript  # noqa: F401  (the dynamo exporter needs it)
import pytest
import torch
from threadpoolctl import threadpool_limits  # noqa: E402

from onnxfold.bench import coverage as bench_coverage  # noqa: E402
from onnxfold.models.public import (  # noqa: E402
    _FACTORIES,
    PUBLIC_INPUTS,
    PUBLIC_INPUTS_SMALL,
    PUBLIC_MODELS,
    PUBLIC_MODELS_SMALL,
    build_public,
    param_count,
    public_input,
)

SPARSITY = 0.3
NAMES = sorted(PUBLIC_MODELS)
# dynamo exports are slower; these cover what it exports differently: Reshape for flatten after a Concat chain,
# Split with num_outputs (C2f), channel shuffle, SE gates, LayerNormalization and attention
DYNAMO_SUBSET = (
    "convnext-nano",
    "densenet-small",
    "mobilenetv3-small",
    "shufflenetv2",
    "vit-tiny",
    "yolov8n-like",
)
CASES = [(n, "legacy") for n in NAMES] + [(n, "dynamo") for n in DYNAMO_SUBSET]


@pytest.fixture(scope="session")
def coverage(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], dict]:
    """``coverage(name, style) -> row`` of the coverage bench on the small variant, computed once per session."""
    root = tmp_path_factory.mktemp("public")
    cache: dict[tuple[str, str], dict] = {}

    def get(name: str, style: str) -> dict:
        if (name, style) not in cache:
            # one OpenMP thread: on a loaded or 2-core machine k-means' spinning threads cost 5-10x the CPU time
            with threadpool_limits(1):
                cache[(name, style)] = bench_coverage.coverage_row(name, style, root, SPARSITY, small=True)
        return cache[(name, style)]

    return get


def test_registry_is_complete_and_small() -> None:
    assert set(PUBLIC_MODELS) == set(PUBLIC_MODELS_SMALL) == set(PUBLIC_INPUTS) == set(PUBLIC_INPUTS_SMALL)
    assert len(PUBLIC_MODELS) == 13
    for name, (full, small, _) in _FACTORIES.items():
        with torch.device("meta"):  # shapes only: no memory, no initialisation
            assert param_count(small()) < param_count(full()) <= 25_000_000, name
    model = build_public("mobilenetv3-small", small=True)
    assert not model.training


def test_builders_are_deterministic() -> None:
    a, b = build_public("squeezenet1.1", small=True), build_public("squeezenet1.1", small=True)
    x = public_input("squeezenet1.1", small=True)
    with torch.no_grad():
        np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())


@pytest.mark.parametrize(("name", "style"), CASES, ids=[f"{n}-{s}" for n, s in CASES])
def test_fold_public_model(coverage: Callable[[str, str], dict], name: str, style: str) -> None:
    row = coverage(name, style)
    assert row["error"] is None, f"{row['stage']}: {row['error']}\n{row.get('traceback')}"
    assert row["checker"], row["checker_error"]
    assert row["runs"], row["run_error"]  # same output names and shapes as the original
    assert row["nodes"] > 0 and row["params"] > 0
    assert row["params_after"] <= row["params"]
    assert row["groups"] == row["foldable"] + row["blocked"] >= 1
    assert 0.0 <= row["foldable_param_fraction"] <= 1.0
    if row["groups_folded"]:
        assert row["params_after"] < row["params"] and row["param_sparsity"] > 0
        assert row["cosine"] is not None and np.isfinite(row["cosine"])  # exact oracles: the two tests below
    else:  # declined: every group must say why
        assert row["foldable"] == 0 or row["param_sparsity"] == 0
        assert row["blocked_reasons"]
    # every public model's classifier or detection head feeds the graph output
    assert any(code == "graph-output" for code, _ in row["blocked_reasons"])
    assert any(code == "graph-output" and "graph output" in text for code, text, _ in row["blocked_messages"])


def test_expected_coverage_patterns(coverage: Callable[[str, str], dict]) -> None:
    """Plain CNNs and grouped-conv CNNs fold almost everything; channels-last LayerNorm is declined with reasons."""
    for name in (
        "resnet50",
        "mobilenetv2",
        "efficientnet-b0",
        "squeezenet1.1",
        "regnetx-200mf",
        "resnext50-32x4d",
    ):
        row = coverage(name, "legacy")
        assert row["blocked"] == 1 and row["foldable_param_fraction"] > 0.99, name
        assert row["foldable_channels"] > 0.95 * row["channels"], name
    for name in ("regnetx-200mf", "resnext50-32x4d"):  # grouped convs fold within their convolution groups
        row = coverage(name, "legacy")
        assert "grouped-conv" not in dict(row["blocked_reasons"]) and row["param_sparsity"] > 0.3, name
    row = coverage("convnext-nano", "legacy")
    assert any(
        code == "mixes-channels" and "LayerNormalization" in text for code, text, _ in row["blocked_messages"]
    )
    assert "mixes-channels" in dict(row["blocked_reasons"])


@pytest.mark.parametrize(("name", "style"), CASES, ids=[f"{n}-{s}" for n, s in CASES])
def test_public_model_at_sparsity_0_is_bit_exact(
    coverage: Callable[[str, str], dict], name: str, style: str, tmp_path: Path
) -> None:
    """Folding at sparsity 0 gives, bit for bit, the function of the same pipeline without the fold
    (canonicalize and cleanup may reorder float sums: ViT's are ~1e-7 off the export, on both sides)."""
    import onnxfold
    from onnxfold.passes import CanonicalizePass, CleanupPass
    from onnxfold.runtime.session import make_session

    row = coverage(name, style)
    assert row["error"] is None, row["error"]
    src = row["export_path"]
    onnxfold.run_pipeline(src, [CanonicalizePass(), CleanupPass()], tmp_path / "c.onnx")
    with threadpool_limits(1):
        _, report = onnxfold.fold(src, 0.0, tmp_path / "f.onnx", repair="none")
    assert all(p.status != "folded" or p.k == p.group.size for p in report.plans)
    assert report.validation.min_cosine > 0.999999, report.validation.summary()
    x = public_input(name, batch=3, seed=5, small=True).numpy()
    sessions = [make_session(tmp_path / f, threads=1) for f in ("c.onnx", "f.onnx")]
    ref, got = (sess.run(None, {sess.get_inputs()[0].name: x}) for sess in sessions)
    for r, g in zip(ref, got, strict=True):
        np.testing.assert_array_equal(g, r)


def test_public_regnetx_twin_folds_back_exactly(tmp_path: Path) -> None:
    """The duplicate oracle through grouped convolutions: a RegNetX whose every hidden channel has a twin in its
    own convolution group (groups of 4 → 8 channels, 2 to 16 groups per stage) folds at 0.5 back to the compact
    network, every grouped Conv keeping its group count."""
    import onnxfold
    from onnxfold.api import stats_of
    from onnxfold.ir.model import load_model
    from onnxfold.models.duplicate import duplicate_channels, randomize_batchnorm
    from onnxfold.models.export import export_onnx
    from onnxfold.models.public import RegNetX
    from onnxfold.runtime.session import make_session

    torch.manual_seed(0)
    compact = RegNetX((8, 16, 32, 64), (1, 1, 2, 1), group_width=4, num_classes=10, stem=8)
    randomize_batchnorm(compact, torch.Generator().manual_seed(1))
    wide = RegNetX((16, 32, 64, 128), (1, 1, 2, 1), group_width=8, num_classes=10, stem=16)
    wide = duplicate_channels(compact.eval(), wide.eval())
    x = torch.randn(2, 3, 32, 32)
    paths = {k: export_onnx(m, tmp_path / f"{k}.onnx", x, "legacy") for k, m in (("c", compact), ("w", wide))}
    with threadpool_limits(1):
        _, report = onnxfold.fold(paths["w"], 0.5, tmp_path / "f.onnx", repair="none", validate=False)
    folded = [p for p in report.plans if p.status == "folded"]
    assert len([p for p in folded if p.group.parts > 1]) == 10  # both sides of the 5 grouped convs
    assert all(p.k * 2 == p.group.size for p in folded)
    assert [p.status for p in report.plans].count("blocked") == 1  # the classifier
    assert report.after.params == stats_of(load_model(paths["c"])).params
    feed = {"input": np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32) * 10}
    ref = make_session(paths["c"]).run(None, feed)[0]
    got = make_session(tmp_path / "f.onnx").run(None, feed)[0]
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


def test_public_resnet50_twin_folds_back_exactly(tmp_path: Path) -> None:
    """The duplicate oracle on a public architecture (bottlenecks, projection shortcuts, residual groups):
    a ResNet-50 whose every hidden channel has an exact twin folds at 0.5 back to the compact network."""
    import onnxfold
    from onnxfold.api import stats_of
    from onnxfold.ir.model import load_model
    from onnxfold.models.duplicate import duplicate_channels, randomize_batchnorm
    from onnxfold.models.export import export_onnx
    from onnxfold.models.public import ResNet50
    from onnxfold.runtime.session import make_session

    torch.manual_seed(0)
    compact = ResNet50(width=4, layers=(1, 1, 1, 1), num_classes=10)
    randomize_batchnorm(compact, torch.Generator().manual_seed(1))
    wide = duplicate_channels(compact.eval(), ResNet50(width=8, layers=(1, 1, 1, 1), num_classes=10).eval())
    x = torch.randn(2, 3, 32, 32)
    paths = {k: export_onnx(m, tmp_path / f"{k}.onnx", x, "legacy") for k, m in (("c", compact), ("w", wide))}
    with threadpool_limits(1):
        _, report = onnxfold.fold(paths["w"], 0.5, tmp_path / "f.onnx", repair="none", validate=False)
    folded = [p for p in report.plans if p.status == "folded"]
    assert folded and all(p.k * 2 == p.group.size for p in folded)
    assert report.after.params == stats_of(load_model(paths["c"])).params  # the compact network's size
    feed = {"input": np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32) * 10}
    ref = make_session(paths["c"]).run(None, feed)[0]
    got = make_session(tmp_path / "f.onnx").run(None, feed)[0]
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
