"""Training on the model's device and in mixed precision (issue 20, items 1, 2 and 6): batches and
optimiser state where the model is, one host read of the epoch's sums per epoch, bf16/fp16 training
that learns and resumes, float32 evaluation whatever autocast the caller runs under, and inner
attacks that still find adversarial examples in low precision (no gradient underflow)."""
import pytest
import torch
import torch.nn as nn

import robustlab as rl
from robustlab import runtime
from robustlab.attacks import PGD
from robustlab.hostsync import count_host_syncs
from robustlab.training import TrainConfig, train
from robustlab.training import loop
from robustlab.training.checkpoints import load_state
from robustlab.training.methods import Float32Gradients, for_inner_attack

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")),
]
FAST = dict(epochs=2, batch_size=64, lr=3e-3, eps=0.1, eval_n=64, eval_steps=2, seed=0)


def _digits(n=256):
    d = rl.load_dataset("digits", "train")
    return d.take(torch.arange(n))


class Recorder(nn.Module):
    """An MLP that records the device and dtype of every input it sees and of its outputs."""

    def __init__(self, hidden=32):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
        self.seen: list[tuple] = []

    def forward(self, x):
        out = self.net(x)
        self.seen.append((x.device.type, x.dtype, out.dtype))
        return out


def _model(device, seed=0):
    torch.manual_seed(seed)
    return Recorder().to(device)


class Stop(Exception):
    pass


def _stop_after_first_epoch(record):
    if record["epoch"] == 1:
        raise Stop


@pytest.mark.parametrize("device", DEVICES)
def test_batches_and_optimizer_state_live_on_the_model_device(device):
    model = _model(device)
    train(model, _digits(), None, TrainConfig(optimizer="adam", **{**FAST, "epochs": 1}), progress=False)
    assert model.seen and {d for d, _, _ in model.seen} == {torch.device(device).type}
    state = loop._start(model, _digits(), TrainConfig(**FAST), None, None, None)
    assert state.device.type == torch.device(device).type and not state.scaler.is_enabled()
    loop._run_epoch(state, 0, _digits(), None, False)
    moments = [t for s in state.optimizer.state.values() for k, t in s.items() if k != "step"]
    assert moments and all(t.device.type == torch.device(device).type for t in moments)
    x, y = _digits(8).x, _digits(8).y
    xb, (yb, yb2) = loop._to_device(x, (y, y), state.device)
    assert {xb.device.type, yb.device.type, yb2.device.type} == {torch.device(device).type}
    if device == "cpu":
        assert xb is x and yb is y  # already there: no copy, no pinning


class UncheckedCE(rl.objectives.CrossEntropy):
    """Cross-entropy without the label-range check (its two scalar reads per call are the objective's)."""

    def loss(self, output, target):
        return nn.functional.cross_entropy(output, target, reduction="none")

    def success(self, output, target):
        return output.argmax(1) != target


def test_epoch_sums_are_read_once_per_epoch_not_per_step(monkeypatch):
    """Before: float(loss) and float(correct) each step (two host syncs per step). Now the sums stay on
    the device; with the per-step finite check off (as on a GPU) an epoch's syncs do not grow with its steps."""
    monkeypatch.setattr(runtime, "host_reads_are_free", lambda device: False)
    totals = {}
    for n in (128, 512):  # 2 and 8 steps
        data = _digits(n)
        state = loop._start(_model("cpu"), data, TrainConfig(optimizer="sgd", **FAST), None, UncheckedCE(), None)
        with count_host_syncs() as syncs:
            sums, _, _ = loop._run_epoch(state, 0, data, None, False)
        totals[n] = syncs.total
        assert sums[2] == n
    # the sums' one read, the finite check's, and the one-time check of all training labels against the classes
    assert totals[128] == totals[512] <= 3, totals


