"""`robustlab detection track | hijack`: the tracking verbs, declared as ``VERBS`` (``runs.taskcli``) and added
to the detection command by ``cli``.

- ``track``: SORT on a generated crossing-shape sequence, with the ground-truth detections or the detector's;
  writes ``summary.json`` (MOTA, IDF1, id switches, ...), ``tracks.json`` (the reported tracks per frame) and a
  figure of the tracks over frames.
- ``hijack``: tracker hijacking (Jia et al. 2020) of one object for each number of attacked frames, by an attacker
  in control of the detections or through the detector with the engine's PGD; writes ``summary.json`` (the outcome
  and MOTA/IDF1 per number of attacked frames).

``--model`` names a detector as every detection verb does (``pretrained.load_detector``).
"""
from __future__ import annotations

import logging
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from ...errors import InputError
from ...fileio import atomic_write_json
from ...runs.schema import DeviceSettings
from ...runs.taskcli import Verb
from ...settings import StrictSettings
from .settings import DetectorSpec

log = logging.getLogger(__name__)


class SequenceSettings(StrictSettings):
    """The generated sequence a tracking verb runs on (``video.make_sequence``, seeded by ``--seed``)."""

    settings_name: ClassVar[str] = "the sequence settings"
    frames: int = Field(16, ge=2, le=1000, description="frames of the sequence")
    objects: int = Field(3, ge=1, le=20, description="moving shapes (crossing in pairs)")
    size: int = Field(64, ge=32, le=1024, description="frame height and width in pixels")
    detections: Literal["truth", "detector"] = Field("truth", description="what the tracker sees: the ground-truth "
                                                     "boxes or the detector's (--model)")
    model: DetectorSpec = Field("pretrained", description="the detector with --detections detector")
    score_threshold: float = Field(0.3, ge=0, le=1, description="the detector's score threshold (tracking keeps "
                                   "lower-scoring boxes than detection's 0.5: the reference detector finds 90% "
                                   "of the fully visible shapes at 0.3, 82% at 0.5)")


class TrackerSettings(StrictSettings):
    """SORT's settings (``tracking.SortTracker``)."""

    settings_name: ClassVar[str] = "the tracker settings"
    max_age: int = Field(3, ge=0, description="frames a track survives unmatched")
    min_hits: int = Field(3, ge=0, description="consecutive matches before a track is reported")
    iou_threshold: float = Field(0.3, ge=0, le=1, description="the least IoU of a detection-track assignment")


class HijackSettings(StrictSettings):
    """Tracker hijacking (``tracking_hijack.hijack_curve``)."""

    settings_name: ClassVar[str] = "the hijacking settings"
    target: int = Field(1, ge=1, description="the ground-truth id of the object whose track is hijacked")
    attacked_frames: list[int] = Field([0, 1, 2, 3, 4], min_length=1, description="numbers of attacked frames")
    start: int = Field(4, ge=1, description="the first attacked frame")
    after: int = Field(3, ge=1, description="frames after the attack on which success is judged")
    angle: float | None = Field(None, description="the hijacking direction in degrees (0: +x, 90: +y, image axes); "
                                "default: perpendicular to the object's motion")
    attack: Literal["detections", "detector"] = Field("detections", description="detections: the attacker controls "
                                                      "the detector's output; detector: PGD on the detector (--model)")
    eps: float = Field(8 / 255, ge=0, le=1, description="Linf size of the PGD perturbation per frame")
    steps: int = Field(20, ge=1, description="PGD steps per attacked frame")
    objective: Literal["hijack-anchor", "hijack"] = Field(
        "hijack-anchor", description="the hijacking objective through the detector (--attack detector): hijack-anchor "
        "(Jia et al.'s loss on the candidate anchored at the adversarial box) or hijack (the plain score-weighted IoU)")


def load_task_detector(spec: str, device):
    """The detector ``spec`` names (``pretrained``, a run directory, a .safetensors file, ``torchvision:<name>``)."""
    from .pretrained import load_detector

    return load_detector(spec, device)[0]


