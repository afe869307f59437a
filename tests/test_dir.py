"""Fold-DIR: the torch executor, DeepInversion synthesis and the repair built on them."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

import onnxfold
from onnxfold.models import bundled_model  # noqa: E402
from onnxfold.models.digits import load_digits_split  # noqa: E402
from onnxfold.pipeline.manager import PassError
from onnxfold.repair.deepinversion import bn_running_stats, reestimate_bn, synthesize  # noqa: E402
from onnxfold.repair.torch_graph import TorchGraph, UnsupportedGraph  # noqa: E402
from onnxfold.runtime.session import make_session


@pytest.mark.parametrize("name", ["resnet18.onnx", "vgg11bn.onnx", "lenet5.onnx", "mlp.onnx"])
def test_torch_executor_matches_onnxruntime(name):
    path = bundled_model(name)
    _, _, x, _ = load_digits_split()
    x = x[:64]
    ref = make_session(str(path)).run(None, {"input": x})[0]
    got = TorchGraph(onnx.load(str(path))).run({"input": torch.from_numpy(x)})["logits"].detach().numpy()
    assert np.abs(got - ref).max() <= 1e-4 * max(1.0, float(np.abs(ref).max()))


def test_unsupported_op_is_named():
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("TopK", ["x", "k"], ["v", "i"], name="top")],
        "g",
        [onnx.helper.make_tensor_value_info("x", 1, [2, 5])],
        [onnx.helper.make_tensor_value_info("v", 1, None)],
        [onnx.numpy_helper.from_array(np.array([2], np.int64), "k")],
    )
    with pytest.raises(UnsupportedGraph, match="TopK"):
        TorchGraph(onnx.helper.make_model(graph))


def test_synthesised_batch_matches_the_bn_statistics():
    proto = onnx.load(str(bundled_model("resnet18.onnx")))
    running = bn_running_stats(proto)
    noise_stats = reestimate_bn(
        proto, np.random.default_rng(0).standard_normal((32, 1, 8, 8)).astype(np.float32)
    )
    batch = synthesize(proto, count=32, iterations=40, seed=0)
    assert batch.shape == (32, 1, 8, 8) and np.isfinite(batch).all()
    synth_stats = reestimate_bn(proto, batch)

    def error(stats):  # mean relative distance of the per-BN batch statistics to the running ones
        return np.mean(
            [
                np.linalg.norm(stats[k][1] - v) / np.linalg.norm(v)
                + np.linalg.norm(stats[k][0] - m) / (np.linalg.norm(m) + 1e-3)
                for k, (m, v) in running.items()
            ]
        )

    assert error(synth_stats) < 0.5 * error(noise_stats)


def test_dir_keeps_the_duplicate_oracle_exact(exported, tmp_path):
    pair = exported("resnet18", "legacy-bn")
    out = tmp_path / "dir.onnx"
    onnxfold.fold(
        pair.wide,
        0.5,
        out,
        validate=False,
        method="fold",
        repair="dir",
        repair_options={"dir_iterations": 2, "dir_samples": 16},
    )
    x = pair.input()
    ref = make_session(str(pair.compact), optimize=False).run(None, {"input": x})[0]
    got = make_session(str(out), optimize=False).run(None, {"input": x})[0]
    assert np.abs(got - ref).max() <= 1e-5 * float(np.abs(ref).max())


def test_dir_refuses_a_graph_without_bn(tmp_path):
    with pytest.raises(PassError, match="does not apply"):
        onnxfold.fold(
            bundled_model("resnet18-fused.onnx"), 0.5, tmp_path / "x.onnx", validate=False, repair="dir"
        )
