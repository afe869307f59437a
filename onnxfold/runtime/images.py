"""A folder of images as samples of an image model (``--inputs photos/ --image-preprocess imagenet``).

Each image is read with Pillow, converted to RGB (BGR with ``,bgr``; grey for a one-channel input),
resized (bilinear, or ``,bicubic`` / ``,lanczos`` / ``,nearest`` as the model's own pipeline resizes) to the
input's height and width, stretched, or with ``,letterbox`` scaled to fit its longer side and padded
with black around it (centred, as albumentations' LongestMaxSize + PadIfNeeded do; ``,letterbox=114``
pads with that pixel value, as Ultralytics' YOLO does), or with ``,crop``
scaled so that its centre crop of :data:`CROP_FRACTION` of each side (``,crop=F``: F) fills it, and
the centre cropped (torchvision's Resize(256) + CenterCrop(224) of an ImageNet classifier), and
normalised per channel as ``x = (v / 255 − mean) / std`` with the preset's mean and std:

* ``unit``:     mean 0, std 1 (values in [0, 1]);
* ``pm1``:      mean 0.5, std 0.5 (values in [−1, 1]; PaddleOCR);
* ``imagenet``: mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225) (torchvision, timm);
* ``caffe``:    the 0..255 values less the ImageNet mean (123.68, 116.78, 103.94), no scaling
  (Caffe and Keras ``caffe``-mode ports such as VGG, ResNet-50-caffe, OpenNSFW; usually with ``,bgr``);
* ``raw``:      the 0..255 values as they are (YOLOX, models that normalise inside);
* ``mean=M[/M/M],std=S[/S/S]`` (in place of a preset, either or both): ``x = (v − mean) / std`` with
  ``v``, the mean and the std in 0..255 pixel units, per colour or one for all, as a model's own code
  writes it; where a std is given and every mean and std is at most 1, they are read in 0..1 units, as
  torchvision's ``Normalize`` writes them, ``x = (v/255 − mean) / std`` (a std of 1 pixel level is no
  normalisation anyone trains with) (dlib's age predictor takes (RGB − mean) / 256, which no preset gives: with ``caffe``
  its original answered age 0 to 94% of the faces, and a fold at 67.7% measured 1.0000).

Means and stds are per colour (R, G, B): with ``,bgr`` the image is normalised first and its channels
reversed after, so ``caffe,bgr`` subtracts 103.94 from the blue channel, which comes first. A grey
(one-channel) input takes the average of the three means and stds.

``,topleft`` letterboxes with the image in the top-left corner, padded right and below (PaddleOCR
pads its text lines on the right; centred, a fold of its recogniser measured 0.44 where 0.94 of real
lines kept their text).

The layout comes from the input's shape: [N, C, H, W] when dim 1 is 1 or 3, [N, H, W, C] when the
last dim is. Height and width come from ``--input-shape``, else the input's static dims, else the
first image (every other image resized to it). A free width beside a fixed height (a text
recogniser's [N, 3, 48, ?]) is read as lines are: each image scaled to the height, keeping its aspect
ratio, and padded on the right to the widest with 0 after normalisation, as PaddleOCR's recognisers
pad. Images are taken in file-name order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")
PRESETS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "unit": ((0.0,), (1.0,)),
    "pm1": ((0.5,), (0.5,)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "caffe": ((123.68 / 255, 116.78 / 255, 103.94 / 255), (1 / 255,)),
    "raw": ((), ()),
}
#: the share of each side an ImageNet evaluation keeps of its resized image (224 of 256)
CROP_FRACTION = 0.875
#: Pillow's resampling filter for each ``--image-preprocess`` resize modifier.
RESIZE_FILTERS = ("bilinear", "bicubic", "lanczos", "nearest")  # rembg resizes LANCZOS


@dataclass(frozen=True)
class ImagePreprocess:
    """A preset of :data:`PRESETS` and the channel order."""

    preset: str
    bgr: bool = False
    resize: str = "bilinear"
    letterbox: bool = False
    topleft: bool = False  # letterboxed into the top-left corner
    mean: tuple[float, ...] = ()  # a custom normalisation, in 0..255 pixel units (module docstring)
    std: tuple[float, ...] = ()
    crop: float = 0.0  # ``,crop``: the share of each side of the resized image kept, centred; 0: none
    pad: int = 0  # ``,letterbox=V``: the pixel value (0..255) a letterbox pads with

    def normalisation(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) of ``x = (v / 255 − mean) / std``, v in 0..255; empty for ``raw``."""
        if self.preset == CUSTOM:
            mean = np.asarray(self.mean or (0.0,), np.float32) / 255
            return mean, np.asarray(self.std or (1.0,), np.float32) / 255
        return tuple(np.asarray(v, np.float32) for v in PRESETS[self.preset])

    @classmethod
    def parse(cls, text: str) -> ImagePreprocess:
        """``imagenet``, ``pm1,bgr`` or ``imagenet,bicubic,letterbox``; raises a one-line ValueError
        naming the choices."""
        parts = [p.strip().lower() for p in text.split(",") if p.strip()]
        values = {p.split("=", 1)[0]: p.split("=", 1)[1] for p in parts if "=" in p}
        crop = _crop(values.pop("crop"), text) if "crop" in values else 0.0
        boxed = "letterbox" in values  # letterbox=V: padded with V (Ultralytics pads 114)
        pad = _pad(values.pop("letterbox"), text) if boxed else 0
        parts = [p for p in parts if "=" not in p] + (["letterbox"] if boxed else [])
        if values:
            parts.insert(0, CUSTOM)
        if "crop" in parts[1:]:
            crop = crop or CROP_FRACTION
        flags = ("bgr", "letterbox", "topleft", "crop")
        extra = [p for p in parts[1:] if p not in flags and p not in RESIZE_FILTERS]
        filters = [p for p in parts[1:] if p in RESIZE_FILTERS]
        custom = {k: _per_colour(k, v, text) for k, v in values.items() if k in ("mean", "std")}
        if (
            not parts
            or (parts[0] not in PRESETS and parts[0] != CUSTOM)
            or extra
            or len(filters) > 1
            or len(custom) != len(values)
            or (crop and ("letterbox" in parts or "topleft" in parts))
        ):
            raise ValueError(
                f"--image-preprocess {text!r}: expected one of {', '.join(PRESETS)}, or mean=M[/M/M],std=S[/S/S] "
                f"in 0..255 units (x = (v - mean) / std), optionally followed by ',bgr', ',letterbox' and one "
                f"resize filter of {', '.join(RESIZE_FILTERS)} (bilinear by default); ',topleft' letterboxes "
                f"into the top-left corner; ',crop' (or ',crop=F') centre-crops {CROP_FRACTION:g} (F) of each "
                "side instead"
            )
        topleft = "topleft" in parts[1:]
        if custom.get("std") and max(custom["std"]) <= 1 and max(custom.get("mean", (0.0,))) <= 1:
            # torchvision's Normalize((0.1307,), (0.3081,)), written as the model's code writes it, read
            # in 0..255 units put a digit CNN's samples at -0.4..827: 19.4% of its labels, fidelity 0.9688
            custom = {k: tuple(v * 255 for v in vs) for k, vs in custom.items()}
            logger.warning(
                "--image-preprocess %s: every mean and std is at most 1, so they are read in 0..1 units, as "
                "torchvision writes them: x = (v/255 - mean) / std",
                text,
            )
        return cls(
            parts[0],
            "bgr" in parts[1:],
            filters[0] if filters else "bilinear",
            "letterbox" in parts[1:] or topleft,
            topleft,
            custom.get("mean", ()),
            custom.get("std", ()),
            crop,
            pad,
        )


