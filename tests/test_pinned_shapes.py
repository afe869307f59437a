"""MACs at given input sizes follow the shape vectors an exporter computes from them.

all-MiniLM-L6-v2 exported at opset 11 (trial 121) builds its head reshapes' targets through
``Unsqueeze(Gather(Shape(x)))``, which ONNX's data propagation does not follow at that opset: at 14
tokens its MACs read 16.4M (the sequence taken as 1) instead of 149.5M. pyannote's segmentation model
(trial 120) convolves inside ``If(Shape(x)[1] == 1)``, and nothing after the If had a shape. Each
expected count here is worked out by hand from the layers' sizes.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

from onnxfold.report.stats import model_stats


def _const(name: str, value, dtype=np.int64) -> onnx.NodeProto:
    return oh.make_node("Constant", [], [name], value=nh.from_array(np.asarray(value, dtype=dtype), name))


def heads_model(opset: int) -> onnx.ModelProto:
    """x [B, T, 8] → MatMul 8×8 → Reshape to [B, T, 2, 4] (the target computed from Shape, as
    torch's legacy exporter writes it) → Transpose [B, 2, T, 4] → MatMul 4×6."""
    rng = np.random.default_rng(0)
    unsq = (
        (lambda i, o: oh.make_node("Unsqueeze", [i], [o], axes=[0]))
        if opset < 13
        else (lambda i, o: oh.make_node("Unsqueeze", [i, "axis0"], [o]))
    )
    nodes = [
        _const("axis0", [0]),
        oh.make_node("MatMul", ["x", "w1"], ["y"]),
        oh.make_node("Shape", ["y"], ["s"]),
        _const("i0", 0),
        _const("i1", 1),
        oh.make_node("Gather", ["s", "i0"], ["b"], axis=0),
        oh.make_node("Gather", ["s", "i1"], ["t"], axis=0),
        unsq("b", "b1"),
        unsq("t", "t1"),
        _const("heads", [2, 4]),
        oh.make_node("Concat", ["b1", "t1", "heads"], ["target"], axis=0),
        oh.make_node("Reshape", ["y", "target"], ["h"]),
        oh.make_node("Transpose", ["h"], ["ht"], perm=[0, 2, 1, 3]),
        oh.make_node("MatMul", ["ht", "w2"], ["z"]),
    ]
    graph = oh.make_graph(
        nodes,
        "heads",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "T", 8])],
        [oh.make_tensor_value_info("z", TensorProto.FLOAT, ["B", 2, "T", 6])],
        [
            nh.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w1"),
            nh.from_array(rng.standard_normal((4, 6)).astype(np.float32), "w2"),
        ],
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)])


@pytest.mark.parametrize("opset", [11, 13])
def test_macs_at_given_sizes_follow_a_computed_reshape_target(opset: int) -> None:
    model = heads_model(opset)
    onnx.checker.check_model(model, full_check=True)
    stats = model_stats(model, shapes={"x": [1, 10, 8]})
    assert stats.macs == 10 * 8 * 8 + 2 * 10 * 4 * 6
    assert stats.symbolic_dims == []


def sinc_model() -> onnx.ModelProto:
    """x [B, C, T] → If(C == 1) then Conv 1→4 (k 3) else Conv of x as [B·C, 1, T] → Conv 4→5 (k 3)."""
    rng = np.random.default_rng(1)
    then_branch = oh.make_graph(
        [oh.make_node("Conv", ["x", "wa"], ["ya"])],
        "then",
        [],
        [oh.make_tensor_value_info("ya", TensorProto.FLOAT, ["N", 4, "L"])],
    )
    else_branch = oh.make_graph(
        [
            _const("flat", [-1, 1, 0]),
            oh.make_node("Reshape", ["x", "flat"], ["xf"]),
            oh.make_node("Conv", ["xf", "wa"], ["yb"]),
        ],
        "else",
        [],
        [oh.make_tensor_value_info("yb", TensorProto.FLOAT, ["N", 4, "L"])],
    )
    nodes = [
        oh.make_node("Shape", ["x"], ["s"]),
        _const("i1", 1),
        oh.make_node("Gather", ["s", "i1"], ["c"], axis=0),
        oh.make_node("Equal", ["c", "i1"], ["one"]),
        oh.make_node("If", ["one"], ["y"], then_branch=then_branch, else_branch=else_branch),
        oh.make_node("Conv", ["y", "w2"], ["z"]),
    ]
    graph = oh.make_graph(
        nodes,
        "sinc",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "C", "T"])],
        [oh.make_tensor_value_info("z", TensorProto.FLOAT, ["B", 5, "L2"])],
        [
            nh.from_array(rng.standard_normal((4, 1, 3)).astype(np.float32), "wa"),
            nh.from_array(rng.standard_normal((5, 4, 3)).astype(np.float32), "w2"),
        ],
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


