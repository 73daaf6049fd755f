"""The voice task (robustlab.tasks.audio): dB / SNR threats, the log-mel front end, a waveform PGD,
the WAV folder loader, 1-D Square windows and the CLI on tiny settings."""
import json
import math

import pytest
import torch

pytest.importorskip("soundfile", reason="the audio task needs soundfile and librosa (pip install -e '.[audio]')")
pytest.importorskip("librosa", reason="the audio task needs soundfile and librosa (pip install -e '.[audio]')")

from robustlab.tasks.audio import (KeywordCNN, RelativeThreat, attack_clips, audio_threat, db_relative,  # noqa: E402
                                   espeak_status, snr, wav_folder, within_bound)
from robustlab.errors import InputError  # noqa: E402
from robustlab.threat import ThreatModel  # noqa: E402

ESPEAK, WHY = espeak_status()
needs_espeak = pytest.mark.skipif(not ESPEAK, reason=WHY)


def tones(freqs, t=4000, peak=0.5, rate=16000):
    """Clips [B, 1, t]: a sine per frequency, peak ``peak``."""
    time = torch.arange(t) / rate
    return torch.stack([peak * torch.sin(2 * math.pi * f * time) for f in freqs])[:, None]


def test_db_bound_is_exact_on_one_peak():
    x = tones([440.0, 1000.0])
    threat = audio_threat(x, bound_db=-20.0)
    assert isinstance(threat, ThreatModel) and threat.eps == pytest.approx(0.05)   # 0.5 * 10^(-20/20)
    far = x + torch.sign(torch.randn(x.shape, generator=torch.Generator().manual_seed(0)))
    x_adv = threat.project(x, far)
    assert torch.allclose(db_relative(x, x_adv - x), torch.full((2,), -20.0), atol=1e-4)
    assert within_bound(x, x_adv, bound_db=-20.0).all()


def test_relative_db_and_snr_bounds_are_exact_per_clip():
    x = torch.cat([tones([440.0]), tones([700.0], peak=0.125)])          # peaks 0.5 and 0.125
    threat = audio_threat(x, bound_db=-30.0)
    assert isinstance(threat, RelativeThreat)
    v = threat.project(x, torch.full_like(x, 5.0))                         # the corner of the ball
    delta = threat.apply(x, v) - x
    assert torch.allclose(delta.flatten(1).abs().amax(1), torch.tensor([0.5, 0.125]) * 10 ** (-30 / 20), rtol=1e-5)
    assert torch.allclose(db_relative(x, delta), torch.full((2,), -30.0), atol=1e-4)
    sub = threat.subset(torch.tensor([1]))                                 # the engine drops finished clips
    assert torch.equal(sub.scale, threat.scale[1:])
    l2 = audio_threat(x, bound_snr=20.0)
    v = l2.project(x, torch.randn(x.shape, generator=torch.Generator().manual_seed(1)))
    delta = l2.apply(x, v) - x
    assert torch.allclose(snr(x, delta), torch.full((2,), 20.0), atol=1e-3)
    with pytest.raises(InputError, match="one audio bound"):
        audio_threat(x)


