"""The report pages as a browser shows them: a classification report, an OCR attack page and a stereo
attack page, each screenshot in headless Chromium at 1000 and 1400 px wide. The screenshot exists and is
not blank, every figure loaded, and nothing (table, figure, heading) is wider than the window."""
import pytest
from test_pages import ocr_attack_page, stereo_attack_page

from helpers import cli
from robustlab.runs.screenshot import chromium

pytestmark = pytest.mark.skipif(chromium() is None, reason="no Chromium on PATH (make pages-system installs it): "
                                                           "the pages are not checked in a browser")
WIDTHS = (1000, 1400)


def classification_page(tmp_path, capsys):
    common = ["--data", "digits", "--model", "mlp", "--epochs", "2", "--eval-n", "100", "--lr", "0.01", "--runs", tmp_path]
    assert cli(capsys, "train", *common, "--name", "std")[0] == 0
    assert cli(capsys, "evaluate", tmp_path / "std", "--eps", "0,0.1", "--attacks", "fast", "--n", "100")[0] == 0
    assert cli(capsys, "report", tmp_path / "std", "-o", tmp_path / "classification.html")[0] == 0
    return tmp_path / "classification.html"


def assert_looks_right(page, tmp_path, min_images):
    """Both widths at once (two browsers): the screenshot is not blank, figures loaded, nothing too wide."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    from robustlab.runs.screenshot import render

    pngs = {w: tmp_path / f"{page.stem}-{w}.png" for w in WIDTHS}
    with ThreadPoolExecutor(len(WIDTHS)) as pool:
        layouts = dict(zip(WIDTHS, pool.map(lambda w: render(page, pngs[w], w, height=900), WIDTHS)))
    for width, layout in layouts.items():
        with Image.open(pngs[width]) as im:
            assert im.size == (width, 900)
            ink = sum(im.convert("L").histogram()[:200]) / (im.width * im.height)   # share of clearly non-white pixels
        assert ink > 0.01, f"{pngs[width]} is (nearly) blank"
        assert layout["viewport"] == width and layout["scroll_width"] <= width, layout
        assert layout["too_wide"] == [], f"{page.name} at {width} px: {layout['too_wide']}"
        assert len(layout["images"]) >= min_images and all(i["loaded"] for i in layout["images"]), layout["images"]
        assert layout["tables"] >= 1


def test_classification_report_in_chromium(tmp_path, capsys):
    assert_looks_right(classification_page(tmp_path, capsys), tmp_path, min_images=2)


def test_ocr_and_stereo_pages_in_chromium(tmp_path):
    assert_looks_right(ocr_attack_page(tmp_path)[0], tmp_path, min_images=1)
    assert_looks_right(stereo_attack_page(tmp_path), tmp_path, min_images=1)
