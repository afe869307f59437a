"""``onnxfold bench speed``: the report's arithmetic against hand-computed ratios, and its timing and memory
measurements on two different zoo models (the original and its 50 % fold)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import onnxfold
from onnxfold.bench.speed import (
    Variant,
    acceptance,
    fill_stats,
    format_rows,
    measure_memory,
    summarize,
    time_variants,
)
from onnxfold.bench.speed_report import format_round_effect, round_effect, slower_warnings
from onnxfold.models import bundled_model
from onnxfold.passes import CanonicalizePass, CleanupPass, FoldPass


def made_up(arch: str, name: str, kind: str, sparsity: float, macs: int, size: int, ms: dict) -> Variant:
    v = Variant(arch, name, Path(f"/nowhere/{name}.onnx"), kind, sparsity)
    v.macs, v.file_bytes, v.params = macs, size, macs // 10
    v.latency_ms, v.latency_p10_ms = dict(ms), {b: t / 2 for b, t in ms.items()}
    return v


def test_summary_and_acceptance_against_hand_computed_ratios() -> None:
    """Speedup = original latency / variant latency, MAC ratio = original MACs / variant MACs, size ratio =
    variant bytes / original bytes, each against the original of the *same* architecture."""
    variants = [
        made_up("resnet18", "original", "original", 0.0, 1000, 1200, {1: 12.0, 8: 80.0}),
        made_up("resnet18", "fold 0.5", "fold", 0.5, 250, 300, {1: 3.0, 8: 25.0}),
        made_up("resnet18", "native x0.5", "native", 0.5, 260, 310, {1: 3.2, 8: 24.0}),
        made_up("resnet18", "fold 0.5 + int8 static", "int8-static", 0.5, 250, 90, {1: 2.0, 8: 16.0}),
        made_up("mlp", "original", "original", 0.0, 100, 400, {1: 1.0, 8: 2.0}),
        made_up("mlp", "fold 0.5", "fold", 0.5, 40, 100, {1: 0.8, 8: 1.0}),
    ]
    rows = {(r["arch"], r["name"]): r for r in summarize(variants)}
    fold = rows[("resnet18", "fold 0.5")]
    assert fold["speedup"] == {1: 12.0 / 3.0, 8: 80.0 / 25.0}
    assert fold["speedup_p10"] == {1: 6.0 / 1.5, 8: 40.0 / 12.5}
    assert fold["mac_ratio"] == 1000 / 250 and fold["size_ratio"] == 300 / 1200
    mlp = rows[("mlp", "fold 0.5")]  # against the mlp original, not resnet18's
    assert mlp["speedup"] == {1: 1.0 / 0.8, 8: 2.0 / 1.0} and mlp["mac_ratio"] == 100 / 40
    assert mlp["size_ratio"] == 100 / 400

    result = acceptance(list(rows.values()))
    assert result["fold50_speedup_b1"] == 4.0 and result["fold50_speedup_ok"] is True
    assert result["fold50_over_native_b1"] == pytest.approx(3.0 / 3.2)
    assert result["fold50_vs_native_ok"] is True  # |3.0/3.2 - 1| = 0.0625 <= 0.10
    assert result["native_macs_over_fold50"] == 260 / 250
    assert result["int8_static_size_ratio"] == 90 / 1200 and result["int8_static_size_ok"] is True  # < 1/12
    assert "int8_dynamic_size_ratio" not in result

    slow = [made_up("resnet18", "original", "original", 0.0, 1000, 1200, {1: 12.0})]
    slow.append(made_up("resnet18", "fold 0.5", "fold", 0.5, 250, 300, {1: 4.5}))  # 2.67x < 3x
    assert acceptance(summarize(slow))["fold50_speedup_ok"] is False

    text = format_rows(list(rows.values()), (1, 8))
    assert "fold 0.5" in text and "4.00" in text and "1/4.00" in text  # speedup 4x, a quarter of the size
    # a file 3% smaller read "1/1.0" beside "MAC x 1.03" (PP-OCRv6's detector, 1.74 -> 1.69 MiB)
    near = [made_up("det", "original", "original", 0.0, 1000, 1740, {1: 10.0})]
    near.append(made_up("det", "file", "file", 0.0, 970, 1690, {1: 9.5}))
    assert "1/1.03" in format_rows(summarize(near), (1,))


def test_slower_folds_are_flagged_and_rounds_compared() -> None:
    """A fold slower than its original (beyond 5%) at some batch gets a warning naming its round; each
    rounded fold is compared with the unrounded fold of the same sparsity."""
    variants = [
        made_up("resnet18", "original", "original", 0.0, 1000, 1200, {1: 10.0, 8: 80.0}),
        made_up("resnet18", "fold 0.3", "fold", 0.3, 500, 600, {1: 16.0, 8: 82.0}),
        made_up("resnet18", "fold 0.3 r8", "fold", 0.3, 520, 620, {1: 6.4, 8: 50.0}),
        made_up("resnet18", "fold 0.5", "fold", 0.5, 250, 300, {1: 10.4, 8: 40.0}),  # 4% slower: noise
        made_up("resnet18", "fold 0.5 r8", "fold", 0.5, 250, 300, {1: 11.0, 8: 40.0}),
    ]
    variants[2].round_to = variants[4].round_to = 8
    rows = summarize(variants)
    lines = slower_warnings(rows)
    assert len(lines) == 2
    assert lines[0] == (
        "warning: resnet18 fold 0.3 is slower than the original (1.60x at batch 1); "
        "its widths are not rounded: fold with --round-to 8"
    )
    assert lines[1].startswith("warning: resnet18 fold 0.5 r8 is slower than the original (1.10x at batch 1)")
    assert "multiples of 8: try another --round-to" in lines[1]
    effects = round_effect(rows)
    assert [(e["sparsity"], e["round_to"]) for e in effects] == [(0.3, 8), (0.5, 8)]
    assert effects[0]["speedup_over_round_to_1"] == {1: 16.0 / 6.4, 8: 82.0 / 50.0}
    text = format_round_effect(effects)
    assert (
        text[0] == "resnet18 fold 0.3: round_to 8 over round_to 1: speedup 2.50x at batch 1, 1.64x at batch 8"
    )


def test_timing_and_memory_on_two_zoo_models(tmp_path: Path) -> None:
    """Each variant gets its own runs and percentiles; the fold has the MACs and bytes its rewrite removed."""
    src = bundled_model("resnet18-fused.onnx")
    orig = Variant("resnet18", "original", src, "original")
    folded = tmp_path / "f.onnx"
    onnxfold.run_pipeline(src, [CanonicalizePass(), FoldPass(sparsity=0.5), CleanupPass()], folded)
    fold = Variant("resnet18", "fold 0.5", folded, "fold", 0.5)
    variants = [orig, fold]
    for v in variants:
        fill_stats(v)
    # A fold at 0.5 halves both sides of every inner conv: about a quarter of their MACs remain.
    assert orig.macs > 2.5 * fold.macs and orig.params > 2.5 * fold.params
    assert fold.file_bytes < orig.file_bytes == src.stat().st_size
    rng = np.random.default_rng(0)
    feeds = {b: {"input": rng.random((b, 1, 8, 8), dtype=np.float32)} for b in (1, 4)}
    time_variants(variants, feeds, threads=1, budget_s=0.05, rounds=2, min_runs=4, max_runs=4)
    feed_file = tmp_path / "feed.npz"
    np.savez(feed_file, **feeds[4])
    for v in variants:
        measure_memory(v, [feed_file], threads=1)
        assert v.runs == {1: 4, 4: 4} and all(ms > 0 for ms in v.latency_ms.values())
        assert v.latency_min_ms[1] <= v.latency_p10_ms[1] <= v.latency_ms[1]
        assert v.peak_rss_mib > v.session_rss_mib > 0
    rows = summarize(variants)
    assert rows[1]["speedup"][1] == orig.latency_ms[1] / fold.latency_ms[1]
    assert rows[1]["mac_ratio"] == orig.macs / fold.macs


def test_bench_speed_times_the_users_own_files(tmp_path, monkeypatch, capsys) -> None:
    """A fold's speed warning pointed to `onnxfold bench speed`, which took only its four built-in
    architectures: NSNet2's user could not time their own model."""
    import json

    import onnxfold
    from onnxfold.cli.commands import main
    from onnxfold.models import bundled_model

    original = bundled_model("lenet5.onnx")
    small = tmp_path / "small.onnx"
    onnxfold.fold(original, output=small, sparsity=0.5, method="fold", validate=False)
    out = tmp_path / "speed"
    argv = ["bench", "speed", "--files", str(original), str(small), "--batches", "1", "4"]
    assert main([*argv, "--budget", "0.05", "--no-memory", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert " 0M " not in table and "K" in table  # LeNet's 21K parameters read in K, not 0.02M
    rows = json.loads((out / "speed.json").read_text())["rows"]
    assert [r["kind"] for r in rows] == ["original", "file"]
    assert rows[1]["params"] < rows[0]["params"] and rows[1]["macs"] < rows[0]["macs"]
    assert all(r["latency_ms"][b] > 0 for r in rows for b in ("1", "4"))
    assert rows[1]["speedup"]["1"] == rows[0]["latency_ms"]["1"] / rows[1]["latency_ms"]["1"]
    monkeypatch.chdir(tmp_path)  # without --out nothing is written into the current folder
    assert main([*argv, "--budget", "0.01", "--no-memory"]) == 0 and not (tmp_path / "bench-speed").exists()
    assert main(["bench", "speed", "--files", str(original), "--out", str(out)]) == 2
    assert main(["bench", "speed", "--files", str(original), str(tmp_path / "no.onnx")]) == 2
    assert main(["bench", "speed", "--models", "resnet18", "--input-shape", "1,1,8,8"]) == 2


def test_macs_of_files_are_counted_as_a_folds_report_counts_them(tmp_path: Path) -> None:
    """A Reshape whose shape only constant folding resolves (tf2onnx's Tensordot computes it) hid its
    MatMul from the count of the file as given, and bench speed read a fold as having more MACs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [
            helper.make_node("Shape", ["x"], ["dims"], end=2),  # [4, 2]
            helper.make_node("ReduceProd", ["dims"], ["rows"], keepdims=1),  # [8]: computed, not stored
            helper.make_node("Concat", ["rows", "four"], ["target"], axis=0),
            helper.make_node("Reshape", ["x", "target"], ["flat"]),
            helper.make_node("MatMul", ["flat", "W"], ["y"]),
        ],
        "computed_shape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [
            numpy_helper.from_array(np.array([4], np.int64), "four"),
            numpy_helper.from_array(rng.standard_normal((4, 16)).astype(np.float32), "W"),
        ],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    v = Variant("m", "original", path, "original")
    fill_stats(v)
    _, report = onnxfold.fold(path, sparsity=0.0, validate=False)
    assert v.macs == report.before.macs == 2 * 4 * 16 and v.params == 4 * 16  # per sample of the 4
