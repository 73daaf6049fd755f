"""The voice task's attacks and metrics on a tiny tone classifier, each in seconds: over the air with EOT,
the preprocessing defences with and without BPDA, SimBA, Carlini-Wagner on an SNR bound, the metrics'
values, and the record of the voices a model was trained on."""
import math
import re

import pytest
import torch

pytest.importorskip("soundfile", reason="the audio task needs soundfile and librosa (pip install -e '.[audio]')")
pytest.importorskip("librosa", reason="the audio task needs soundfile and librosa (pip install -e '.[audio]')")

from test_audio import tiny_trained_model, tones  # noqa: E402

from robustlab.errors import InputError  # noqa: E402
from robustlab.runtime import device_of  # noqa: E402
from robustlab.tasks.audio import (DEFENCES, OverTheAir, attack_clips, audio_metrics, defended,  # noqa: E402
                                   low_pass, over_the_air, perturbation_metrics, predict, quantise)


@pytest.fixture(scope="module")
def tones40():
    """The tiny tone classifier with its log-mel floored at -40 dB: the channel's noise (20-40 dB SNR) then
    stays near the floor and the clean clips are right through the rooms (at -80 dB the noise fills every bin)."""
    return tiny_trained_model(top_db=40.0)                               # 16 low and 16 high tones


def test_over_the_air_eot_beats_plain_pgd_on_fresh_rooms(tones40):
    model, x, y = tones40
    same = over_the_air(model, x, x, y, draws=4)          # both channels draw the same rooms, noise and gain
    assert same["over_the_air_success"] == 0.0 and same["over_the_air_error"] == same["over_the_air_error_clean"]
    assert same["over_the_air_error_clean"] <= 0.05
    x_eot, _, m = attack_clips(OverTheAir(model, seed=0, bank=4), x, y, attack="pgd", bound_db=-20.0, steps=10, eot=4)
    x_pgd, _, _ = attack_clips(model, x, y, attack="pgd", bound_db=-20.0, steps=10)
    assert m["within_bound"] and m["db_max"] <= -20.0 + 1e-3
    eot, plain = over_the_air(model, x, x_eot, y, draws=4), over_the_air(model, x, x_pgd, y, draws=4)
    assert eot["over_the_air_success"] >= plain["over_the_air_success"] + 0.1   # measured 0.79 vs 0.62


