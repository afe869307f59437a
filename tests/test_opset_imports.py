"""A model that lists a domain more than once in its opset imports (``onnx.compose.merge_models``
lists each once per model merged: text2tashkeel's ensemble) is written with one entry per domain;
onnxruntime's quantizer refused the copy onnxfold wrote ("Failed to find proper ai.onnx domain")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from harness import Net, rnd
from onnx import helper

from onnxfold.cli.commands import main
from onnxfold.runtime.session import make_session


def _doubled(path: Path) -> Path:
    """x [N, 8] → MatMul → Relu → MatMul, its opset imports listed twice, as merge_models writes them."""
    rng = np.random.default_rng(0)
    net = Net({"W1": rnd(rng, 8, 16), "W2": rnd(rng, 16, 4)})
    model = net.model(net("MatMul", net("Relu", net("MatMul", net.input("x", ["N", 8]), "W1")), "W2"))
    del model.opset_import[:]
    model.opset_import.extend([helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)] * 2)
    onnx.save(model, str(path))
    return path


def test_a_domain_listed_twice_is_written_once_and_quantizes(tmp_path: Path) -> None:
    src = _doubled(tmp_path / "m.onnx")
    assert make_session(str(src)).run(None, {"x": np.ones((2, 8), np.float32)})  # it runs as given
    folded = tmp_path / "f.onnx"
    assert main(["fold", str(src), "-o", str(folded), "-s", "0"]) == 0
    domains = [o.domain for o in onnx.load(str(folded)).opset_import]
    assert sorted(domains) == sorted(set(domains)), domains
    quantized = tmp_path / "q.onnx"
    assert (
        main(["run", str(folded), "-o", str(quantized), "--pipeline", "quantize:mode=dynamic,validate"]) == 0
    )
    assert any(n.op_type == "MatMulInteger" for n in onnx.load(str(quantized)).graph.node)
