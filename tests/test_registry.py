"""The op registry: a custom op becomes foldable through one registered rule, exactly.

The rule under test is the README example (exec'd from README.md when the marker is there, else from
:data:`EXAMPLE`, the same code). The graph is Conv c0 → com.example.ScaledTanh → Conv c1: without the
rule, c0's channels block at the unknown op; with it they pass through and fold. The oracle: a wide
model whose c0 channels are exact duplicates of a compact model's folds back to the compact function
(checked in onnxruntime after the custom op is replaced by Tanh, which it equals for alpha = beta = 1).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxfold
from onnxfold.analysis import (
    REASON_CODES,
    UNSUPPORTED_OP,
    BlockReason,
    register_op,
    register_rule,
    unregister_rule,
)
from onnxfold.analysis import registry as reg
from onnxfold.runtime.session import make_session

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- example: register_rule -->"
EXAMPLE = '''
from onnxfold.analysis import register_rule

@register_rule("ScaledTanh", domain="com.example")
def scaled_tanh(walk, node):
    """y = alpha * tanh(beta * x), element-wise: channels pass through unchanged."""
    walk.passthrough(node)
'''
X = [2, 3, 6, 6]


def example_source() -> str:
    """The first ```python block after the README marker if the README has the marker, else EXAMPLE."""
    text = README.read_text(encoding="utf-8") if README.exists() else ""
    if MARKER not in text:
        return EXAMPLE
    match = re.search(r"```python\n(.*?)```", text.split(MARKER, 1)[1], re.DOTALL)
    assert match, f"README.md has {MARKER!r} but no ```python block after it"
    return match.group(1)


@pytest.fixture
def registry_restored():
    """Whatever a test registers is gone afterwards: other tests see the default registry."""
    saved = dict(reg._OPS)
    yield
    reg._OPS.clear()
    reg._OPS.update(saved)


@pytest.fixture
def scaled_tanh(registry_restored):
    assert reg.rule_for("ScaledTanh", "com.example") is None
    exec(compile(example_source(), "README example", "exec"), {})
    rule = reg.rule_for("ScaledTanh", "com.example")
    assert rule is not None, "the README example does not register ScaledTanh in com.example"
    return rule


def model(
    channels: int, rng: np.random.Generator | None = None, weights: dict | None = None
) -> onnx.ModelProto:
    """x → Conv c0 (``channels``) → com.example.ScaledTanh → Conv c1 (5) → y."""
    if weights is None:
        rng = rng or np.random.default_rng(0)
        weights = {
            "w0": rng.normal(0, 0.5, (channels, 3, 3, 3)),
            "b0": rng.normal(0, 0.5, channels),
            "w1": rng.normal(0, 0.5, (5, channels, 3, 3)),
            "b1": rng.normal(0, 0.5, 5),
        }
    inits = [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in weights.items()]
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["h"], "c0", pads=[1, 1, 1, 1]),
        helper.make_node("ScaledTanh", ["h"], ["t"], "act", domain="com.example", alpha=1.0, beta=1.0),
        helper.make_node("Conv", ["t", "w1", "b1"], ["y"], "c1", pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, X)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    return helper.make_model(graph, opset_imports=opsets)


def duplicated(compact: onnx.ModelProto) -> onnx.ModelProto:
    """The wide model: c0's channels tiled twice (rows copied), c1's input columns tiled and halved."""
    w = {t.name: numpy_helper.to_array(t) for t in compact.graph.initializer}
    wide = {
        "w0": np.concatenate([w["w0"]] * 2),
        "b0": np.concatenate([w["b0"]] * 2),
        "w1": np.concatenate([w["w1"]] * 2, axis=1) * 0.5,
        "b1": w["b1"],
    }
    return model(2 * w["w0"].shape[0], weights=wide)


