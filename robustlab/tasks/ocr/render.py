"""Text lines as images: rendered with the installed DejaVu fonts (Pillow), a seeded synthetic
dataset, and the real scanned lines of scikit-image's ``page.png`` with their transcriptions.

Every image is grey, ink dark on a light background, in [0, 1], shaped ``[B, 1, H, W]``.
"""
from __future__ import annotations

import functools
import logging
import random
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ...errors import InputError

log = logging.getLogger(__name__)

#: characters the CRNN reads: printable ASCII (space included); index 0 of the CRNN is the CTC blank
CHARSET = "".join(c for c in string.printable if c not in "\t\n\r\x0b\x0c")

FONTS = ("DejaVuSans", "DejaVuSerif", "DejaVuSansMono", "DejaVuSans-Bold", "DejaVuSansCondensed")
FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu", "/usr/local/share/fonts",
             "/Library/Fonts", "C:/Windows/Fonts")


@functools.lru_cache(maxsize=None)
def font_path(name: str = "DejaVuSans") -> str:
    """Path of a DejaVu font: the system's, else the copy bundled with matplotlib (Sans, Serif, Mono)."""
    if name.endswith(".ttf") and Path(name).exists():
        return name
    for d in FONT_DIRS:
        p = Path(d) / f"{name}.ttf"
        if p.exists():
            return str(p)
    import matplotlib

    p = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / f"{name}.ttf"
    if p.exists():
        return str(p)
    raise InputError(f"font {name!r} not found in {', '.join(FONT_DIRS)} nor in matplotlib's fonts; install the "
                     "Debian package fonts-dejavu-core or pass a .ttf path")


@functools.lru_cache(maxsize=64)
def _font(name: str, size: int):
    from PIL import ImageFont

    return ImageFont.truetype(font_path(name), int(size))


def text_width(text: str, size: int = 20, font: str = "DejaVuSans") -> float:
    return float(_font(font, size).getlength(text))


def _check_texts(texts) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    bad = [t for t in texts if not isinstance(t, str)]
    if bad:
        raise InputError(f"texts must be strings, got {type(bad[0]).__name__}")
    return texts


def render_lines(texts: Sequence[str] | str, *, height: int = 32, width: int | None = None, size: int = 20,
                 font: str = "DejaVuSans", ink: float = 0.0, background: float = 1.0, jitter: int = 0,
                 blur: float = 0.0, noise: float = 0.0, margin: int = 4, seed: int = 0) -> torch.Tensor:
    """Render single lines of text: float images ``[B, 1, height, width]`` in [0, 1].

    ``ink`` / ``background`` are the grey levels of the glyphs and the page; ``jitter`` shifts each
    line by up to that many pixels in x and y; ``blur`` is a Gaussian sigma in pixels; ``noise`` the
    std of additive Gaussian noise. ``width=None`` fits the longest line. Random parts use ``seed``.
    """
    from PIL import Image, ImageDraw, ImageFilter

    texts = _check_texts(texts)
    if not 0 <= ink <= 1 or not 0 <= background <= 1:
        raise InputError(f"ink and background are grey levels in [0, 1], got {ink} and {background}")
    f = _font(font, size)
    need = [int(np.ceil(f.getlength(t))) + 2 * margin + 2 * jitter for t in texts]
    if width is None:
        width = max(need, default=2 * margin)
        width = int(np.ceil(width / 4) * 4)
    too_wide = [t for t, n in zip(texts, need) if n > width]
    if too_wide:
        raise InputError(f"{len(too_wide)} lines do not fit in width {width} at font size {size} (e.g. {too_wide[0]!r} "
                         f"needs {max(need)} px); pass width=None or a smaller size")
    rng = random.Random(seed)
    ascent, descent = f.getmetrics()
    base_y = (height - (ascent + descent)) / 2 + ascent
    out = np.empty((len(texts), 1, height, width), dtype=np.float32)
    g = np.random.default_rng(seed)
    for i, t in enumerate(texts):
        im = Image.new("L", (width, height), int(round(255 * background)))
        dx = rng.randint(-jitter, jitter) if jitter else 0
        dy = rng.randint(-jitter, jitter) if jitter else 0
        ImageDraw.Draw(im).text((margin + jitter + dx, base_y + dy), t, font=f, fill=int(round(255 * ink)), anchor="ls")
        if blur > 0:
            im = im.filter(ImageFilter.GaussianBlur(blur))
        a = np.asarray(im, dtype=np.float32) / 255.0
        if noise > 0:
            a = a + g.normal(0.0, noise, a.shape).astype(np.float32)
        out[i, 0] = np.clip(a, 0.0, 1.0)
    return torch.from_numpy(out)


