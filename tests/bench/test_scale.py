"""``onnxfold bench scale``: a tiny Llama-style build folded with a recipe in a child process, end to end."""

from __future__ import annotations

from pathlib import Path


def test_bench_scale_folds_a_small_build_in_a_child_process(tmp_path: Path) -> None:
    """The scale benchmark end to end on a tiny configuration: build, fold with a recipe, check."""
    from onnxfold.bench.scale import bench_scale

    recipe = tmp_path / "r.yaml"
    recipe.write_text("default: 0.0\nrules:\n  - layers: 1\n    heads: 0.5\n    mlp: 0.5\n")
    result = bench_scale(
        tmp_path / "b",
        layers=2,
        hidden=64,
        intermediate=128,
        heads=4,
        vocab=100,
        recipe=recipe,
        oracle_layers=1,
    )
    assert result["fold"]["exit"] == 0 and result["fold"]["peak_rss_mib"] > 0
    assert result["groups"] == {"heads": {"folded": 1, "total": 2}, "channels": {"folded": 1, "total": 4}}
    assert result["params_after"] < result["params_before"]
    assert result["check"]["checker"] and result["output_bytes"] > 0
    assert not (tmp_path / "b" / "llama-folded.onnx").exists()  # not kept unless asked
    assert not list((tmp_path / "b").glob(".onnxfold-spill-*"))
    assert result["widths"] == {"heads 4 -> 2": [1], "channels 128 -> 64": [1]}
    oracle = result["oracle"]  # the duplicate twin folds back to the compact model
    assert oracle["max_abs_error"] <= 1e-2 * oracle["max_abs_logit"] and oracle["cosine"] > 0.9999
