"""Targeted disparity attacks, universal tiles, patches at a disparity, EOT, the stereo checks and CLI."""
import json

import pytest
import torch

import robustlab as rl
from helpers import run_cli, tiny_stereo_net
from robustlab.objectives import RegressionError
from robustlab.tasks.stereo import (evaluate_stereo, predict, region_target, shift_target, stereo_attack,
                                    stereo_checks, synthetic_stereo, warp_to_left)
from robustlab.tasks.stereo.physical import (PairJitter, PatchAtDisparity, RandomPairTransform, fit_universal_tile,
                                             jittered_metrics)


@pytest.fixture(scope="module")
def net():
    model, train, val, _ = tiny_stereo_net(48, 6, h=32, w=64, max_disp=16, train_seed=11, val_seed=12, steps=300)
    return model, train, val


def test_masked_targets_may_be_infinite_and_huge_thresholds_are_refused():
    out = torch.zeros(1, 1, 2, 2, requires_grad=True)
    target = torch.tensor([[[[1.0, float("inf")], [2.0, float("nan")]]]])
    mask = torch.tensor([[[[True, False], [True, False]]]])
    loss = RegressionError(threshold=0.0).loss(out, (target, mask))
    assert torch.allclose(loss, torch.tensor([1.5]))
    grad, = torch.autograd.grad(loss.sum(), out)
    assert torch.isfinite(grad).all() and float(grad[0, 0, 0, 1]) == 0.0
    with pytest.raises(rl.InputError, match="float32 precision"):
        RegressionError(threshold=1e9)


def test_untargeted_against_prediction_and_targeted_shift(net):
    model, _, val = net
    clean = predict(model, val.x)
    res = stereo_attack(model, val.x, eps=0.03, reference="prediction")
    moved = (predict(model, res.x_adv) - clean).abs().mean()
    assert float(moved) > 1.0
    target = shift_target(clean, 3.0)
    res = stereo_attack(model, val.x, eps=0.03, steps=20, target=target, success_px=0.5)
    before = (clean - target).abs().mean()
    after = (predict(model, res.x_adv) - target).abs().mean()
    assert float(before) == pytest.approx(3.0)
    assert float(after) < 0.6 * float(before), (before, after)
    assert float((res.x_adv - val.x).abs().max()) <= 0.03 + 1e-6


def test_region_target_and_consistent_targeted_attack(net):
    model, _, val = net
    clean = predict(model, val.x)
    region = torch.zeros_like(val.mask)
    region[..., 8:20, 20:40] = True
    target = region_target(clean, region)
    assert torch.equal(target[~region], clean[~region])
    for i in range(len(val)):
        assert torch.allclose(target[i][region[i]], clean[i][~region[i]].median().expand(int(region[i].sum())))
    inner = 0.1 + 0.8 * val.x  # away from the bounds: no clamping, the constraint holds exactly
    clean = predict(model, inner)
    target = region_target(clean, region)
    res = stereo_attack(model, inner, val.disparity, val.mask, eps=0.03, views="consistent", target=target,
                        target_mask=region, steps=10)
    delta = res.x_adv - inner
    assert torch.allclose(delta[:, :3], warp_to_left(delta[:, 3:], val.disparity) * val.mask, atol=1e-5)
    err_before = float((clean - target).abs()[region].mean())
    err_after = float((predict(model, res.x_adv) - target).abs()[region].mean())
    assert err_after < err_before


def test_universal_tile_applies_to_any_size_and_beats_random_sign(net, tmp_path):
    model, train, val = net
    tile = fit_universal_tile(model, train, eps=0.03, tile=16, epochs=4)
    assert tile.delta.shape == (1, 6, 16, 16)
    assert float(tile.delta.abs().max()) <= 0.03 + 1e-6 and float(tile.delta.min()) < 0  # two-sided, not clamped to [0, 1]
    noise = rl.attacks.UniversalPerturbation(0.03 * torch.sign(torch.randn(1, 6, 16, 16, generator=torch.Generator().manual_seed(0))),
                                             tile.threat, tiled=True)
    fitted, rand = evaluate_stereo(model, val, x=tile.apply(val.x)), evaluate_stereo(model, val, x=noise.apply(val.x))
    assert fitted["epe"] > 1.3 * rand["epe"], (fitted, rand)  # measured: 2.78 vs 1.80 px
    bigger = synthetic_stereo(1, h=40, w=72, max_disp=16, seed=3)
    assert tile.apply(bigger.x).shape == bigger.x.shape
    tile.save(tmp_path / "tile.pt")
    again = rl.attacks.UniversalPerturbation.load(tmp_path / "tile.pt")
    assert again.tiled and torch.equal(again.apply(bigger.x), tile.apply(bigger.x))