# ----- synthetic text ------------------------------------------------------------------------
WORDS = (
    "the of and to in is was for that with as on by at from his her an are this which be or have had not "
    "but one all were they their been has there more when will would who so no if out up into time can "
    "only other new some could these two may first then do any like my now over such our man me even most "
    "made after also did many before must through back years where much your way well down should because "
    "each just those people how too little state good very make world still own see men work long get here "
    "between both life being under never day same another know while last might us great old year off come "
    "since against go came right used take three states himself few house use during without again place "
    "around however home small found thought went say part once general high upon school every don does got "
    "united left number course war until always away something fact though water less public put think "
    "almost hand enough far took head yet government system better set told nothing night end why called "
    "didn eyes find going look asked later knew point next program city business give group toward young "
    "days let room president side social given present several order national possible rather second face "
    "per among form important often things looking early white case john become large big need four within "
    "felt along children saw best church ever least power development light thing seemed family interest "
    "want members mind country area others done turned although open god service certain kind problem began "
    "different door thus help sense means whole matter perhaps itself york times law human line above name "
    "example action company hands local show whether five history gave today either act feet across taken "
    "past quite anyone having seen death experience body half really week field word markers image pixels "
    "label region segmentation background object values histogram coins grey extreme parts robust attack"
).split()


def random_text(rng: random.Random, max_chars: int = 24) -> str:
    """A line of English words with capitals, numbers, punctuation and some random strings."""
    parts: list[str] = []
    while True:
        r = rng.random()
        if r < 0.70:
            w = rng.choice(WORDS)
            if rng.random() < 0.2:
                w = w.capitalize()
            elif rng.random() < 0.04:
                w = w.upper()
        elif r < 0.82:
            w = str(rng.randint(0, 10 ** rng.randint(1, 5)))
        else:
            w = "".join(rng.choice(CHARSET[:-1]) for _ in range(rng.randint(1, 6)))
        if rng.random() < 0.15:
            w += rng.choice(".,:;!?)'\"")
        if rng.random() < 0.05:
            w = rng.choice("(\"'<[") + w
        cand = " ".join(parts + [w])
        if len(cand) > max_chars:
            break
        parts.append(w)
        if rng.random() < 0.12:
            break
    return " ".join(parts) if parts else rng.choice(WORDS)[:max_chars]


@dataclass
class LineDataset:
    """Images ``x`` [N, 1, H, W] in [0, 1] and their transcriptions ``texts``."""

    x: torch.Tensor
    texts: list[str]
    name: str = "lines"

    def __len__(self) -> int:
        return len(self.texts)

    def to(self, device: torch.device) -> "LineDataset":
        """The line images on `device` (the texts stay)."""
        return LineDataset(self.x.to(device), self.texts, self.name)

    def __getitem__(self, idx) -> "LineDataset":
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        if isinstance(idx, slice):
            return LineDataset(self.x[idx], self.texts[idx], self.name)
        idx = list(idx)
        return LineDataset(self.x[idx], [self.texts[i] for i in idx], self.name)


