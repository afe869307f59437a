"""The fold options are declared once, as pass Options: every option of the fold, repair and validate
passes has its ``onnxfold fold`` flag and its ``api.fold`` keyword, with the option's default."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

import onnxfold.api
from onnxfold.cli.commands import main
from onnxfold.cli.parser import PIPELINE_ONLY, RENAMED, SHARED, UNSET, build_parser, fold_flags, fold_passes
from onnxfold.models import bundled_model
from onnxfold.passes import FoldPass
from onnxfold.pipeline.options import Option

#: api.fold parameters that are not pass options (where the model comes from and goes to, and how).
NOT_OPTIONS = {
    "model",
    "output",
    "validate",
    "check",
    "external_data",
    "input_shapes",
    "input_values",  # set on the model, read wherever random samples are drawn
    "inputs",
    "overwrite",
    "repair_options",
    "dequantize",  # a pass before canonicalize, as validate is one after cleanup
    "requantize",  # the quantize pass after cleanup, its mode read from the model given
}

#: The flags ``onnxfold fold`` had before they were derived: none may disappear.
LEGACY_FLAGS = {
    "-s",
    "--sparsity",
    "--seed",
    "--override",
    "--ignore",
    "--round-to",
    "--recipe",
    "--no-validate",
    "--method",
    "--repair",
    "--calibration",
    "--features",
    "--n-init",
    "--cluster",
    "-o",
    "--output",
    "--report",
    "--check",
    "--external-data",
    "--input-shape",
    "--inputs",
    "--overwrite",
}


def _same(a: Any, b: Any) -> bool:
    """Equal defaults; a tuple default of a keyword matches a list default of an option."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return type(a) is type(b) and a == b


def _fold_action(option_strings: str) -> Any:
    fold = build_parser()._subparsers._group_actions[0].choices["fold"]  # noqa: SLF001
    return {s: a for a in fold._actions for s in a.option_strings}.get(option_strings)  # noqa: SLF001


def option_mismatches() -> list[str]:
    """Every disagreement between the pass Options, the ``onnxfold fold`` flags and ``api.fold``."""
    problems = []
    params = inspect.signature(onnxfold.api.fold).parameters
    fold_parser = build_parser()._subparsers._group_actions[0].choices["fold"]  # noqa: SLF001
    actions = {a.dest: a for a in fold_parser._actions}  # noqa: SLF001
    flags = fold_flags()
    covered = {(f.pass_cls.name, f.option.name) for f in flags} | set(SHARED) | PIPELINE_ONLY
    for cls in fold_passes():
        for opt in cls.options:
            if (cls.name, opt.name) not in covered:
                problems.append(f"{cls.name}.{opt.name}: no flag and not shared")
    for key, keyword in SHARED.items():
        if keyword not in params:
            problems.append(f"{key}: shares api.fold keyword {keyword!r}, which does not exist")
    options = {(cls.name, opt.name) for cls in fold_passes() for opt in cls.options}
    problems += [f"PIPELINE_ONLY names {p}.{o}, which is no option" for p, o in PIPELINE_ONLY - options]
    for pass_name, option_name in RENAMED:
        if not any(f.pass_cls.name == pass_name and f.option.name == option_name for f in flags):
            problems.append(f"RENAMED names {pass_name}.{option_name}, which is no option")
    for flag in flags:
        where = f"{flag.pass_cls.name}.{flag.option.name}"
        param = params.get(flag.keyword)
        if param is None or param.kind is not inspect.Parameter.KEYWORD_ONLY and flag.keyword != "sparsity":
            problems.append(f"{where}: api.fold has no keyword {flag.keyword!r}")
        elif not _same(param.default, None if flag.keyword in UNSET else flag.option.default):
            problems.append(
                f"{where}: api.fold {flag.keyword}={param.default!r}, option default {flag.option.default!r}"
            )
        action = actions.get(flag.keyword)
        if action is None or tuple(action.option_strings) != flag.flags:
            problems.append(f"{where}: onnxfold fold has no flag {'/'.join(flag.flags)}")
        elif not _same(action.default, None if flag.keyword in UNSET else flag.option.default):
            problems.append(
                f"{where}: flag default {action.default!r}, option default {flag.option.default!r}"
            )
    keywords = {f.keyword for f in flags}
    for name in params:
        if name not in keywords and name not in NOT_OPTIONS:
            problems.append(f"api.fold keyword {name!r} is no pass option (renamed or removed?)")
    return problems