def test_patch_at_a_disparity_is_a_consistent_scene():
    data = synthetic_stereo(4, h=32, w=64, max_disp=16, seed=5)
    placement = PatchAtDisparity((4, 12))
    patch = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    where = placement.sample(data.x, 8, torch.Generator().manual_seed(1))
    x, (disp, mask), on = placement.paste(data.x, (data.disparity, data.mask), patch, where)
    top, left, d = where
    for i in range(4):
        t, l, di = int(top[i]), int(left[i]), int(d[i])
        assert torch.equal(x[i, :3, t:t + 8, l:l + 8], patch) and torch.equal(x[i, 3:, t:t + 8, l - di:l - di + 8], patch)
        assert bool((disp[i, 0][on[i, 0]] == di).all()) and bool(mask[i, 0][on[i, 0]].all())
    # the right view warped by the new disparity reproduces the left on the patch
    warped = warp_to_left(x[:, 3:], disp)
    assert torch.allclose(warped[on.expand_as(warped)], x[:, :3][on.expand_as(warped)], atol=1e-5)
    # left pixels whose right-view match the patch now hides are no longer valid
    gt = data.disparity[:, 0]
    cols = torch.arange(64)[None, None].float()
    rows = torch.arange(32)[None, :, None]
    in_rows = (rows >= top[:, None, None]) & (rows < (top + 8)[:, None, None])
    match = cols - gt
    hidden = in_rows & ~on[:, 0] & (match >= (left - d)[:, None, None]) & (match < (left - d + 8)[:, None, None])
    assert not mask[:, 0][hidden].any()


def test_eot_attack_uses_random_views_and_jitter_keeps_bounds(net):
    model, _, val = net
    jitter = PairJitter()
    xj = jitter(val.x, torch.Generator().manual_seed(0))
    assert xj.shape == val.x.shape and float(xj.min()) >= 0 and float(xj.max()) <= 1 and not torch.equal(xj, val.x)
    wrapped = RandomPairTransform(model, jitter)
    with torch.no_grad():
        assert not torch.equal(wrapped(val.x), wrapped(val.x))
    attack = rl.attacks.PGD(rl.tasks.stereo.stereo_threat(0.03), rl.tasks.stereo.disparity_objective(1000.0), steps=5,
                            step_size=0.01, early_stop=False, eot=3)
    x_adv = attack(wrapped, val.x, (val.disparity, val.mask)).x_adv
    clean = jittered_metrics(model, val.x, val.disparity, val.mask, jitter, n=4)
    attacked = jittered_metrics(model, x_adv, val.disparity, val.mask, jitter, n=4)
    assert attacked["epe"] > 1.5 * clean["epe"], (clean, attacked)


def test_stereo_checks_pass_on_a_real_net_and_flag_masked_gradients(net):
    model, _, val = net
    report = stereo_checks(model, val, eps=0.03, checks="cheap")
    assert [c.name for c in report.checks] == ["randomness", "probabilities", "gradients", "one_step_vs_iterative"]
    assert report["gradients"].verdict == "pass" and report["one_step_vs_iterative"].verdict == "pass"

    class Quantised(torch.nn.Module):  # rounding the input: zero gradients almost everywhere
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(torch.round(x * 8) / 8)

    masked = stereo_checks(Quantised(model), val, eps=0.03, checks="cheap")
    assert masked["gradients"].verdict == "warn"


@pytest.mark.slow
def test_stereo_cli_train_attack_defend_evaluate(tmp_path):
    env_dir = tmp_path / "cache"
    import os

    os.environ["ROBUSTLAB_DATA"] = str(env_dir)
    try:
        tiny = ["--height", "32", "--width", "64", "--max-disp", "16", "--scenes", "32", "--steps", "150"]
        run_cli("stereo", "train", "--runs", tmp_path, "--name", "net", *tiny)
        assert list((env_dir / "stereo").glob("stereonet-*.safetensors"))  # cached for the next call
        summary = json.loads((tmp_path / "net" / "summary.json").read_text())
        assert summary["metrics"]["synthetic validation"]["epe"] < 4.0
        run_cli("stereo", "attack", "--runs", tmp_path, "--name", "att", "--model", tmp_path / "net", "--n", "4",
                "--eps", "0.03", "--target", "shift:3", "--steps", "10")
        att = json.loads((tmp_path / "att" / "summary.json").read_text())
        assert att["error_to_target"]["attacked"] < att["error_to_target"]["clean"]
        assert (tmp_path / "att" / "report.html").exists() and (tmp_path / "att" / "figures" / "maps.png").exists()
        run_cli("stereo", "defend", "--runs", tmp_path, "--name", "def", "--model", tmp_path / "net", "--steps", "4",
                "--attack-steps", "1", "--lr-consistency", "0.1", "--llr", "1.0")
        d = json.loads((tmp_path / "def" / "summary.json").read_text())
        assert {c["name"] for c in d["checks"]} >= {"gradients", "one_step_vs_iterative"}
        args = ["stereo", "evaluate", "--runs", tmp_path, "--name", "ev", "--model", tmp_path / "net", "--model",
                tmp_path / "def", "--n", "4", "--eps", "0.01,0.03", "--steps", "5"]
        run_cli(*args)
        curves = json.loads((tmp_path / "ev" / "summary.json").read_text())["curves"]
        assert set(curves) == {"net", "def"}
        assert curves["net"]["0.03"]["epe"] > curves["net"]["0.0"]["epe"]
        assert (tmp_path / "ev" / "figures" / "curves.png").exists()
        first = (tmp_path / "ev" / "cells" / "0-eps0.03.json").read_text()
        run_cli(*args)  # resumes from the stored cells
        assert (tmp_path / "ev" / "cells" / "0-eps0.03.json").read_text() == first
        # the shared report writer puts stereo runs side by side, in the style of every report
        run_cli("report", tmp_path / "att", tmp_path / "ev", "-o", tmp_path / "stereo.html")
        page = (tmp_path / "stereo.html").read_text()
        assert "robustlab report" in page and "disparity error vs ground truth" in page and "EPE (px)" in page
        assert "att/figures/maps.png" in page and "ev/figures/curves.png" in page
    finally:
        os.environ.pop("ROBUSTLAB_DATA", None)


