import atexit
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(int(os.environ.get("ROBUSTLAB_TEST_THREADS", "2")))

# hypothesis keeps its files in ./.hypothesis unless told otherwise: the tests write nothing into the checkout
if "HYPOTHESIS_STORAGE_DIRECTORY" not in os.environ:
    _hypothesis_dir = tempfile.mkdtemp(prefix="robustlab-hypothesis-")
    os.environ["HYPOTHESIS_STORAGE_DIRECTORY"] = _hypothesis_dir
    atexit.register(shutil.rmtree, _hypothesis_dir, ignore_errors=True)


# ----- no test writes into the checkout: `make test` fails if the tests left a file there ---------------------
ROOT = Path(__file__).resolve().parents[1]
#: what may change in the checkout while the tests run: the venv, caches, the shared data cache, build outputs
MAY_CHANGE = (".venv/", ".pytest_cache/", "data-cache/", "build/", ".import_linter_cache/", "robustlab.egg-info/")


def checkout_files() -> set[str] | None:
    """Every file git sees in the checkout, ignored ones included, less those that may change (None outside git)."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    paths = (line[3:] for line in out.stdout.splitlines())
    return {p for p in paths if not p.startswith(MAY_CHANGE) and "__pycache__/" not in p}


def pytest_sessionstart(session):
    session.config.checkout_before = checkout_files()


def pytest_sessionfinish(session, exitstatus):
    before, after = getattr(session.config, "checkout_before", None), checkout_files()
    if before is None or after is None:
        return
    new = sorted(after - before)
    if new:
        session.exitstatus = 1
        print(f"\nthe tests changed the checkout ({len(new)} files, e.g. {', '.join(new[:3])}): a test must write "
              "only under its tmp_path")


def train_on_digits(model, epochs=30, seed=0, lr=1e-2):
    """Standard training on sklearn digits (a few seconds on a CPU)."""
    import robustlab as rl

    torch.manual_seed(seed)
    train = rl.load_dataset("digits", "train")
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for xb, yb in train.batches(128, shuffle=True, generator=gen):
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def _train_mlp(hidden=(64,), epochs=30, seed=0):
    import robustlab as rl

    torch.manual_seed(seed)
    return train_on_digits(rl.models.MLP(in_features=64, num_classes=10, hidden=hidden), epochs, seed)


@pytest.fixture(scope="session")
def digits_model():
    """A standard MLP on sklearn digits (about 96% test accuracy)."""
    return _train_mlp()


@pytest.fixture(scope="session")
def digits_test():
    import robustlab as rl

    d = rl.load_dataset("digits", "test")
    return d.x[:200], d.y[:200]


@pytest.fixture(scope="session")
def digits_correct(digits_model, digits_test):
    """Test points the model classifies correctly."""
    x, y = digits_test
    with torch.no_grad():
        ok = digits_model(x).argmax(1) == y
    return x[ok], y[ok]


class TinyRegressor(nn.Module):
    def __init__(self, d=16, out=4):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(d, 32), nn.Tanh(), nn.Linear(32, out))

    def forward(self, x):
        return self.net(x)


@pytest.fixture
def tiny_regressor():
    torch.manual_seed(0)
    return TinyRegressor().eval()


# ----- a trained model run (the safety tests copy it and try to break it) ------------------------------
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A one-epoch MLP model run on digits, trained once per test module."""
    from helpers import TRAIN
    from robustlab.experiments.job import train_model_run

    root = tmp_path_factory.mktemp("runs")
    train_model_run(root / "base", {"name": "mlp"}, {"name": "digits", "seed": 0}, TRAIN, progress=False)
    return root / "base"


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A copy of ``trained_run`` a test may damage."""
    import shutil

    dst = tmp_path / "runs" / "r"
    shutil.copytree(trained_run, dst)
    return dst
