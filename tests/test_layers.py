"""The one-way layers of docs/design.md, enforced by import-linter (contracts in pyproject.toml)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    env = {"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"}
    return subprocess.run([str(exe), "--no-cache"], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def test_layer_contracts_hold():
    proc = _lint(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "broken" in proc.stdout and " 0 broken" in proc.stdout


def test_an_upward_import_breaks_the_contracts(tmp_path):
    """A deliberate upward import (the attack engine importing the CLI) fails the check."""
    copy = tmp_path / "repo"
    copy.mkdir()
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    shutil.copytree(ROOT / "robustlab", copy / "robustlab", ignore=shutil.ignore_patterns("__pycache__"))
    gradient = copy / "robustlab" / "attacks" / "gradient.py"
    gradient.write_text(gradient.read_text() + "\nfrom ..cli import main as _upward  # noqa: E402,F401\n")
    proc = _lint(copy)
    assert proc.returncode != 0
    assert "BROKEN" in proc.stdout and "robustlab.attacks.gradient -> robustlab.cli" in proc.stdout