def test_stereo_verbs_record_their_settings_and_refuse_a_bad_target_before_a_run(tmp_path):
    """config.yaml holds each verb's settings under the keys the reports and ``run_inputs`` read; a bad
    --target is one error before any run directory is made."""
    import dataclasses

    import yaml

    from robustlab.cli import build_parser
    from robustlab.taskspec import get_task

    task, parser = get_task("stereo"), build_parser()
    args = parser.parse_args(["stereo", "defend", "--runs", str(tmp_path), "--eps", "0.03", "--no-adversarial"])
    args.task_verb = dataclasses.replace(args.task_verb, main=lambda a: 0)  # the settings, not the fine-tuning
    assert task.run_cli(args) == 0
    config = yaml.safe_load((tmp_path / "stereo-defend" / "config.yaml").read_text())
    assert (config["kind"], config["eps"], config["no_adversarial"], config["steps"]) == ("stereo-model", 0.03, True, 150)
    for bad, words in (("shift:x", "expected a number after 'shift:'"), ("up", "none, shift:S, scale:K or region")):
        args = parser.parse_args(["stereo", "attack", "--runs", str(tmp_path / "new"), "--target", bad])
        with pytest.raises(rl.InputError, match=words):
            task.run_cli(args)
    assert not (tmp_path / "new").exists()


def test_a_nan_loss_is_a_clear_error_not_a_silent_no_op(net):
    model, _, val = net
    target = val.disparity.clone()
    target[:, :, 0, 0] = float("nan")  # a NaN target inside the valid mask
    mask = torch.ones_like(val.mask)
    with pytest.raises(rl.ModelOutputError, match="loss is NaN"):
        stereo_attack(model, val.x, target, mask, eps=0.02, steps=2)


@pytest.mark.slow
def test_reproduce_writes_tables_and_resumes_from_its_cells(tmp_path, monkeypatch):
    from robustlab.tasks.stereo.pretrained import StereoSetup, load_stereo_model
    from robustlab.tasks.stereo.reproduce import reproduce

    monkeypatch.setenv("ROBUSTLAB_DATA", str(tmp_path / "cache"))
    setup = StereoSetup(h=32, w=64, max_disp=32, n_train=16, n_val=2, steps=30, features=8, hidden=16)
    text = reproduce(tmp_path / "out", setup, seeds=(0,), finetune_steps=2)
    for heading in ("Attack table", "Transfer to OpenCV SGBM", "Defence ablation", "Physical-world"):
        assert heading in text
    assert (tmp_path / "out" / "tables.md").read_text() == text
    cells = sorted((tmp_path / "out" / "cells").glob("*.json"))
    assert len(cells) == 2 * (1 + 2 * 4 * 3) + 1 + 2 * 3 + 3 + 3 + 5  # attacks, transfer, physical, defence
    _, loaded = load_stereo_model(tmp_path / "out" / "models" / "plus_both-seed0.safetensors")
    assert loaded == setup
    killed = tmp_path / "out" / "cells" / "attack-synthetic-pgd-both-0.02.json"
    kept = {p.name: p.read_text() for p in cells if p != killed}
    killed.unlink()  # as if the run had been killed before this cell
    assert reproduce(tmp_path / "out", setup, seeds=(0,), finetune_steps=2) == text  # deterministic re-measure
    assert all((tmp_path / "out" / "cells" / name).read_text() == body for name, body in kept.items())
