"""Pads computed from constants (the legacy torch exporter's ``nn.ZeroPad2d``, EfficientNet's
same-padding) no longer block the channel groups through them, and a model folded at sparsity 0 stays
bit-identical under onnxruntime's full optimizations.

ukis-csmask's U-Net builds each Pad's pads through Shape, Sub, ConstantOfShape, Concat, a reversing
Slice and Transpose, all on constants: 73 of its 113 groups were blocked, 32 of them by those Pads.
Folding the pads to values fused ORT's residual Adds into its convolutions, which reorders float sums,
so the written model computes them as the source did wherever their values did not change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import onnxfold

torch = pytest.importorskip("torch")


class PaddedNet(torch.nn.Module):
    """conv → ZeroPad2d → depthwise conv → 1×1 conv: one channel group through a computed Pad."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.pad = torch.nn.ZeroPad2d((0, 1, 0, 1))
        self.stem = torch.nn.Conv2d(3, width, 3, stride=2)
        self.depthwise = torch.nn.Conv2d(width, width, 3, groups=width)
        self.head = torch.nn.Conv2d(width, 5, 1)

    def forward(self, x):
        x = torch.relu(self.stem(self.pad(x)))
        return self.head(torch.relu(self.depthwise(self.pad(x))))


def export(net: torch.nn.Module, path: Path) -> Path:
    torch.onnx.export(
        net.eval(),
        torch.randn(1, 3, 17, 17),
        str(path),
        dynamo=False,
        opset_version=13,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
    )
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"Pad", "ConstantOfShape", "Transpose"} <= ops  # pads are computed, not stored
    return path


