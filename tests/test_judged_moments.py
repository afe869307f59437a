"""``auto`` without ``--inputs`` on random inputs judges its candidates on them and fits nothing, so
the moments it measures only say which consumers have statistics: they are measured on the leading
runs a measurement's MAC budget allows, while the judge keeps every sample (a tf2onnx VGG16 at 17.6
GMACs a sample spent 49 s of a 125 s search on moments of 32 random samples)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from harness import Net, rnd

from onnxfold.folding import samples as samples_module
from onnxfold.folding.samples import CHUNK, SYNTHETIC_SAMPLES, sample_count
from onnxfold.ir.model import load_model
from onnxfold.passes import CanonicalizePass, FoldPass
from onnxfold.pipeline.manager import PassContext


def _mlp(path: Path) -> Path:
    rng = np.random.default_rng(0)
    net = Net({"w1": rnd(rng, 8, 16), "w2": rnd(rng, 16, 4)})
    onnx.save(
        net.model(net("MatMul", net("Relu", net("MatMul", net.input("x", ["N", 8]), "w1")), "w2")), path
    )
    return path


def _prepared(path: Path) -> FoldPass:
    from onnxfold.analysis import analyze_graph

    model = load_model(path)
    ctx = PassContext(original=model.copy())
    CanonicalizePass().run(model, ctx)
    fold = FoldPass(sparsity=0.5, method="auto")
    fold.prepare(model, analyze_graph(model.graph, model.node_scopes()), ctx, search=True)
    return fold


def test_moments_of_samples_only_judged_on_fit_a_measurements_budget(tmp_path: Path, monkeypatch) -> None:
    path = _mlp(tmp_path / "mlp.onnx")
    whole = _prepared(path)
    assert whole.auto_note and not whole.moments.fitted  # random inputs: judged on, fitted to nothing
    assert {m.count for m in whole.moments.moments.values()} == {SYNTHETIC_SAMPLES}
    monkeypatch.setattr(samples_module, "MEASURE_MACS", 1)  # a heavy model: MIN_MEASURED samples
    cut = _prepared(path)
    assert {m.count for m in cut.moments.moments.values()} == {CHUNK}  # one whole run of them
    assert sum(sample_count(f) for f in cut.moments.feeds) == SYNTHETIC_SAMPLES  # the judge's are all
