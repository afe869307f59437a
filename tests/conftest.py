"""Shared fixtures: small reference models exported once per session, as exact compact/wide pairs.

``exported(arch, style)`` exports (on first use) the compact model and its wide twin, whose hidden channels
are exact duplicates (models/duplicate.py), so folding the wide one at sparsity 0.5 must give back the
compact function. Files are cached for the whole run in one temporary folder that xdist's workers share
(each pair is exported once, by whichever worker needs it first): tests must copy a file before changing
or deleting it. torch is imported inside the fixture only.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

STYLES = ("legacy", "legacy-bn", "dynamo")


def _one_core_per_worker() -> None:
    """Under xdist with at least as many workers as cores, each worker runs on a core of its own: a fold
    measures on every core its process may use (``--threads 0``), and two workers on two cores would
    each run two threads. The output does not depend on the thread count (test_jobs)."""
    import os

    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not (worker.startswith("gw") and count and hasattr(os, "sched_setaffinity")):
        return
    cores = sorted(os.sched_getaffinity(0))
    if int(count) >= len(cores) > 1:
        os.sched_setaffinity(0, {cores[int(worker[2:]) % len(cores)]})


_one_core_per_worker()

# Small widths, so that the whole suite stays fast; every Flatten sees an H·W > 1 map.
CONFIGS: dict[str, dict] = {
    "resnet18": {"base_width": 8, "num_classes": 10},
    "vgg11bn": {"base_width": 8, "hidden": 32, "input_size": 32, "num_pools": 4},  # Flatten of a 2×2 map
    "mlp": {"in_features": 20, "hidden": (24, 16), "num_classes": 7},
    "gatedmlp": {"hidden": 16, "intermediate": 24, "depth": 2, "num_classes": 10},
}
# Input shape after the batch axis.
INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "resnet18": (3, 32, 32),
    "vgg11bn": (3, 32, 32),
    "mlp": (20,),
    "gatedmlp": (5, 16),
}
# Scale of the random inputs. With random weights the input-dependent part of the logits decays with depth
# (VGG11BN: ~2e-4 of the bias-driven part at scale 1); ReLU nets are piecewise linear, so larger inputs
# make the logits depend on every layer and the exactness oracles sensitive to all of them.
INPUT_SCALES: dict[str, float] = {"resnet18": 100.0, "vgg11bn": 1000.0, "mlp": 1.0, "gatedmlp": 1.0}


@dataclass(frozen=True)
class Pair:
    """An exported compact model and its exact wide duplicate (``.onnx`` paths; dynamo adds ``.data``)."""

    arch: str
    style: str
    compact: Path
    wide: Path
    kwargs: dict

    @property
    def folder(self) -> Path:
        return self.wide.parent

    def input(self, batch: int = 3, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((batch, *INPUT_SHAPES[self.arch])) * INPUT_SCALES[self.arch]
        return x.astype(np.float32)

    def files(self, which: str = "wide") -> list[Path]:
        """The model file and, if it exists, its external data file."""
        path = self.wide if which == "wide" else self.compact
        data = path.with_name(path.name + ".data")
        return [path, data] if data.exists() else [path]

    def copy_to(self, folder: Path, which: str = "wide") -> Path:
        """Copy the model (and its data file, same name, so its references stay valid) into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        for f in self.files(which):
            shutil.copyfile(f, folder / f.name)
        return folder / self.files(which)[0].name


def shared_folder(factory: pytest.TempPathFactory, name: str) -> Path:
    """A folder every xdist worker of this run shares (the parent of the workers' own temporary roots),
    so that a file one worker built is not built again by the other; without xdist, the session's own."""
    import os

    base = factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def made_once(folder: Path) -> Iterator[bool]:
    """Hold ``folder``'s lock and yield whether its files still have to be made; once the block ends
    without an error they count as made, for every worker. A worker that finds them being made waits."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    done = folder / ".made"
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield not done.exists()
            done.touch()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Pair]:
    """``exported(arch, style) -> Pair``; each pair is exported once per session."""
    from onnxfold.models.architectures import example_input
    from onnxfold.models.duplicate import make_duplicate_pair
    from onnxfold.models.export import export_onnx

    root = shared_folder(tmp_path_factory, "exported")
    cache: dict[tuple[str, str], Pair] = {}

    def get(arch: str, style: str) -> Pair:
        key = (arch, style)
        if key not in cache:
            kwargs = CONFIGS[arch]
            folder = root / f"{arch}-{style}"
            with made_once(folder) as missing:
                if missing:
                    compact, wide = make_duplicate_pair(arch, seed=3, **kwargs)
                    x = example_input(arch, 2, **kwargs)
                    export_onnx(compact, folder / "compact.onnx", x, style)
                    export_onnx(wide, folder / "wide.onnx", x, style)
            cache[key] = Pair(arch, style, folder / "compact.onnx", folder / "wide.onnx", dict(kwargs))
        return cache[key]

    return get