def run(path: Path, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def duplicated(compact: PaddedNet) -> PaddedNet:
    """``compact`` with every channel of its one group doubled; the head's columns halved between
    each pair, so the wide net computes what the compact one does."""
    wide = PaddedNet(2 * compact.stem.out_channels)
    with torch.no_grad():
        for name in ("stem", "depthwise"):
            src, dst = getattr(compact, name), getattr(wide, name)
            dst.weight.copy_(src.weight.repeat_interleave(2, dim=0))
            dst.bias.copy_(src.bias.repeat_interleave(2))
        wide.head.weight.copy_(compact.head.weight.repeat_interleave(2, dim=1) / 2)
        wide.head.bias.copy_(compact.head.bias)
    return wide


def test_a_group_through_computed_pads_folds(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = export(PaddedNet(16), tmp_path / "padded.onnx")
    groups = onnxfold.analyze(model)
    through = [g for g in groups if g.size == 16]
    assert len(through) == 1 and through[0].foldable, [(g.name, g.size, g.blocked) for g in groups]
    _, report = onnxfold.fold(model, sparsity=0.5, output=tmp_path / "half.onnx", round_to=1, method="fold")
    assert [p.k for p in report.plans if p.status == "folded"] == [8]
    # MACs see through the pads: the stem (16·3·9 per output, 8x8) and the depthwise conv (16·9, 7x7)
    # alone; 656 were counted while the shapes after the first Pad were unknown
    assert report.before.macs >= 16 * 3 * 9 * 64 + 16 * 9 * 49
    x = np.random.default_rng(0).standard_normal((3, 3, 17, 17)).astype(np.float32)
    assert run(tmp_path / "half.onnx", x).shape == run(model, x).shape


def test_sparsity_zero_is_bit_identical_under_full_optimization(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = export(PaddedNet(16), tmp_path / "padded.onnx")
    onnxfold.fold(model, sparsity=0.0, output=tmp_path / "same.onnx", validate=False)
    x = np.random.default_rng(1).standard_normal((2, 3, 17, 17)).astype(np.float32)
    np.testing.assert_array_equal(run(tmp_path / "same.onnx", x), run(model, x))
    written = onnx.load(str(tmp_path / "same.onnx"))
    pads = {n.input[1] for n in written.graph.node if n.op_type == "Pad"}
    made = {o for n in written.graph.node for o in n.output}
    assert pads and pads <= made  # unchanged pads are computed again, as the source computed them


def test_duplicate_channels_behind_computed_pads_fold_to_the_compact_model(tmp_path: Path) -> None:
    torch.manual_seed(2)
    compact = PaddedNet(8)
    small = export(compact, tmp_path / "compact.onnx")
    wide = export(duplicated(compact), tmp_path / "wide.onnx")
    _, report = onnxfold.fold(
        wide, sparsity=0.5, output=tmp_path / "folded.onnx", round_to=1, method="fold", repair="none"
    )
    assert [p.k for p in report.plans if p.status == "folded"] == [8]
    x = np.random.default_rng(2).standard_normal((4, 3, 17, 17)).astype(np.float32)
    np.testing.assert_allclose(run(tmp_path / "folded.onnx", x), run(small, x), rtol=1e-5, atol=1e-5)


def test_sample_macs_see_through_computed_pads(tmp_path: Path) -> None:
    """The MAC budget that cuts a heavy model's runs and its sensitivity's samples is counted on the
    source model: its computed pads hid ukis-csmask's 4.65 G a tile behind 602 K."""
    from onnxfold.folding.samples import sample_macs
    from onnxfold.ir.model import load_model

    torch.manual_seed(3)
    model = load_model(export(PaddedNet(16), tmp_path / "padded.onnx"))
    feed = {"x": np.zeros((4, 3, 17, 17), np.float32)}
    assert sample_macs(model, feed) >= 16 * 3 * 9 * 64 + 16 * 9 * 49


@pytest.mark.parametrize("sparsity", [0.0, 0.5])
def test_a_computation_whose_node_is_named_as_its_output_is_restored_intact(tmp_path: Path, sparsity) -> None:
    """Paddle2ONNX names a node as its output tensor: PP-OCRv2's recogniser computes its LSTM bias with
    a node ``Concat_10`` writing ``Concat_10``. Restoring that computation after the fold renamed the
    output for the node's name, and the LSTM read a tensor nothing produced (every fold, -s 0 too,
    failed validation with "Node input 'Concat_10' is not a graph input")."""
    import onnx
    from onnx import TensorProto
    from onnx import helper as oh
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(0)
    halves = [rng.standard_normal((3, 2)).astype(np.float32) for _ in range(2)]
    nodes = [
        oh.make_node("Constant", [], [f"half{i}"], f"half{i}", value=nh.from_array(h))
        for i, h in enumerate(halves)
    ]
    nodes += [
        oh.make_node("MatMul", ["x", "w1"], ["h"], "fc1"),
        oh.make_node("Relu", ["h"], ["r"], "relu"),
        oh.make_node("Concat", ["half0", "half1"], ["Concat_10"], "Concat_10", axis=1),  # node name = output
        oh.make_node("MatMul", ["r", "Concat_10"], ["y"], "fc2"),
    ]
    graph = oh.make_graph(
        nodes,
        "paddle-names",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [nh.from_array(rng.standard_normal((5, 3)).astype(np.float32), "w1")],
    )
    src, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 12)]), src)
    onnxfold.fold(src, sparsity, out, round_to=1, method="fold", repair="none")
    onnx.checker.check_model(str(out), full_check=True)
    x = rng.standard_normal((6, 5)).astype(np.float32)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    want = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert got.shape == want.shape
    if sparsity == 0.0:
        assert np.array_equal(got, want)


