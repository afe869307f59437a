"""Inputs that ``onnxfold bench real`` makes itself (no dataset download), each from a fixed seed.

Text is rendered with PIL in the DejaVu Sans font that ships with matplotlib; audio is synthesised
(formant-shaped voiced bursts, noise bursts, silence). Every maker takes a ``numpy`` random
generator, so fitting inputs (one seed) and judging inputs (another seed) never overlap by accident.
"""

from __future__ import annotations

import functools

import numpy as np

WORDS = (
    "the quick brown fox jumps over lazy dog model layer channel weight merge fold prune cluster "
    "invoice total amount date number paper table figure section result value input output page "
    "order north south river station market report 2026 1984 42 7.5 100% price item city street "
    "green light open close water garden summer winter alpha beta gamma delta sample test check"
).split()

SENTENCES = (
    "The cat sat quietly on the warm windowsill.",
    "Stock markets fell sharply after the announcement.",
    "She is learning to play the violin.",
    "The recipe needs two cups of flour and an egg.",
    "Heavy rain is expected over the weekend.",
    "The train to the airport leaves every ten minutes.",
    "Quantum computers use qubits instead of bits.",
    "The football team won the championship final.",
    "Please remember to water the plants.",
    "The museum opens at nine in the morning.",
    "My laptop battery drains very quickly.",
    "Volcanoes release ash and lava during eruptions.",
    "He booked a table for two at the restaurant.",
    "Bees are essential for pollinating crops.",
    "The novel is set in nineteenth-century Paris.",
    "Solar panels convert sunlight into electricity.",
    "A kitten is sleeping in the sun by the window.",
    "Shares dropped when the news was released.",
    "He practises the cello every evening.",
    "Mix the flour with eggs to make the dough.",
    "The forecast says it will pour on Saturday.",
    "Buses to the terminal run all night.",
    "A qubit can be in a superposition of states.",
    "They lifted the trophy after a penalty shootout.",
    "Don't forget the garden needs watering.",
    "Opening hours of the gallery start at 9 am.",
    "The phone runs out of charge by noon.",
    "The eruption covered the village in ash.",
    "We reserved dinner for Friday night.",
    "Farmers rely on insects to pollinate fruit trees.",
    "The story takes place in old France.",
    "Photovoltaic cells generate power from light.",
    "Permission is hereby granted, free of charge, to any person obtaining a copy.",
    "The software is provided as is, without warranty of any kind.",
    "Redistribution in source and binary forms is permitted under these conditions.",
    "In no event shall the authors be liable for any claim or damages.",
)


@functools.lru_cache(maxsize=8)
def font(size: int):
    """DejaVu Sans (shipped with matplotlib) at ``size`` pixels."""
    from matplotlib import font_manager
    from PIL import ImageFont

    return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)


def random_text(rng: np.random.Generator, low: int = 2, high: int = 5) -> str:
    """``low``..``high``-1 words from :data:`WORDS`."""
    return " ".join(rng.choice(WORDS, size=int(rng.integers(low, high))))


def text_image(text: str, size: int = 32, ink: int = 0, paper: int = 255):
    """A tight RGB PIL image of ``text`` (4 px margin)."""
    from PIL import Image, ImageDraw

    f = font(size)
    x0, y0, x1, y1 = f.getbbox(text)
    img = Image.new("RGB", (x1 - x0 + 8, max(y1 - y0, size) + 8), (paper,) * 3)
    ImageDraw.Draw(img).text((4 - x0, 4 - y0), text, font=f, fill=(ink,) * 3)
    return img


def fit_line(img, width: int, height: int) -> np.ndarray:
    """Scale a text image to ``height`` (width capped at ``width``), right-pad with white: HxWx3 uint8."""
    from PIL import Image

    w = min(width, max(1, round(img.width * height / img.height)))
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    canvas.paste(img.resize((w, height), Image.BILINEAR), (0, 0))
    return np.asarray(canvas)


def text_lines(rng: np.random.Generator, n: int, width: int = 320, height: int = 48) -> tuple[list, list]:
    """``n`` rendered lines (HxWx3 uint8) and their texts; ink and paper grey levels vary a little."""
    images, texts = [], []
    for _ in range(n):
        text = random_text(rng, 1, 4)
        img = text_image(
            text, int(rng.integers(28, 40)), int(rng.integers(0, 60)), int(rng.integers(200, 256))
        )
        images.append(fit_line(img, width, height))
        texts.append(text)
    return images, texts


def rotated_blocks(rng: np.random.Generator, n: int, size: tuple[int, int], angles: tuple[int, ...]) -> tuple:
    """``n`` text images of ``size`` (W, H) rotated by one of ``angles`` (degrees, counter-clockwise);
    returns (images, angle indices)."""
    from PIL import Image

    images, labels = [], []
    for _ in range(n):
        k = int(rng.integers(len(angles)))
        w, h = size
        if w > 2 * h:  # a line
            img = Image.fromarray(fit_line(text_image(random_text(rng, 2, 4), 32), w, h))
        else:  # a block of lines
            img = Image.new("RGB", (w, h), (255, 255, 255))
            for y in range(4, h - 20, 26):
                img.paste(text_image(random_text(rng, 2, 4), 18), (4, y))
        images.append(np.asarray(img.rotate(angles[k], expand=False, fillcolor=(255, 255, 255))))
        labels.append(k)
    return images, labels


def text_page(rng: np.random.Generator, width: int, height: int, lines: int = 6):
    """A white page with ``lines`` text lines at random places (RGB uint8)."""
    from PIL import Image

    page = Image.new("RGB", (width, height), (255, 255, 255))
    for _ in range(lines):
        line = text_image(random_text(rng, 1, 4), int(rng.integers(14, 26)))
        x = int(rng.integers(0, max(1, width - line.width)))
        y = int(rng.integers(0, max(1, height - line.height)))
        page.paste(line, (x, y))
    return np.asarray(page)


