"""Inputs that share a symbolic dim get one size, and outputs that are not finite are compared without
warnings. minimol's graph network reads edge_feat [num_edges, 13] and edge_index [2, num_edges]: its
random inputs were drawn with 2 and 16 edges, its Expand refused them, and every fold stopped there;
on inputs it ran on its fingerprint was NaN, and numpy printed raw RuntimeWarnings."""

from __future__ import annotations

import warnings

import numpy as np
from onnx import TensorProto, helper

from onnxfold.runtime.compare import compare_outputs
from onnxfold.runtime.inputs import make_inputs
from onnxfold.runtime.session import make_session


def _edges_model():
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["edge_index"], ["fi"], to=TensorProto.FLOAT),
            helper.make_node("ReduceSum", ["fi"], ["s"], keepdims=0),
            helper.make_node("ReduceSum", ["edge_feat"], ["t"], keepdims=0),
            helper.make_node("Add", ["s", "t"], ["y"]),
        ],
        "edges",
        [
            helper.make_tensor_value_info("edge_feat", TensorProto.FLOAT, ["num_edges", 13]),
            helper.make_tensor_value_info("edge_index", TensorProto.INT64, [2, "num_edges"]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_inputs_that_share_a_symbolic_dim_are_drawn_at_one_size() -> None:
    proto = _edges_model()
    feed = make_inputs(make_session(proto))
    assert feed["edge_feat"].shape[0] == feed["edge_index"].shape[1]
    given = make_inputs(make_session(proto), shapes={"edge_index": [2, 40]})
    assert given["edge_feat"].shape == (40, 13)  # a size given for one input holds for the other


def test_outputs_that_are_not_finite_are_compared_without_warnings() -> None:
    ref = {"y": np.array([np.nan, 1.0, np.inf], np.float32)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (m,) = compare_outputs(ref, {"y": np.array([np.nan, 1.0, np.inf], np.float32)})
    assert m.exact and m.max_abs == 0.0  # positions non-finite in both hold no value: left out


def test_files_whose_inputs_differ_in_rows_are_refused_naming_why(tmp_path) -> None:
    """A folder of graphs that all have one shape was refused with a message that named two files of
    the same shapes as differing."""
    import pytest

    from onnxfold.runtime.sample_files import load_inputs

    folder = tmp_path / "graphs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        np.savez(
            folder / f"{i}.npz",
            edge_feat=rng.standard_normal((16, 13)).astype(np.float32),
            edge_index=rng.integers(0, 8, (2, 16)),
        )
    with pytest.raises(ValueError) as exc:
        load_inputs(folder, _edges_model())
    text = str(exc.value)
    assert "0.npz's inputs hold different numbers of rows (16 rows: edge_feat; 2 rows: edge_index)" in text
    assert "graph-shaped samples" in text
    assert " but " not in text  # no second file named as if it differed


def test_graphs_of_different_sizes_are_refused_before_padding_in_a_short_line(tmp_path, caplog) -> None:
    """caustic-nmr's protein graphs (19 inputs of nodes, edges and residues, every file its own sizes):
    the edges were padded with 0 under a warning, then refused in a line cut at 500 characters before
    its reason."""
    import logging

    import pytest

    from onnxfold.runtime.sample_files import load_inputs

    folder = tmp_path / "proteins"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, edges in enumerate((16, 24, 20)):
        np.savez(
            folder / f"{i}.npz",
            edge_feat=rng.standard_normal((edges, 13)).astype(np.float32),
            edge_index=rng.integers(0, 8, (2, edges)),
        )
    with caplog.at_level(logging.WARNING), pytest.raises(ValueError) as exc:
        load_inputs(folder, _edges_model())
    text = str(exc.value)
    assert "different numbers of rows (16 rows: edge_feat; 2 rows: edge_index)" in text, text
    assert "graph-shaped samples" in text and len(text) < 400, text
    assert not [r for r in caplog.records if "padded" in r.getMessage()]


def test_inputs_of_different_sizes_on_a_dim_the_model_names_alike_are_one_error_line(
    tmp_path, capsys
) -> None:
    """DeepFilterNet's decoder reads emb [1, S, 4] and c0 [1, 2, S, 3]: 100 frames beside 202 failed
    deep in the fold ("Add node '/Add_1' ... 100 by 202"), 13 s in; alike, they run."""
    import onnx

    from onnxfold.cli.commands import main

    graph = helper.make_graph(
        [
            helper.make_node("ReduceSum", ["emb", "last"], ["e"], keepdims=0),
            helper.make_node("ReduceSum", ["c0", "pair"], ["c"], keepdims=0),
            helper.make_node("Add", ["e", "c"], ["y"]),
        ],
        "decoder",
        [
            helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["B", "S", 4]),
            helper.make_tensor_value_info("c0", TensorProto.FLOAT, ["B", 2, "S", 3]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", "S"])],
        [helper.make_tensor(n, TensorProto.INT64, [len(v)], v) for n, v in (("last", [2]), ("pair", [1, 3]))],
    )
    src = tmp_path / "dec.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), src)
    rng = np.random.default_rng(0)
    bad, good = tmp_path / "bad.npz", tmp_path / "good.npz"
    emb = rng.standard_normal((4, 10, 4)).astype(np.float32)
    np.savez(bad, emb=emb, c0=rng.standard_normal((4, 2, 12, 3)).astype(np.float32))
    np.savez(good, emb=emb, c0=rng.standard_normal((4, 2, 10, 3)).astype(np.float32))
    out = tmp_path / "o.onnx"
    assert main(["fold", str(src), "-o", str(out), "-s", "0.3", "--inputs", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and "inputs 'emb' and 'c0' hold 10 and 12 on the dim the model names 'S'" in err[0]
    ), err
    assert not out.exists()
    assert main(["fold", str(src), "-o", str(out), "-s", "0.3", "--inputs", str(good)]) == 0


def test_a_sample_count_on_a_later_axis_named_alike_is_one_error_line(tmp_path, capsys) -> None:
    """flashvad reads feature [batch, 1, 43] beside its state recurrent [1, batch, 64] and caches [batch, 64, 2]: 32 features
    beside 16 states blamed "cache_0 and cache_1 differ in dim 2" after onnxruntime's GRU error."""
    import onnx

    from onnxfold.cli.commands import main

    graph = helper.make_graph(
        [
            helper.make_node("ReduceSum", ["feature", "both"], ["f"], keepdims=0),
            helper.make_node("Transpose", ["state"], ["t"], perm=[1, 0, 2]),
            helper.make_node("ReduceSum", ["t", "both"], ["s"], keepdims=0),
            helper.make_node("ReduceSum", ["cache", "both"], ["c"], keepdims=0),
            helper.make_node("Sum", ["f", "s", "c"], ["y"]),
        ],
        "stream",
        [
            helper.make_tensor_value_info("feature", TensorProto.FLOAT, ["batch", 1, 4]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [1, "batch", 3]),
            helper.make_tensor_value_info("cache", TensorProto.FLOAT, ["batch", 4, 2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])],
        [helper.make_tensor("both", TensorProto.INT64, [2], [1, 2])],
    )
    src = tmp_path / "stream.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), src)
    rng = np.random.default_rng(0)
    bad, good = tmp_path / "bad.npz", tmp_path / "good.npz"
    feature = rng.standard_normal((8, 1, 4)).astype(np.float32)
    cache = rng.standard_normal((8, 4, 2)).astype(np.float32)
    np.savez(bad, feature=feature, cache=cache, state=rng.standard_normal((1, 4, 3)).astype(np.float32))
    np.savez(good, feature=feature, cache=cache, state=rng.standard_normal((1, 8, 3)).astype(np.float32))
    out = tmp_path / "o.onnx"
    assert main(["fold", str(src), "-o", str(out), "-s", "0.3", "--inputs", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and "'feature' and 'state' hold 8 and 4 on the dim the model names 'batch'" in err[0]
    ), err
    assert not out.exists()
    assert main(["fold", str(src), "-o", str(out), "-s", "0.3", "--inputs", str(good)]) == 0
