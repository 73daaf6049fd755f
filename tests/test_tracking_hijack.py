"""Tracker hijacking through a detector (issue 24, Jia et al. 2020): the anchor objective's loss on a hand-made raw
output, and a hijacking through a small trained detector that moves the track where the plain objective does not."""
import math

import numpy as np
import pytest
import torch

from robustlab.errors import InputError
from robustlab.tasks.detection.tracking_hijack import AnchorHijackObjective, detector_attack, hijack_curve

pytest.importorskip("motmetrics", reason="tracking metrics need motmetrics (the detection extra)")


def _raw(anchors, boxes, logits):
    """A dense raw output [1, N, 7] (one class) from anchors [N, 2], boxes [N, 4] and logits [N]."""
    return torch.cat([torch.tensor(anchors, dtype=torch.float32), torch.tensor(boxes, dtype=torch.float32),
                      torch.tensor(logits, dtype=torch.float32)[:, None]], 1)[None]


def test_anchor_hijack_loss_exact_on_a_hand_made_raw_output():
    orig, adv = [10.0, 10, 20, 20], [15.0, 10, 25, 20]              # IoU(orig, adv) = 1/3; adv's centre (20, 15)
    target = torch.tensor([[orig, adv]])
    obj = AnchorHijackObjective(score_threshold=0.5)
    # candidate 0 sits on adv's centre with a box 1 px right of adv (IoU 9/11); 1 is the original (IoU 1), 2 a
    # neighbour of the original 2 px down (IoU 8/12 with orig, 4/16 with adv); 3 is far away (IoU 0 with both)
    raw = _raw([[20, 15], [15, 15], [15, 17], [60, 60]],
               [[16, 10, 26, 20], orig, [10, 12, 20, 22], [55, 55, 65, 65]], [-3.0, 2.0, 1.0, 4.0])
    s = torch.sigmoid(torch.tensor([-3.0, 2.0, 1.0])).tolist()
    want = math.log(s[0]) + 9 / 11 - (s[1] * 1.0 + s[2] * 8 / 12)
    assert obj.loss(raw, target).item() == pytest.approx(want, rel=1e-5)
    # the anchored candidate is never suppressed, even while its box is still on the original
    raw = _raw([[20, 15], [60, 60]], [orig, [55, 55, 65, 65]], [0.0, 4.0])
    assert obj.loss(raw, target).item() == pytest.approx(math.log(0.5) + 1 / 3, rel=1e-5)
    assert obj.success(raw, target).tolist() == [False]
    with pytest.raises(InputError, match="score_threshold must lie in"):
        AnchorHijackObjective(score_threshold=2)
    with pytest.raises(InputError, match="hijacking objective"):
        detector_attack(torch.nn.Linear(1, 1), np.zeros((1, 3, 8, 8)), objective="nope")


@pytest.fixture(scope="module")
def square_detector():
    """A one-class (square) detector trained for 200 steps on 48-pixel scenes (a few seconds)."""
    from robustlab.tasks.detection.data import synthetic_scenes
    from robustlab.tasks.detection.model import TinyDetector
    from robustlab.tasks.detection.train import train_detector

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = TinyDetector(1, width=12)
    train_detector(model, synthetic_scenes(256, 3, size=48, classes=("square",), max_objects=1), 200, 16, 5e-3,
                   progress=False)
    return model.eval()


def test_hijacking_through_a_trained_detector_moves_the_track(square_detector):
    from robustlab.tasks.detection.tracking import iou_matrix
    from robustlab.tasks.detection.tracking_hijack import detect_frames
    from robustlab.tasks.detection.tracking_reproduce import perpendicular
    from robustlab.tasks.detection.video import make_sequence

    seq = make_sequence(0, n_objects=1, size=48, classes=("square",))
    dets = detect_frames(square_detector, seq.frames, 0.3)
    found = [iou_matrix(d, seq.boxes[t, 0]).max(initial=0) >= 0.5 for t, d in enumerate(dets)]
    assert all(found)                                              # the clean square is found on every frame

    def curve(objective):
        attack = detector_attack(square_detector, seq.frames, eps=8 / 255, steps=10, score_threshold=0.3,
                                 objective=objective)
        return hijack_curve(seq, dets, attack, target=1, frames=(0, 2, 3), direction=perpendicular(seq, 0, 4),
                            max_age=3, min_hits=3)

    clean, two, three = curve("hijack-anchor")
    assert not clean.success and abs(clean.drift) < 2
    # two attacked frames (Linf 8/255) carry the track off the square, which loses its id; it drifts on
    assert two.success and two.id_lost and two.frame_success == [True, True] and two.drift > 5
    assert two.overlap < 0.3 < clean.overlap                       # the track has left the square (SORT's gate)
    assert three.success and three.drift > two.drift + 2
    plain = curve("hijack")[1]             # the score-weighted IoU objective: the box barely moves (1-2 px)
    assert plain.drift < 5 < two.drift


def test_hijack_success_is_batched_and_equals_the_per_frame_rule():
    from robustlab.tasks.detection.boxes import decode
    from robustlab.tasks.detection.tracking import iou_matrix
    from robustlab.tasks.detection.tracking_hijack import HijackObjective

    g = torch.Generator().manual_seed(0)
    xy = (torch.rand(8, 40, 2, generator=g) * 5).round() * 6 + torch.rand(8, 40, 2, generator=g)
    raw = torch.cat([xy, xy - 5, xy + 5, torch.randn(8, 40, 1, generator=g) * 2 - 1], -1)
    dets = decode(raw)
    far = torch.tensor([100.0, 100, 110, 110])
    pairs = torch.stack([torch.stack([d.boxes[0] if i % 2 and len(d) else far, d.boxes[-1] if len(d) else far + 1])
                         for i, d in enumerate(dets)])  # (original, adversarial): on a detection or far away
    want = [bool((iou_matrix(d.boxes, p[1]) >= 0.5).any()) and not bool((iou_matrix(d.boxes, p[0]) >= 0.5).any())
            for d, p in zip(dets, pairs)]
    obj = HijackObjective()
    assert obj.success(raw, pairs).tolist() == obj.success(dets, pairs).tolist() == want
    assert any(want) and not all(want)