#: the preset name of a custom ``mean=…,std=…`` normalisation
CUSTOM = "custom"


def _per_colour(key: str, value: str, text: str) -> tuple[float, ...]:
    """``122.8/114.8/101.6`` or ``256`` as floats: one per colour or one for all; a std is not 0."""
    try:
        numbers = tuple(float(v) for v in value.split("/"))
    except ValueError:
        raise ValueError(
            f"--image-preprocess {text!r}: {key}={value} is not a number or R/G/B numbers"
        ) from None
    if len(numbers) not in (1, 3) or not all(np.isfinite(numbers)) or (key == "std" and 0.0 in numbers):
        raise ValueError(
            f"--image-preprocess {text!r}: {key}={value}: give one finite number or three (R/G/B)"
            + (", none of them 0" if key == "std" else "")
        )
    return numbers


def _pad(value: str, text: str) -> int:
    """``letterbox=V``'s V, a pixel value in 0..255 (Ultralytics' grey: 114)."""
    if not value.isdigit() or int(value) > 255:
        raise ValueError(
            f"--image-preprocess {text!r}: letterbox={value}: give the padding's pixel value, 0..255"
        )
    return int(value)


def _crop(value: str, text: str) -> float:
    """``crop=F``'s F, a share of each side in (0, 1]."""
    try:
        share = float(value)
    except ValueError:
        share = -1.0
    if not 0.0 < share <= 1.0:
        raise ValueError(
            f"--image-preprocess {text!r}: crop={value}: give the share of each side kept, in (0, 1]"
        )
    return share


def image_files(folder: Path) -> list[Path]:
    """The images in ``folder`` (by suffix, any case), in file-name order."""
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


