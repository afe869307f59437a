"""A model that a search keeps whole is written back as the file given, byte for byte, and validation
does not run it: SCRFD's default search kept it whole and validation spent 43 s finding its own
outputs exact. ``-s 0`` is still validated (a fold asked to remove nothing is checked as asked)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from harness import Net, rnd

from onnxfold.cli.commands import main


def _blocked(path: Path) -> Path:
    """x [N, 6] -> MatMul [6, 4] -> the graph output: its only group reaches the output, so no search
    can fold anything."""
    net = Net({"w": rnd(np.random.default_rng(0), 6, 4)})
    onnx.save(net.model(net("MatMul", net.input("x", ["N", 6]), "w")), path)
    return path


def test_a_model_a_search_keeps_whole_is_written_as_given_and_not_run(tmp_path: Path, capsys) -> None:
    src = _blocked(tmp_path / "m.onnx")
    out, report = tmp_path / "o.onnx", tmp_path / "o.json"
    assert main(["fold", str(src), "-o", str(out), "--report", str(report)]) == 0
    text = capsys.readouterr().out
    assert out.read_bytes() == src.read_bytes()
    data = json.loads(report.read_text())
    assert data["search"]["param_reduction"] == 0.0 and data["validation"] is None
    assert "validate: skipped (the search kept the model whole: it is written back as given" in text
    assert "validation (" not in text
    assert main(["fold", str(src), "-o", str(out), "--report", str(report), "-s", "0"]) == 0
    assert json.loads(report.read_text())["validation"]["outputs"]  # asked for nothing: still run


def test_a_kept_model_canonicalize_only_made_larger_is_written_as_given(tmp_path: Path, capsys) -> None:
    """A tf2onnx VGG16's Flatten reads its batch with a Gather of the Shape, which canonicalize spells
    as a Slice and a Concat of the dims it knows: one node more and no weight less. Its search kept it
    whole, and the rewritten file (136 bytes larger) was validated for 170 s."""
    net = Net({"w": rnd(np.random.default_rng(0), 6, 4), "idx": np.array([0, 1], np.int64)})
    y = net("MatMul", net.input("x", ["N", 6]), "w")
    src = tmp_path / "m.onnx"
    onnx.save(net.model(net("Reshape", y, net("Gather", net("Shape", y), "idx"))), src)
    out, report = tmp_path / "o.onnx", tmp_path / "o.json"
    assert main(["fold", str(src), "-o", str(out), "--report", str(report)]) == 0
    assert out.read_bytes() == src.read_bytes(), capsys.readouterr().out
    assert json.loads(report.read_text())["validation"] is None


def test_a_kept_model_written_simplified_is_validated_within_a_measurements_budget(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """A search kept an FP16 YOLOv8s-seg whole, canonicalize dropped two nodes, and validating the
    simplified copy ran 32 random images for 281 s: an exact rewrite is smoke-tested on the samples a
    measurement's MAC budget allows (MIN_MEASURED here, where every sample passes the budget)."""
    from onnxfold.folding import samples

    net = Net({"w": rnd(np.random.default_rng(0), 6, 4)})
    src = tmp_path / "m.onnx"
    onnx.save(net.model(net("MatMul", net("Identity", net.input("x", ["N", 6])), "w")), src)
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(1).standard_normal((32, 6)).astype(np.float32))
    out, report = tmp_path / "o.onnx", tmp_path / "o.json"
    argv = ["fold", str(src), "-o", str(out), "--report", str(report), "--inputs", str(x)]
    monkeypatch.setattr(samples, "MEASURE_MACS", 1)
    assert main(argv) == 0
    validation = json.loads(report.read_text())["validation"]
    assert validation["outputs"] and validation["inputs"] == {"x": [samples.MIN_MEASURED, 6]}


def test_a_kept_model_validated_within_the_budget_is_cut_to_whole_runs_of_its_fixed_batch(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """The same cut on a model exported at batch 10: four samples would not run at all, so validation
    takes one whole run of ten (MIN_MEASURED rounded up to the batch the model fixes)."""
    from onnxfold.folding import samples

    net = Net({"w": rnd(np.random.default_rng(0), 6, 4)})
    src = tmp_path / "m.onnx"
    onnx.save(net.model(net("MatMul", net("Identity", net.input("x", [10, 6])), "w")), src)
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(1).standard_normal((30, 6)).astype(np.float32))
    out, report = tmp_path / "o.onnx", tmp_path / "o.json"
    argv = ["fold", str(src), "-o", str(out), "--report", str(report), "--inputs", str(x)]
    monkeypatch.setattr(samples, "MEASURE_MACS", 1)
    assert main(argv) == 0, capsys.readouterr().out
    validation = json.loads(report.read_text())["validation"]
    assert validation["outputs"] and validation["inputs"] == {"x": [10, 6]}


def test_a_model_written_as_given_reports_its_own_figures_after(tmp_path: Path, capsys) -> None:
    """MarbleNet's com.microsoft.FusedConv is split by canonicalize into Conv and Relu, and the graph
    taken back after a search that folded nothing has no shapes past it: the report read "MACs 1.31M ->
    1.14M, -13.5%" and "13.5% fewer MACs" for a file that is the input's bytes (its JSON
    mac_reduction 0.237)."""
    from onnx import helper

    rng = np.random.default_rng(0)
    net = Net({"w1": rnd(rng, 1, 3, 3, 3), "w2": rnd(rng, 4, 1, 1, 1)})
    x = net.input("x", ["N", 3, 8, 8])
    net.nodes.append(
        helper.make_node("FusedConv", [x, "w1"], ["h"], domain="com.microsoft", activation="Relu")
    )
    model = net.model(net("Conv", "h", "w2"))
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    src = tmp_path / "m.onnx"
    onnx.save(model, src)
    out, report = tmp_path / "o.onnx", tmp_path / "o.json"
    assert main(["fold", str(src), "-o", str(out), "--report", str(report)]) == 0, capsys.readouterr().out
    assert out.read_bytes() == src.read_bytes()
    data = json.loads(report.read_text())
    assert data["as_given"] is True and data["before"]["macs"] == data["after"]["macs"] > 0
    assert data["search"]["mac_reduction"] == 0.0 and data["search"]["param_reduction"] == 0.0
