"""``onnxfold bench coverage``: blocking reasons shortened to their pattern, and a failing export reported as
a row of the table instead of stopping the bench."""

from __future__ import annotations

from pathlib import Path

import pytest

from onnxfold.bench import coverage as bench_coverage


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
