"""Expected errors and the one-line form every user-facing message takes.

An *expected* error is a user's mistake or an unusable input (bad path, bad option, a model
onnxfold cannot read): the command line prints it as one line ``onnxfold: error: …`` and exits
with status 2. :data:`EXPECTED_ERRORS` lists the types it treats so; anything else is a bug and
is reported as an internal error.

This module imports nothing from onnxfold, so that every layer (``ir``, ``pipeline``, the CLI)
can use it; ``ModelError`` is also importable from :mod:`onnxfold.ir` and ``PipelineError``/
``PassError`` from :mod:`onnxfold.pipeline.manager`, where they are raised.
"""

from __future__ import annotations

import re


class ModelError(ValueError):
    """A model file that cannot be read, is unsafe, or cannot be written. Its message is one line."""


class PipelineError(ValueError):
    """A pipeline description that cannot be parsed or names unknown passes/options."""


class PassError(RuntimeError):
    """A pass failed or left an invalid graph. The message names the pass."""


class InputRunError(RuntimeError):
    """onnxruntime cannot run the user's model on the inputs given or drawn for it (input shapes the
    model does not take): the user's to fix with --input-shape or --inputs, not a bug."""


class CliError(Exception):
    """An expected failure of the command line with a one-line message."""


#: The exception types the command line reports as one line with exit status 2.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    CliError,
    ModelError,
    PipelineError,
    PassError,
    InputRunError,
    ValueError,
    OSError,
)


def from_runtime(exc: BaseException) -> bool:
    """Whether onnxruntime raised ``exc`` (InvalidGraph, Fail, NotImplemented, ...): it could not load
    or run a model, a fact about the model (an op its opset does not have, a missing kernel) that the
    user can act on, reported as an error rather than as onnxfold's internal error."""
    return type(exc).__module__.startswith("onnxruntime")


def not_run_on_samples(where: str, exc: BaseException, samples=None) -> str:
    """The one-line error when the model does not run on the user's own samples: not the advice to
    give ``--inputs``, which they gave, but what to change in them, the value range where an index
    falls outside its table (character ids of 5000 into a table of 178 rows), else the shape, with
    the shapes given (``samples``: input name -> array; a wake-word featurizer fed 200 audio samples
    named only its stem Conv's "Invalid input shape: {3}")."""
    text = str(exc)
    fits = "values in the range" if "out of" in text and "bound" in text else "a shape"
    given = ""
    if isinstance(samples, dict) and samples:
        shapes = ", ".join(  # N: the samples, some of which a search may hold out
            f"{k} [{', '.join(['N', *map(str, getattr(v, 'shape', ())[1:])])}]" for k, v in samples.items()
        )
        images = any(len(getattr(v, "shape", ())) == 4 for v in samples.values())
        hint = _lengths_differ(samples) or (images and _off_by_one(text)) or "too short or small for it?"
        given = f" ({shapes}: {hint})" if fits == "a shape" else f" ({shapes})"
    return (
        f"{where}: the model does not run on the given samples{given} ({one_line(exc, 300)}); "
        f"give samples of {fits} the model takes"
    )


def _off_by_one(text: str) -> str:
    """'' or a hint, for images, where onnxruntime met two sizes one apart ("45 by 46"): a side that the model's
    downsampling does not divide, whose two paths meet at sizes rounded apart (PP-OCRv6's detector on
    720×960 pages: "too short or small for it?" pointed elsewhere)."""
    pairs = [(int(a), int(b)) for a, b in re.findall(r"\b(\d+) by (\d+)\b", text)]
    if any(abs(a - b) == 1 for a, b in pairs):
        return "a side its strides do not divide? (detectors take multiples of 32; images are resized to --input-shape)"
    return ""