def _sequence_and_detections(args, seq_s: SequenceSettings):
    from .tracking_hijack import detect_frames
    from .video import make_sequence

    seq = make_sequence(args.seed, seq_s.frames, seq_s.objects, seq_s.size)
    if seq_s.detections == "truth":
        return seq, seq.detections(), None
    model = load_task_detector(seq_s.model, args.device).eval()
    return seq, detect_frames(model, seq.frames, seq_s.score_threshold), model


def cmd_track(args) -> int:
    from .tracking import track_sequence
    from .tracking_metrics import tracking_metrics
    from .tracking_reproduce import tracks_figure

    run, seq_s, trk = args.run, args.settings[SequenceSettings], args.settings[TrackerSettings]
    seq, dets, _ = _sequence_and_detections(args, seq_s)
    tracks = track_sequence(dets, **trk.model_dump())
    metrics = tracking_metrics(seq.truth(), tracks)
    atomic_write_json(run.path / "tracks.json", [t.tolist() for t in tracks], inside=run.path)
    tracks_figure(run.figures / "tracks.png", seq, {"tracks": tracks})
    run.write_summary({"metrics": metrics, "frames": len(seq), "objects": int(len(seq.ids))})
    log.info("MOTA %.3f, IDF1 %.3f, %d id switches; wrote %s", metrics["mota"], metrics["idf1"],
             metrics["num_switches"], run.path)
    return 0


def cmd_hijack(args) -> int:
    from .tracking_hijack import detector_attack, hijack_curve
    from .tracking_metrics import tracking_metrics
    from .tracking_reproduce import perpendicular, tracks_figure

    run, seq_s, trk, hj = (args.run, *(args.settings[m] for m in (SequenceSettings, TrackerSettings, HijackSettings)))
    seq, dets, model = _sequence_and_detections(args, seq_s)
    if hj.target not in seq.ids:
        raise InputError(f"--target {hj.target}: the sequence has objects {seq.ids.tolist()}")
    if hj.attack == "detector" and model is None:
        raise InputError("--attack detector needs --detections detector (the detector attacked is the one tracked)")
    k = int(np.flatnonzero(seq.ids == hj.target)[0])
    direction = (perpendicular(seq, k, hj.start) if hj.angle is None
                 else np.array([np.cos(np.radians(hj.angle)), np.sin(np.radians(hj.angle))]))
    attack = (detector_attack(model, seq.frames, eps=hj.eps, steps=hj.steps, score_threshold=seq_s.score_threshold,
                              seed=args.seed, objective=hj.objective) if hj.attack == "detector" else None)
    curve = hijack_curve(seq, dets, attack, target=hj.target, direction=direction, frames=hj.attacked_frames,
                         start=hj.start, after=hj.after, **trk.model_dump())
    rows = [{**o.summary(), **{k: tracking_metrics(seq.truth(), o.tracks)[k] for k in ("mota", "idf1")}} for o in curve]
    run.write_summary({"direction": direction.tolist(), "hijack": rows})
    shown = list(range(hj.start - 1, min(len(seq), hj.start + curve[-1].frames + hj.after + 1)))
    tracks_figure(run.figures / "tracks.png", seq, {f"{o.frames} attacked frames": o.tracks for o in curve}, shown)
    for r in rows:
        log.info("%d attacked frames: %s (id lost %s, drift %.1f px), MOTA %.3f, IDF1 %.3f", r["frames"],
                 "hijacked" if r["success"] else "not hijacked", r["id_lost"], r["drift"], r["mota"], r["idf1"])
    log.info("wrote %s", run.path)
    return 0


VERBS = (
    Verb("track", "SORT on a generated crossing-shape sequence: MOTA, IDF1, tracks figure", cmd_track,
         (DeviceSettings, SequenceSettings, TrackerSettings), kind="detection-track"),
    Verb("hijack", "tracker hijacking (Jia et al. 2020) against the number of attacked frames", cmd_hijack,
         (DeviceSettings, SequenceSettings, TrackerSettings, HijackSettings), kind="detection-hijack"),
)