def _layout(name: str, shape: tuple) -> tuple[str, int]:
    """("nchw" or "nhwc", channels) of an image input's shape."""
    if len(shape) == 4 and shape[1] in (1, 3):
        return "nchw", int(shape[1])
    if len(shape) == 4 and shape[3] in (1, 3):
        return "nhwc", int(shape[3])
    raise ValueError(
        f"input {name!r} of shape {shape} is not an image batch [N, C, H, W] or [N, H, W, C] with 1 or 3 "
        "channels: give its samples as .npy"
    )


def _resized(img, height: int, width: int, preprocess: ImagePreprocess):
    """``img`` at ``height`` × ``width``: stretched, or scaled to fit and padded black, centred (or in
    the top-left corner), or scaled to cover ``height`` × ``width`` / crop and centre-cropped;
    ``width`` None: scaled to ``height``, keeping its aspect ratio."""
    from PIL import Image

    resample = getattr(Image.Resampling, preprocess.resize.upper())
    if width is None:
        return img.resize((max(1, round(img.width * height / img.height)), height), resample)
    if preprocess.crop:  # the shorter side to its share's size, then the centre
        scale = max(width / img.width, height / img.height) / preprocess.crop
        w, h = max(width, round(img.width * scale)), max(height, round(img.height * scale))
        left, top = int(round((w - width) / 2)), int(round((h - height) / 2))  # as torchvision's
        return img.resize((w, h), resample).crop((left, top, left + width, top + height))
    if not preprocess.letterbox:
        return img.resize((width, height), resample)
    scale = min(width / img.width, height / img.height)
    w, h = max(1, round(img.width * scale)), max(1, round(img.height * scale))
    canvas = Image.new(img.mode, (width, height), (preprocess.pad,) * len(img.getbands()))
    corner = (0, 0) if preprocess.topleft else ((width - w) // 2, (height - h) // 2)
    canvas.paste(img.resize((w, h), resample), corner)
    return canvas


def _fixed(d) -> bool:
    return isinstance(d, int) and d > 0


def load_images(
    folder: Path, name: str, shape: tuple, preprocess: ImagePreprocess, size: tuple[int, int] | None = None
) -> np.ndarray:
    """The images of ``folder`` as one float32 batch for the input ``name`` of ``shape`` (module
    docstring); ``size``: (height, width) that overrides the input's. One-line ValueErrors."""
    try:
        from PIL import Image
    except ImportError:
        raise ValueError("reading images needs Pillow: pip install pillow") from None
    files = image_files(folder)
    if not files:
        raise ValueError(
            f"{folder}: the folder holds no images ({', '.join(IMAGE_SUFFIXES)}) and no .npy files"
        )
    layout, channels = _layout(name, tuple(shape))
    hw = (shape[2], shape[3]) if layout == "nchw" else (shape[1], shape[2])
    lines = size is None and _fixed(hw[0]) and not _fixed(hw[1])  # text lines: scaled to the height
    height, width = size or (hw if all(_fixed(d) for d in hw) else (hw[0], None) if lines else (None, None))
    guessed = height is None  # free dims and no --input-shape: the first image sets the size
    sizes = set()
    batch = []
    for f in files:
        try:
            with Image.open(f) as img:
                img = img.convert("L" if channels == 1 else "RGB")
                sizes.add((img.height, img.width))
                if height is None:
                    height, width = img.height, img.width
                if lines:
                    img = _resized(img, int(height), None, preprocess)
                elif preprocess.crop or (img.height, img.width) != (height, width):
                    img = _resized(img, int(height), int(width), preprocess)
                x = np.asarray(img, dtype=np.float32).reshape(img.height, img.width, channels)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{f}: cannot read it as an image ({type(exc).__name__})") from None
        mean, std = preprocess.normalisation()
        if mean.size:  # per colour, before any reordering (module docstring); grey: their averages
            if channels == 1:
                mean, std = mean.mean(keepdims=True), std.mean(keepdims=True)
            x = (x / 255.0 - mean) / std
        if preprocess.bgr and channels == 3:
            x = x[..., ::-1]
        batch.append(x)
    if lines:  # padded on the right to the widest line, with 0 after normalisation
        widest = max(x.shape[1] for x in batch)
        batch = [np.pad(x, ((0, 0), (0, widest - x.shape[1]), (0, 0))) for x in batch]
    batch = [x.transpose(2, 0, 1) if layout == "nchw" else x for x in batch]
    if guessed and len(sizes) > 1:  # a text classifier's 32 lines were read at 31x101, fed at 48x192
        logger.warning(
            "%s: input %s has free height and width and the images differ in size: all %d were resized "
            "to the first one's %dx%d; give --input-shape %s:1,%s for the size your pipeline feeds",
            folder,
            name,
            len(files),
            height,
            width,
            name,
            f"{channels},H,W" if layout == "nchw" else f"H,W,{channels}",
        )
    return np.ascontiguousarray(np.stack(batch), dtype=np.float32)
