"""``--jobs``: groups clustered in parallel with joblib give the same output bytes as one process,
a configured joblib backend is used, and the per-step timings of a fold add up."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from joblib import parallel_config, register_parallel_backend
from joblib._parallel_backends import ThreadingBackend

from onnxfold.api import fold
from onnxfold.cli.commands import main
from onnxfold.ir.model import load_model
from onnxfold.models.llama_onnx import build_llama_onnx

SMALL = dict(layers=3, hidden=64, intermediate=160, heads=8, vocab=50)


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small LLaMA-shaped fp16 model with external data (its tensors are memory-mapped when read)."""
    folder = tmp_path_factory.mktemp("llama")
    return Path(build_llama_onnx(folder / "m.onnx", dtype="float16", seed=3, **SMALL))


def fold_to(src, out: Path, jobs: int, **kw):
    _, report = fold(
        src, 0.4, out, jobs=jobs, validate=False, external_data=True, n_init=3, cluster="kmeans", **kw
    )
    return report


def output_bytes(path: Path) -> tuple[bytes, bytes]:
    return path.read_bytes(), path.with_name(path.name + ".data").read_bytes()


def out(tmp_path: Path, run: str) -> Path:
    """``<run>/m.onnx``: the same file name for every run (the model names its data file)."""
    (tmp_path / run).mkdir()
    return tmp_path / run / "m.onnx"


def test_two_jobs_give_the_same_bytes_as_one(llama: Path, tmp_path: Path) -> None:
    one = fold_to(llama, out(tmp_path, "one"), jobs=1)
    two = fold_to(llama, out(tmp_path, "two"), jobs=2)
    folded = [p for p in one.plans if p.status == "folded"]
    assert len(folded) == 2 * SMALL["layers"]  # heads and MLP of every layer: several groups to share out
    assert all(p.k < p.group.size for p in folded)
    assert [p.labels.tolist() for p in one.plans if p.labels is not None] == [
        p.labels.tolist() for p in two.plans if p.labels is not None
    ]
    assert output_bytes(tmp_path / "one" / "m.onnx") == output_bytes(tmp_path / "two" / "m.onnx")


def test_in_memory_model_folds_the_same_with_every_core(llama: Path, tmp_path: Path) -> None:
    """Tensors held in memory (not memory-mapped) travel to the workers as the group's arrays."""
    model = load_model(llama)
    for t in model.graph.tensors().values():
        if hasattr(t, "values"):
            t.values = np.array(t.values)  # noqa: PD011 (loads the lazy values into memory)
    one = fold_to(model.copy(), out(tmp_path, "one"), jobs=1)
    every = fold_to(model.copy(), out(tmp_path, "all"), jobs=-1)
    assert sum(p.status == "folded" for p in one.plans) == 2 * SMALL["layers"]
    assert output_bytes(tmp_path / "one" / "m.onnx") == output_bytes(tmp_path / "all" / "m.onnx")
    assert [p.k for p in one.plans] == [p.k for p in every.plans]


class CountingBackend(ThreadingBackend):
    """A joblib backend that counts the tasks it is given (stands in for a user's Dask or Ray)."""

    tasks = 0

    def submit(self, func, callback=None):
        CountingBackend.tasks += 1
        return super().submit(func, callback)

    def apply_async(self, func, callback=None):  # joblib before 1.5 names it so
        CountingBackend.tasks += 1
        return super().apply_async(func, callback)


def test_a_configured_joblib_backend_runs_the_groups(llama: Path, tmp_path: Path) -> None:
    register_parallel_backend("onnxfold-counting", CountingBackend)
    CountingBackend.tasks = 0
    with parallel_config(backend="onnxfold-counting"):
        report = fold_to(llama, out(tmp_path, "counted"), jobs=2)
    assert CountingBackend.tasks >= 1  # joblib may batch several groups into one task
    fold_to(llama, out(tmp_path, "one"), jobs=1)
    assert output_bytes(tmp_path / "counted" / "m.onnx") == output_bytes(tmp_path / "one" / "m.onnx")
    assert sum(p.status == "folded" for p in report.plans) == 2 * SMALL["layers"]


def test_step_times_add_up_to_at_most_the_wall_time(llama: Path, tmp_path: Path, monkeypatch) -> None:
    from onnxfold.folding import cluster

    # k-means labels an earlier fold of the same model left in this process would skip the clustering
    monkeypatch.setattr(cluster, "_memo", type(cluster._memo)())
    start = time.perf_counter()
    report = fold_to(llama, out(tmp_path, "t"), jobs=1, method="fold")  # every group clustered
    wall = time.perf_counter() - start
    steps = report.steps
    for name in ("read", "features", "cluster", "rewrite", "save"):
        assert steps.get(name, 0.0) > 0.0, (name, steps)
    # exclusive steps, each counted once: together no longer than the run itself, in wall and CPU time
    assert sum(steps.values()) <= wall
    assert set(report.steps_cpu) == set(steps) and 0 < sum(report.steps_cpu.values()) <= wall
    data = json.loads(json.dumps(report.to_dict()))
    assert data["steps"] == steps
    fold_stats = next(p["stats"] for p in data["passes"] if p["name"] == "fold")
    assert set(fold_stats["steps"]) <= set(steps) and "save" not in fold_stats["steps"]
    groups = [g for g in data["groups"] if g["status"] == "folded"]
    assert groups and all(g["seconds"]["read"] > 0 and g["seconds"]["cluster"] > 0 for g in groups)
    assert all(set(g["cpu_seconds"]) == set(g["seconds"]) for g in groups)
    per_group = sum(g["seconds"]["cluster"] for g in groups)
    assert per_group == pytest.approx(steps["cluster"], abs=1e-2)


