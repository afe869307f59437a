"""``onnxfold bench fold``: wall time and peak memory of folding, through the CLI and the function."""

from __future__ import annotations

import onnxfold
from onnxfold.bench.fold import bench_fold
from onnxfold.cli.commands import main
from onnxfold.models import bundled_model


def test_bench_fold_times_the_same_fold_as_the_api() -> None:
    path = bundled_model("mlp.onnx")
    result = bench_fold(str(path), 0.5, repeat=3)
    _, report = onnxfold.fold(path, 0.5, validate=False)
    assert result["params_before"] == report.before.params
    assert result["params_after"] == report.after.params < report.before.params
    assert 0 < result["min_seconds"] <= result["median_seconds"]
    assert result["peak_rss_mib"] >= result["rss_before_mib"] > 0


def test_bench_fold_from_the_cli(capsys) -> None:
    assert main(["bench", "fold", str(bundled_model("lenet5.onnx")), "-s", "0.25", "--repeat", "2"]) == 0
    out = capsys.readouterr().out
    assert "fold lenet5.onnx at sparsity 0.25" in out and "over 2 runs" in out
