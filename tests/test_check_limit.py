"""``--check`` (PassManager's full ``onnx.checker`` after each pass) on a model too big for one protobuf: the
size is decided from declared shapes and external-data lengths, so nothing is serialised or read into memory
and the check is skipped; below the limit it still runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as oh

import onnxfold.pipeline.manager as manager
from onnxfold.ir.model import load_model
from onnxfold.models import bundled_model
from onnxfold.pipeline.manager import Pass, PassContext, PassManager, PassResult


class Touch(Pass):
    """A pass that changes nothing, so that only the check after it does any work."""

    name = "touch"

    def run(self, model, ctx: PassContext) -> PassResult:
        return PassResult(False, {})


def huge_model(folder: Path) -> Path:
    """x · W with W (1, 600M) float32 = 2.4 GB in a sparse external data file (no disk, no memory used)."""
    n = 600_000_000
    weight = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[1, n])
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "m.onnx.data"), ("offset", "0"), ("length", str(4 * n))):
        weight.external_data.add(key=key, value=value)
    graph = oh.make_graph(
        [oh.make_node("MatMul", ["x", "W"], ["y"])],
        "huge",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
        [weight],
    )
    proto = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    proto.ir_version = 8
    path = folder / "m.onnx"
    onnx.save(proto, str(path))
    with open(folder / "m.onnx.data", "wb") as handle:
        handle.truncate(4 * n)
    return path


@pytest.fixture
def spies(monkeypatch):
    """Record serialisations and checker calls of the manager's check; serialising raises (it would need
    the whole model in memory)."""
    calls: dict[str, int] = {"serialise": 0, "checker": 0}
    real_proto, real_check = manager.to_model_proto, manager.onnx.checker.check_model

    def to_model_proto(model):
        calls["serialise"] += 1
        if model.graph.tensors().get("W") is not None:
            raise AssertionError("the 2.4 GB model was serialised")
        return real_proto(model)

    def check_model(proto, *args, **kwargs):
        calls["checker"] += 1
        return real_check(proto, *args, **kwargs)

    monkeypatch.setattr(manager, "to_model_proto", to_model_proto)
    monkeypatch.setattr(manager.onnx.checker, "check_model", check_model)
    return calls


def test_check_skips_a_model_above_the_limit_without_serialising(tmp_path: Path, spies) -> None:
    model = load_model(huge_model(tmp_path))
    PassManager([Touch()], check=True).run(model)
    assert spies == {"serialise": 0, "checker": 0}
    const = model.graph.tensors()["W"]
    assert not isinstance(const._values, np.ndarray)  # still lazy: nothing was read


def test_check_still_runs_below_the_limit(spies) -> None:
    model = load_model(bundled_model("lenet5.onnx"))
    PassManager([Touch()], check=True).run(model)
    assert spies == {"serialise": 1, "checker": 1}


def test_check_still_catches_an_invalid_graph(monkeypatch) -> None:
    model = load_model(bundled_model("lenet5.onnx"))
    model.graph.nodes[0].op = "NoSuchOp"
    with pytest.raises(manager.PassError, match="left an invalid graph"):
        PassManager([Touch()], check=True).run(model)
