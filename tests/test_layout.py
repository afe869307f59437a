"""The code's layout: every module imports on its own (no import cycle), and no library module is long.

Importing a module *first*, in a state where no other module of its package is loaded, is what
exposes a cycle: ``a`` importing ``b`` that imports ``a`` back fails only when one of them comes first.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import onnxfold

PACKAGE = Path(onnxfold.__file__).parent
PASSES = PACKAGE.parent / "passes"
#: the library's modules stay short (models/ holds reference architectures, not library code)
MAX_LINES = 500

#: argv: comma-separated packages, then folders to put on sys.path. Imports each of their modules
#: first, after unloading every module under the first package's top-level name; prints the names
#: and the failures as JSON. (onnxfold.passes and onnxfold.models live in other folders, mapped by
#: the install, so they are walked as packages of their own.)
_CHILD = r"""
import importlib, json, pkgutil, sys
sys.path[:0] = sys.argv[2:]
import numpy, onnx, onnx_graphsurgeon  # third-party modules stay loaded: only the package's state is reset
packages = sys.argv[1].split(",")
top = packages[0].split(".")[0]
names = []
for package in packages:
    path = importlib.import_module(package).__path__
    names += [package] + [m.name for m in pkgutil.walk_packages(path, package + ".")]
names = [n for n in dict.fromkeys(names) if not n.endswith("__main__")]
failures = {}
for name in names:
    for loaded in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:
        failures[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps({"names": names, "failures": failures}))
"""


def _import_each(package: str, *paths: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _CHILD, package, *paths], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_module_imports_first_on_its_own() -> None:
    result = _import_each("onnxfold,onnxfold.passes,onnxfold.models")
    for name in (  # the walk reaches every subpackage, the installed passes and models included
        "onnxfold.analysis.rules.producers",
        "onnxfold.passes.fold",
        "onnxfold.models.digits",
        "onnxfold.ir.save",
        "onnxfold.runtime.inputs",
        "onnxfold.cli.parser",
    ):
        assert name in result["names"]
    assert result["failures"] == {}


def test_the_import_check_reports_a_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / "cyclic"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from cyclic.b import B\nA = 1\n")
    (pkg / "b.py").write_text("from cyclic.a import A\nB = 2\n")
    (pkg / "c.py").write_text("C = 3\n")
    result = _import_each("cyclic", str(tmp_path))
    assert sorted(result["failures"]) == ["cyclic.a", "cyclic.b"]


def test_no_library_module_is_long() -> None:
    lengths = {
        str(p.relative_to(PACKAGE.parent)): len(p.read_text().splitlines())
        for root in (PACKAGE, PASSES)
        for p in root.rglob("*.py")
    }
    assert len(lengths) > 50
    assert {p: n for p, n in lengths.items() if n > MAX_LINES} == {}


def test_passes_and_models_are_imported_by_their_installed_names() -> None:
    """``passes/`` and ``models/`` install as ``onnxfold.passes`` and ``onnxfold.models``: a bare
    ``passes.x`` resolved only with the checkout on sys.path (``python -m pytest``, not ``pytest``) and
    loaded a second copy of the module beside the library's."""
    bare = re.compile(r"^\s*(from|import)\s+(passes|models)\b", re.MULTILINE)
    roots = (PACKAGE, PASSES, PACKAGE.parent / "tests", PACKAGE.parent / "models")
    found = [
        str(p.relative_to(PACKAGE.parent))
        for r in roots
        for p in r.rglob("*.py")
        if bare.search(p.read_text())
    ]
    assert len(list((PACKAGE.parent / "tests").glob("test_*.py"))) > 20
    assert found == []
