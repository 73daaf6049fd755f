"""The one-way layers of docs/design.md, enforced by import-linter (contracts in pyproject.toml), and
the length limit on the functions of robustlab/."""
import ast
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


@pytest.mark.parametrize("module,line,arrow", [
    ("attacks/gradient.py", "from ..cli import main as _upward", "robustlab.attacks.gradient -> robustlab.cli"),
    ("geometry/trajectory.py", "from ..training import load_weights as _sibling",
     "robustlab.geometry.trajectory -> robustlab.training"),
], ids=["upward", "between-measures"])
def test_a_wrong_way_import_breaks_the_contracts(tmp_path, module, line, arrow):
    """A deliberate upward import (the attack engine importing the CLI), or one measure package
    importing another (they are independent siblings), fails the check."""
    copy = tmp_path / "repo"
    copy.mkdir()
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    shutil.copytree(ROOT / "robustlab", copy / "robustlab", ignore=shutil.ignore_patterns("__pycache__"))
    source = copy / "robustlab" / module
    source.write_text(source.read_text() + f"\n{line}  # noqa: E402,F401\n")
    proc = _lint(copy)
    assert proc.returncode != 0
    assert "BROKEN" in proc.stdout and arrow in proc.stdout

MAX_FUNCTION_LINES = 80
# Functions allowed past the limit: declarative tables only (a list of flags, a registry), each named
# "module.function" with the reason. Empty: every function over the limit is code to split.
DECLARATIVE_TABLES: dict[str, str] = {}


def _functions(tree: ast.AST, prefix: str):
    """(qualified name, lines) of every function and method in ``tree``, nested ones included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = f"{prefix}.{node.name}"
            yield name, node.end_lineno - node.lineno + 1
            yield from _functions(node, name)
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}.{node.name}")


def _long_functions() -> list[str]:
    found = []
    for path in sorted((ROOT / "robustlab").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for name, lines in _functions(ast.parse(path.read_text(), str(path)), module):
            if lines > MAX_FUNCTION_LINES and name not in DECLARATIVE_TABLES:
                found.append(f"{name}: {lines} lines")
    return found


def test_no_function_is_longer_than_80_lines():
    """Long bodies hide several jobs: split them into parts named for what they do (at most ~50 lines)."""
    assert _long_functions() == []


def test_the_length_scan_sees_functions_and_methods():
    tree = ast.parse("def f():\n    def g():\n        pass\n\n\nclass C:\n    def m(self):\n        return 1\n")
    assert dict(_functions(tree, "mod")) == {"mod.f": 3, "mod.f.g": 2, "mod.C.m": 2}
