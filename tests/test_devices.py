"""One ``--device`` setting reaches every verb: resolved once (``runtime.resolve_device``), recorded in the
run's config, the model and the batches on it; the process-group backend follows the tensors' device.
Device-dependent tests run on ``cpu`` always and on ``cuda`` where a GPU exists (skipped, saying so, here)."""

import pytest
import torch
import torch.nn as nn
import yaml

from helpers import assert_clear_error, cli
from robustlab import distributed
from robustlab.errors import InputError
from robustlab.evaluation.sharded import to_cpu
from robustlab.runs.evaluations import default_evaluation
from robustlab.runs.schema import DeviceSettings, validate_job
from robustlab.runtime import device_description, resolve_device
from robustlab.training.checkpoints import load_state, save_state
from robustlab.weights import load_weights, save_weights

NO_CUDA = "no CUDA device on this machine (CPU-only torch); the cuda variant runs where a GPU is"
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA))]

#: (parameter device, input device) of every forward pass of a RecordingNet
SEEN: list[tuple[str, str]] = []


class RecordingNet(nn.Module):
    """A small MLP that records where its parameters and its inputs are at every forward pass."""

    def __init__(self, in_features: int = 64, num_classes: int = 10, **_):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, 32), nn.ReLU(), nn.Linear(32, num_classes))

    def forward(self, x):
        SEEN.append((next(self.parameters()).device.type, x.device.type))
        return self.net(x)


def _fake_gpus(monkeypatch, count: int) -> list:
    """A machine with `count` CUDA devices, as far as device resolution and process-group setup can tell;
    returns the list ``torch.cuda.set_device`` calls are appended to."""
    calls: list = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", str(d))))
    return calls


@pytest.mark.parametrize("device", DEVICES)
def test_resolve_and_describe(device):
    d = resolve_device(device)
    assert d.type == device and resolve_device(d) == d
    desc = device_description(d)
    assert desc["type"] == device and desc["torch"] == torch.__version__ and desc["name"]
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "cpu:0", "auto:1", ""])
def test_a_bad_device_is_one_line_naming_the_flag_and_the_machines_devices(spec):
    with pytest.raises(InputError) as e:
        resolve_device(spec)
    msg = str(e.value)
    assert "\n" not in msg and "--device" in msg and "this machine has: cpu" in msg
    with pytest.raises(InputError):
        DeviceSettings(device=spec)


def test_cuda_follows_local_rank_and_must_exist(monkeypatch):
    _fake_gpus(monkeypatch, 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("auto") == resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0) and resolve_device("cpu").type == "cpu"
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(InputError, match="no CUDA device 2 here; this machine has: cpu, cuda:0, cuda:1"):
        resolve_device("cuda")


def test_the_backend_follows_the_tensors_device(monkeypatch):
    """NCCL only for a CUDA run, gloo for a CPU run even where CUDA exists; a GPU is made current first."""
    assert distributed.backend_for("cpu") == "gloo"
    assert distributed.backend_for(torch.device("cuda", 1)) == distributed.backend_for("cuda:0") == "nccl"
    calls = _fake_gpus(monkeypatch, 2)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(("threads", n)))
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend, **kw: calls.append(("init", backend)))
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 0)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    distributed.init_from_env(device="cpu")
    assert calls == [("threads", 1), ("init", "gloo")]
    calls.clear()
    distributed.init_from_env(device="cuda")  # torchrun rank with LOCAL_RANK 1: its own GPU, set before init
    assert calls == [("set_device", "cuda:1"), ("init", "nccl")]


def test_launch_passes_the_device_on():
    assert distributed.with_device(["train", "--epochs", "1"], "cuda") == ["train", "--epochs", "1", "--device", "cuda"]
    assert distributed.with_device(["train", "--device=cpu"], "cuda") == ["train", "--device=cpu"]
    assert distributed.with_device(["train"], "auto") == ["train"]


