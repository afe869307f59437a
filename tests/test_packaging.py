"""What a non-editable install ships: every subpackage and the bundled models.

pyproject.toml lists its packages by hand; ``onnxfold.search`` was missing from the list, so
``pip install .`` gave an onnxfold whose default fold failed with "No module named 'onnxfold.search'"
(an editable install, and every test, found it in the source tree)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _setuptools_config() -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_subpackage_is_listed_for_the_wheel() -> None:
    config = _setuptools_config()
    roots = {name: ROOT / folder for name, folder in config["package-dir"].items()}
    found = set()
    for name, folder in roots.items():
        for init in folder.rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            rel = init.parent.relative_to(folder).parts
            found.add(".".join((name, *rel)))
    missing = sorted(found - set(config["packages"]))
    assert not missing, f"pyproject.toml [tool.setuptools] packages lacks {missing}"


def test_the_bundled_models_and_recipes_are_package_data() -> None:
    config = _setuptools_config()
    models = ROOT / config["package-dir"]["onnxfold.models"]
    for package, patterns in config["package-data"].items():
        assert package in config["packages"], package
        folder = models / package.removeprefix("onnxfold.models").lstrip(".").replace(".", "/")
        assert all(list(folder.glob(p)) for p in patterns), (package, patterns)
    assert list((models / "zoo").glob("*.onnx")) and list((models / "recipes").glob("*.yaml"))