def test_front_end_matches_librosa_and_is_differentiable():
    import librosa
    import numpy as np
    from scipy.signal import get_window

    model = KeywordCNN(classes=2, channels=(4,))
    x = tones([1000.0, 3000.0], t=8000)
    ours = model.frontend.power_mel(x)
    # librosa's mel power spectrogram (feature.melspectrogram: centred frames, zero padding, Hann window of
    # 400 samples centred in 512) spelled out with numpy, whose FFT needs no JIT compilation (librosa.stft's
    # first call compiles for seconds to minutes)
    window = np.zeros(512)
    window[56:456] = get_window("hann", 400, fftbins=True)
    padded = np.pad(x[:, 0].numpy().astype(np.float64), ((0, 0), (256, 256)))
    frames = np.stack([padded[:, i * 160:i * 160 + 512] for i in range(1 + 8000 // 160)], 1)
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2                     # [B, frames, 257]
    ref = librosa.filters.mel(sr=16000, n_fft=512, n_mels=40, fmin=20.0) @ power.transpose(0, 2, 1)
    assert ours.shape == ref.shape
    assert torch.allclose(ours, torch.from_numpy(ref).float(), rtol=1e-3, atol=1e-3 * float(ours.max()))
    xg = x.clone().requires_grad_(True)
    model(xg).sum().backward()
    assert torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0


def tiny_trained_model(top_db: float = 80.0):
    """A two-class tone classifier (low vs high) on 0.25 s clips, trained to 100% in a few steps (log-mel
    floored at ``top_db`` below the clip's loudest bin)."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    freqs = torch.cat([300 + 200 * torch.rand(16, generator=gen), 2000 + 1000 * torch.rand(16, generator=gen)])
    x, y = tones(freqs.tolist()), torch.cat([torch.zeros(16), torch.ones(16)]).long()
    model = KeywordCNN(classes=2, channels=(4, 8), top_db=top_db)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():  # batch-norm statistics of the trained net, exactly (one pass, cumulative average)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        model(x)
    return model.eval(), x, y


def test_pgd_at_minus_20_db_stays_within_the_bound_and_lowers_accuracy():
    model, x, y = tiny_trained_model()
    x_adv, results, m = attack_clips(model, x, y, attack="pgd", bound_db=-20.0, steps=10)
    assert m["clean_accuracy"] == 1.0
    assert m["within_bound"] and m["db_max"] <= -20.0 + 1e-3
    assert m["adversarial_accuracy"] < m["clean_accuracy"]
    assert x_adv.abs().max() <= 1.0


def test_square_uses_one_dimensional_windows():
    from robustlab.attacks.square import linf_window

    assert linf_window(0.05, 1, 16000) == 800                     # samples in a row
    assert linf_window(0.1, 32, 32) == 10 and linf_window(0.8, 8, 8) == 7  # square sides, as before
    model, x, y = tiny_trained_model()
    _, _, m = attack_clips(model, x[:4], y[:4], attack="square", bound_db=-10.0, max_queries=30)
    assert m["within_bound"] and m["queries_mean"] <= 30


def test_cw_needs_an_snr_bound_and_corpus_labels_follow_the_model():
    from robustlab.data import Dataset
    from robustlab.tasks.audio.cli import in_classes

    model, x, y = tiny_trained_model()
    with pytest.raises(InputError, match="bound the SNR"):
        attack_clips(model, x[:2], y[:2], attack="cw", bound_db=-30.0)
    corpus = Dataset(x[:3], torch.tensor([0, 1, 1]), classes=["no", "yes"])
    mapped = in_classes(corpus, ["zero", "yes", "no"])
    assert mapped.y.tolist() == [2, 1, 1] and mapped.classes == ["zero", "yes", "no"]
    with pytest.raises(InputError, match="no class for no"):
        in_classes(corpus, ["yes", "go"])


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_over_the_air_channel_on_the_device(device):
    from robustlab.tasks.audio import OverTheAir

    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    model, x, _ = tiny_trained_model()
    x = x[:3].to(device)
    a, b = OverTheAir(model.to(device), seed=3, bank=4).to(device), OverTheAir(model, seed=3, bank=4).to(device)
    ya, yb = a.channel(x), b.channel(x)
    assert ya.device.type == device and torch.equal(ya, yb)             # reproducible in its seed
    assert not torch.equal(a.channel(x), ya)                            # a new room, noise and gain per call


def test_wav_files_hold_the_attacked_samples(tmp_path):
    import soundfile as sf

    from robustlab.tasks.audio.report import write_wav

    clip = tones([440.0])[0] + 1e-4 * torch.randn(1, 4000, generator=torch.Generator().manual_seed(0))
    write_wav(tmp_path / "c.wav", clip)
    back, rate = sf.read(str(tmp_path / "c.wav"), dtype="float32")
    assert rate == 16000 and torch.equal(torch.from_numpy(back), clip[0])


def test_wav_folder(tmp_path):
    import soundfile as sf

    for label, f in (("no", 300.0), ("yes", 2000.0)):
        (tmp_path / label).mkdir()
        for i in range(2):
            clip = tones([f + 50 * i], t=4000, rate=8000)[0, 0].numpy()
            sf.write(str(tmp_path / label / f"{i}.wav"), clip, 8000)                        # 8 kHz, 0.5 s
    data = wav_folder(tmp_path)
    assert data.classes == ["no", "yes"] and data.y.tolist() == [0, 0, 1, 1]
    assert data.x.shape == (4, 1, 16000) and torch.allclose(data.x.abs().amax(-1), torch.tensor(0.5))
    assert wav_folder(tmp_path, ["yes", "no", "up"]).y.tolist() == [1, 1, 0, 0]
    with pytest.raises(InputError, match="not classes"):
        wav_folder(tmp_path, ["yes"])
    (tmp_path / "yes" / "broken.wav").write_bytes(b"RIFF not audio")
    with pytest.raises(InputError, match="broken.wav: not a readable WAV"):
        wav_folder(tmp_path)


def test_list_shows_the_task(capsys):
    from helpers import cli

    code, out, _ = cli(capsys, "list")
    assert code == 0 and "audio" in out


@needs_espeak
def test_cli_train_attack_evaluate(tmp_path, monkeypatch, capsys):
    from helpers import cli

    monkeypatch.setenv("ROBUSTLAB_DATA", str(tmp_path / "cache"))
    corpus = ["--voices", "3", "--words", "yes,no", "--takes", "1"]
    code, _, err = cli(capsys, "audio", "train", "--runs", tmp_path, "--name", "m", "--epochs", "1", *corpus)
    assert code == 0, err
    model = tmp_path / "m"
    assert (model / "checkpoints" / "kws.safetensors").exists()
    from robustlab.tasks.audio.pretrained import trained_on
    from robustlab.tasks.audio.speech import SpeechSetup, voices

    assert trained_on(model) == {"voices": SpeechSetup(voices=tuple(voices()[:3])).split()[0], "words": ["yes", "no"]}
    code, _, err = cli(capsys, "audio", "attack", "--runs", tmp_path, "--name", "a", "--model", model, "--n", "2",
                       "--attack", "pgd", "--steps", "3", "--db", "-20", *corpus)
    assert code == 0, err
    m = json.loads((tmp_path / "a" / "summary.json").read_text())["metrics"]
    assert m["n"] == 2 and m["within_bound"] and m["db_max"] <= -20 + 1e-3
    page = (tmp_path / "a" / "report.html").read_text()
    assert "<audio" in page and (tmp_path / "a" / "audio" / "clip0-adversarial.wav").exists()
    code, _, err = cli(capsys, "audio", "evaluate", "--runs", tmp_path, "--name", "e", "--model", model, "--n", "2",
                       "--db=-30,-20", "--attacks", "apgd-ce", *corpus)
    assert code == 0, err
    summary = json.loads((tmp_path / "e" / "summary.json").read_text())
    assert [r["db"] for r in summary["rows"]] == ["-30", "-20"]
    assert set(summary["sanity"]) == {"-30", "-20"}                     # the shared checks at each bound
    code, _, err = cli(capsys, "audio", "attack", "--runs", tmp_path, "--name", "b", "--model", model, "--steps", "0",
                       "--max-queries", "0", *corpus)
    assert code == 2 and "--steps" in err and "--max-queries" in err


@needs_espeak
def test_reproduce_quick(tmp_path, monkeypatch):
    from robustlab.tasks.audio.reproduce import reproduce

    monkeypatch.setenv("ROBUSTLAB_DATA", str(tmp_path / "cache"))
    res = reproduce(tmp_path / "r", quick=True)
    assert {r["attack"] for r in res["attacks"]} == {"square", "simba", "universal", "over-the-air pgd"}
    assert all(r["within_bound"] for r in res["robust"] if r["attack"] != "cw")
    assert len(res["defences"]) == 3 and (tmp_path / "r" / "results.md").exists()
    assert [r["attack"] for r in res["mixed_loudness"]] == ["square", "simba", "universal"]
    assert all(r["within_bound"] for r in res["mixed_loudness"])
    assert [len(r["rows"]) for r in res["shared_evaluation"]] == [2, 2]
    assert "<audio" in (tmp_path / "r" / "report.html").read_text()