def test_options_flags_and_api_keywords_agree() -> None:
    assert option_mismatches() == []


def test_legacy_flags_are_kept() -> None:
    missing = [flag for flag in sorted(LEGACY_FLAGS) if _fold_action(flag) is None]
    assert missing == []
    assert _fold_action("--override").dest == "overrides" and _fold_action("--override").metavar
    assert _fold_action("--no-verify").default is True  # a true bool option becomes --no-NAME
    assert _fold_action("--sparsity").type("0.25") == 0.25


@pytest.mark.parametrize(
    "change",
    ["added", "renamed", "default"],
)
def test_the_check_fails_when_an_option_changes_alone(change: str, monkeypatch) -> None:
    options = list(FoldPass.options)
    if change == "added":
        options.append(Option("new_knob", int, 3, "a new option"))
    elif change == "renamed":
        i = next(i for i, o in enumerate(options) if o.name == "n_init")
        options[i] = Option("restarts", int, 10, options[i].help)
    else:
        # an option whose flag has the option's default (round_to's, like sparsity's, is unset: None)
        i = next(i for i, o in enumerate(options) if o.name == "judge_limit")
        options[i] = Option("judge_limit", int, options[i].default + 1, options[i].help)  # any other default
    monkeypatch.setattr(FoldPass, "options", tuple(options))
    problems = option_mismatches()
    assert problems, change
    word = {"added": "new_knob", "renamed": "n_init", "default": "judge_limit"}[change]
    assert any(word in p for p in problems), problems


def test_cli_passes_every_flag_to_api_fold(tmp_path: Path, monkeypatch, capsys) -> None:
    """Each derived flag reaches api.fold under its keyword with the value given on the command line."""
    seen: dict[str, Any] = {}

    def fake_fold(model, **kwargs):
        seen.update(kwargs, model=model)
        raise ValueError("stop here")

    monkeypatch.setattr(onnxfold.api, "fold", fake_fold)
    argv = ["fold", str(bundled_model("lenet5.onnx")), "-o", str(tmp_path / "o.onnx")]
    argv += ["-s", "0.25", "--override", "fc1=0.1", "--override", "fc2=0", "--ignore", "conv1"]
    argv += ["--round-to", "4", "--seed", "7", "--method", "l2", "--features", "fused", "--n-init", "3"]
    argv += ["--cluster", "ward", "--no-verify", "--repair", "data", "--calibration", str(tmp_path)]
    argv += ["--batch-size", "5", "--goal", "reset", "--no-sequential", "--dir-samples", "6"]
    argv += ["--dir-iterations", "9", "--dir-seed", "4", "--validate-batch", "3", "--min-cosine", "0.5"]
    assert main(argv) == 2
    assert "stop here" in capsys.readouterr().err
    want = {
        "sparsity": 0.25,
        "overrides": ["fc1=0.1", "fc2=0"],
        "ignore": ["conv1"],
        "round_to": 4,
        "seed": 7,
        "method": "l2",
        "features": "fused",
        "n_init": 3,
        "cluster": "ward",
        "verify": False,
        "repair": "data",
        "calibration": str(tmp_path),
        "batch_size": 5,
        "goal": "reset",
        "sequential": False,
        "dir_samples": 6,
        "dir_iterations": 9,
        "dir_seed": 4,
        "validate_batch": 3,
        "min_cosine": 0.5,
        "recipe": "",
    }
    assert {k: seen[k] for k in want} == want
    assert {f.keyword for f in fold_flags()} <= set(seen)