def document_page(rng: np.random.Generator, width: int = 608, height: int = 800) -> np.ndarray:
    """A document page: a title, paragraphs, a ruled table and a figure box (RGB uint8)."""
    from PIL import Image, ImageDraw

    page = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(page)
    y = 40
    page.paste(text_image(" ".join(rng.choice(WORDS, 3)).title(), 30), (60, y))
    y += 70
    while y < height - 60:
        part = rng.integers(3)
        if part == 0:  # a paragraph
            for _ in range(int(rng.integers(3, 7))):
                page.paste(text_image(random_text(rng, 6, 9), 14), (50, y))
                y += 22
        elif part == 1:  # a table
            rows, cols, cw = int(rng.integers(3, 6)), 4, (width - 120) // 4
            for r in range(rows):
                for c in range(cols):
                    draw.rectangle(
                        [60 + c * cw, y + r * 24, 60 + (c + 1) * cw, y + (r + 1) * 24], outline=(0,) * 3
                    )
                    page.paste(text_image(random_text(rng, 1, 2), 12), (64 + c * cw, y + r * 24 + 3))
            y += rows * 24
        else:  # a figure
            h = int(rng.integers(100, 180))
            draw.rectangle([120, y, width - 120, y + h], outline=(0,) * 3, width=2)
            xs = np.linspace(130, width - 130, 40)
            ys = y + h / 2 + (h / 3) * np.sin(xs / 30 + rng.uniform(0, 6))
            draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=(30, 30, 200), width=2)
            y += h
        y += 30
    return np.asarray(page)


def captcha(rng: np.random.Generator, size: int = 416, chars: int = 5) -> np.ndarray:
    """A click-captcha-like image: a smooth coloured background with large scattered glyphs (RGB)."""
    from PIL import Image, ImageDraw

    yy, xx = np.mgrid[0:size, 0:size] / size
    base = [
        120 + 80 * np.sin(xx * rng.uniform(2, 6) + yy * rng.uniform(2, 6) + rng.uniform(0, 6))
        for _ in range(3)
    ]
    img = Image.fromarray(np.stack(base, -1).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(chars):
        glyph = str(rng.choice(list("ABCDEFGHKMNPRSTUWXYZ2345678")))
        x, y = int(rng.integers(10, size - 70)), int(rng.integers(10, size - 70))
        colour = tuple(int(c) for c in rng.integers(0, 80, 3))
        draw.text((x, y), glyph, font=font(int(rng.integers(40, 60))), fill=colour)
    return np.asarray(img)


def espeak(text: str, rng: np.random.Generator, rate: int = 16000) -> np.ndarray | None:
    """``text`` spoken by ``espeak-ng`` (random speed and pitch) at ``rate`` Hz, float32; None when
    espeak-ng is not installed or fails."""
    import io
    import shutil
    import subprocess
    import wave

    exe = shutil.which("espeak-ng")
    if not exe:
        return None
    speed, pitch = str(int(rng.integers(120, 200))), str(int(rng.integers(20, 80)))
    done = subprocess.run([exe, "-s", speed, "-p", pitch, "--stdout", text], capture_output=True)
    if done.returncode or not done.stdout:
        return None
    with wave.open(io.BytesIO(done.stdout)) as w:
        src = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768.0
    from scipy.signal import resample_poly

    g = np.gcd(rate, src)
    return resample_poly(x, rate // g, src // g).astype(np.float32)


def audio_clip(rng: np.random.Generator, seconds: float = 2.0, rate: int = 16000) -> np.ndarray:
    """A clip of ``seconds``: espeak-ng speech placed after random silence and mixed with faint noise
    when espeak-ng is installed, else :func:`speech_like` synthetic audio."""
    n = int(seconds * rate)
    speech = espeak(random_text(rng, 2, 5), rng, rate)
    if speech is None:
        return speech_like(rng, seconds, rate)
    out = (0.003 * rng.standard_normal(n)).astype(np.float32)
    start = int(rng.integers(0, max(1, n // 3)))
    part = speech[: n - start] * rng.uniform(0.5, 1.0)
    out[start : start + part.size] += part
    return out


def speech_like(rng: np.random.Generator, seconds: float = 2.0, rate: int = 16000) -> np.ndarray:
    """Synthetic audio: voiced bursts (a glottal pulse train at 100-220 Hz through 3 formant
    resonators), noise bursts and silence, float32 in [-1, 1]."""
    n = int(seconds * rate)
    out = np.zeros(n, np.float32)
    t = 0
    while t < n:
        length = int(rng.uniform(0.15, 0.5) * rate)
        seg = np.arange(min(length, n - t)) / rate
        what = rng.integers(3)
        if what == 0:  # voiced
            f0 = rng.uniform(100, 220)
            pulse = sum(
                np.sin(2 * np.pi * h * f0 * seg)
                / h
                * np.exp(-(((h * f0) - np.array([700, 1200, 2600]))[:, None] ** 2) / 2e5).sum()
                for h in range(1, 25)
            )
            env = np.sin(np.pi * np.linspace(0, 1, seg.size)) ** 0.5
            out[t : t + seg.size] = 0.3 * env * pulse / (np.abs(pulse).max() + 1e-9)
        elif what == 1:  # noise burst (fricative-like)
            out[t : t + seg.size] = 0.05 * rng.standard_normal(seg.size)
        else:  # near silence
            out[t : t + seg.size] = 0.002 * rng.standard_normal(seg.size)
        t += seg.size
    return out