def test_quantise_and_low_pass_values():
    levels = quantise(torch.linspace(-1.5, 1.5, 30001)).unique()
    assert levels.numel() == 257 and levels.min() == -1 and levels.max() == 1                # 2^8 + 1 levels
    assert float(quantise(torch.tensor([0.3]))) == 38 / 128                                  # round(38.4) / 128
    low, high = tones([1000.0]), tones([6000.0])             # whole cycles in 4000 samples: one FFT bin each
    assert (low_pass(low) - low).norm() < 1e-3 * low.norm() and low_pass(high).norm() < 1e-3 * high.norm()


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_bpda_against_the_defence_own_gradient(tones40, device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    model, x, y = tones40
    model = model.to(device)
    try:
        x = x[:4].to(device)
        for name in DEFENCES:
            bpda, own = defended(model, name), defended(model, name, backward="own")
            assert device_of(own).type == device and device_of(bpda).type == device   # predict sends clips there
            assert torch.equal(predict(own, x.cpu()), predict(bpda, x.cpu()))            # one forward pass
        grads = {}
        for backward in ("identity", "own"):
            xg = x.clone().requires_grad_(True)
            defended(model, "quantise-8bit", backward)(xg).sum().backward()
            grads[backward] = xg.grad
        assert grads["own"].abs().max() == 0 and grads["identity"].abs().sum() > 0       # rounding: zero gradient
    finally:
        model.cpu()


def test_simba_within_each_dB_bound(tones40):
    model, x, y = tones40
    _, _, m = attack_clips(model, x[::4], y[::4], attack="simba", bound_db=-10.0, max_queries=50)
    assert m["within_bound"] and m["db_max"] <= -10.0 + 1e-4 and m["queries_mean"] <= 50
    assert m["changed"] == 8 and m["success_rate"] >= 0.25                            # measured 0.5


def test_cw_on_an_snr_bound(tones40):
    model, x, y = tones40
    _, _, m = attack_clips(model, x[::4], y[::4], attack="cw", bound_db=None, bound_snr=10.0, steps=100)
    assert m["within_bound"] and m["snr_min"] >= 10.0 and m["clean_accuracy"] == 1.0
    assert m["success_rate"] == pytest.approx(1 - m["adversarial_accuracy"])           # all within the bound
    assert m["success_rate"] >= 0.125                                                  # measured 0.25 of 8 clips


class MeanAbove(torch.nn.Module):
    """Class 1 when a clip's mean exceeds 0.001, else class 0."""

    def forward(self, x):
        m = x.flatten(1).mean(1) - 1e-3
        return torch.stack([-m, m], 1)


def test_metric_values_and_success_needs_the_bound():
    x = tones([1000.0, 2000.0])                                      # peaks exactly 0.5 (whole quarter cycles)
    x_adv = x.clone()
    x_adv[0] += 0.005                                                # -40 dB relative to the peak, clip 1 untouched
    p = perturbation_metrics(x, x_adv)
    assert p["changed"] == 1 and p["db_mean"] == pytest.approx(-40.0, abs=1e-4)
    assert p["snr_mean"] == pytest.approx(10 * math.log10(0.125 / 0.005 ** 2), abs=1e-3)   # mean x^2 = 0.5^2 / 2
    y = torch.zeros(2, dtype=torch.long)
    inside = audio_metrics(MeanAbove(), x, x_adv, y, bound_db=-30.0)
    assert inside["success_rate"] == 0.5 and inside["adversarial_accuracy"] == 0.5 and inside["within_bound"]
    outside = audio_metrics(MeanAbove(), x, x_adv, y, bound_db=-50.0)     # fooled, but beyond the bound
    assert outside["success_rate"] == 0.0 and outside["adversarial_accuracy"] == 1.0 and not outside["within_bound"]


def test_weights_record_their_training_voices(tmp_path, caplog):
    from robustlab.tasks.audio import KeywordCNN, KWSSetup, SpeechSetup, save_kws, voices
    from robustlab.tasks.audio.cli import check_unseen
    from robustlab.tasks.audio.pretrained import trained_on, training_record

    data = SpeechSetup(words=("yes", "no"), voices=tuple(voices()[:4]))
    train_v, test_v = data.split()
    setup = KWSSetup(classes=2, channels=(4,))
    save_kws(KeywordCNN(2, (4,)), setup, tmp_path / "m.safetensors", ["yes", "no"], training_record(data))
    record = trained_on(tmp_path / "m.safetensors")
    assert record == {"voices": train_v, "words": ["yes", "no"]} and len(train_v) == 3
    check_unseen(record, test_v, "m")                                          # its own held-out voice
    with pytest.raises(InputError, match=re.escape(f"trained on 1 of these clips' voices ({train_v[0]})")):
        check_unseen(record, [train_v[0]], "m")
    more = SpeechSetup(words=("go",), voices=tuple(voices()[4:8]))
    assert training_record(more, record) == {"voices": sorted(train_v + more.split()[0]), "words": ["yes", "no", "go"]}
    reference = trained_on("pretrained")                                        # 63 of the 84 voices
    assert len(reference["voices"]) == 63
    check_unseen(reference, SpeechSetup().split()[1], "pretrained")
    with pytest.raises(InputError, match="en-us\\+m1"):                # --voices 3 holds out a voice it heard
        check_unseen(reference, SpeechSetup(voices=tuple(voices()[:3])).split()[1], "pretrained")
    save_kws(KeywordCNN(2, (4,)), setup, tmp_path / "old.safetensors", ["yes", "no"])
    assert trained_on(tmp_path / "old.safetensors") is None
    with caplog.at_level("WARNING"):
        check_unseen(None, test_v, "old")
    assert "do not record the voices" in caplog.text
