"""Tracking (issue 24): crossing-shape sequences, the SORT tracker (Kalman filter, Hungarian assignment), MOTA/IDF1
through motmetrics, and tracker hijacking (Jia et al. 2020) on hand-made detections."""
import numpy as np
import pytest
import yaml
import torch

from robustlab.errors import InputError
from robustlab.tasks.detection.boxes import Detections
from robustlab.tasks.detection.tracking import KalmanBoxFilter, SortTracker, assign, iou_matrix, track_sequence
from robustlab.tasks.detection.tracking_hijack import HijackObjective, hijack_curve, hijack_track, replace_detection, shift_box
from robustlab.tasks.detection.tracking_metrics import tracking_metrics
from robustlab.tasks.detection.video import make_sequence

pytest.importorskip("motmetrics", reason="tracking metrics need motmetrics (the detection extra)")

NO_CUDA = "no CUDA device on this machine (CPU-only torch); the cuda variant runs where a GPU is"
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA))]


def _centres(boxes):
    return np.stack([(boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2], -1)


# ----- sequences ----------------------------------------------------------------------------
def test_sequence_is_deterministic_with_exact_identities():
    a, b, c = make_sequence(3), make_sequence(3), make_sequence(4)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.boxes, b.boxes) and not np.array_equal(a.frames, c.frames)
    assert a.frames.shape == (16, 3, 64, 64) and a.boxes.shape == (16, 3, 4) and a.ids.tolist() == [1, 2, 3]
    centres = _centres(a.boxes)                                   # [T, K, 2]
    t = np.arange(16)
    for k in range(3):   # each identity moves on a straight line at constant speed (to the rasterisation's pixel)
        for axis in range(2):
            fit = np.polyval(np.polyfit(t, centres[:, k, axis], 1), t)
            assert np.abs(fit - centres[:, k, axis]).max() <= 1.0
    # the crossing pair passes the same point between frames 7 and 8 and is farthest apart at the ends
    gap = np.linalg.norm(centres[:, 0] - centres[:, 1], axis=1)
    assert np.argmin(gap) in (7, 8) and gap[0] > 2 * gap[7] and gap[15] > 2 * gap[8]
    assert np.abs((centres[7, 0] + centres[8, 0]) / 2 - (centres[7, 1] + centres[8, 1]) / 2).max() <= 1.0
    assert iou_matrix(a.boxes[8, :1], a.boxes[8, 1:2])[0, 0] > 0.3 > iou_matrix(a.boxes[0, :1], a.boxes[0, 1:2])[0, 0]
    ids, boxes = a.truth()[8]
    assert np.array_equal(boxes, a.boxes[8][a.visible[8] >= 0.3]) and set(ids) <= {1, 2, 3}
    with pytest.raises(InputError, match="frames >= 2"):
        make_sequence(frames=1)


# ----- Kalman filter and assignment ---------------------------------------------------------
def test_kalman_predict_update_on_hand_numbers():
    kf = KalmanBoxFilter(np.array([0.0, 0, 10, 10]))
    assert np.allclose(kf.x, [5, 5, 100, 1, 0, 0, 0])
    assert np.allclose(kf.predict(), [0, 0, 10, 10])             # no velocity yet: the box stays
    assert kf.P[0, 0] == pytest.approx(10 + 1e4 + 1) and kf.P[0, 4] == pytest.approx(1e4)
    kf.update(np.array([2.0, 0, 12, 10]))                         # z = (7, 5, 100, 1): moved 2 px right
    gain, vgain = 10011 / 10012, 1e4 / 10012                      # K = P H^T (H P H^T + R)^-1, R[0, 0] = 1
    assert kf.x[0] == pytest.approx(5 + 2 * gain) and kf.x[4] == pytest.approx(2 * vgain)
    assert kf.x[1] == pytest.approx(5) and kf.x[2] == pytest.approx(100) and kf.velocity[1] == pytest.approx(0)
    assert kf.P[0, 0] == pytest.approx(10011 * (1 - gain))


