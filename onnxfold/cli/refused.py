"""What a refused search leaves: the widths ``--force`` would have written, saved as a recipe that
``--recipe`` folds without searching again (aisfx's budget refused after 201 s, then ``--force`` ran
the same search for 162 s more)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def recipe_path(output: str | os.PathLike) -> Path:
    """Where a refused search saves its candidate's widths: ``OUT.onnx`` -> ``OUT.recipe.json``."""
    out = Path(output)
    return out.with_name(f"{out.stem}.recipe.json")


def with_recipe(refused, output: str | os.PathLike) -> str:
    """``refused``'s one-line message (a :class:`~onnxfold.search.refusals.SearchRefused`), with where
    the widths of its candidate were saved, when it narrows any group and the file can be written (to a
    temporary name, then renamed)."""
    from onnxfold.folding.recipe import allocation_recipe

    message = str(refused)
    if not any(r > 0 for r in refused.allocation.values()):
        return message
    path = recipe_path(output)
    tmp = path.with_name(f".{path.name}.onnxfold-tmp")
    try:
        tmp.write_text(json.dumps(allocation_recipe(refused.allocation), indent=1) + "\n")
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        return message
    exact = " --round-to 1" if refused.exact else ""
    return (
        f"{message}; its widths are saved in {path}: --recipe {path}{exact} in place of the target folds "
        "to them without searching again"
    )