def test_bad_jobs_is_one_line(llama: Path, tmp_path: Path, capsys) -> None:
    for flag, value in (("--jobs", "0"), ("--threads", "-2")):
        rc = main(["fold", str(llama), "-o", str(tmp_path / "o.onnx"), "--no-validate", flag, value])
        err = capsys.readouterr().err
        assert rc != 0 and flag[2:] in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def _recorded_threads(monkeypatch) -> list:
    """The ``threads`` of every onnxruntime session made from now on (None where not given)."""
    import onnxfold.runtime.session as session

    seen: list = []
    make = session.make_session

    def recording(*args, **kw):
        seen.append(kw.get("threads"))
        return make(*args, **kw)

    monkeypatch.setattr(session, "make_session", recording)
    return seen


def test_threads_sets_the_threads_of_the_runs_a_search_measures_on(tmp_path: Path, monkeypatch) -> None:
    """auto's judge and the target search run onnxruntime on ``--threads`` threads (every core by
    default: on one, a search used half of a 2-core machine); the model written is the same on one
    thread, on two and on the default."""
    import onnxfold.runtime.session as session
    from onnxfold.models import bundled_model
    from onnxfold.models.digits import load_digits_split

    seen = _recorded_threads(monkeypatch)
    x = load_digits_split()[2][:16]
    outs = {}
    for threads in (1, 2, 0):
        seen.clear()
        outs[threads] = tmp_path / f"t{threads}.onnx"
        fold(
            bundled_model("lenet5.onnx"),
            output=outs[threads],
            min_fidelity=0.9,
            inputs={"input": x},
            threads=threads,
        )
        measured = [t for t in seen if t is not None]
        assert measured and set(measured) == {threads or session.usable_cores()}, set(measured)
    with session.measuring_threads(3):
        fold(bundled_model("lenet5.onnx"), output=tmp_path / "x.onnx", min_fidelity=0.9, inputs={"input": x})
        assert session.measure_threads() == 3  # restored after the fold
    assert session.measure_threads() == session.usable_cores()
    assert outs[1].read_bytes() == outs[2].read_bytes() == outs[0].read_bytes()


def test_analyze_sensitivity_takes_threads_as_a_search_does(tmp_path: Path, monkeypatch, capsys) -> None:
    """A table classifier's `analyze --sensitivity --threads 1` was refused ("unrecognized arguments"),
    though the table is measured as the search measures; the table is the same on any count."""
    import numpy as np

    from onnxfold.models import bundled_model
    from onnxfold.models.digits import load_digits_split

    seen = _recorded_threads(monkeypatch)
    x = tmp_path / "x.npy"
    np.save(x, load_digits_split()[2][:16])
    tables = {}
    for threads in ("1", "2"):
        seen.clear()
        argv = ["analyze", str(bundled_model("lenet5.onnx")), "--sensitivity", "--inputs", str(x), "--json"]
        assert main([*argv, "--threads", threads]) in (0, None)
        tables[threads] = json.loads(capsys.readouterr().out)["groups"]
        measured = [t for t in seen if t is not None]
        assert measured and set(measured) == {int(threads)}, set(measured)
    assert tables["1"] == tables["2"]


def test_run_takes_threads_for_its_passes_measurements(tmp_path: Path, monkeypatch) -> None:
    """A face detector's `onnxfold run ... --threads 1` was refused ("unrecognized arguments"); the
    fold's judge, the validation and the quantizer's calibration now run on that many threads, and a
    fold pass's own threads= wins."""
    import numpy as np

    from onnxfold.models import bundled_model
    from onnxfold.models.digits import load_digits_split

    seen = _recorded_threads(monkeypatch)
    x = tmp_path / "x.npy"
    np.save(x, load_digits_split()[2][:16])
    base = ["run", str(bundled_model("lenet5.onnx")), "-o", str(tmp_path / "o.onnx"), "--inputs", str(x)]
    pipeline = "canonicalize,fold:sparsity=0.3{},cleanup,validate"
    assert main([*base, "--pipeline", pipeline.format(""), "--threads", "1"]) in (0, None)
    measured = [t for t in seen if t is not None]
    assert measured and set(measured) == {1}, set(measured)
    seen.clear()
    assert main([*base, "--pipeline", pipeline.format(",threads=2"), "--threads", "1", "--overwrite"]) in (
        0,
        None,
    )
    measured = [t for t in seen if t is not None]
    assert 2 in measured, set(measured)  # the fold pass's own count for its runs
