"""``onnxfold bench llm`` without its download: a tiny random LLaMA built from a config stands in for
SmolLM2 (same export path, tied embedding as in SmolLM2), the text finder runs on made-up folders."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from onnxfold.bench import llm
from onnxfold.bench.llm_model import export_causal_lm, missing, require
from onnxfold.bench.llm_text import FALLBACK, eval_windows, find_text, fit_samples, gpl3_part, normalise

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

VOCAB = 256


class TinyLlama:
    """A bench model: a 2-layer LLaMA with random weights and a byte tokenizer."""

    name = "tiny-llama"

    def __init__(self, folder: Path) -> None:
        torch.manual_seed(0)
        config = transformers.LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            tie_word_embeddings=True,
        )
        self.torch_model = transformers.LlamaForCausalLM(config).eval()
        self.path = folder / "tiny.onnx"
        self.check = export_causal_lm(self.torch_model, self.path, VOCAB)

    def onnx(self) -> Path:
        return self.path

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode(), dtype=np.uint8).astype(np.int64)

    def describe(self) -> dict:
        return {"model": self.name}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyLlama:
    return TinyLlama(tmp_path_factory.mktemp("tiny-llm"))


def test_export_matches_torch(tiny: TinyLlama) -> None:
    assert tiny.check < 1e-4


def test_perplexity_and_agreement_against_torch(tiny: TinyLlama) -> None:
    windows = np.random.default_rng(3).integers(0, VOCAB, (2, 24)).astype(np.int64)
    with torch.no_grad():
        logits = tiny.torch_model(input_ids=torch.from_numpy(windows), use_cache=False).logits.double()
    nll = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, VOCAB), torch.from_numpy(windows[:, 1:]).reshape(-1)
    )
    got = llm.score(tiny.path, windows)
    assert got["nll"] == pytest.approx(float(nll), rel=1e-5)
    assert got["perplexity"] == pytest.approx(math.exp(float(nll)), rel=1e-5)
    top1 = logits[:, :-1].argmax(-1).numpy()
    assert (got["top1"] == top1).mean() > 0.99  # float32 ties aside
    changed = got["top1"].copy()
    changed[0, :6] = (changed[0, :6] + 1) % VOCAB
    assert llm.score(tiny.path, windows, changed)["agreement"] == pytest.approx(1 - 6 / changed.size)


def test_nll_of_a_known_distribution() -> None:
    logits = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8], [1 / 3, 1 / 3, 1 / 3]]))
    nll, top1 = llm.nll_and_top1(logits.astype(np.float32), np.array([0, 1, 2]))
    assert nll == pytest.approx([-math.log(0.25), -math.log(0.8)], rel=1e-6)
    assert top1.tolist() == [0, 2]


def test_match_sparsity_lands_on_the_nearest_width() -> None:
    sizes, per, total = [1536] * 30, 1728.0, 134_515_045
    step = 30 * 8 * per / total  # one multiple of 8 in every group
    for target in (0.05, 0.1, 0.2):
        sparsity, predicted = llm.match_sparsity(sizes, per, total, target)
        k = round(1536 * (1 - sparsity))
        assert k % 8 == 0 and abs(predicted - target) <= step / 2 + 1e-12
        assert predicted == pytest.approx((1536 - k) * 30 * per / total)
    # mixed widths, unrounded: the best uniform sparsity over both groups
    sparsity, predicted = llm.match_sparsity([10, 20], 1.0, 100, 0.09, round_to=1)
    assert predicted == pytest.approx(0.09) and sparsity == pytest.approx(0.3)
    with pytest.raises(ValueError, match="no foldable group"):
        llm.match_sparsity([], 1.0, 10, 0.1)


def test_probe_predicts_the_fold(tiny: TinyLlama, tmp_path: Path) -> None:
    shape = llm.probe(tiny.path)
    assert shape["sizes"] == [128, 128] and shape["per_channel"] == 3 * 64
    sparsity, predicted = llm.match_sparsity(shape["sizes"], shape["per_channel"], shape["params"], 0.2)
    report = llm.compress(tiny.path, tmp_path / "c.onnx", llm.METHODS["l2"], 0.2, sparsity, None)
    assert llm.reduction_of(report, shape["overhead"]) == pytest.approx(predicted)


def test_methods_parse_with_their_sample_count() -> None:
    assert llm.parse_methods(["l2", "fold:ar", "wanda:32", "auto", "target:32"], 32) == [
        "l2",
        "fold:ar",
        "wanda",
        "auto",
        "target",
    ]
    assert [llm.label(m, 8) for m in ("fold", "auto")] == ["fold", "auto:8"]
    for bad in ("wanda:16", "l2:32", "nope", "fold:dir"):
        with pytest.raises(ValueError, match="unknown method"):
            llm.parse_methods([bad], 32)


GPL = "  GNU GENERAL PUBLIC LICENSE\n     Version 3, 29 June 2007\n\n\n Preamble {}\n END OF TERMS AND CONDITIONS\nHow to apply"


def test_text_finder_picks_the_commonest_copy_and_falls_back(tmp_path: Path) -> None:
    shipped = find_text([tmp_path])
    assert shipped.source == "shipped" and shipped.text == normalise(FALLBACK) and shipped.copies == 0
    for folder, body, name in (("a", "x", "LICENSE"), ("b", "y", "COPYING.txt"), ("c", "y", "LICENCE.md")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).write_text("MIT license first\n" + GPL.format(body))
    (tmp_path / "a" / "README").write_text(GPL.format("z"))  # not a license file name
    found = find_text([tmp_path])
    assert found.copies == 2 and found.source == str(tmp_path / "b" / "COPYING.txt")
    assert found.text.startswith("GNU GENERAL PUBLIC LICENSE\nVersion 3")
    assert found.text.endswith("Preamble y\nEND OF TERMS AND CONDITIONS")
    assert gpl3_part("GNU GENERAL PUBLIC LICENSE Version 2, June 1991") is None


def test_windows_and_fitting_samples_are_disjoint() -> None:
    ids = np.arange(5000)
    windows = eval_windows(ids, 1024, 2, 2048)
    assert windows.shape == (2, 1024) and windows[-1, -1] == 2047
    fit = fit_samples(ids[windows.size :], 32, 64)
    assert fit.shape == (32, 64) and fit.min() == 2048 and fit.max() == 4999
    short = eval_windows(np.arange(600), 1024, 2, 2048)  # the shipped text's case: one shorter window
    assert short.shape == (1, 300)
    assert fit_samples(np.arange(300, 600), 32, 64).shape == (32, 64)
    with pytest.raises(ValueError, match="too few"):
        eval_windows(np.arange(40), 1024, 2, 2048)


def test_missing_packages_are_named() -> None:
    assert missing({"numpy": "numpy"}) == []
    with pytest.raises(ImportError, match="pip install no-such-pkg-x"):
        require({"no_such_pkg_x": "no-such-pkg-x"})


def test_cli_runs_the_bench_on_an_injected_model(
    tiny: TinyLlama, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from onnxfold.cli.commands import main

    monkeypatch.setattr(llm, "SmolLM2", lambda cache: tiny)
    monkeypatch.setattr(llm, "find_text", lambda: find_text([tmp_path / "none"]))
    out = tmp_path / "out"
    argv = ["bench", "llm", "--methods", "l2,fold:ar,wanda:4,auto:4,target:4", "--reductions", "0.3"]
    argv += ["--samples", "4", "--sample-length", "16", "--window", "64", "-o", str(out)]
    assert main(argv) == 0
    record = json.loads((out / "llm.json").read_text())
    assert record["text"]["source"] == "shipped" and record["windows"] == [2, 64]
    assert record["fit_samples"] == [4, 16]
    points = record["points"]
    assert [p["method"] for p in points[:5]] == ["l2", "fold:ar", "wanda:4", "auto:4", "target:4"]
    assert all(not p.get("error") for p in points), [p.get("error") for p in points]
    assert all(p["perplexity"] > 1 and 0 <= p["agreement"] <= 1 for p in points)
    uniform = [p for p in points if p["sparsity"] is not None]
    assert all(p["reduction"] == pytest.approx(p["predicted"]) for p in uniform)
    assert (out / "llm.md").read_text().count("\n") == 2 + len(points)
    assert (out / "llm.png").exists()


def test_cli_reports_a_missing_package_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from onnxfold.bench import llm_model
    from onnxfold.cli.commands import main

    monkeypatch.setattr(llm_model, "NEEDED", {"no_such_pkg_x": "no-such-pkg-x"})
    monkeypatch.setattr(llm.SmolLM2, "onnx", lambda self: self._load("model"))
    monkeypatch.setattr(llm, "find_text", lambda: find_text([tmp_path]))
    assert main(["bench", "llm", "--cache", str(tmp_path), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no-such-pkg-x" in err