def test_a_job_config_takes_a_device_key():
    assert validate_job({"models": [{"name": "a"}], "device": "cpu"})["device"] == "cpu"
    assert validate_job({"models": [{"name": "a"}]})["device"] == "auto"
    with pytest.raises(InputError, match="device: not a device"):
        validate_job({"models": [{"name": "a"}], "device": "tpu"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: --device cuda is valid here")
@pytest.mark.parametrize("argv", [["train", "--data", "digits", "--runs", "OUT"], ["evaluate", "OUT/m"],
                                  ["run", "JOB", "--runs", "OUT"], ["stereo", "attack", "--runs", "OUT"],
                                  ["ocr", "train", "--runs", "OUT"], ["launch", "--device", "cuda", "--", "train", "--runs", "OUT"]])
def test_device_cuda_without_a_gpu_is_a_one_line_error_before_anything_is_written(capsys, tmp_path, argv):
    job = tmp_path / "job.yaml"
    job.write_text("models: [{name: a}]\n")
    argv = [{"OUT": tmp_path / "out", "OUT/m": tmp_path / "out" / "m", "JOB": job}.get(a, a) for a in argv]
    code, _, err = cli(capsys, *argv, *([] if "--device" in argv else ["--device", "cuda"]))
    assert_clear_error(code, err, 2, "cuda", "this machine has: cpu")
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("device", DEVICES)
def test_device_reaches_the_model_and_the_batches_through_the_cli(capsys, tmp_path, device):
    SEEN.clear()
    code, _, err = cli(capsys, "train", "--data", "digits", "--model", f"{__name__}:RecordingNet", "--epochs", "1",
                       "--eval-n", "20", "--batch-size", "256", "--runs", tmp_path, "--name", "m", "--device", device)
    assert code == 0, err
    config = yaml.safe_load((tmp_path / "m" / "config.yaml").read_text())
    assert config["device"].startswith(device) and config["device_description"]["type"] == device
    assert SEEN and set(SEEN) == {(device, device)}
    SEEN.clear()
    code, _, err = cli(capsys, "evaluate", tmp_path / "m", "--eps", "0,0.1", "--attacks", "fgsm", "--n", "16",
                       "--device", device, "--trust-code")
    assert code == 0, err
    record = default_evaluation(tmp_path / "m").record
    assert record["device"].startswith(device) and SEEN and set(SEEN) == {(device, device)}
    SEEN.clear()
    code, _, err = cli(capsys, "attack", tmp_path / "m", "--attack", "fgsm", "--eps", "0.1", "--n", "16", "--device",
                       device, "--trust-code", "--runs", tmp_path)
    assert code == 0, err
    attack_config = yaml.safe_load((tmp_path / "attack-fgsm-m" / "config.yaml").read_text())
    assert attack_config["device"].startswith(device) and set(SEEN) == {(device, device)}
    saved = torch.load(tmp_path / "attack-fgsm-m" / "adversarial.pt", weights_only=True)
    assert all(t.device.type == "cpu" for t in saved.values())  # what is saved loads on any machine


@pytest.mark.parametrize("device", DEVICES)
def test_saved_weights_and_state_are_cpu_tensors_and_load_onto_the_chosen_device(tmp_path, device):
    model = RecordingNet().to(device)
    save_weights(model, tmp_path / "w.safetensors")
    save_state(tmp_path, {"model": model.state_dict(), "epoch": 1})
    state = torch.load(tmp_path / "state.pt", weights_only=True)  # no map_location: as stored
    assert {t.device.type for t in state["model"].values()} == {"cpu"}
    assert {t.device.type for t in load_state(tmp_path)["model"].values()} == {"cpu"}
    target = RecordingNet().to(device)
    load_weights(target, tmp_path / "w.safetensors")
    assert {p.device.type for p in target.parameters()} == {device}
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), target.state_dict().values()))


@pytest.mark.parametrize("device", DEVICES)
def test_sharded_payloads_are_gathered_as_cpu_tensors(device):
    x = torch.arange(4, device=device)
    payload = to_cpu([(x, x > 1, ["pgd", None], {"t": 1.0}, {"x": x[:2]})])
    (a, b, names, times, ex), = payload
    assert a.device.type == b.device.type == ex["x"].device.type == "cpu"
    assert torch.equal(a, torch.arange(4)) and names == ["pgd", None] and times == {"t": 1.0}


def test_every_verb_takes_device():
    from robustlab.cli import SETTINGS, build_parser

    verbs = ("train", "attack", "evaluate", "sweep", "landscape", "compare-geometry", "represent", "launch")
    assert all(DeviceSettings in SETTINGS[v] for v in verbs)
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    for verb in (*verbs, "run"):
        assert any("--device" in a.option_strings for a in sub[verb]._actions), verb
    for task, verbs in (("stereo", ("train", "attack", "defend", "evaluate")), ("ocr", ("train", "attack"))):
        task_sub = next(a for a in sub[task]._actions if a.dest == f"{task}_command").choices
        assert all(any("--device" in a.option_strings for a in task_sub[v]._actions) for v in verbs), task


@pytest.mark.parametrize("device", DEVICES)
def test_a_jobs_device_reaches_its_models_and_is_recorded(capsys, tmp_path, device):
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({
        "data": "digits", "device": "cpu", "train": {"epochs": 1, "eval_n": 20, "batch_size": 256},
        "models": [{"name": "m", "model": f"{__name__}:RecordingNet"}],
        "evaluation": {"eps": [0.0, 0.1], "attacks": "fgsm", "n": 16}}))
    SEEN.clear()
    code, _, err = cli(capsys, "run", job, "--runs", tmp_path, "--trust-code", "--device", device)  # the flag wins
    assert code == 0, err
    for config in (tmp_path / "job" / "config.yaml", tmp_path / "job" / "models" / "m" / "config.yaml"):
        assert yaml.safe_load(config.read_text())["device"].startswith(device)
    assert SEEN and set(SEEN) == {(device, device)}