def test_macs_at_given_sizes_count_the_branch_an_if_takes_and_what_follows_it() -> None:
    model = sinc_model()
    onnx.checker.check_model(model, full_check=True)
    stats = model_stats(model, shapes={"x": [1, 1, 20]})
    assert stats.macs == 4 * 1 * 3 * 18 + 5 * 4 * 3 * 16  # the taken branch's Conv, then the last one
    assert stats.symbolic_dims == []


def test_macs_at_given_sizes_of_weights_in_an_external_file(tmp_path, caplog) -> None:
    """whatenc's classifier keeps even its 96-value biases in model.onnx.data: the light copy carried
    their file references to onnxruntime, which could not find the file, and every count at the
    samples' sizes warned "shape inference failed" (6 times in one fold) and lost its MACs."""
    path = tmp_path / "model.onnx"
    onnx.save(
        heads_model(13),
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx.data",
        size_threshold=0,
    )
    model = onnx.load(str(path), load_external_data=False)  # as the report reads a model: lazily
    assert model.graph.initializer[0].data_location == TensorProto.EXTERNAL
    with caplog.at_level("WARNING"):
        stats = model_stats(model, shapes={"x": [1, 10, 8]})
    assert not [r for r in caplog.records if "shape inference failed" in r.getMessage()]
    assert stats.macs == 10 * 8 * 8 + 2 * 10 * 4 * 6


def framed_audio_model() -> onnx.ModelProto:
    """x [B, 1600] → frames [B, 1600 / 160, 160], the count computed from Size(x) / B in float (no data
    propagation follows it, and no constant folding while B is free; a Keras CRNN's STFT) → MatMul
    160×64: 10 · 160 · 64 MACs a sample."""
    rng = np.random.default_rng(0)
    nodes = [
        oh.make_node("Shape", ["x"], ["s"]),
        _const("i0", [0]),
        _const("i1", [1]),
        oh.make_node("Slice", ["s", "i0", "i1"], ["b"]),
        oh.make_node("Size", ["x"], ["size"]),
        oh.make_node("Div", ["size", "b"], ["n"]),
        oh.make_node("Cast", ["n"], ["nf"], to=TensorProto.FLOAT),
        _const("hop", [160.0], np.float32),
        oh.make_node("Div", ["nf", "hop"], ["ff"]),
        oh.make_node("Cast", ["ff"], ["f"], to=TensorProto.INT64),
        _const("width", [160]),
        oh.make_node("Concat", ["b", "f", "width"], ["target"], axis=0),
        oh.make_node("Reshape", ["x", "target"], ["frames"]),
        oh.make_node("MatMul", ["frames", "w"], ["y"]),
    ]
    graph = oh.make_graph(
        nodes,
        "framed",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1600])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [nh.from_array(rng.standard_normal((160, 64)).astype(np.float32), "w")],
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)


def test_a_free_batch_alone_counts_the_frames_computed_inside(tmp_path) -> None:
    """With only the batch free and no size given, the fold's MACs are counted at batch 1, pinned:
    the frame count the graph computes from the input's length is then known (trial 193's CRNN read
    401K MACs for 40.9M)."""
    import onnxfold

    path = tmp_path / "framed.onnx"
    onnx.save(framed_audio_model(), path)
    assert model_stats(onnx.load(path)).macs == 160 * 64  # unpinned: the frames taken as 1
    _, report = onnxfold.fold(path, 0.0, validate=False)
    assert report.before.macs == 10 * 160 * 64