def test_hungarian_assignment_on_a_hand_cost_matrix():
    iou = np.array([[0.9, 0.8], [0.85, 0.1], [0.2, 0.25]])       # 3 detections x 2 tracks
    matches, new, lost = assign(iou, 0.3)
    # greedy would take (0, 0) then (1, 1) (total 1.0, 0.1 rejected); the optimum is (0, 1) + (1, 0) = 1.65
    assert matches.tolist() == [[0, 1], [1, 0]] and new.tolist() == [2] and lost.tolist() == []
    matches, new, lost = assign(np.array([[0.2]]), 0.3)           # under the threshold: rejected
    assert matches.shape == (0, 2) and new.tolist() == [0] and lost.tolist() == [0]
    matches, new, lost = assign(np.zeros((0, 2)), 0.3)
    assert matches.shape == (0, 2) and lost.tolist() == [0, 1]


# ----- metrics ------------------------------------------------------------------------------
def test_mota_and_idf1_through_motmetrics_on_a_hand_example():
    A, B = np.array([0.0, 0, 10, 10]), np.array([50.0, 50, 60, 60])
    truth = [(np.array([1, 2]), np.stack([A, B]))] * 3
    tracks = [np.array([[*A, 1], [*B, 2]]), np.array([[*A, 1]]), np.array([[*A, 2], [*B, 1]])]
    m = tracking_metrics(truth, tracks)
    # 6 truth boxes, 1 miss, 0 false positives, 2 switches (frame 3 swaps the ids): MOTA = 1 - 3/6
    assert (m["num_objects"], m["num_misses"], m["num_false_positives"], m["num_switches"]) == (6, 1, 0, 2)
    assert m["mota"] == pytest.approx(0.5)
    # IDF1: best trajectory matching 1<->A (2 frames) + 2<->B (1): IDTP 3 of 6 truth and 5 hypothesis boxes
    assert m["idf1"] == pytest.approx(2 * 3 / (6 + 5))


# ----- tracker ------------------------------------------------------------------------------
def test_tracker_keeps_identities_through_a_hand_made_crossing():
    # A moves right, B left, on the same row: they coincide on frame 5 (IoU 1) and part again
    dets = [np.array([[3.0 * t, 20, 3.0 * t + 10, 30], [30.0 - 3 * t, 20, 40.0 - 3 * t, 30]]) for t in range(11)]
    tracks = track_sequence(dets, max_age=1, min_hits=1)
    ids = [{round(float(r[0] + r[2]) / 2): int(r[4]) for r in frame} for frame in tracks]
    assert ids[0] == {5: 1, 35: 2} and ids[10] == {35: 1, 5: 2}     # crossed, ids kept
    truth = [(np.array([1, 2]), d) for d in dets]
    m = tracking_metrics(truth, tracks)
    assert m["idf1"] == 1.0 and m["num_switches"] == 0 and m["mota"] == 1.0


@pytest.mark.parametrize("max_age", [1, 3])
def test_tracker_keeps_identities_on_a_clean_crossing_sequence(max_age):
    seq = make_sequence(0)
    assert seq.visible.min() < 0.5                                 # the pair really occludes each other
    m = tracking_metrics(seq.truth(), track_sequence(seq.detections(), max_age=max_age, min_hits=3))
    assert m["idf1"] == 1.0 and m["num_switches"] == 0 and m["mota"] == 1.0


def test_tracker_reports_after_min_hits_and_ends_after_max_age():
    tracker = SortTracker(max_age=1, min_hits=2)
    box = np.array([[0.0, 0, 10, 10]])
    assert tracker.update(box)[:, 4].tolist() == [1]               # the first min_hits frames report at once
    tracker.update(box)
    tracker.update(np.zeros((0, 4)))
    assert tracker.track(1) is not None                           # one frame unmatched: coasting
    tracker.update(np.zeros((0, 4)))
    assert tracker.track(1) is None                               # more than max_age: ended
    assert tracker.update(box + 40).tolist() == []                # a new track (id 2) not yet reported
    assert tracker.update(box + 40)[:, 4].tolist() == [2]
    with pytest.raises(InputError, match="max_age"):
        SortTracker(max_age=-1)


# ----- hijacking ----------------------------------------------------------------------------
def test_shift_box_reaches_the_wanted_iou():
    box = np.array([10.0, 10, 30, 20])
    moved = shift_box(box, np.array([1.0, 0]), 0.4)
    assert iou_matrix(box, moved)[0, 0] == pytest.approx(0.4, abs=1e-6)
    assert moved[1] == box[1] and moved[0] - box[0] == pytest.approx(20 * 0.6 / 1.4, abs=1e-5)  # w (1-u)/(1+u)


