"""Report pages as a browser shows them: headless Chromium screenshots and layout facts.

``render(page, png, width)`` loads a page (its figures included) in headless Chromium at a window
`width` px wide, writes a screenshot and returns what a reader would notice: the widest element, the
page's scroll width, any table, figure or image wider than the window, and images that did not load.
``python -m robustlab.runs.screenshot [--out docs/images]`` regenerates the documentation's
screenshots from tiny runs made with the CLI (a classification report, an OCR attack, a stereo attack).
"""
from __future__ import annotations

import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import InputError
from ..fileio import atomic_write_bytes

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Appended to a copy of the page: once everything has loaded, record the layout in a hidden <pre>
# that --dump-dom prints.
_PROBE = """<script>window.addEventListener('load', () => {
  const W = document.documentElement.clientWidth;
  const wide = [...document.querySelectorAll('table, img, figure, pre, h1, h2, p')]
    .filter(e => e.getBoundingClientRect().right > W + 1)
    .map(e => e.tagName.toLowerCase() + ' ' + Math.round(e.getBoundingClientRect().width) + ' px');
  const out = {viewport: W, scroll_width: document.documentElement.scrollWidth, too_wide: wide,
               tables: document.querySelectorAll('table').length,
               images: [...document.images].map(i => ({src: i.getAttribute('src'), loaded: i.complete && i.naturalWidth > 0}))};
  const p = document.createElement('pre'); p.id = 'robustlab-layout'; p.style.display = 'none';
  p.textContent = JSON.stringify(out); document.body.appendChild(p);
});</script>"""
# New-mode headless Chromium paints a viewport shorter than the window it screenshots (the bottom stays
# blank): the window is this much taller and the screenshot is cropped to the height asked for.
_CHROME_PX = 150
_FOUND = re.compile(r"<pre id=\"robustlab-layout\"[^>]*>(.*?)</pre>", re.S)


def chromium() -> str | None:
    """The path of a Chromium (or Chrome) executable on PATH, or None."""
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def render(page: str | Path, png: str | Path, width: int, height: int = 1100, timeout: float = 60) -> dict:
    """Screenshot `page` at `width` x `height` px into `png`; return its layout (see the module docstring)."""
    browser = chromium()
    if browser is None:
        raise InputError("no Chromium on PATH (Debian: apt-get install chromium; `make pages-system` does it)")
    page, png = Path(page).resolve(), Path(png).resolve()
    probe = page.with_name(f".{page.stem}-layout.html")  # beside the page: its relative figure paths still resolve
    text = page.read_text(encoding="utf-8")
    probe.write_text(text.replace("</body>", _PROBE + "</body>") if "</body>" in text else text + _PROBE,
                     encoding="utf-8")
    try:
        with tempfile.TemporaryDirectory() as profile:
            args = [browser, "--headless", "--disable-gpu", "--hide-scrollbars", "--no-first-run", "--mute-audio",
                    f"--user-data-dir={profile}", f"--window-size={width},{height + _CHROME_PX}", "--virtual-time-budget=3000",
                    f"--screenshot={png}", "--dump-dom", probe.as_uri()]
            if hasattr(os, "geteuid") and os.geteuid() == 0:
                args.insert(1, "--no-sandbox")  # Chromium refuses to run as root inside its sandbox
            done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    finally:
        probe.unlink(missing_ok=True)
    found = _FOUND.search(done.stdout)
    if done.returncode != 0 or found is None or not png.exists():
        raise RuntimeError(f"Chromium could not render {page} (exit {done.returncode}): {done.stderr.strip()[-300:]}")
    _save_png(png, height)
    return json.loads(html.unescape(found.group(1)))


def _save_png(png: Path, height: int, colours: int | None = None) -> Path:
    """Crop `png` to `height` px; with `colours`, reduce it to a palette that size (docs images stay small)."""
    from PIL import Image

    with Image.open(png) as im:
        small = im.convert("RGB").crop((0, 0, im.width, min(height, im.height)))
    if colours:
        small = small.quantize(colours, dither=Image.Dither.NONE)
    buf = io.BytesIO()
    small.save(buf, format="PNG", optimize=True)
    atomic_write_bytes(png, buf.getvalue())
    return png


def compact_png(png: str | Path, height: int = 1100, colours: int = 128) -> Path:
    """`png` cropped to `height` px, on a palette of `colours`."""
    return _save_png(Path(png), height, colours)


# ----- python -m robustlab.runs.screenshot: the documentation's screenshots ----------------------------
_TINY_RUNS = [
    ["train", "--data", "digits", "--model", "mlp", "--epochs", "3", "--eval-n", "100", "--lr", "0.01", "--name", "standard"],
    ["train", "--data", "digits", "--model", "mlp", "--epochs", "3", "--eval-n", "100", "--lr", "0.01", "--name", "pgd-at",
     "--method", "pgd", "--eps", "0.1", "--attack-steps", "5"],
    ["evaluate", "{runs}/standard", "--eps", "0,0.05,0.1", "--attacks", "fast", "--n", "200"],
    ["evaluate", "{runs}/pgd-at", "--eps", "0,0.05,0.1", "--attacks", "fast", "--n", "200"],
    ["report", "{runs}/standard", "{runs}/pgd-at", "-o", "{runs}/classification/report.html"],
    ["ocr", "attack", "--target", "crnn", "--n", "12", "--attack", "square", "--max-queries", "300", "--eps", "0.1",
     "--mask", "strokes", "--name", "ocr"],
    ["stereo", "train", "--height", "32", "--width", "64", "--max-disp", "16", "--scenes", "32", "--steps", "150",
     "--name", "stereo-net"],
    ["stereo", "attack", "--model", "{runs}/stereo-net", "--n", "4", "--eps", "0.03", "--steps", "10", "--name", "stereo"],
]
PAGES = {"classification": "classification/report.html", "ocr": "ocr/report.html", "stereo": "stereo/report.html"}


def docs_screenshots(out: Path, runs: Path, width: int = 1400, height: int = 1100) -> list[Path]:
    """Make the tiny runs under `runs` with the CLI, then one compact screenshot per task page in `out`."""
    for cmd in _TINY_RUNS:
        argv = [a.format(runs=runs) for a in cmd]
        argv += [] if cmd[0] in ("evaluate", "report") else ["--runs", str(runs)]
        subprocess.run([sys.executable, "-m", "robustlab.cli", "--no-progress", *argv], check=True)
    written = []
    for name, page in PAGES.items():
        layout = render(runs / page, out / f"{name}.png", width, height)
        if layout["too_wide"]:
            print(f"note: {name} at {width} px: wider than the window: {', '.join(layout['too_wide'])}")
        written.append(compact_png(out / f"{name}.png", height))
    return written


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m robustlab.runs.screenshot", description=docs_screenshots.__doc__)
    p.add_argument("--out", default="docs/images", help="folder for classification.png, ocr.png, stereo.png")
    p.add_argument("--width", type=int, default=1400)
    args = p.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as runs:
        for f in docs_screenshots(Path(args.out), Path(runs), args.width):
            print(f"{f}: {f.stat().st_size / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
