"""Tests for onnxfold.models: exporters vs torch, exact channel duplication, the bundled digits zoo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper  # noqa: E402

from onnxfold.models.architectures import build_model, doubled_kwargs, example_input  # noqa: E402
from onnxfold.models.digits import load_digits_split, split_indices  # noqa: E402
from onnxfold.models.duplicate import duplication_spec, make_duplicate_pair  # noqa: E402
from onnxfold.models.export import EXPORT_STYLES, export_onnx  # noqa: E402

ZOO_DIR = Path(__file__).resolve().parents[1] / "models" / "zoo"

# Small configurations: the whole file must run in well under a minute.
CONFIGS: dict[str, dict] = {
    "resnet18": {"base_width": 4, "num_classes": 10},
    "vgg11bn": {"base_width": 8, "hidden": 32, "input_size": 32, "num_pools": 4},  # Flatten of a 2×2 map
    "mlp": {"in_features": 20, "hidden": (24, 16), "num_classes": 7},
    "lenet5": {"channels": (4, 8), "hidden": (24, 12)},  # 8×8 input → Flatten of a 2×2 map
    "gatedmlp": {"hidden": 16, "intermediate": 24, "depth": 2, "bias": True},
}
BN_ARCHS = {"resnet18", "vgg11bn"}


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(["logits"], {"input": x})[0]


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers, plus Identity outputs that alias them (the legacy exporter deduplicates equal tensors)."""
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
    return values


@pytest.mark.parametrize("style", EXPORT_STYLES)
@pytest.mark.parametrize("arch", list(CONFIGS))
def test_export_matches_torch(arch: str, style: str, tmp_path: Path) -> None:
    model, _ = make_duplicate_pair(arch, seed=3, **CONFIGS[arch])
    path = export_onnx(model, tmp_path / f"{arch}.onnx", example_input(arch, 2, **CONFIGS[arch]), style)
    x = example_input(arch, 5, seed=7, **CONFIGS[arch])  # another batch size: the batch axis is dynamic
    with torch.no_grad():
        expected = model(x).numpy()
    got = _run(path, x.numpy())
    assert got.shape == expected.shape
    assert float(np.std(expected)) > 1e-3  # not a degenerate network
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * float(np.abs(expected).max()))

    proto = onnx.load(str(path), load_external_data=False)
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    opset = {o.domain: o.version for o in proto.opset_import}[""]
    ops = [n.op_type for n in proto.graph.node]
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    if style == "legacy-bn":
        assert opset == 17
        assert ops.count("BatchNormalization") == n_bn
    else:
        # fused into Conv (legacy: constant folding; dynamo: the onnxscript optimiser)
        assert "BatchNormalization" not in ops
    if style == "dynamo":
        assert opset == 20
        assert (tmp_path / f"{arch}.onnx.data").stat().st_size > 0
        external = [i for i in proto.graph.initializer if i.data_location == onnx.TensorProto.EXTERNAL]
        assert external and {e.value for i in external for e in i.external_data if e.key == "location"} == {
            f"{arch}.onnx.data"
        }
    elif style == "legacy":
        assert opset == 17
    if arch in BN_ARCHS:
        assert n_bn > 0


@pytest.mark.parametrize("arch", sorted(BN_ARCHS))
def test_legacy_bn_keeps_eval_running_stats(arch: str, tmp_path: Path) -> None:
    model, _ = make_duplicate_pair(arch, seed=5, **CONFIGS[arch])
    x = example_input(arch, 2, **CONFIGS[arch])
    proto = onnx.load(str(export_onnx(model, tmp_path / "bn.onnx", x, "legacy-bn")))
    values = _constants(proto)
    bns = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    seen = set()
    for node in proto.graph.node:
        if node.op_type != "BatchNormalization":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs.get("training_mode", 0) == 0
        name = node.input[3].rsplit(".running_mean", 1)[0]
        bn = bns[name]
        seen.add(name)
        np.testing.assert_allclose(attrs["epsilon"], bn.eps, rtol=1e-6)
        for i, t in zip(range(1, 5), (bn.weight, bn.bias, bn.running_mean, bn.running_var), strict=True):
            np.testing.assert_array_equal(values[node.input[i]], t.detach().numpy())
    assert seen == set(bns)
    # Randomised statistics make the fused export's conv weights differ from the raw ones.
    fused = _constants(onnx.load(str(export_onnx(model, tmp_path / "fused.onnx", x, "legacy"))))
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)).weight.detach().numpy()
    match = [v for v in fused.values() if v.shape == first_conv.shape]
    assert match and all(np.abs(v - first_conv).max() > 0.05 * np.abs(first_conv).max() for v in match)


