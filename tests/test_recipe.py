"""Per-layer recipes: parsing, block indices, kinds, and their effect on a transformer fold."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import onnxfold
from onnxfold.analysis.groups import ChannelGroup, Member
from onnxfold.folding.recipe import RecipeError, load_recipe, parse_recipe


def group(name: str, unit: int = 1, producers=()) -> ChannelGroup:
    return ChannelGroup(name, 8, [Member("w", 0, "average")], list(producers) or [name], unit=unit)


def test_layer_index_and_kind_come_from_names():
    assert group("/model/layers.11/mlp/gate_proj/MatMul").layer == 11
    assert group("/m/encoder/layer.3/attention/self/query/MatMul", unit=8).layer == 3
    assert group("transformer.h.7.attn").layer == 7
    assert group("/conv1/Conv").layer is None
    assert group("q", unit=64).kind == "heads" and group("fc1").kind == "channels"


def test_rules_apply_by_layer_and_kind_later_rules_win():
    recipe = parse_recipe(
        {
            "default": 0.05,
            "rules": [
                {"layers": "1-2", "heads": 0.25, "mlp": 0.5},
                {"layers": [2], "sparsity": 0.75},
                {"match": "lm_head", "sparsity": 0.0},
            ],
        }
    )
    assert recipe.sparsity(group("layers.0.fc1")) == 0.05
    assert recipe.sparsity(group("layers.1.fc1")) == 0.5
    assert recipe.sparsity(group("layers.1.q", unit=4)) == 0.25
    assert recipe.sparsity(group("layers.2.q", unit=4)) == 0.75
    assert recipe.sparsity(group("lm_head")) == 0.0


@pytest.mark.parametrize(
    "bad",
    [
        {"rules": [{"layers": "5-2", "mlp": 0.1}]},
        {"rules": [{"mlp": 1.5}]},
        {"rules": [{"layerz": 1}]},
        {"rules": [{"match": "(", "mlp": 0.1}]},
        [1, 2],
    ],
)
def test_bad_recipes_raise_one_line_errors(bad):
    with pytest.raises(RecipeError) as err:
        parse_recipe(bad)
    assert "\n" not in str(err.value)


def test_shipped_llama_recipe_matches_the_paper():
    from importlib import resources

    recipe = load_recipe(str(resources.files("onnxfold.models") / "recipes" / "llama-7b.yaml"))
    heads = [recipe.sparsity(group(f"layers.{i}.q", unit=128)) for i in range(32)]
    mlp = [recipe.sparsity(group(f"layers.{i}.up")) for i in range(32)]
    assert heads[:11] == [0.0] * 11 and heads[11:22] == [0.1] * 11 and heads[22:30] == [0.2] * 8
    assert mlp[11:22] == [0.4] * 11 and mlp[22:30] == [0.5] * 8 and mlp[30:] == [0.0, 0.0]


@pytest.mark.parametrize("style", ["legacy", "dynamo"])
def test_recipe_folds_only_the_named_blocks(tmp_path, style):
    from onnxfold.models.export import export_onnx
    from onnxfold.models.transformer import TinyTransformer

    torch.manual_seed(0)
    model = TinyTransformer(depth=3).eval()
    path = export_onnx(model, tmp_path / "t.onnx", torch.randn(2, 5, 32), style)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "default: 0.0\nrules:\n  - layers: 1-2\n    heads: 0.5\n    mlp: 0.25\n  - layers: 2\n    mlp: 0.5\n"
    )
    _, report = onnxfold.fold(path, 0.9, tmp_path / "f.onnx", recipe=recipe, check=True)
    widths = {(p.group.layer, p.group.kind): (p.group.size, p.k) for p in report.plans if p.group.foldable}
    assert widths == {
        (0, "heads"): (4, 4),
        (0, "channels"): (64, 64),
        (1, "heads"): (4, 2),
        (1, "channels"): (64, 48),
        (2, "heads"): (4, 2),
        (2, "channels"): (64, 32),
    }
    assert report.validation.outputs[0].shape_match


@pytest.mark.parametrize("style", ["legacy", "dynamo"])
def test_recipe_on_a_twin_folds_the_named_layers_back_exactly(tmp_path, style):
    """A recipe run with a numeric oracle: in the exact twin of a 3-block transformer (every head and MLP
    neuron duplicated), folding heads and MLPs of layers 1-2 at 0.5 leaves layer 0 wide and gives the compact
    function back."""
    from onnxfold.models.export import export_onnx
    from onnxfold.models.transformer import TinyTransformer, duplicate_heads
    from onnxfold.runtime.session import make_session

    torch.manual_seed(0)
    compact = TinyTransformer(depth=3).eval()
    x = torch.randn(2, 5, 32)
    ref_path = export_onnx(compact, tmp_path / "c.onnx", x, style)
    wide_path = export_onnx(duplicate_heads(compact), tmp_path / "w.onnx", x, style)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("default: 0.0\nrules:\n  - layers: 1-2\n    heads: 0.5\n    mlp: 0.5\n")
    _, report = onnxfold.fold(
        wide_path, 0.9, tmp_path / "f.onnx", recipe=recipe, repair="none", validate=False
    )
    widths = {(p.group.layer, p.group.kind): (p.group.size, p.k) for p in report.plans if p.group.foldable}
    assert widths == {
        (0, "heads"): (8, 8),
        (0, "channels"): (128, 128),
        (1, "heads"): (8, 4),
        (1, "channels"): (128, 64),
        (2, "heads"): (8, 4),
        (2, "channels"): (128, 64),
    }
    feed = np.random.default_rng(0).standard_normal((3, 5, 32)).astype(np.float32)
    sessions = [make_session(p) for p in (ref_path, tmp_path / "f.onnx")]
    ref, got = (s.run(None, {s.get_inputs()[0].name: feed})[0] for s in sessions)
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