def test_a_large_weight_computed_by_moving_values_folds_with_its_group(tmp_path: Path) -> None:
    """Paddle2ONNX slices and concatenates an LSTM's gate blocks into its W (PP-OCRv2's recogniser:
    131K values each), past the small-constant limit: the 512 channels feeding it were blocked as
    "no constant weight W". A weight computed by ops that only move values (here two Slices of 8,192
    values joined in the other order) is folded to its value, so a twin whose hidden units are duplicated folds back to the
    compact network, its parameters and outputs; sparsity 0 stays bit for bit."""
    from onnx import TensorProto
    from onnx import helper as oh
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(0)
    w1, c = rng.standard_normal((16, 64)), rng.standard_normal((64, 64))  # c: [hidden, outputs]

    def model(w1, c):
        graph = oh.make_graph(
            [
                oh.make_node("MatMul", ["x", "w1"], ["h"], "fc1"),
                oh.make_node("Relu", ["h"], ["r"], "relu"),
                oh.make_node("Slice", ["c", "half", "end", "one"], ["back"], "back"),
                oh.make_node("Slice", ["c", "zero", "half", "one"], ["front"], "front"),
                oh.make_node("Concat", ["back", "front"], ["w2"], "w2", axis=1),  # gate blocks reordered
                oh.make_node("MatMul", ["r", "w2"], ["y"], "fc2"),
            ],
            "moved-weight",
            [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
            [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64])],
            [nh.from_array(w1.astype(np.float32), "w1"), nh.from_array(c.astype(np.float32), "c")]
            + [nh.from_array(np.array([v], np.int64), k) for k, v in (("zero", 0), ("half", 32), ("end", 64))]
            + [nh.from_array(np.array([1], np.int64), "one")],
        )
        return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)])

    wide = model(np.concatenate([w1, w1], 1), np.concatenate([c, c], 0) / 2)
    _folds_back(tmp_path, model(w1, c), wide, rng.standard_normal((5, 16)), 16 * 64 + 64 * 64)


def test_a_weight_split_into_two_readers_folds_with_its_group(tmp_path: Path) -> None:
    """torch's dynamo export splits a cross-attention's in_proj_weight [3E, E] into q [E, E] and kv
    [2E, E] and transposes each: lemmaturk's decoder had its q, k and v projections in no group at all.
    Split moves values only, so the two weights fold to their values: a twin whose hidden units are
    duplicated folds back to the compact network (5,120 values: past the small-constant limit); sparsity 0
    stays bit for bit."""
    from onnx import TensorProto
    from onnx import helper as oh
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(3)
    w1, p = rng.standard_normal((16, 64)), rng.standard_normal((80, 64))  # p: [48 + 32 outputs, hidden]

    def model(w1, p):
        graph = oh.make_graph(
            [
                oh.make_node("MatMul", ["x", "w1"], ["h"], "fc1"),
                oh.make_node("Relu", ["h"], ["r"], "relu"),
                oh.make_node("Split", ["p", "sizes"], ["pq", "pkv"], "split", axis=0),
                oh.make_node("Transpose", ["pq"], ["wq"], "tq", perm=[1, 0]),
                oh.make_node("Transpose", ["pkv"], ["wkv"], "tkv", perm=[1, 0]),
                oh.make_node("MatMul", ["r", "wq"], ["q"], "q"),
                oh.make_node("MatMul", ["r", "wkv"], ["kv"], "kv"),
            ],
            "split-weight",
            [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
            [oh.make_tensor_value_info(n, TensorProto.FLOAT, ["N", d]) for n, d in (("q", 48), ("kv", 32))],
            [nh.from_array(w1.astype(np.float32), "w1"), nh.from_array(p.astype(np.float32), "p")]
            + [nh.from_array(np.array([48, 32], np.int64), "sizes")],
        )
        return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)])

    wide = model(np.concatenate([w1, w1], 1), np.concatenate([p, p], 1) / 2)
    _folds_back(tmp_path, model(w1, p), wide, rng.standard_normal((5, 16)), 16 * 64 + 80 * 64)


def _folds_back(tmp_path: Path, compact_model, wide_model, x: np.ndarray, params: int) -> None:
    """The oracle of the twins below: ``wide_model`` (group ``fc1``'s hidden units duplicated) folded at
    0.5 computes every output of ``compact_model`` and holds ``params`` parameters; at 0 it is bit for bit."""
    compact, wide = tmp_path / "compact.onnx", tmp_path / "wide.onnx"
    onnx.save(compact_model, compact)
    onnx.save(wide_model, wide)
    feed = {"x": x.astype(np.float32)}

    def run(path):
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)

    folded, same = tmp_path / "folded.onnx", tmp_path / "same.onnx"
    _, report = onnxfold.fold(wide, 0.5, folded, method="fold", repair="none", validate=False)
    assert [p.status for p in report.plans if p.group.name == "fc1"] == ["folded"]
    assert report.after.params == params
    for got, ref in zip(run(folded), run(compact), strict=True):
        assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()
    onnxfold.fold(wide, 0.0, same, validate=False)
    assert all(np.array_equal(a, b) for a, b in zip(run(same), run(wide), strict=True))
