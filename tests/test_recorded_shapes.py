"""A model is written with the shapes its source recorded, where they still hold (onnxfold.ir.recorded).

onnxruntime fuses by what a file's shapes prove. An independent oracle builder's post-processed
BERT layers (an extra output exposed with its type alone, onnxsim's unknown dims, onnx.compose,
opset 21) ran up to 7.2e-7 off after ``-s 0``: onnxfold wrote the dims it inferred, and onnxruntime
fused one more SkipLayerNormalization. A fold must not write a source entry its widths made false.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from harness import mlp_proto
from onnx import helper

import onnxfold


class Layer(torch.nn.Module):
    """A BERT-style post-norm encoder layer: 2 heads of 4, a GELU feed-forward of 24."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.q, self.k, self.v, self.o = (torch.nn.Linear(8, 8) for _ in range(4))
        self.ln1, self.ln2 = torch.nn.LayerNorm(8), torch.nn.LayerNorm(8)
        self.f1, self.f2 = torch.nn.Linear(8, 24), torch.nn.Linear(24, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = (p(x).view(b, t, 2, 4).transpose(1, 2) for p in (self.q, self.k, self.v))
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(4), -1)
        h = self.ln1(x + self.o((a @ v).transpose(1, 2).reshape(b, t, 8)))
        return self.ln2(h + self.f2(torch.nn.functional.gelu(self.f1(h))))


def _export(path: Path) -> onnx.ModelProto:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Layer().eval(),
            (torch.randn(2, 5, 8),),
            str(path),
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch", 1: "seq"}, "y": {0: "batch", 1: "seq"}},
            opset_version=17,
            dynamo=False,
        )
    return onnx.load(str(path))


def _run(path: Path, feed: dict) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


def test_an_extra_output_declared_by_its_type_alone_is_written_with_unknown_dims(tmp_path: Path) -> None:
    proto = _export(tmp_path / "layer.onnx")
    ln1 = next(n.output[0] for n in proto.graph.node if n.op_type == "LayerNormalization")
    proto.graph.output.append(helper.make_tensor_value_info(ln1, onnx.TensorProto.FLOAT, None))
    src = tmp_path / "exposed.onnx"
    onnx.save(proto, str(src))
    out = tmp_path / "same.onnx"
    onnxfold.fold(src, 0.0, out, validate=False)
    written = onnx.load(str(out))
    y, exposed = written.graph.output
    assert y.SerializeToString() == proto.graph.output[0].SerializeToString()
    dims = exposed.type.tensor_type.shape.dim  # its rank, for the checker, and nothing it proves
    assert len(dims) == 3 and not any(d.HasField("dim_value") or d.HasField("dim_param") for d in dims)
    feed = {"x": np.random.default_rng(1).normal(size=(3, 7, 8)).astype(np.float32)}
    for got, want in zip(_run(out, feed), _run(src, feed), strict=True):
        assert np.array_equal(got, want)


def test_shapes_recorded_with_unknown_dims_are_written_as_recorded(tmp_path: Path) -> None:
    """onnxsim's way: every tensor between nodes recorded, its dims unknown where not fixed."""
    proto = onnx.shape_inference.infer_shapes(_export(tmp_path / "layer.onnx"))
    for vi in proto.graph.value_info:
        for d in vi.type.tensor_type.shape.dim:
            if not d.HasField("dim_value"):
                d.Clear()
    src = tmp_path / "recorded.onnx"
    onnx.save(proto, str(src))
    out = tmp_path / "same.onnx"
    onnxfold.fold(src, 0.0, out, validate=False)
    written = onnx.load(str(out))
    recorded = {vi.name: vi.SerializeToString() for vi in proto.graph.value_info}
    assert written.graph.value_info and all(
        recorded.get(vi.name) == vi.SerializeToString() for vi in written.graph.value_info
    )
    feed = {"x": np.random.default_rng(2).normal(size=(2, 9, 8)).astype(np.float32)}
    for got, want in zip(_run(out, feed), _run(src, feed), strict=True):
        assert np.array_equal(got, want)


def test_a_fold_writes_the_new_width_where_the_source_recorded_the_old(tmp_path: Path) -> None:
    proto = onnx.shape_inference.infer_shapes(mlp_proto())
    assert {vi.name for vi in proto.graph.value_info} >= {"h1", "r1", "h2"}
    src = tmp_path / "mlp.onnx"
    onnx.save(proto, str(src))
    out = tmp_path / "folded.onnx"
    onnxfold.fold(src, 0.5, out, method="fold", repair="none", round_to=1, validate=False)
    written = onnx.load(str(out))
    widths = {vi.name: vi.type.tensor_type.shape.dim[-1].dim_value for vi in written.graph.value_info}
    assert widths["h1"] == widths["r1"] == 8 and widths["h2"] == 6
    onnx.checker.check_model(written, full_check=True)  # strict inference agrees with every entry
