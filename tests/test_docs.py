"""The Python examples of the README and of every docs/ page run as written.

Each page's ```python blocks run in order in one namespace (a fresh one per page), so a page reads as
one session. A block may opt out only when it needs what CI lacks (a GPU, Tesseract): its first line is
``# docs-test: skip <why>``.
"""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
SKIP = "# docs-test: skip"
BLOCK = re.compile(r"^```python\n(.*?)^```", flags=re.S | re.M)


def python_blocks(page: Path) -> list[tuple[int, str]]:
    """(line number of the block's first line, code) for each ```python block of `page`."""
    text = page.read_text()
    return [(text.count("\n", 0, m.start(1)), m.group(1)) for m in BLOCK.finditer(text)]


def run_page(page: Path) -> dict:
    namespace: dict = {"__name__": f"docs_example_{page.stem}"}
    for line, code in python_blocks(page):
        if code.startswith(SKIP):
            continue
        # padded so that a traceback names the line of the Markdown file
        exec(compile("\n" * line + code, str(page), "exec"), namespace)
    return namespace


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=_name)
def test_python_examples_run(page):
    namespace = run_page(page)
    if page == README:
        assert 0 <= namespace["report"].robust_accuracy <= namespace["report"].clean_accuracy <= 1


def test_skipped_blocks_say_why():
    for page in PAGES:
        for line, code in python_blocks(page):
            first = code.splitlines()[0] if code.strip() else ""
            if first.startswith(SKIP):
                assert len(first[len(SKIP):].strip()) >= 10, f"{_name(page)}:{line + 1}: say why the block is skipped"


def test_readme_and_docs_have_examples():
    assert len(python_blocks(README)) >= 2
    assert sum(bool(python_blocks(p)) for p in PAGES[1:]) >= 5


def test_site_builds_strict(tmp_path):
    """``make docs``: the MkDocs site builds with --strict (a broken link, page or API reference fails)."""
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (make docs installs it)")
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, env={**__import__("os").environ,
                                                                       "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