def test_a_non_finite_loss_stops_training_on_every_device(monkeypatch):
    cfg = TrainConfig(optimizer="sgd", **{**FAST, "lr": 1e30})
    model = _model("cpu")
    with pytest.raises(FloatingPointError, match=r"epoch 1, step \d+; lower the learning rate"):
        train(model, _digits(), None, cfg, progress=False)
    assert all(torch.isfinite(p).all() for p in model.parameters())  # stopped before the bad step's update
    monkeypatch.setattr(runtime, "host_reads_are_free", lambda device: False)  # the device-side check, read at the epoch's end
    with pytest.raises(FloatingPointError, match=r"non-finite at epoch 1, step \d+"):
        train(_model("cpu"), _digits(), None, cfg, progress=False)


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_training_learns_and_resumes_to_the_same_weights(device, tmp_path):
    cfg = TrainConfig(method="pgd", attack_steps=2, amp="bf16", **{**FAST, "epochs": 3, "lr": 0.05, "eps": 0.03})
    full = _model(device)
    history = train(full, _digits(), None, cfg, progress=False).history
    assert history[-1]["train_objective"] < 0.6 * history[0]["train_objective"], history
    assert any(out == torch.bfloat16 for _, _, out in full.seen)  # the training passes ran in bf16
    assert all(out == torch.float32 for _, _, out in full.seen[-20:])  # the epoch's measurements in float32
    killed = _model(device)
    with pytest.raises(Stop):
        train(killed, _digits(), None, cfg, checkpoint_dir=tmp_path, progress=False, on_epoch=_stop_after_first_epoch)
    assert load_state(tmp_path)["fingerprint"]["amp"] == "bf16"
    resumed = _model(device)
    result = train(resumed, _digits(), None, cfg, checkpoint_dir=tmp_path, resume=True, progress=False)
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
def test_fp16_gradient_scaler_state_is_saved_and_restored(device, tmp_path):
    cfg = TrainConfig(amp="fp16", optimizer="sgd", **FAST)
    with pytest.raises(Stop):
        train(_model(device), _digits(), None, cfg, checkpoint_dir=tmp_path, progress=False,
              on_epoch=_stop_after_first_epoch)
    saved = load_state(tmp_path)["scaler"]
    assert saved["scale"] > 1 and saved["_growth_tracker"] + 0 >= 0  # 4 good steps since the last change
    state = loop._start(_model(device), _digits(), cfg, tmp_path, None, None)
    assert state.scaler.is_enabled()
    saved_edit = load_state(tmp_path)
    saved_edit["scaler"] = {**saved, "scale": 1024.0, "_growth_tracker": 7}
    torch.save(saved_edit, tmp_path / "state.pt")
    loop._restore(state)
    assert state.scaler.get_scale() == 1024.0 and state.scaler.state_dict()["_growth_tracker"] == 7
    assert state.start_epoch == 1


def test_an_amp_dtype_torch_lacks_on_the_device_is_one_input_error(monkeypatch):
    monkeypatch.setitem(loop.AMP_DTYPES, "fp16", torch.float64)  # CPU autocast has no float64: torch warns, we refuse
    with pytest.raises(rl.errors.InputError, match="--amp fp16 is not supported on cpu"):
        loop._start(_model("cpu"), _digits(), TrainConfig(amp="fp16"), None, None, None)


def test_amp_is_a_training_setting_with_a_flag():
    assert TrainConfig().amp == "off" and TrainConfig(amp="bf16").fingerprint()["amp"] == "bf16"
    assert "amp" not in TrainConfig().fingerprint()  # off: the fingerprint of older runs, which still resume
    with pytest.raises(rl.errors.InputError):
        TrainConfig(amp="fp8")


@pytest.mark.parametrize("device", DEVICES)
def test_evaluation_is_float32_under_a_callers_autocast(device, digits_model, digits_test):
    model = Recorder(hidden=64).to(device)
    with torch.no_grad():  # the trained digits MLP's weights in a model that records dtypes
        for mine, theirs in zip(model.parameters(), digits_model.parameters()):
            mine.copy_(theirs)
    x, y = digits_test[0][:64].to(device), digits_test[1][:64].to(device)
    threat = rl.ThreatModel("linf", 0.1)
    plain = rl.evaluate(model, (x, y), threat, "fast", progress=False, sanity=None)
    model.seen.clear()
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        under_autocast = rl.evaluate(model, (x, y), threat, "fast", progress=False, sanity=None)
        curve = rl.robustness_curve(model, (x, y), threat, [0.05, 0.1], "fast", progress=False, sanity=None)
    assert model.seen and {(i, o) for _, i, o in model.seen} == {(torch.float32, torch.float32)}
    assert torch.equal(under_autocast.robust_correct, plain.robust_correct)
    assert under_autocast.robust_accuracy == plain.robust_accuracy == curve.robust_accuracy[1]


class Confident(nn.Module):
    """A trained classifier with its logits multiplied by 4: the confident outputs of a well-fit model,
    whose cross-entropy gradients (~exp(-margin)) are below fp16's smallest number."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return 4 * self.model(x)


def _found(model, attacked, x, y, dtype):
    attack = PGD.for_training(rl.ThreatModel("linf", 0.1), "ce", steps=10, step_size=0.025, seed=0)
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        x_adv = attack(attacked, x, y).x_adv
    with torch.no_grad():
        return model(x_adv).argmax(1) != y


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_inner_attack_in_low_precision_finds_the_float32_examples(dtype, digits_model, digits_test):
    model = Confident(digits_model).eval()
    x, y = digits_test
    reference = _found(model, model, x, y, None)  # float32
    with torch.autocast("cpu", dtype=dtype):
        inner = for_inner_attack(model, x)
    assert isinstance(inner, Float32Gradients) and for_inner_attack(model, x) is model  # only under autocast
    guarded = _found(model, inner, x, y, dtype)
    assert reference.sum() > 50
    assert (guarded & reference).sum() >= 0.95 * reference.sum(), (int(guarded.sum()), int(reference.sum()))
    if dtype == torch.float16:  # the pitfall is real: without the guard most gradients flush to zero
        xr = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=dtype):
            loss = nn.functional.cross_entropy(model(xr), y, reduction="sum")
        grad, = torch.autograd.grad(loss, xr)
        assert (grad.flatten(1).abs().amax(1) == 0).float().mean() > 0.5
        assert _found(model, model, x, y, dtype).sum() < 0.5 * reference.sum()
