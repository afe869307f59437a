"""Detector heads flattened channels-last and cut into boxes: Conv → Transpose(NHWC) → Reshape [N, -1]
→ Concat → Reshape [N, -1, 4]. The flatten tiles a head's channels once per pixel, and the last
Reshape coarsens every head's group to units of 4. Each group must be coarsened once, not once per
tile (FaceBoxesV2's heads read "no consumer reads these channels" where they reach ``loc``)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxfold
from onnxfold.analysis import GRAPH_OUTPUT, NO_CONSUMER, SPLITS_UNITS


def _heads_model(widths: tuple[int, ...], side: int = 4):
    """A 3×3 Conv backbone of 8 channels and one 3×3 head Conv per entry of ``widths``, each head
    flattened channels-last, joined and cut into rows of 4 (``y`` [1, Σ side²·w / 4, 4])."""
    rng = np.random.default_rng(0)
    nodes, inits = [], []

    def conv(name: str, cin: int, cout: int, x: str, y: str) -> None:
        w = rng.standard_normal((cout, cin, 3, 3)).astype(np.float32)
        b = rng.standard_normal(cout).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, f"{name}_w"), numpy_helper.from_array(b, f"{name}_b")])
        nodes.append(
            helper.make_node(
                "Conv", [x, f"{name}_w", f"{name}_b"], [y], name=name, pads=[1] * 4, kernel_shape=[3, 3]
            )
        )

    conv("backbone", 3, 8, "x", "a")
    nodes.append(helper.make_node("Relu", ["a"], ["features"]))
    inits.append(numpy_helper.from_array(np.array([1, -1], np.int64), "flat"))
    inits.append(numpy_helper.from_array(np.array([1, -1, 4], np.int64), "rows"))
    flats = []
    for i, width in enumerate(widths):
        conv(f"head{i}", 8, width, "features", f"h{i}")
        nodes.append(helper.make_node("Transpose", [f"h{i}"], [f"t{i}"], perm=[0, 2, 3, 1]))
        nodes.append(helper.make_node("Reshape", [f"t{i}", "flat"], [f"f{i}"], name=f"flatten{i}"))
        flats.append(f"f{i}")
    nodes.append(helper.make_node("Concat", flats, ["joined"], axis=1))
    nodes.append(helper.make_node("Reshape", ["joined", "rows"], ["y"], name="boxes"))
    rows = side * side * sum(widths) // 4
    graph = helper.make_graph(
        nodes,
        "heads",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, side, side])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, rows, 4])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _reasons(model) -> dict[str, list[str]]:
    return {g.name: [r.code for r in g.blocked] for g in onnxfold.analyze(model)}


def test_heads_tiled_per_pixel_reach_the_output_they_feed() -> None:
    reasons = _reasons(_heads_model((4, 8)))
    assert reasons["backbone"] == []
    for head in ("head0", "head1"):
        assert GRAPH_OUTPUT in reasons[head] and NO_CONSUMER not in reasons[head], reasons


def test_a_head_that_does_not_divide_into_rows_blocks_the_others_with_a_reason() -> None:
    """6 channels are not whole rows of 4: that head is blocked for it, and the head beside it, whose
    channels the Reshape's output no longer carries, is blocked with the Reshape's reason, not left
    reading as if nothing consumed it."""
    reasons = _reasons(_heads_model((6, 8)))
    assert SPLITS_UNITS in reasons["head0"], reasons
    assert reasons["head1"] and NO_CONSUMER not in reasons["head1"], reasons


@pytest.mark.parametrize("widths", [(4, 8), (6, 8)])
def test_the_backbone_beside_such_heads_folds_and_runs(widths) -> None:
    folded, report = onnxfold.fold(_heads_model(widths), 0.5, method="fold", repair="none")
    assert [p.group.name for p in report.plans if p.status == "folded"] == ["backbone"]
    assert report.validation is not None and report.validation.outputs[0].name == "y"