def as_tanh(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The same model with ScaledTanh (alpha = beta = 1) replaced by the standard Tanh."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    for node in proto.graph.node:
        if node.op_type == "ScaledTanh":
            node.op_type, node.domain = "Tanh", ""
            del node.attribute[:]
    del proto.opset_import[:]
    proto.opset_import.extend([helper.make_opsetid("", 17)])
    return proto


def run(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = make_session(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def group_of(proto: onnx.ModelProto, producer: str):
    (group,) = [g for g in onnxfold.analyze(proto) if g.name == producer]
    return group


def test_unregistered_custom_op_blocks_with_its_code() -> None:
    group = group_of(model(4), "c0")
    assert not group.foldable
    assert [(r.code, r.node) for r in group.blocked] == [(UNSUPPORTED_OP, "act")]
    assert "reaches unsupported op ScaledTanh (act)" == str(group.blocked[0])


def test_registered_rule_makes_the_group_foldable(scaled_tanh) -> None:
    group = group_of(model(4), "c0")
    assert group.foldable and group.size == 4, group.blocked
    assert {(m.node, m.role) for m in group.members} == {("c0", "average"), ("c1", "sum")}


def test_duplicates_fold_back_to_the_compact_model_exactly(scaled_tanh, tmp_path: Path) -> None:
    compact = model(4)
    wide = duplicated(compact)
    folded, report = onnxfold.fold(wide, 0.5, tmp_path / "f.onnx", validate=False, repair="none")
    assert [(p.group.name, p.status, p.k) for p in report.plans if p.group.name == "c0"] == [
        ("c0", "folded", 4)
    ]
    x = np.random.default_rng(1).normal(size=X).astype(np.float32)
    ref = run(as_tanh(compact), x)
    assert np.abs(run(as_tanh(wide), x) - ref).max() <= 1e-5 * max(1.0, float(np.abs(ref).max()))
    got = run(as_tanh(onnx.load(str(tmp_path / "f.onnx"))), x)
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-5 * max(1.0, float(np.abs(ref).max()))


def test_unregistering_restores_the_block(scaled_tanh) -> None:
    assert group_of(model(4), "c0").foldable
    assert unregister_rule("ScaledTanh", "com.example") is scaled_tanh
    assert reg.rule_for("ScaledTanh", "com.example") is None
    assert [r.code for r in group_of(model(4), "c0").blocked] == [UNSUPPORTED_OP]
    assert unregister_rule("ScaledTanh", "com.example") is None


def test_registering_twice_needs_replace(scaled_tanh) -> None:
    with pytest.raises(ValueError, match="already has a rule"):
        register_rule("ScaledTanh", domain="com.example")(lambda walk, node: None)

    def other(walk, node):
        walk.block_inputs(node, BlockReason("custom", "no", node.name))

    assert register_rule("ScaledTanh", domain="com.example", replace=True)(other) is other
    assert reg.rule_for("ScaledTanh", "com.example") is other
    assert [r.code for r in group_of(model(4), "c0").blocked] == ["custom"]


def test_default_domain_has_two_spellings(registry_restored) -> None:
    assert reg.rule_for("Relu", "ai.onnx") is reg.rule_for("Relu", "") is not None
    with pytest.raises(ValueError):
        register_rule("Relu", domain="ai.onnx")(lambda walk, node: None)
    assert reg.rule_for("ScaledTanh", "") is None  # the domain is part of the key


def test_register_rule_is_exported_lazily_from_onnxfold() -> None:
    assert onnxfold.register_rule is register_rule


def test_readme_example_registers_the_rule(scaled_tanh) -> None:
    source = example_source()
    text = README.read_text(encoding="utf-8") if README.exists() else ""
    if MARKER in text:
        assert "register_rule" in source
    else:
        assert source == EXAMPLE
    assert scaled_tanh.__name__ == "scaled_tanh" and "element-wise" in scaled_tanh.__doc__


def test_block_reasons_are_structured_in_json(tmp_path: Path) -> None:
    group = group_of(model(4), "c0")
    data = json.loads(json.dumps(group.to_dict()))
    assert data["blocked"] == [
        {
            "code": UNSUPPORTED_OP,
            "node": "act",
            "tensor": "",
            "message": "reaches unsupported op ScaledTanh (act)",
        }
    ]
    assert all(r.code in REASON_CODES for g in onnxfold.analyze(model(4)) for r in g.blocked)
    with pytest.raises(dataclasses.FrozenInstanceError):
        group.blocked[0].code = "other"
    _, report = onnxfold.fold(model(4), 0.5, tmp_path / "f.onnx", validate=False, repair="none")
    (plan,) = [p.to_dict() for p in report.plans if p.group.name == "c0"]
    assert plan["status"] == "blocked" and plan["reason"] == "reaches unsupported op ScaledTanh (act)"
    assert plan["blocked"] == data["blocked"]


def test_reason_codes_are_short_kebab_case_and_unique() -> None:
    assert len(set(REASON_CODES)) == len(REASON_CODES)
    assert all(re.fullmatch(r"[a-z]+(-[a-z]+)*", code) for code in REASON_CODES)


def test_a_registered_macs_hook_counts_in_model_stats(registry_restored) -> None:
    """Adding an op's MAC count is one registration beside its rule (here: ScaledTanh, 2 MACs per input
    element; shape inference cannot see through the custom op, so the hook reads its input's shape)."""
    from onnxfold.report.stats import model_stats

    proto = onnx.shape_inference.infer_shapes(model(4))
    base = model_stats(proto).macs

    def macs(node, shape, dim):
        x = shape(0)
        return None if x is None else 2 * int(np.prod([dim(d) for d in x]))

    register_op("ScaledTanh", "com.example", macs=macs)
    assert model_stats(proto).macs == base + 2 * 4 * 6 * 6  # per sample of the [2, 4, 6, 6] input