def test_hijack_objective_success_and_loss_exact_on_hand_made_detections():
    orig, adv = np.array([10.0, 10, 20, 20]), np.array([15.0, 10, 25, 20])   # IoU(orig, adv) = 1/3
    target = torch.tensor(np.stack([orig, adv]))[None].repeat(5, 1, 1).float()
    det = lambda *rows: Detections(torch.tensor(np.array([r[0] for r in rows])).reshape(-1, 4),  # noqa: E731
                                   torch.tensor([r[1] for r in rows]), torch.zeros(len(rows), dtype=torch.long))
    frames = [det((adv, 0.9)),                        # fabricated, original gone: success
              det((adv, 0.9), (orig, 0.8)),           # the original survives
              det((adv, 0.4)),                        # fabricated under the score threshold
              det((np.array([12.0, 10, 23, 20]), 0.9)),   # IoU 8/13 with adv and 8/13 with orig: not hijacked
              det((adv + [1, 0, 1, 0], 0.9))]         # shifted on: IoU 9/11 with adv, 1/4 with orig: success
    obj = HijackObjective(score_threshold=0.5, match_iou=0.5)
    assert obj.success(frames, target).tolist() == [True, False, False, False, True]
    # loss on a dense raw output [B, N, 6 + K]: candidate 0 at adv (score s0), candidate 1 at orig (score s1)
    logits = torch.tensor([[1.0], [2.0]])
    raw = torch.cat([torch.zeros(2, 2), torch.tensor(np.stack([adv, orig])).float(), logits], 1)[None]
    s0, s1 = torch.sigmoid(logits).flatten().tolist()
    assert obj.loss(raw, target[:1]).item() == pytest.approx(s0 * 1.0 - s1 * 1.0)
    assert obj.success(raw, target[:1]).tolist() == [False]
    with pytest.raises(InputError, match=r"\[B, 2, 4\]"):
        obj.loss(raw, target[:1, 0])
    kept = replace_detection(np.stack([orig + [1, 0, 1, 0], orig, orig + 40]), orig, adv)
    assert kept.tolist() == [(orig + [1, 0, 1, 0]).tolist(), (orig + 40).tolist(), adv.tolist()]  # only the best match goes


class _TwoCandidates(torch.nn.Module):
    """A hand-made detector: candidate 0 at ``adv``, candidate 1 at ``orig``, with logits +-10 (mean of channel 0 -
    0.5): on a grey frame both score exactly 0.5; brightening channel 0 by 0.1 scores them 0.73 / 0.27."""

    def __init__(self, orig, adv):
        super().__init__()
        self.register_buffer("boxes", torch.tensor(np.stack([adv, orig]), dtype=torch.float32))
        self.anchor = torch.nn.Parameter(torch.zeros(1))   # a parameter, so that the model has a device

    def forward(self, x):
        z = 10 * (x[:, 0].mean((1, 2)) - 0.5)
        logits = torch.stack([z, -z], 1)[..., None]                          # [B, 2, 1]
        boxes = self.boxes.expand(x.shape[0], -1, -1)
        return torch.cat([torch.zeros_like(boxes[..., :2]), boxes, logits], -1)


@pytest.mark.parametrize("device", DEVICES)
def test_hijack_objective_through_the_engine_pgd_on_a_hand_made_detector(device):
    from robustlab.tasks.detection.tracking_hijack import detect_frames, detector_attack

    orig, adv = np.array([10.0, 10, 20, 20]), np.array([15.0, 10, 25, 20])
    model = _TwoCandidates(orig, adv).to(device)
    frames = np.full((2, 3, 32, 32), 0.5, dtype=np.float32)
    assert [len(d) for d in detect_frames(model, frames)] == [0, 0]          # score 0.5 is not above 0.5
    boxes, ok = detector_attack(model, frames, eps=0.1, steps=3, score_threshold=0.6)(1, orig, adv)
    assert ok and np.allclose(boxes, [adv])                   # sigmoid(1) = 0.73 at adv kept, the original 0.27 gone
    boxes, ok = detector_attack(model, frames, eps=0.01, steps=3, score_threshold=0.6)(1, orig, adv)
    assert not ok and len(boxes) == 0                         # too small a budget: sigmoid(0.1) = 0.52 < 0.6


