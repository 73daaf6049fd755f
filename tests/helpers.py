import os
import subprocess
import sys


def run_cli(*args, cwd=None, check=True, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "robustlab.cli", "--no-progress", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"robustlab {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def popen_cli(*args, cwd=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "robustlab.cli", "--no-progress", *map(str, args)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def assert_valid_adversarials(model, threat, x, y, result):
    """Every returned point satisfies the threat model, and `success` is the truth there."""
    import torch

    assert threat.contains(x, result.x_adv).all()
    with torch.no_grad():
        assert torch.equal(result.success, model(result.x_adv).argmax(1) != y)


def tiny_stereo_net(n_train, n_val, h, w, max_disp, train_seed, val_seed, steps):
    """A small StereoNet trained on procedural scenes (seeded): (model, train, val, losses)."""
    import torch

    from robustlab.tasks.stereo import StereoNet, synthetic_stereo, train_stereo

    torch.manual_seed(0)
    train = synthetic_stereo(n_train, h=h, w=w, max_disp=max_disp, seed=train_seed)
    val = synthetic_stereo(n_val, h=h, w=w, max_disp=max_disp, seed=val_seed)
    model = StereoNet(max_disp=max_disp, features=16, hidden=32)
    losses = train_stereo(model, train, steps=steps, batch_size=8, lr=3e-3)
    return model, train, val, losses


# ----- shared by the safety tests (tests/test_safety_*.py) -------------------------------------------
#: the shortest training of a model run (one epoch of an MLP on digits)
TRAIN = {"epochs": 1, "eval_n": 20, "lr": 0.01, "batch_size": 64}


class Payload:
    """Unpickling this creates a marker file: the harmless stand-in for code run from data."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def cli(capsys, *args):
    """The CLI in-process: (exit code, stdout, stderr)."""
    from robustlab.cli import main as cli_main

    code = cli_main(["--no-progress", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_clear_error(code, err, expected_code=2, *words):
    assert code == expected_code, err
    assert "Traceback" not in err and "error:" in err
    for w in words:
        assert w in err, err
