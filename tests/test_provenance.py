"""A fold searched to a target records it in the model it writes, and validation after a later command
that changes that model (quantize) says its figures compare with the fold, and warns under the target:
pyvital's ECG classifier, folded to top1+r2 >= 0.95 and quantized to 0.9375 of the fold's outputs by a
second command, passed validation without a word (trial 203)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxfold.cli.commands import main
from onnxfold.models import bundled_model
from onnxfold.search.provenance import KEY


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    from onnxfold.models.digits import load_digits_split

    path = tmp_path_factory.mktemp("digits") / "x.npy"
    np.save(path, load_digits_split()[2][:32])
    return path


def _meta(path: Path) -> dict:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def test_a_met_search_records_its_target_and_a_later_quantize_reads_it(
    samples, tmp_path: Path, capsys
) -> None:
    src = str(bundled_model("lenet5.onnx"))
    folded = tmp_path / "f.onnx"
    assert main(["fold", src, "-o", str(folded), "--inputs", str(samples), "--min-fidelity", "0.95"]) == 0
    report = capsys.readouterr().out
    recorded = json.loads(_meta(folded)[KEY])
    assert recorded["min_fidelity"] == 0.95 and not recorded["data_free"]
    assert f"fidelity {recorded['fidelity']:.4f}" in report  # the search's own figure
    assert recorded["metrics"] and all(isinstance(m, str) for m in recorded["metrics"].values())
    fixed = tmp_path / "s.onnx"
    assert main(["fold", src, "-o", str(fixed), "-s", "0.3"]) == 0
    assert KEY not in _meta(fixed)  # no target, nothing recorded
    capsys.readouterr()

    pipeline = "canonicalize,quantize:mode=static,validate"
    argv = [
        "run",
        str(folded),
        "-o",
        str(tmp_path / "q.onnx"),
        "--pipeline",
        pipeline,
        "--inputs",
        str(samples),
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    line = next(ln for ln in text.splitlines() if "the model given was folded to fidelity >= 0.95" in ln)
    assert (
        "not with its original" in line and "search:min_fidelity=0.95,fold,cleanup,quantize,validate" in line
    )
    low = [ln for ln in text.splitlines() if "keeps" in ln and "of the fold's outputs" in ln]
    assert line.startswith("warning:") == bool(low)
    assert KEY not in _meta(tmp_path / "q.onnx")  # quantized, the fold's figure no longer describes it

    strict = onnx.load(str(folded))  # the same fold, recorded at a target no quantized copy keeps
    entry = next(p for p in strict.metadata_props if p.key == KEY)
    entry.value = json.dumps({**recorded, "min_fidelity": 0.99999})
    onnx.save(strict, str(tmp_path / "strict.onnx"))
    argv[1], argv[3] = str(tmp_path / "strict.onnx"), str(tmp_path / "q2.onnx")
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "warning: the model given was folded to fidelity >= 0.99999" in text
    assert "of the fold's outputs, under the 0.99999 it was folded to" in text

    one = tmp_path / "one.onnx"  # one pipeline: the search's record survives the quantize after it
    pipeline = "canonicalize,search:min_fidelity=0.95,fold,cleanup,quantize:mode=static,validate"
    assert main(["run", src, "-o", str(one), "--pipeline", pipeline, "--inputs", str(samples)]) == 0
    capsys.readouterr()
    assert json.loads(_meta(one)[KEY])["min_fidelity"] == 0.95
    argv[1], argv[3] = src, str(tmp_path / "q3.onnx")  # never folded: no such line
    assert main(argv) == 0
    assert "the model given was folded" not in capsys.readouterr().out
