"""Hugging Face transformers built from configs (offline): heads and MLPs fold with a recipe."""
from __future__ import annotations

import os
import warnings

import numpy as np
import onnx
import pytest

import onnxfold
from onnxfold.validate import make_session

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

RECIPE = "default: 0.0\nrules:\n  - layers: 0-1\n    heads: 0.5\n    mlp: 0.5\n"


class LastHidden(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, **call: bool) -> None:
        super().__init__()
        self.model, self.call = model, call

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, **self.call).last_hidden_state


def build(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    common = dict(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=64, attn_implementation="eager")
    if kind == "llama":
        return LastHidden(transformers.LlamaModel(transformers.LlamaConfig(**common)).eval(), use_cache=False)
    return LastHidden(transformers.BertModel(transformers.BertConfig(**common)).eval())


def export(model: torch.nn.Module, path, style: str):
    ids = torch.randint(0, 100, (2, 7))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if style == "legacy":
            torch.onnx.export(model, (ids,), str(path), dynamo=False, input_names=["input_ids"],
                              output_names=["hidden"], dynamic_axes={"input_ids": {0: "batch", 1: "seq"}},
                              opset_version=17)
        else:
            torch.onnx.export(model, (ids,), str(path), input_names=["input_ids"], output_names=["hidden"],
                              dynamic_shapes={"input_ids": {0: torch.export.Dim("batch"),
                                                            1: torch.export.Dim("seq")}})
    return path


def io_signature(path) -> list:
    graph = onnx.load(str(path), load_external_data=False).graph
    sig = []
    for v in list(graph.input) + list(graph.output):
        dims = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        sig.append((v.name, dims))
    return sig


@pytest.mark.parametrize(("kind", "style"), [("llama", "dynamo"), ("bert", "legacy"), ("bert", "dynamo")])
def test_tiny_transformer_folds_heads_and_mlp_with_a_recipe(tmp_path, kind, style):
    src = export(build(kind), tmp_path / "m.onnx", style)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    out = tmp_path / "f.onnx"
    _, report = onnxfold.fold(src, 0.0, out, recipe=recipe, check=True)
    onnx.checker.check_model(str(out), full_check=True)
    assert io_signature(out) == io_signature(src)  # names and symbolic dims unchanged
    folded = [p for p in report.plans if p.status == "folded"]
    kinds = {(p.group.kind, p.group.layer) for p in folded}
    assert kinds == {("heads", 0), ("heads", 1), ("channels", 0), ("channels", 1)}
    assert all(p.k == p.group.size // 2 for p in folded)
    heads = [p for p in folded if p.group.kind == "heads"]
    assert all(p.group.size == 4 and p.group.unit == 16 for p in heads)
    ids = np.random.default_rng(0).integers(0, 100, (3, 9)).astype(np.int64)
    got = make_session(str(out)).run(None, {"input_ids": ids})[0]
    ref = make_session(str(src)).run(None, {"input_ids": ids})[0]
    assert got.shape == ref.shape == (3, 9, 64) and np.isfinite(got).all()
    assert report.after.params < report.before.params
    text = report.format()
    assert "heads" in text and "channels" in text
