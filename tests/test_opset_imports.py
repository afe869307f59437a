"""A model that lists a domain more than once in its opset imports (``onnx.compose.merge_models``
lists each once per model merged: text2tashkeel's ensemble) is written with one entry per domain;
onnxruntime's quantizer refused the copy onnxfold wrote ("Failed to find proper ai.onnx domain")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxfold.cli.commands import main
from onnxfold.runtime.session import make_session


def _doubled(path: Path) -> Path:
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W1"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "W2"], ["y"]),
        ],
        "doubled",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [
            numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "W1"),
            numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "W2"),
        ],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)] * 2
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 9
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