def test_hijacking_succeeds_with_enough_attacked_frames_on_controlled_detections():
    seq = make_sequence(0)
    dets = seq.detections()
    motion = seq.boxes[5, 0, :2] - seq.boxes[3, 0, :2]
    away = np.array([-motion[1], motion[0]])                        # perpendicular to the object's motion
    results = [hijack_track(seq, dets, target=1, direction=away, frames=n, start=4, after=3, max_age=3, min_hits=3)
               for n in range(4)]
    assert [r.success for r in results] == [False, False, True, True]
    assert not results[0].id_lost and results[2].id_lost and results[2].survived
    assert results[3].drift > results[2].drift > 5
    assert results[3].frame_success == [True] * 3 and all(len(r.tracks) == len(seq) for r in results)
    curve = hijack_curve(seq, dets, target=1, direction=away, frames=range(4), start=4, after=3, max_age=3, min_hits=3)
    assert [c.summary() for c in curve] == [r.summary() for r in results]   # one shared attack, the same outcomes
    with pytest.raises(InputError, match="do not fit"):
        hijack_track(seq, dets, frames=20)


# ----- CLI verbs ----------------------------------------------------------------------------
def _run_verb(argv):
    import argparse

    from robustlab.tasks.detection.cli import COMMAND

    parser = argparse.ArgumentParser()
    COMMAND.add_cli(parser.add_subparsers(dest="command", required=True))
    return COMMAND.run_cli(parser.parse_args(["detection", *argv]))


def test_track_and_hijack_verbs_write_their_runs(tmp_path):
    import json

    assert _run_verb(["track", "--runs", str(tmp_path), "--name", "t", "--device", "cpu"]) == 0
    summary = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert summary["metrics"]["idf1"] == 1.0 and summary["metrics"]["num_switches"] == 0
    assert (tmp_path / "t" / "figures" / "tracks.png").stat().st_size > 0
    assert len(json.loads((tmp_path / "t" / "tracks.json").read_text())) == 16
    assert _run_verb(["hijack", "--runs", str(tmp_path), "--name", "h", "--device", "cpu",
                      "--attacked-frames", "0,3"]) == 0
    rows = json.loads((tmp_path / "h" / "summary.json").read_text())["hijack"]
    assert [(r["frames"], r["success"]) for r in rows] == [(0, False), (3, True)] and rows[1]["idf1"] < rows[0]["idf1"]
    assert yaml.safe_load((tmp_path / "h" / "config.yaml").read_text())["objective"] == "hijack-anchor"
    with pytest.raises(SystemExit):  # argparse: --objective is one of the hijacking objectives
        _run_verb(["hijack", "--runs", str(tmp_path), "--name", "h3", "--objective", "nope"])
    with pytest.raises(InputError, match="--target 9"):
        _run_verb(["hijack", "--runs", str(tmp_path), "--name", "h2", "--device", "cpu", "--target", "9"])
    with pytest.raises(InputError, match="missing.safetensors"):
        _run_verb(["track", "--runs", str(tmp_path), "--name", "t2", "--device", "cpu", "--detections", "detector",
                   "--model", str(tmp_path / "missing.safetensors")])
    with pytest.raises(InputError, match="max-age"):
        _run_verb(["track", "--runs", str(tmp_path), "--name", "t3", "--device", "cpu", "--max-age", "-1"])


def test_tracking_section_quick_without_a_detector(tmp_path):
    from robustlab.tasks.detection.tracking_reproduce import tracking_section

    md, results = tracking_section(tmp_path, quick=True, seed=0)
    curve = results["hijack"]["controlled detections"]
    assert [c["frames"] for c in curve] == [0, 1, 2, 3] and curve[0]["success"] == 0 and curve[3]["success"] == 1
    assert curve[3]["mota"] < curve[0]["mota"] and "detector" not in results["clean"]
    assert "| controlled detections | 3 |" in md and "figures/tracks-hijacked.png" in md
    assert (tmp_path / "tracking.json").exists() and (tmp_path / "figures" / "tracks-hijacked.png").stat().st_size > 0
