"""A fold asked for no sparsity, target or recipe searches for the smallest model at the default
fidelity (``onnxfold.api.default_plan``); any of them restores the fixed fold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxfold
from onnxfold.api import default_plan
from onnxfold.cli.commands import main
from onnxfold.models import bundled_model
from onnxfold.passes import FoldPass, SearchPass
from onnxfold.passes.search import (
    DATA_FREE_MIN_FIDELITY,
    DEFAULT_MIN_FIDELITY,
    DEFAULT_TIME_LIMIT,
    FIXED_SPARSITY,
)

LENET = bundled_model("lenet5.onnx")
RESNET = bundled_model("resnet18.onnx")


def _option(cls, name: str):
    return next(o.default for o in cls.options if o.name == name)


def test_the_constants_agree_with_the_pass_options() -> None:
    assert FIXED_SPARSITY == _option(FoldPass, "sparsity")
    assert _option(SearchPass, "time_limit") == 0.0 and 0.0 < DEFAULT_MIN_FIDELITY < 1.0
    # the data-free proxy is further from the task than the user's samples: it must stay closer
    assert DEFAULT_MIN_FIDELITY < DATA_FREE_MIN_FIDELITY < 1.0
    assert DEFAULT_TIME_LIMIT > 0


@pytest.mark.parametrize(
    ("args", "want"),
    [
        ((None, 0.0, 0.0, 0.0, "", None), (FIXED_SPARSITY, DATA_FREE_MIN_FIDELITY, DEFAULT_TIME_LIMIT, True)),
        ((None, 0.0, 0.0, 0.0, None, 30.0), (FIXED_SPARSITY, DATA_FREE_MIN_FIDELITY, 30.0, True)),
        ((None, 0.0, 0.0, 0.0, "", 0.0), (FIXED_SPARSITY, DATA_FREE_MIN_FIDELITY, 0.0, True)),
        (
            (None, 0.0, 0.0, 0.0, "", None, True),
            (FIXED_SPARSITY, DEFAULT_MIN_FIDELITY, DEFAULT_TIME_LIMIT, True),
        ),
        ((None, 0.9, 0.0, 0.0, "", None, True), (FIXED_SPARSITY, 0.9, 0.0, False)),
        ((0.3, 0.0, 0.0, 0.0, "", None), (0.3, 0.0, 0.0, False)),
        ((0.0, 0.0, 0.0, 0.0, "", None), (0.0, 0.0, 0.0, False)),
        ((None, 0.9, 0.0, 0.0, "", None), (FIXED_SPARSITY, 0.9, 0.0, False)),
        ((None, 0.0, 0.2, 0.0, "", 10.0), (FIXED_SPARSITY, 0.0, 10.0, False)),
        ((None, 0.0, 0.0, 0.3, "", None), (FIXED_SPARSITY, 0.0, 0.0, False)),
        ((None, 0.0, 0.0, 0.0, "r.yaml", None), (FIXED_SPARSITY, 0.0, 0.0, False)),
    ],
)
def test_default_plan(args: tuple, want: tuple) -> None:
    assert default_plan(*args) == want


def _fold(capsys, out: Path, *flags) -> tuple[int, dict, str]:
    report = out.with_suffix(".json")
    rc = main(["fold", str(LENET), "-o", str(out), "--report", str(report), *map(str, flags)])
    stdout = capsys.readouterr().out
    return rc, json.loads(report.read_text()) if report.exists() else {}, stdout


def test_a_fold_asked_for_nothing_searches_at_the_default_fidelity(tmp_path: Path, capsys) -> None:
    rc, report, stdout = _fold(capsys, tmp_path / "o.onnx")
    assert rc == 0
    search = report["search"]
    assert search["default"] and search["mode"] == "min_fidelity" and search["met"]
    assert search["target"] == DATA_FREE_MIN_FIDELITY and search["fidelity"] >= DATA_FREE_MIN_FIDELITY
    assert [p["name"] for p in report["passes"]][:2] == ["canonicalize", "search"]
    assert "(the default without --sparsity or a target" in stdout
    onnx.checker.check_model(str(tmp_path / "o.onnx"), full_check=True)


@pytest.mark.parametrize(
    "flags",
    [["-s", "0.5"], ["--min-fidelity", "0.9"], ["--target-params", "0.2"]],
)
def test_a_sparsity_or_target_is_what_was_asked(tmp_path: Path, capsys, flags: list) -> None:
    rc, report, stdout = _fold(capsys, tmp_path / "o.onnx", *flags)
    assert rc == 0
    assert "(the default without --sparsity" not in stdout
    if flags[0] == "-s":
        assert report["search"] is None
        folded = [g for g in report["groups"] if g["status"] == "folded"]
        assert folded and all(g["sparsity"] == 0.5 for g in folded)
    else:
        assert report["search"]["default"] is False
        assert report["search"]["target"] == float(flags[1])


def test_a_recipe_without_a_sparsity_folds_as_it_says(tmp_path: Path, capsys) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("default: 0.25\n")
    rc, report, _ = _fold(capsys, tmp_path / "o.onnx", "--recipe", recipe)
    assert rc == 0 and report["search"] is None
    folded = [g for g in report["groups"] if g["status"] == "folded"]
    assert folded and all(g["sparsity"] == 0.25 for g in folded)


def test_the_api_searches_without_a_sparsity_and_folds_with_one() -> None:
    _, searched = onnxfold.fold(LENET, validate=False)
    assert searched.search is not None and searched.search.default
    _, fixed = onnxfold.fold(LENET, 0.5, validate=False)
    assert fixed.search is None


def test_the_default_search_keeps_an_override_as_asked(tmp_path: Path) -> None:
    """An override wins over the search and its sparsity is reported as asked, also where another
    sparsity rounds to the same width (0.2 and 0.25 of 64 channels both give 48 at round_to 8)."""
    # forced: that override alone misses 0.99 on the DeepInversion samples held out (0.9844)
    _, report = onnxfold.fold(RESNET, overrides=["layer4\\.0/conv1=0.25"], validate=False, force=True)
    assert report.search.default
    plan = next(p for p in report.plans if p.group.name == "/layer4/layer4.0/conv1/Conv")
    assert plan.k == 48 and plan.sparsity == 0.25


def test_validation_after_a_data_free_search_measures_on_its_samples(tmp_path: Path) -> None:
    """Validation drew 2 random inputs of its own and printed r2 0.78 under the search's 0.98 on 16:
    after a data-free search it measures the written model on the search's own samples."""
    _, report = onnxfold.fold(LENET, output=tmp_path / "o.onnx")
    search, validation = report.search, report.validation
    assert search.proxy and validation.seed is not None  # still reported as random inputs
    (shape,) = validation.inputs.values()
    assert shape[0] == search.chosen.outputs[0].samples > 2
    (out,) = validation.outputs
    assert out.fidelity_metric == search.chosen.outputs[0].metric
    assert out.fidelity == pytest.approx(search.chosen.fidelity)


