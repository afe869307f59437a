"""A search that writes nothing saves the widths ``--force`` would have written as a recipe, so that
``--recipe`` folds them without running the same search again (aisfx: a budget refused after 201 s,
then ``--force`` searched 162 s more for the same model)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

import onnxfold
from onnxfold.cli.commands import main
from onnxfold.cli.refused import recipe_path, with_recipe
from onnxfold.folding.recipe import allocation_recipe, parse_recipe
from onnxfold.models import bundled_model
from onnxfold.search.refusals import SearchRefused

OPTIONS = {"method": "fold", "repair": "none", "round_to": 1}
FLAGS = ["--method", "fold", "--repair", "none", "--round-to", "1"]


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> tuple[np.ndarray, str]:
    from onnxfold.models.digits import load_digits_split

    x = load_digits_split()[2][:32].astype(np.float32)
    path = tmp_path_factory.mktemp("x") / "x.npy"
    np.save(path, x)
    return x, str(path)


def _widths(report) -> dict[str, int]:
    return {p.group.name: (p.status, p.k) for p in report.plans}


def test_a_refused_budget_saves_the_widths_force_writes(tmp_path, capsys, samples) -> None:
    x, npy = samples
    src, out = str(bundled_model("lenet5.onnx")), tmp_path / "small.onnx"
    # 40% of LeNet-5's MACs keeps r2 0.858 on the digits: under the task bar, refused
    assert main(["fold", src, "-o", str(out), "--target-macs", "0.4", "--inputs", npy, *FLAGS]) == 2
    err = capsys.readouterr().err.strip()
    saved = recipe_path(out)
    assert not out.exists() and saved == tmp_path / "small.recipe.json" and saved.exists()
    assert "\n" not in err and f"--recipe {saved} in place of the target" in err
    _, forced = onnxfold.fold(src, target_macs=0.4, inputs={"input": x}, force=True, **OPTIONS)
    _, again = onnxfold.fold(
        src, output=tmp_path / "r.onnx", recipe=str(saved), inputs={"input": x}, **OPTIONS
    )
    assert forced.search.chosen.steps > 0
    assert _widths(again) == _widths(forced)  # the same widths, no search run
    assert again.search is None and forced.param_sparsity == pytest.approx(again.param_sparsity)


def test_a_recipe_group_rule_names_one_group_whole() -> None:
    recipe = parse_recipe(allocation_recipe({"/a/Conv": 0.25, "/a/Conv_1": 0.0, "/b/Split#1": 0.5}))
    group = lambda name, producers=(): SimpleNamespace(  # noqa: E731
        name=name, producers=list(producers), layer=None, kind="channels"
    )
    assert recipe.sparsity(group("/a/Conv")) == 0.25
    assert recipe.sparsity(group("/a/Conv_1", ["/a/Conv"])) == 0.0  # a producer's name is not the group's
    assert recipe.sparsity(group("/b/Split#1", ["/b/Split"])) == 0.5
    assert recipe.sparsity(group("/b/Split#0", ["/b/Split"])) == 0.0


def test_a_refusal_that_folds_nothing_saves_nothing(tmp_path) -> None:
    out = tmp_path / "o.onnx"
    assert with_recipe(SearchRefused("search: no", {"g": 0.0}), out) == "search: no"
    assert not recipe_path(out).exists()
    text = with_recipe(SearchRefused("search: no", {"g": 0.5}, exact=True), out)
    assert text.endswith("--round-to 1 in place of the target folds to them without searching again")
    assert json.loads(recipe_path(out).read_text()) == {
        "default": 0.0,
        "rules": [{"group": "g", "sparsity": 0.5}],
    }
    assert not list(tmp_path.glob(".*onnxfold-tmp"))
