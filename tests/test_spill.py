"""Spilling: a fold of a model larger than memory keeps rewritten tensors in a scratch file, and the
result is byte-identical to the in-memory fold."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx_graphsurgeon as gs
import pytest

import onnxfold.ir.model as fio
from onnxfold.api import run_pipeline
from onnxfold.ir.model import ExternalValues, load_model, peek_values, save_model, set_values, spilling


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.is_file()}


def test_set_values_spills_large_arrays_and_reads_them_back(tmp_path: Path) -> None:
    const = gs.Constant("w", np.zeros((4, 4), np.float32))
    big = np.arange(64 * 64, dtype=np.float16).reshape(64, 64)
    small = np.ones(3, np.float32)
    with spilling(tmp_path, min_bytes=1024) as store:
        set_values(const, big)
        assert isinstance(const._values, ExternalValues)
        assert tuple(const.shape) == (64, 64) and const.dtype == np.float16
        view = peek_values(const)
        assert np.array_equal(view, big) and isinstance(const._values, ExternalValues)  # peek does not cache
        tiny = gs.Constant("b", np.zeros(3, np.float32))
        set_values(tiny, small)
        assert isinstance(tiny._values, np.ndarray)
        scratch = store.path
        assert scratch.parent == tmp_path.absolute() and scratch.stat().st_size >= big.nbytes
        del view
    assert not scratch.exists()  # the scratch file goes with the block


@pytest.mark.parametrize("style", ["legacy", "dynamo"])
def test_spilled_fold_is_byte_identical_to_the_in_memory_fold(exported, tmp_path: Path, style: str) -> None:
    src = exported("resnet18", style).wide
    outs = {}
    for spill in (False, True):
        folder = tmp_path / f"spill-{spill}"
        folder.mkdir()
        run_pipeline(src, _passes(), folder / "f.onnx", external_data=True, spill=spill)
        outs[spill] = snapshot(folder)
    assert sorted(outs[True]) == ["f.onnx", "f.onnx.data"]  # no scratch file left behind
    assert outs[True] == outs[False]


def test_spilled_fold_without_output_returns_values_in_memory(exported, tmp_path: Path) -> None:
    src = tmp_path / "m.onnx"
    shutil.copy(exported("resnet18", "legacy").wide, src)
    model, _ = run_pipeline(src, _passes(), spill=True)
    assert not any(d != model.base_dir for d in fio.data_dirs(model.graph).values())
    save_model(model, tmp_path / "o.onnx")
    ref, _ = run_pipeline(src, _passes(), tmp_path / "r.onnx", spill=False)
    assert (tmp_path / "o.onnx").read_bytes() == (tmp_path / "r.onnx").read_bytes()


def test_lazy_weights_stay_lazy_through_a_spilled_fold(exported, tmp_path: Path) -> None:
    """Every weight a spilled fold reads stays on disk: none is cached in the graph."""
    src = tmp_path / "m.onnx"
    run_pipeline(exported("resnet18", "legacy").wide, [], src, external_data=True, spill=False)
    model = load_model(src)
    lazy_before = set(fio.data_dirs(model.graph))
    (tmp_path / "scratch").mkdir()
    with spilling(tmp_path / "scratch", min_bytes=0):
        from onnxfold.pipeline.manager import PassContext, PassManager

        PassManager(_passes()).run(model, PassContext(original=model.copy()))
        dirs = fio.data_dirs(model.graph)
        tensors = model.graph.tensors()
        cached = [n for n in lazy_before if n in tensors and n not in dirs]
        assert lazy_before and not cached
        assert (
            tmp_path / "scratch"
        ).absolute() in dirs.values()  # rewritten weights live in the scratch file


def _passes():
    from onnxfold.passes import CanonicalizePass, CleanupPass, FoldPass, RepairPass

    return [CanonicalizePass(), FoldPass(sparsity=0.5, verify=False), RepairPass(mode="ar"), CleanupPass()]
