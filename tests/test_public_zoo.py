"""The public-architecture zoo (models/public.py) through export → analyze → fold → checker → onnxruntime.

Uses the small variants (``PUBLIC_MODELS_SMALL``: same patterns, reduced widths) so that the file runs in about a
minute: every model with the legacy exporter, a subset with the dynamo exporter. Each (model, exporter) is exported
and folded once per session, through :func:`onnxfold.bench.coverage.coverage_row`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")

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
    assert len(PUBLIC_MODELS) == 11
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
        assert row["cosine"] is not None and np.isfinite(row["cosine"])
    else:  # declined: every group must say why
        assert row["foldable"] == 0 or row["param_sparsity"] == 0
        assert row["blocked_reasons"]
    # every public model's classifier or detection head feeds the graph output
    assert any(code == "graph-output" for code, _ in row["blocked_reasons"])
    assert any(code == "graph-output" and "graph output" in text for code, text, _ in row["blocked_messages"])


def test_expected_coverage_patterns(coverage: Callable[[str, str], dict]) -> None:
    """Plain CNNs fold almost everything; grouped convs and channels-last LayerNorm are declined with reasons."""
    for name in ("resnet50", "mobilenetv2", "efficientnet-b0", "squeezenet1.1"):
        row = coverage(name, "legacy")
        assert row["blocked"] == 1 and row["foldable_param_fraction"] > 0.99, name
    row = coverage("regnetx-200mf", "legacy")
    assert any(code == "grouped-conv" and "grouped Conv" in text for code, text, _ in row["blocked_messages"])
    assert "grouped-conv" in dict(row["blocked_reasons"])
    row = coverage("convnext-nano", "legacy")
    assert any(
        code == "mixes-channels" and "LayerNormalization" in text for code, text, _ in row["blocked_messages"]
    )
    assert "mixes-channels" in dict(row["blocked_reasons"])


def test_shorten_reason_strips_names() -> None:
    names = {"/a/Conv", "node_Split_3", "val_7"}
    assert (
        bench_coverage.shorten_reason("grouped Conv /a/Conv (group=8) mixes channels", names)
        == "grouped Conv … (group=N) mixes channels"
    )
    # a name that is also a plain word is kept where it is a word, stripped where it names a tensor
    names |= {"input", "logits"}
    assert (
        bench_coverage.shorten_reason("Concat /a/Conv has an input of unknown width", names)
        == "Concat … has an input of unknown width"
    )
    assert bench_coverage.shorten_reason("reaches graph output logits", names) == "reaches graph output …"
    assert bench_coverage.shorten_reason("Split node_Split_3 has no sizes", names) == "Split … has no sizes"
    assert bench_coverage.shorten_reason("shape tensor val_7 is shared", names) == "shape tensor … is shared"


def test_export_failure_is_a_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args, **kwargs):
        raise RuntimeError("exporter exploded\nsecond line")

    monkeypatch.setattr(bench_coverage, "export_cached", boom)
    rows = bench_coverage.bench_coverage(
        tmp_path, styles=("legacy",), models=["squeezenet1.1"], verbose=False
    )
    assert rows[0]["stage"] == "export" and rows[0]["error"] == "RuntimeError: exporter exploded"
    assert (tmp_path / "coverage.json").exists()
    text = bench_coverage.format_coverage(rows)
    assert "squeezenet1.1" in text and "export failed" in text
