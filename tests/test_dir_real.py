"""Fold-DIR on real exported CNNs: whole BN-keeping exports run by the torch executor as by onnxruntime,
and the up-front check that ``--repair dir`` applies (before any folding, nothing written)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from harness import mlp_proto
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import onnxfold
from onnxfold.cli.commands import main
from onnxfold.models.export import export_onnx
from onnxfold.models.public import build_public, public_input
from onnxfold.passes import FoldPass
from onnxfold.repair.torch_graph import TorchGraph
from onnxfold.runtime.session import make_session


def _agree(proto_path, x: torch.Tensor) -> float:
    ref = make_session(str(proto_path)).run(None, {"input": x.numpy()})[0]
    got = TorchGraph(onnx.load(str(proto_path))).run({"input": x})["logits"].detach().numpy()
    assert got.shape == ref.shape
    return float(np.abs(got - ref).max() / max(1.0, float(np.abs(ref).max())))


@pytest.mark.parametrize(
    "name", ["mobilenetv3-small", "shufflenetv2", "yolov8n-like", "densenet-small", "efficientnet-b0"]
)
def test_public_bn_exports_match_onnxruntime(name, tmp_path):
    x = public_input(name, batch=2, small=True)
    path = export_onnx(build_public(name, small=True), tmp_path / f"{name}.onnx", x, "legacy-bn")
    assert any(n.op_type == "BatchNormalization" for n in onnx.load(str(path)).graph.node)
    assert _agree(path, x) <= 1e-4


class _PadUpNet(nn.Module):
    """Reflect/replicate padding, a transposed conv, bilinear and nearest upsampling, split, max, hardswish."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Hardswish())
        self.c2 = nn.Sequential(nn.ReplicationPad2d((1, 2, 0, 1)), nn.Conv2d(4, 8, 3, 2), nn.BatchNorm2d(8))
        self.up = nn.ConvTranspose2d(8, 4, 3, 2, padding=1, output_padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Conv2d(8, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.c1(x).split(4, dim=1)
        y = self.c2(torch.maximum(a, b))
        y = nn.functional.interpolate(self.bn(self.up(y)), scale_factor=0.5, mode="bilinear")
        z = nn.functional.interpolate(y, size=(x.shape[2], x.shape[3]), mode="nearest")
        y = torch.cat([z, nn.functional.hardsigmoid(z)], dim=1)
        return self.head(nn.functional.pad(y, (0, 1, 1, 0)))[..., :-1, 1:].mean(dim=(2, 3))


def test_pad_resize_convtranspose_net_matches_onnxruntime(tmp_path):
    torch.manual_seed(0)
    net = _PadUpNet()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 16, 20)
    path = export_onnx(net, tmp_path / "padup.onnx", x, "legacy-bn")
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"Pad", "Resize", "ConvTranspose", "Split", "Max", "BatchNormalization"} <= ops
    assert _agree(path, x) <= 1e-4


def _bn_model_with(op_nodes: list, extra_inits: list, out: str, opset: int = 17) -> onnx.ModelProto:
    """x → Conv → BatchNormalization → Relu (→ ``op_nodes``): a BN model whose tail is chosen."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(np.ones(8, np.float32), "g"),
        numpy_helper.from_array(np.zeros(8, np.float32), "b"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "m"),
        numpy_helper.from_array(np.ones(8, np.float32), "v"),
        numpy_helper.from_array(rng.standard_normal((4, 8, 1, 1)).astype(np.float32), "w2"),
        *extra_inits,
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["n"], name="bn"),
        helper.make_node("Relu", ["n"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w2"], ["h"], name="conv2"),
        *op_nodes,
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _topk_model() -> onnx.ModelProto:
    return _bn_model_with(
        [helper.make_node("TopK", ["h", "k"], ["y", "idx"], name="top", axis=1)],
        [numpy_helper.from_array(np.array([2], np.int64), "k")],
        "y",
    )


def _cubic_model() -> onnx.ModelProto:
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "s")
    return _bn_model_with(
        [helper.make_node("Resize", ["h", "", "s"], ["y"], name="up", mode="cubic")], [scales], "y"
    )


@pytest.fixture
def fold_never_runs(monkeypatch):
    def boom(self, model, ctx):
        raise AssertionError("the fold pass ran before the dir check")

    monkeypatch.setattr(FoldPass, "run", boom)


@pytest.mark.parametrize(
    ("model", "needle"),
    [
        (_topk_model, r"op TopK \(top\) is not supported"),
        (_cubic_model, "mode cubic"),
        (mlp_proto, "no BatchNormalization statistics"),
    ],
)
def test_api_refuses_dir_before_folding(model, needle, fold_never_runs):
    with pytest.raises(ValueError, match=needle) as info:
        onnxfold.fold(model(), sparsity=0.3, repair="dir")
    assert "--repair ar or data" in str(info.value)
    # an MLP has no convolutions to have fused a BN into (a trial's DistilBERT was asked about them)
    assert model is not mlp_proto or "convolutions" not in str(info.value)


def test_a_cnn_without_bn_statistics_is_asked_whether_they_were_fused(fold_never_runs):
    from onnxfold.models import bundled_model

    with pytest.raises(ValueError, match=r"statistics to invert \(BN fused into the convolutions\?\)"):
        onnxfold.fold(str(bundled_model("resnet18-fused.onnx")), sparsity=0.3, repair="dir")


def test_what_the_model_lacks_is_said_before_torch_is_asked_for(monkeypatch, fold_never_runs):
    """A trial without torch was told to install it, then learned the model had no BN statistics."""
    import builtins

    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("no torch here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    with pytest.raises(ValueError, match="no BatchNormalization statistics"):
        onnxfold.fold(mlp_proto(), sparsity=0.3, repair="dir")


def test_api_checks_dir_in_run_pipeline_too(fold_never_runs):
    from onnxfold.passes import RepairPass

    with pytest.raises(ValueError, match="TopK"):
        onnxfold.run_pipeline(_topk_model(), [FoldPass(sparsity=0.3), RepairPass(mode="dir")])


def test_cli_refuses_dir_in_one_line_and_writes_nothing(tmp_path, capsys, fold_never_runs):
    src, out, report = tmp_path / "m.onnx", tmp_path / "small.onnx", tmp_path / "r.json"
    onnx.save(_topk_model(), str(src))
    rc = main(["fold", str(src), "-o", str(out), "--repair", "dir", "--report", str(report)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("onnxfold: error: ") and "\n" not in err and "TopK" in err and "--repair ar" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_cli_dir_applies_to_a_real_cnn(tmp_path, capsys):
    name = "shufflenetv2"
    x = public_input(name, batch=2, small=True)
    src = export_onnx(build_public(name, small=True), tmp_path / "m.onnx", x, "legacy-bn")
    out = tmp_path / "small.onnx"
    argv = ["fold", str(src), "-o", str(out), "--sparsity", "0.3", "--repair", "dir"]
    rc = main([*argv, "--dir-samples", "8", "--dir-iterations", "3"])
    assert rc == 0, capsys.readouterr().err
    assert out.exists()
    y = make_session(str(out)).run(None, {"input": x.numpy()})[0]
    assert y.shape[0] == 2 and np.isfinite(y).all()


def test_a_search_checks_dir_before_it_builds_a_candidate(fold_never_runs):
    with pytest.raises(ValueError, match="TopK") as info:
        onnxfold.fold(_topk_model(), min_fidelity=0.9, repair="dir")
    assert "--repair ar or data" in str(info.value)