def synthetic_lines(n: int, seed: int = 0, *, height: int = 32, width: int = 256, styles: bool = True,
                    max_chars: int = 24) -> LineDataset:
    """``n`` seeded random lines. With ``styles`` each line draws its own font, size (16-22 px), ink and
    background levels, jitter, blur and noise; otherwise every line is clean DejaVuSans 20 px."""
    rng = random.Random(seed)
    imgs, texts = [], []
    for i in range(n):
        font = rng.choice(FONTS) if styles else "DejaVuSans"
        size = rng.randint(16, 22) if styles else 20
        text = random_text(rng, max_chars)
        while text_width(text, size, font) + 14 > width:
            text = text[:-1].rstrip() or "a"
        kw = dict(ink=rng.uniform(0, 0.35), background=rng.uniform(0.7, 1.0), jitter=2, blur=rng.choice([0, 0, 0.5, 0.8]),
                  noise=rng.choice([0, 0, 0.02, 0.05])) if styles else {}
        imgs.append(render_lines([text], height=height, width=width, size=size, font=font, seed=seed * 100003 + i, **kw))
        texts.append(text)
    return LineDataset(torch.cat(imgs) if imgs else torch.zeros(0, 1, height, width), texts, f"synthetic-{seed}")


# ----- scanned lines -------------------------------------------------------------------------
#: scikit-image's page.png (a photographed book page), deskewed by PAGE_ANGLE degrees, cut into these
#: row bands; transcriptions written down once by reading the image.
PAGE_ANGLE = 0.4
PAGE_LINES = (
    ((8, 37), "Region-based segmentation"),
    ((47, 66), "Let us first determine markers of the coins and the"),
    ((64, 84), "background. These markers are pixels that we can label"),
    ((82, 102), "unambiguously as either object or background. Here,"),
    ((100, 120), "the markers are found at the two extreme parts of the"),
    ((117, 138), "histogram of grey values:"),
    ((166, 187), ">>> markers = np.zeros_like(coins)"),
)


def scanned_lines(height: int = 32, width: int | None = None) -> LineDataset:
    """The real scanned lines of ``skimage.data.page()``: deskewed, the uneven lighting divided out
    (page / its local maximum), each band scaled to ``height`` and padded with white to a common width.

    (``skimage.data.text()`` is a slanted handwritten formula: neither engine reads it, so it is not used.)
    """
    import skimage.data
    from PIL import Image
    from scipy import ndimage

    a = skimage.data.page().astype(np.float32)
    bg = ndimage.gaussian_filter(ndimage.maximum_filter(a, size=15), 5)
    page = np.clip(a / np.maximum(bg, 1.0), 0, 1)
    page = ndimage.rotate(page, PAGE_ANGLE, reshape=False, order=1, cval=1.0)
    rows = []
    for (top, bottom), _ in PAGE_LINES:
        band = page[top:bottom]
        cols = np.nonzero((band < 0.5).any(0))[0]
        band = band[:, max(cols[0] - 4, 0):cols[-1] + 5]
        w = int(round(band.shape[1] * height / band.shape[0]))
        im = Image.fromarray((band * 255).astype(np.uint8)).resize((w, height), Image.BILINEAR)
        rows.append(np.asarray(im, dtype=np.float32) / 255.0)
    width = width or int(np.ceil(max(r.shape[1] for r in rows) / 4) * 4)
    x = np.ones((len(rows), 1, height, width), dtype=np.float32)
    for i, r in enumerate(rows):
        x[i, 0, :, :min(r.shape[1], width)] = r[:, :width]
    return LineDataset(torch.from_numpy(x), [t for _, t in PAGE_LINES], "scanned-page")


def dataset(name: str = "synthetic", n: int = 50, seed: int = 999) -> LineDataset:
    """``synthetic`` (n styled lines, seed never used in training), ``clean`` (n plain lines) or ``scanned``."""
    if name == "synthetic":
        return synthetic_lines(n, seed)
    if name == "clean":
        return synthetic_lines(n, seed, styles=False)
    if name == "scanned":
        return scanned_lines()
    raise InputError(f"unknown OCR dataset {name!r}; known: synthetic, clean, scanned")