@pytest.mark.parametrize("target", [["--min-fidelity", "0.9"], ["--target-macs", "0.3"]])
def test_a_sparsity_beside_a_target_is_refused_not_ignored(tmp_path: Path, capsys, target: list) -> None:
    """`-s 0.3 --min-fidelity 0.9` ran the search and never applied the 0.3, without a word."""
    out = tmp_path / "o.onnx"
    assert main(["fold", str(LENET), "-o", str(out), "-s", "0.3", *target]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "give one of them" in err and not out.exists()
    with pytest.raises(ValueError, match="give one of them"):
        onnxfold.fold(LENET, sparsity=0.0, min_fidelity=0.9)


def test_a_search_says_it_has_started(tmp_path: Path, capsys) -> None:
    """A default fold of DNSMOS sat silent in a log for 5 minutes (progress bars draw only on a
    terminal): a search now says what it looks for before it starts."""
    rc, _, stdout = _fold(capsys, tmp_path / "o.onnx")
    assert rc == 0
    first = stdout.splitlines()[0]
    assert (
        first
        == "no --sparsity given: searching for the smallest model at fidelity >= 0.99 on a data-free proxy (search time limit about 600 s, validation after it) ..."
    )
    x = tmp_path / "given.npy"  # on the user's own samples the default asks 0.95
    np.save(x, np.random.default_rng(0).standard_normal((8, 1, 8, 8)).astype(np.float32))
    rc, _, stdout = _fold(capsys, tmp_path / "o.onnx", "--inputs", x, "--overwrite")
    assert rc == 0 and stdout.splitlines()[0] == (
        "no --sparsity given: searching for the smallest model at fidelity >= 0.95 (0.99 if every output is "
        "a value read by r2: a regression) on the given samples (search time limit about 600 s, validation "
        "after it) ..."
    )
    rc, _, stdout = _fold(capsys, tmp_path / "o.onnx", "--target-macs", "0.3", "--overwrite")
    assert stdout.splitlines()[0].startswith(
        "searching for the model closest to the original at 30% fewer MACs"
    )
    rc, _, stdout = _fold(capsys, tmp_path / "o.onnx", "-s", "0.3", "--overwrite")
    assert "searching" not in stdout
    # two goals: the one-line refusal, with no announcement of a search that never starts
    rc, _, stdout = _fold(capsys, tmp_path / "o2.onnx", "--target-params", "0.3", "--min-fidelity", "0.9")
    assert rc == 2 and stdout == "" and not (tmp_path / "o2.onnx").exists()
    # samples given for --repair data only: the search still runs on the proxy, and says how to use them
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((4, 1, 8, 8), np.float32))
    rc, _, stdout = _fold(
        capsys,
        tmp_path / "o.onnx",
        "--repair",
        "data",
        "--calibration",
        x,
        "--time-limit",
        "120",  # 1 s passed before a candidate met the target on a loaded machine: exit 2, nothing written
        "--overwrite",
    )
    assert rc == 0 and stdout.splitlines()[0].endswith(
        "on a data-free proxy (--calibration feeds --repair data only: give the samples as --inputs to "
        "search on them) (search time limit about 120 s, validation after it) ..."
    )
    (tmp_path / "bad.onnx").write_bytes(LENET.read_bytes()[:100])  # a truncated model: its error alone
    assert main(["fold", str(tmp_path / "bad.onnx"), "-o", str(tmp_path / "b.onnx")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1


def test_the_data_free_default_keeps_whole_a_model_it_would_barely_shrink(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """Below DATA_FREE_MIN_GAIN of the parameters the data-free default writes the model whole (a ViT
    saliency model folded 0.3% changed the regions found on 15% of photos), reproducing it exactly
    and saying why; given samples, or an explicit target, write what the search found."""
    from onnxfold import api
    from onnxfold.passes.search import DATA_FREE_MIN_GAIN
    from onnxfold.runtime.session import make_session

    assert 0.0 < DATA_FREE_MIN_GAIN <= 0.05
    _, found = onnxfold.fold(LENET, validate=False)
    gain = found.search.chosen.reduction
    assert gain > DATA_FREE_MIN_GAIN and not found.search.kept_whole  # LeNet folds more: written
    monkeypatch.setattr(api, "DATA_FREE_MIN_GAIN", gain + 0.01)  # now the same search gains too little
    out = tmp_path / "whole.onnx"
    _, kept = onnxfold.fold(LENET, output=out, validate=False)
    assert kept.search.met and kept.search.chosen.reduction == 0.0 and kept.search.chosen.fidelity == 1.0
    # the pass table says the search changed nothing (khmertagger's read "search ... yes" for a model
    # written back as given), and that it changed the model where it folded
    modified = {r.name: r.modified for r in kept.passes}
    assert modified["search"] is False and {r.name: r.modified for r in found.passes}["search"] is True
    # the unchanged model the bisection measured is reused, not built and measured again
    assert [c.steps for c in kept.search.candidates].count(0) == 1
    best = max(
        (c for c in kept.search.candidates if c.meets(DATA_FREE_MIN_FIDELITY)), key=lambda c: c.reduction
    )
    assert 0.0 < best.reduction < gain + 0.01  # found, and too little
    assert f"the best candidate, {best.reduction:.1%} fewer parameters" in kept.search.kept_whole
    assert f"({best.macs_reduction:.1%} fewer MACs)" in kept.search.kept_whole
    assert (
        f"less than --min-gain {gain + 0.01:g} of either: the model is kept whole" in kept.search.kept_whole
    )
    assert "note: the best candidate" in kept.search.summary() and "kept whole" in kept.search.summary()
    # a min gain far beyond what passes: the bisection measures its far end, the unchanged model and
    # the step just before the first whose estimated saving reaches the gain; that one misses, and
    # nothing more is sought
    monkeypatch.setattr(api, "DATA_FREE_MIN_GAIN", 0.6)
    _, far = onnxfold.fold(LENET, output=tmp_path / "far.onnx", validate=False)
    steps = [c.steps for c in far.search.candidates]
    assert len(steps) == 3 and steps.count(0) == 1 and far.search.chosen.reduction == 0.0
    first = next(c for c in far.search.candidates if 0 < c.steps < max(steps))
    assert first.reduction > gain and not first.meets(DATA_FREE_MIN_FIDELITY)
    worth = "the first candidate worth" if first.reduction >= 0.6 else "a candidate short of"
    assert far.search.kept_whole.startswith(f"{worth} --min-gain 0.6, {first.reduction:.1%} fewer parameters")
    assert "are not sought" in far.search.kept_whole and "kept whole" in far.search.kept_whole
    # the headline says both halves of why: the candidate worth the gain missed the target
    assert "nothing folded: no candidate both meets the target and removes --min-gain 0.6" in far.format()
    # that note names the candidate; a second on the next larger one missed repeated it (GTCRN)
    assert "the next candidate measured that removes more" not in far.search.summary()
    monkeypatch.setattr(api, "DATA_FREE_MIN_GAIN", gain + 0.01)
    assert kept.search.to_dict()["kept_whole"] == kept.search.kept_whole
    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)
    want = make_session(str(LENET)).run(None, {"input": x})
    got = make_session(str(out)).run(None, {"input": x})
    for w, g in zip(want, got, strict=True):
        np.testing.assert_array_equal(w, g)
    samples = {
        "input": x.repeat(8, axis=0)
        + np.random.default_rng(1).standard_normal((32, 1, 8, 8)).astype(np.float32)
    }
    _, given = onnxfold.fold(LENET, inputs=samples, validate=False)
    _, explicit = onnxfold.fold(LENET, min_fidelity=DATA_FREE_MIN_FIDELITY, time_limit=600, validate=False)
    assert not given.search.kept_whole and not explicit.search.kept_whole
    # given samples have a floor of their own, and a note without the advice to give samples (a
    # nucleus segmenter's default search on 32 tiles wrote a fold 0.0065% smaller)
    assert 0.0 < api.GIVEN_MIN_GAIN < given.search.chosen.reduction
    monkeypatch.setattr(api, "GIVEN_MIN_GAIN", given.search.chosen.reduction + 0.01)
    # rounded as asked: unasked, a rounding that keeps the model whole gives way to exact widths,
    # which fold past the raised floor (test_exact_widths)
    _, small = onnxfold.fold(LENET, inputs=samples, validate=False, round_to=8)
    assert small.search.kept_whole and small.search.chosen.reduction == 0.0
    assert "kept whole" in small.search.kept_whole and "--inputs" not in small.search.kept_whole
    # there the gain is checked on the result only: no probe changes which candidates are measured
    # (each one more that passes on a few samples is one more chance of a lucky pass)
    _, off_given = onnxfold.fold(LENET, inputs=samples, min_gain=0.0, validate=False)
    assert [c.steps for c in small.search.candidates] == [c.steps for c in off_given.search.candidates]
    assert explicit.search.chosen.reduction == gain  # the same search, written as found
    # --min-gain sets it for any fidelity search, and 0 turns it off for the default
    out2 = tmp_path / "flag.onnx"
    args = ["fold", str(LENET), "-o", str(out2), "--min-fidelity", "0.9", "--min-gain", "0.99"]
    assert main(args) == 0
    flagged = capsys.readouterr().out  # no candidate LeNet's path holds removes 99% and passes
    assert "--min-gain 0.99" in flagged and "the model is kept whole" in flagged
    _, off = onnxfold.fold(LENET, min_gain=0.0, validate=False)
    assert off.search.default and off.search.chosen.reduction == gain and not off.search.kept_whole


def test_a_candidate_that_saves_macs_but_few_parameters_is_worth_the_gain(tmp_path: Path) -> None:
    """DeepFilterNet's encoder: its one foldable group held 0.4% of the parameters and 27.6% of the
    MACs; --min-gain weighed the parameters alone and kept the model whole. Here a Conv of 16
    channels, each twice (exact to fold to 8), beside a weight of 262K no group holds."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    a = rng.standard_normal((8, 1, 3, 3)).astype(np.float32)
    weights = {
        "A": np.concatenate([a, a]),
        "B": rng.standard_normal((4, 16, 3, 3)).astype(np.float32),
        "Big": rng.standard_normal((4096, 64)).astype(np.float32),
        "shape": np.array([-1, 4096], dtype=np.int64),
    }
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "A"], ["a"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["a"], ["r"]),
            helper.make_node("Conv", ["r", "B"], ["maps"], pads=[1, 1, 1, 1]),
            helper.make_node("Reshape", ["x", "shape"], ["flat"]),
            helper.make_node("MatMul", ["flat", "Big"], ["code"]),
        ],
        "macs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 64, 64])],
        [
            helper.make_tensor_value_info("maps", TensorProto.FLOAT, ["N", 4, 64, 64]),
            helper.make_tensor_value_info("code", TensorProto.FLOAT, ["N", 64]),
        ],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    src = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), src)
    x = {"x": rng.standard_normal((16, 1, 64, 64)).astype(np.float32)}
    # unrounded: at the 0.7 level the fold is no longer exact, so the measurement is not blind
    _, report = onnxfold.fold(str(src), inputs=x, validate=False, round_to=1)
    result = report.search
    assert result.chosen.reduction < 0.01 < result.chosen.macs_reduction, result.summary()
    assert not result.kept_whole and [p.group.size for p in report.plans if p.status == "folded"] == [16]


def test_a_budget_whose_pick_lost_the_task_on_the_given_samples_writes_nothing(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """A table classifier's --target-params 0.3 on 32 images picked a fold answering one class to
    every image (fidelity 0.0000) and wrote it with exit 0 beside a warning. A budget met by a model
    under the task warning's bar on the given samples writes nothing unless --force; here the bar is
    raised above LeNet-5's r2 at 65% fewer parameters (0.987) to stand for a collapse."""
    from onnxfold.models.digits import load_digits_split
    from onnxfold.runtime import compare

    x = tmp_path / "x.npy"
    np.save(x, load_digits_split()[2][:32])
    out = tmp_path / "o.onnx"
    argv = ["fold", str(LENET), "-o", str(out), "--target-params", "0.65", "--inputs", str(x)]
    assert main(argv) == 0 and out.exists()  # at the usual bar (0.9) it keeps the task: written
    out.unlink()
    capsys.readouterr()
    monkeypatch.setattr(compare, "TASK_WARNING_BELOW", 0.999)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and "65% fewer parameters reached" in err[0]
        and "but the candidate keeps logits r2 0.9" in err[0]
    ), err
    assert "nothing written" in err[0] and not out.exists()
    assert main([*argv, "--force"]) == 0 and out.exists()
    # data-free, the figure is a proxy's: a budget is written as asked, with the warning
    out.unlink()
    assert main(["fold", str(LENET), "-o", str(out), "--target-params", "0.65"]) == 0 and out.exists()


def test_values_and_decisions_by_shape() -> None:
    from onnxfold.search.regression import value_outputs, value_shape

    for values in [
        (32, 1),
        (32,),
        (32, 3, 64, 64),
        (32, 64, 64, 3),
        (32, 2, 24, 24),
        (32, 16000),
        (32, 100, 1),
        (32, 256, 4),
        (32, 3, 5700),
    ]:
        assert value_shape(values), values
    for wide in [(32, 384), (32, 12, 768), (32, 1000)]:
        assert not value_shape(wide), wide
    ref = {"img": np.zeros((4, 3, 32, 32)), "emb": np.zeros((4, 384)), "h": np.zeros((2, 4, 64))}
    assert value_outputs({"img": "r2"}, ref) == ["img"]
    assert value_outputs({"img": "r2", "emb": "r2"}, ref) == []  # an embedding beside it: 0.95
    assert value_outputs({"img": "mask+r2"}, ref) == []  # a decision
    assert value_outputs({"img": "r2", "emb": "none"}, ref) == ["img"]  # left out
    assert value_outputs({"img": "r2", "h": "r2"}, ref, ["h"]) == ["img"]  # a recurrent state aside
    wide = {"y": np.zeros((4, 7, 100), np.float32)}  # 7 features of 100 steps: no value by shape alone...
    assert value_outputs({"y": "r2"}, wide) == []
    like = {"x": np.zeros((4, 7, 100), np.float32)}
    assert value_outputs({"y": "r2"}, wide, feed=like) == ["y"]  # ...but shaped as its input is
    assert value_outputs({"y": "r2"}, wide, feed={"x": like["x"].astype(np.int64)}) == []  # ids: no signal


def test_a_default_search_on_samples_asks_more_of_values_than_of_decisions(tmp_path: Path) -> None:
    """An image-to-image map judged by r2 is a regression: its default target on given samples is
    0.99, and the result says why; LeNet's class scores keep 0.95."""
    from harness import conv_chain

    from onnxfold.search.regression import REGRESSION_MIN_FIDELITY

    rng = np.random.default_rng(0)
    maps = conv_chain(tmp_path / "maps.onnx", [3, 16, 16, 3])
    x = rng.standard_normal((16, 3, 8, 8)).astype(np.float32)
    _, report = onnxfold.fold(onnx.load(maps), inputs={"x": x}, validate=False, time_limit=60)
    assert report.search.default and report.search.target == REGRESSION_MIN_FIDELITY
    assert report.search.values == [o.name for o in onnx.load(maps).graph.output]
    assert "every output" in report.search.summary() and "read by r2" in report.search.summary()
    assert "read by r2" in report.search.to_dict()["default_target"]  # the JSON says why too
    assert report.search.chosen.fidelity >= REGRESSION_MIN_FIDELITY
    digits = rng.standard_normal((16, 1, 8, 8)).astype(np.float32)
    name = onnx.load(LENET).graph.input[0].name
    _, lenet = onnxfold.fold(LENET, inputs={name: digits}, validate=False, time_limit=60)
    assert lenet.search.target == DEFAULT_MIN_FIDELITY and not lenet.search.values
    # a target given is the user's, values or not
    _, asked = onnxfold.fold(onnx.load(maps), min_fidelity=0.9, inputs={"x": x}, validate=False)
    assert asked.search.target == 0.9 and not asked.search.values
