"""The optional GPU speed-ups (issue 21): torch.compile on attacks and the training step, channels-last memory.
Off by default; with them on, the numbers agree with the plain run to rounding. The tests compile with the
aot_eager backend (no C++ toolchain, seconds); TorchInductor, the default of compile=True, goes the same way."""
import pytest
import torch

import robustlab as rl
from robustlab import runtime
from robustlab.attacks import PGD
from robustlab.errors import InputError
from robustlab.training import TrainConfig, train

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))]


def small_conv(seed: int = 0, channels: int = 1) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(channels, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 8 * 8, 10))


@pytest.mark.parametrize("device", DEVICES)
def test_a_compiled_attack_agrees_with_the_plain_one_and_compiles_once(device):
    data = rl.load_dataset("digits", "test").subset(64)
    model = small_conv().to(device).eval()
    x, y = data.x.to(device), data.y.to(device)
    threat = rl.ThreatModel("linf", 0.1)
    plain = PGD(threat, steps=5)(model, x, y)
    attack = PGD(threat, steps=5, compile="aot_eager")
    compiled, again = attack(model, x, y), attack(model, x, y)
    assert torch.equal(compiled.success, plain.success) and torch.equal(again.success, plain.success)
    torch.testing.assert_close(compiled.x_adv, plain.x_adv, atol=1e-5, rtol=0)
    assert list(runtime._COMPILED[model]) == ["aot_eager"]  # one compiled module per model and backend


def test_compile_options_are_checked():
    with pytest.raises(InputError, match="compile"):
        PGD(rl.ThreatModel("linf", 0.1), compile=3)
    assert runtime.compile_backend(True) == "inductor" and runtime.compile_backend(False) is None
    assert runtime.compiled_model(lambda z: z, "inductor")(2) == 2  # not a module (an oracle): as is


@pytest.mark.parametrize("device", DEVICES)
def test_training_with_channels_last_and_compile_matches_the_plain_run(device):
    digits = rl.load_dataset("digits", "train").subset(96)
    data = rl.data.Dataset(digits.x.repeat(1, 3, 1, 1) * torch.tensor([1.0, 0.5, 0.25])[:, None, None], digits.y)
    seen = []  # whether each batch reaching the first convolution is channels-last (3 channels: not trivially)

    def run(**options):
        model = small_conv(channels=3).to(device)
        model[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous(
            memory_format=torch.channels_last)))
        cfg = TrainConfig(method="pgd", epochs=1, batch_size=32, eps=0.1, attack_steps=3, eval_n=16, **options)
        train(model, data, None, cfg, progress=False)
        return torch.cat([p.detach().flatten() for p in model.parameters()]), cfg

    plain, cfg_plain = run()
    assert not any(seen)
    seen.clear()
    fast, cfg_fast = run(channels_last=True, compile="aot_eager")
    assert any(seen), "channels-last batches reach the model"
    torch.testing.assert_close(fast.cpu(), plain.cpu(), atol=1e-4, rtol=1e-4)
    assert "compile" not in cfg_plain.fingerprint() and "channels_last" not in cfg_plain.fingerprint()
    assert cfg_fast.fingerprint()["compile"] == "aot_eager" and cfg_fast.fingerprint()["channels_last"] is True
