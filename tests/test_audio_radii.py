"""One radius per clip for the black-box and universal attacks: clips of different loudness attacked in one
batch, each perturbation inside its own dB bound (``RelativeThreat`` through Square, SimBA and
``UniversalPerturbation``)."""
import pytest
import torch

pytest.importorskip("soundfile", reason="the audio task needs soundfile and librosa (pip install -e '.[audio]')")
pytest.importorskip("librosa", reason="the audio task needs soundfile and librosa (pip install -e '.[audio]')")

from test_audio import tiny_trained_model  # noqa: E402

from robustlab.tasks.audio import RelativeThreat, attack_clips, audio_threat, db_relative, snr  # noqa: E402
from robustlab.tasks.audio.experiment import universal, universal_threat  # noqa: E402
from robustlab.errors import InputError  # noqa: E402
from robustlab.threat import lp_norm  # noqa: E402

GAINS = torch.tensor([1.0, 0.25, 0.06, 0.5, 0.125, 1.0])   # peaks 0.5 ... 0.03 (0 to -24 dB)


def loud_and_quiet():
    model, x, y = tiny_trained_model()
    pick = torch.tensor([0, 1, 2, 16, 17, 18])                   # three low tones, three high
    return model, x[pick] * GAINS[:, None, None], y[pick]


@pytest.mark.parametrize("attack", ["square", "simba"])
def test_black_box_keeps_each_clip_in_its_own_db_bound(attack):
    model, x, y = loud_and_quiet()
    assert isinstance(audio_threat(x, bound_db=-20.0), RelativeThreat)
    x_adv, results, m = attack_clips(model, x, y, attack=attack, bound_db=-20.0, max_queries=40, seed=1)
    radius = lp_norm(x, "linf") * 10 ** (-20 / 20)                 # the clip's own Linf radius
    norms = lp_norm(x_adv - x, "linf")
    assert (norms <= radius * (1 + 1e-6)).all()
    assert (db_relative(x, x_adv - x)[norms > 0] <= -20.0 + 1e-5).all() and m["within_bound"]
    assert (norms > 0).all() and results[0].queries.max() <= 40
    if attack == "square":  # Linf Square starts on the corners of the box: the whole radius of each clip
        assert torch.allclose(norms, radius, rtol=1e-5)
    assert x_adv.abs().max() <= 1.0


def test_square_under_an_snr_bound_per_clip():
    model, x, y = loud_and_quiet()
    x_adv, _, m = attack_clips(model, x, y, attack="square", bound_db=None, bound_snr=20.0, max_queries=20)
    assert (snr(x, x_adv - x) >= 20.0 - 1e-4).all() and m["within_bound"]


def test_universal_perturbation_is_relative_to_each_clip():
    model, x, y = loud_and_quiet()
    x_adv, uap = universal(model, x, y, -20.0, epochs=2)
    delta = x_adv - x
    assert (db_relative(x, delta) <= -20.0 + 1e-5).all()
    v = delta / lp_norm(x, "linf")[:, None, None]                  # one shared waveform, scaled per clip
    assert torch.allclose(v, v[:1].expand_as(v), atol=1e-5)
    quiet = x[:2] * 0.5                                            # other clips: their own radii
    other = uap.apply(quiet, universal_threat(quiet, uap))
    assert (db_relative(quiet, other - quiet) <= -20.0 + 1e-5).all()
    with pytest.raises(InputError, match="pixel ThreatModel"):
        uap.save("unused.pt")


def test_evaluate_clips_of_different_peaks_with_one_radius_per_clip(tmp_path):
    import json

    from robustlab.data import Dataset
    from robustlab.runs.rundir import Run
    from robustlab.tasks.audio.experiment import curve_threat, evaluate_run

    model, x, y = loud_and_quiet()
    threat, eps = curve_threat(x, [-30.0, -10.0])
    assert isinstance(threat, RelativeThreat) and eps == {-30.0: 10 ** (-30 / 20), -10.0: 10 ** (-10 / 20)}
    rows = evaluate_run(Run(tmp_path / "e"), model, Dataset(x, y), [-10.0, -30.0], "apgd-ce", sanity="cheap")
    assert [r[0] for r in rows] == ["-30", "-10"] and all(float(r[2]) <= float(r[1]) for r in rows)
    summary = json.loads((tmp_path / "e" / "summary.json").read_text())
    assert summary["eps_relative_to_peak"] and set(summary["sanity"]) == {"-30", "-10"}
    assert float(rows[1][2]) < 1.0                                    # -10 dB breaks some clip of each loudness