def _lengths_differ(samples: dict) -> str:
    """'' or a hint naming two inputs of one rank whose shapes differ in one dim past the samples' (a
    diacritizer's characters [N, 20] beside their diacritics [N, 21]: "too short or small for it?"
    pointed elsewhere)."""
    shaped = [(k, tuple(getattr(v, "shape", ())[1:])) for k, v in samples.items()]
    for i, (a, sa) in enumerate(shaped):
        for b, sb in shaped[i + 1 :]:
            differ = [d for d in range(len(sa)) if len(sa) == len(sb) and sa[d] != sb[d]]
            if len(differ) == 1:
                d = differ[0]
                return f"{a} and {b} differ in dim {d + 1} ({sa[d]} and {sb[d]}): does the model read them at one size?"
    return ""


#: onnxruntime's framing ("[ONNXRuntimeError] : 1 : FAIL : ") and the C++ source location and
#: signature it puts before the reason ("/onnxruntime_src/.../reshape_helper.h:91 onnxruntime::
#: ReshapeHelper::ReshapeHelper(const onnxruntime::TensorShape&, ...) ", or with a return type "void
#: onnxruntime::BroadcastIterator::Init(ptrdiff_t, ptrdiff_t) "): cut, a one-line message kept them
#: and lost the reason ("input_shape_size == requested_shape_size was false ...")
_RUNTIME_NOISE = re.compile(
    r"\[ONNXRuntimeError\] : \d+ : |/\S+\.(?:h|hpp|cc|cpp):\d+ (?:(?:[\w:<>*&]+ )?[\w:~<>]+\([^)]*\)(?: const)? )?"
)


#: onnxruntime's wording around a failing node ("INVALID_ARGUMENT : Non-zero status code returned
#: while running Gather node. Name:'...GatherV2' Status Message: indices element out of data
#: bounds, idx=999 ..."): shortened to "Gather node '...GatherV2': indices element ..."
_RUNTIME_NODE = re.compile(
    r"(?:[A-Z_]+ : )?Non-zero status code returned while running (\w+) node\. Name:'([^']*)' Status Message: "
)


def one_line(exc: BaseException, limit: int = 500, *, with_type: bool = False) -> str:
    """The first line of ``str(exc)`` (the type name when the message is empty; with the index lines
    of onnxruntime's "invalid dimensions ... for the following indices"), without onnxruntime's
    framing and source locations, cut at a word to at most ``limit`` characters and "…" (a number
    cut in half read "size 2" for "size 20"); ``with_type`` prefixes
    ``"TypeName: "`` (counted in the limit)."""
    text = str(exc).strip()
    lines = text.splitlines()
    line = _RUNTIME_NOISE.sub("", lines[0]) if text else ""
    dims = [x.strip() for x in lines[1:] if x.strip().startswith("index: ")]
    if dims and line.endswith("the following indices"):  # onnxruntime's wrong-dims reason
        line += ": " + "; ".join(dims)
    line = _RUNTIME_NODE.sub(r"\1 node '\2': ", line)
    if with_type:
        line = f"{type(exc).__name__}: {line}" if line else type(exc).__name__
    return cut_at_word(line or type(exc).__name__, limit, "…")


def listed(names, most: int = 8) -> str:
    """``names`` as a list, its first ``most`` and how many more: an .npz of 201 arrays given for a
    one-input model printed every name in its one-line error (several kB)."""
    names = list(names)
    if len(names) <= most:
        return str(names)
    return str(names[:most])[:-1] + f", … and {len(names) - most} more]"


def cut_at_word(text: str, limit: int, mark: str) -> str:
    """``text`` whole if it has at most ``limit`` characters, else its first ``limit`` cut back to
    the last whole word (unless that loses more than half) and followed by ``mark``: never half a
    word or a number ("size 20" read "size 2")."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    if text[limit] != " " and space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:") + mark


__all__ = [
    "EXPECTED_ERRORS",
    "CliError",
    "ModelError",
    "PassError",
    "PipelineError",
    "cut_at_word",
    "listed",
    "one_line",
]
