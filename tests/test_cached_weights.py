"""cached_weights: train once, save safetensors with the setup in the metadata, reload; retrain when the
file is corrupt, written for another setup or asked to; the OCR and stereo reference nets use it."""
import json

import torch
import torch.nn as nn

from robustlab.training.checkpoints import cached_weights, read_metadata


def test_cached_weights_trains_once_and_retrains_when_needed(tmp_path):
    calls = []

    def train(model):
        calls.append(1)
        with torch.no_grad():
            model.weight.fill_(len(calls))
        return {"final_loss": 0.5}

    path = tmp_path / "net.safetensors"
    m = cached_weights(nn.Linear(2, 2), path, train, {"width": 2, "sizes": (1, 2)})
    assert len(calls) == 1 and not m.training and float(m.weight[0, 0].detach()) == 1
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["setup"] == {"width": 2, "sizes": [1, 2]} and side["final_loss"] == 0.5 and side["train_seconds"] >= 0
    assert json.loads(read_metadata(path)["setup"]) == {"width": 2, "sizes": [1, 2]}
    m = cached_weights(nn.Linear(2, 2), path, train, {"sizes": [1, 2], "width": 2})      # the same setup: loaded
    assert len(calls) == 1 and float(m.weight[0, 0].detach()) == 1
    m = cached_weights(nn.Linear(2, 2), path, train, {"width": 3, "sizes": [1, 2]})      # another setup: retrained
    assert len(calls) == 2 and float(m.weight[0, 0].detach()) == 2
    path.write_bytes(b"not a safetensors file")                                           # corrupt: retrained
    m = cached_weights(nn.Linear(2, 2), path, train, {"width": 3, "sizes": [1, 2]})
    assert len(calls) == 3 and float(m.weight[0, 0].detach()) == 3
    cached_weights(nn.Linear(2, 2), path, train, {"width": 3, "sizes": [1, 2]}, retrain=True)
    assert len(calls) == 4


def test_stereo_reference_net_goes_through_the_cache(tmp_path, monkeypatch):
    import robustlab.tasks.stereo.pretrained as pre

    setup = pre.StereoSetup(h=32, w=64, max_disp=32, n_train=4, n_val=2, steps=2, features=8, hidden=16)
    a = pre.pretrained_stereo(setup, cache=tmp_path)
    assert len(list(tmp_path.glob("stereonet-*.safetensors"))) == 1

    def no_training(*args, **kw):
        raise AssertionError("retrained a cached net")

    monkeypatch.setattr(pre, "train_stereo", no_training)
    b = pre.pretrained_stereo(setup, cache=tmp_path)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    model, loaded = pre.load_stereo_model(next(tmp_path.glob("stereonet-*.safetensors")))
    assert loaded == setup