@pytest.mark.parametrize("arch", list(CONFIGS) + ["gatedmlp-nobias"])
def test_duplicate_pair_is_exact(arch: str) -> None:
    name, kwargs = arch.split("-")[0], dict(CONFIGS[arch.split("-")[0]])
    if arch.endswith("nobias"):
        kwargs["bias"] = False
    compact, wide = make_duplicate_pair(name, seed=11, **kwargs)
    n_compact = sum(p.numel() for p in compact.parameters())
    n_wide = sum(p.numel() for p in wide.parameters())
    assert n_wide > 1.5 * n_compact
    x = example_input(name, 6, seed=2, **kwargs)
    with torch.no_grad():
        a, b = compact(x), wide(x)
    assert float(a.std()) > 1e-3
    rel = float((a - b).abs().max() / a.abs().max())
    assert rel < 1e-5, rel


def test_duplicate_pair_fails_when_a_copy_is_perturbed() -> None:
    compact, wide = make_duplicate_pair("vgg11bn", seed=1, **CONFIGS["vgg11bn"])
    x = example_input("vgg11bn", 4, **CONFIGS["vgg11bn"])
    with torch.no_grad():
        wide.features[0].weight[0] += 0.5  # channel 0 and its copy (channel n) now differ
        rel = float((compact(x) - wide(x)).abs().max() / compact(x).abs().max())
    assert rel > 1e-4  # well above the 1e-5 bound of the exactness test
    with torch.no_grad():
        wide.classifier[3].weight[0] += 0.5
        rel = float((compact(x) - wide(x)).abs().max() / compact(x).abs().max())
    assert rel > 1e-2


def test_duplication_spec_roles() -> None:
    spec = duplication_spec(*make_duplicate_pair("resnet18", 0, **CONFIGS["resnet18"]))
    assert spec["conv1.weight"] == ("copy", None, None, None)  # image channels are not duplicated
    assert spec["layer2.0.shortcut.0.weight"] == ("copy", "halve", None, None)
    assert spec["layer1.0.bn1.running_var"] == ("copy",)
    assert spec["linear.weight"] == (None, "halve") and spec["linear.bias"] == (None,)
    spec = duplication_spec(*make_duplicate_pair("gatedmlp", 0, **CONFIGS["gatedmlp"]))
    assert spec["layers.0.gate_proj.weight"] == ("copy", None)
    assert spec["layers.0.down_proj.weight"] == (None, "halve")
    assert spec["layers.0.norm.weight"] == (None,) and spec["head.weight"] == (None, None)
    spec = duplication_spec(*make_duplicate_pair("vgg11bn", 0, **CONFIGS["vgg11bn"]))
    assert spec["classifier.0.weight"] == ("copy", "halve")  # Flatten of 2×2: tiled per channel block
    assert doubled_kwargs("lenet5", {}) == {"channels": (12, 32), "hidden": (240, 168)}


def test_models_package_import_does_not_need_torch() -> None:
    code = "import sys, onnxfold.models, onnxfold.models.digits; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_digits_split() -> None:
    x_train, y_train, x_test, y_test = load_digits_split()
    assert x_train.shape == (1257, 1, 8, 8) and x_test.shape == (540, 1, 8, 8)
    assert x_train.dtype == np.float32 and y_test.dtype == np.int64
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0
    assert np.bincount(y_test).min() >= 50  # stratified
    train, test = split_indices()
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 1797


def test_zoo_matches_manifest() -> None:
    manifest = json.loads((ZOO_DIR / "zoo.json").read_text())
    _, _, x_test, y_test = load_digits_split()
    assert manifest["dataset"]["test_indices"] == split_indices()[1].tolist()
    assert set(manifest["models"]) == {"resnet18", "vgg11bn", "mlp", "lenet5"}
    total = 0
    for name, info in manifest["models"].items():
        model = build_model(info["arch"], **info["kwargs"])
        assert sum(p.numel() for p in model.parameters()) == info["params"]
        assert (f"{name}-fused.onnx" in info["files"]) == (name != "mlp")
        for fname, rec in info["files"].items():
            path = ZOO_DIR / fname
            total += path.stat().st_size
            assert path.stat().st_size == rec["bytes"]
            logits = _run(path, x_test)
            acc = float((logits.argmax(1) == y_test).mean())
            assert acc == pytest.approx(rec["accuracy"], abs=1e-9), (fname, acc)
            assert acc > 0.95, (fname, acc)
            ops = {n.op_type for n in onnx.load(str(path)).graph.node}
            assert ("BatchNormalization" in ops) == (info["arch"] in BN_ARCHS and rec["style"] == "legacy-bn")
    assert total < 6e6
