import math

import pytest
import torch

from robustlab.tasks.stereo import motorcycle, render_scene, stereo_metrics, synthetic_stereo, valid_mask, warp_to_left


def warp_right_to_left(right: torch.Tensor, disparity: torch.Tensor) -> torch.Tensor:
    """left_hat(y, x) = right(y, x - d(y, x)) for one image [C, H, W] and disparity [H, W]."""
    return warp_to_left(right[None], disparity[None, None])[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_generated_pairs_are_consistent(seed):
    s = render_scene(64, 128, 32, n_layers=4, seed=seed)
    m = s["non_occluded"]
    assert m.float().mean() > 0.5
    err = (warp_right_to_left(s["right"], s["disparity"]) - s["left"]).abs().mean(0)
    wrong = (warp_right_to_left(s["right"], s["disparity"] + 3) - s["left"]).abs().mean(0)
    assert err[m].mean() < 0.03  # bilinear resampling of textures sampled at sub-pixel positions
    assert wrong[m].mean() > 3 * err[m].mean()
    assert float(s["disparity"].min()) >= 0 and float(s["disparity"][m].max()) < 32


def test_synthetic_dataset_is_deterministic_and_stacked():
    a, b = synthetic_stereo(3, seed=5), synthetic_stereo(3, seed=5)
    assert torch.equal(a.x, b.x) and a.x.shape == (3, 6, 64, 128) and a.disparity.shape == (3, 1, 64, 128)
    assert not torch.equal(a.x, synthetic_stereo(3, seed=6).x)
    assert a.x.min() >= 0 and a.x.max() <= 1


def test_motorcycle_loader_masks_inf_and_matches():
    from skimage.data import stereo_motorcycle

    _, _, raw = stereo_motorcycle()
    assert torch.isinf(torch.from_numpy(raw)).any()  # invalid pixels are +inf, not NaN
    full = motorcycle("full")
    d, m = full.disparity[0, 0], full.mask[0, 0]
    assert not m[torch.isinf(d)].any()
    assert 5 < float(d[m].min()) and float(d[m].max()) < 70
    err = (warp_right_to_left(full.right[0], torch.nan_to_num(d, posinf=0.0)) - full.left[0]).abs().mean(0)
    shifted = (warp_right_to_left(full.right[0], torch.nan_to_num(d, posinf=0.0) + 4) - full.left[0]).abs().mean(0)
    assert err[m].mean() < 0.5 * shifted[m].mean()
    half = motorcycle("half")
    assert half.x.shape[-2:] == (250, 370)
    dh = half.disparity[0, 0][half.mask[0, 0]]
    assert float(dh.max()) < 35 and float(dh.median()) == pytest.approx(float(d[m].median()) / 2, rel=0.1)


def test_metrics_on_hand_made_maps():
    gt = torch.tensor([[10.0, 20.0], [30.0, math.inf]])
    pred = torch.tensor([[10.5, 24.0], [30.0, 0.0]])
    mask = valid_mask(gt, max_disp=64)
    assert mask.tolist() == [[True, True], [True, False]]
    m = stereo_metrics(pred, gt, mask)
    assert m["epe"] == pytest.approx(4.5 / 3)
    assert m["bad1"] == pytest.approx(1 / 3) and m["bad3"] == pytest.approx(1 / 3)
    assert m["d1"] == pytest.approx(1 / 3)
    # D1 needs both |e| > 3 and |e| > 5% of d
    m2 = stereo_metrics(torch.tensor([104.0]), torch.tensor([100.0]), torch.tensor([True]))
    assert m2["bad3"] == 1.0 and m2["d1"] == 0.0
    assert valid_mask(gt, max_disp=25).tolist() == [[True, True], [False, False]]
