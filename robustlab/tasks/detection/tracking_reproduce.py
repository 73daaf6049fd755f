"""The tracking part of the detection reproduction: SORT on crossing-shape sequences (MOTA/IDF1 with ground-truth
detections and with the detector's), and tracker hijacking (Jia et al. 2020) against the number of attacked frames,
by an attacker in control of the detections (the upper bound) and through the detector with the engine's PGD.

Every object of every sequence is hijacked in turn, perpendicular to its own motion, from frame ``START``; success
is judged on the ``AFTER`` frames that follow the attack (``tracking_hijack``). MOTA/IDF1 "attacked" are those of
the whole sequence tracked with the attack.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ...errors import InputError
from ...evaluation.suite import wilson_interval
from ...fileio import atomic_write_json
from ...progress import progress_bar
from ...runs.report_figures import save_figure
from .tracking import track_sequence
from .tracking_hijack import (AnchorHijackObjective, HijackObjective, detect_frames, detections_attack, detector_attack,
                              hijack_curve)
from .tracking_metrics import tracking_metrics
from .video import VideoSequence, make_sequence

log = logging.getLogger(__name__)

#: the SORT settings of the reproduction (max_age 3 carries a track through the crossings' occlusions)
SORT = {"max_age": 3, "min_hits": 3, "iou_threshold": 0.3}
START, AFTER = 4, 3
#: the hijackings through the detector, (objective, Linf eps) each: Jia et al.'s loss, the plain one, smaller budgets
DETECTOR_ATTACKS = ((AnchorHijackObjective.name, 8 / 255), (HijackObjective.name, 8 / 255),
                    (AnchorHijackObjective.name, 4 / 255), (AnchorHijackObjective.name, 2 / 255))
#: the detector's score threshold for tracking (the reference detector finds 82% of the fully visible shapes of these
#: frames at 0.5, 90% at 0.3)
SCORE = 0.3


def _mean(rows: list[dict]) -> dict:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}


def perpendicular(seq: VideoSequence, k: int, t: int) -> np.ndarray:
    """The direction (x, y) perpendicular (+90 degrees) to object k's motion around frame t."""
    v = (seq.boxes[t + 1, k, :2] - seq.boxes[t - 1, k, :2]).astype(np.float64)
    return np.array([-v[1], v[0]]) if np.linalg.norm(v) > 0 else np.array([1.0, 0.0])


def hijack_sequence(seq: VideoSequence, detections: list, attack_for, frames: list[int]) -> list[dict]:
    """Hijack every tracked object of ``seq`` in turn; per (object, n attacked frames) the outcome and the
    sequence's MOTA/IDF1 under the attack. ``attack_for(detections)`` builds the frame attack."""
    rows = []
    for k, target in enumerate(seq.ids.tolist()):
        try:
            curve = hijack_curve(seq, detections, attack_for(detections), target=target, frames=frames, start=START,
                                 after=AFTER, direction=perpendicular(seq, k, START), **SORT)
        except InputError as e:   # the object is not tracked before the attack (missed by the detector)
            log.info("object %d not hijacked: %s", target, e)
            continue
        for o in curve:
            m = tracking_metrics(seq.truth(), o.tracks)
            rows.append({**o.summary(), "target": target, "mota": m["mota"], "idf1": m["idf1"]})
    return rows


def _curve(rows: list[dict], frames: list[int]) -> list[dict]:
    """Per number of attacked frames: the success rate, id-lost rate, mean drift, MOTA and IDF1 over the runs."""
    out = []
    for n in frames:
        sel = [r for r in rows if r["frames"] == n]
        if sel:
            out.append({"frames": n, "runs": len(sel), **_mean([{k: float(r[k]) for k in
                                                                 ("success", "id_lost", "drift", "mota", "idf1")}
                                                                for r in sel])})
    return out


def _clean(seqs: list[VideoSequence], detections: list[list]) -> dict:
    return _mean([tracking_metrics(s.truth(), track_sequence(d, **SORT)) for s, d in zip(seqs, detections)])


def tracking_section(out: str | Path, quick: bool = False, seed: int = 0, model=None,
                     attacks: tuple = DETECTOR_ATTACKS, steps: int = 20) -> tuple[str, dict]:
    """Run the tracking reproduction; (markdown section, results). Writes ``tracking.json`` and
    ``figures/tracks-hijacked.png`` under ``out``. ``model``: a detector (dense raw output, ``boxes.py``) for the
    detector rows, one hijacking curve per (objective, Linf eps) of ``attacks`` with PGD of ``steps`` steps
    (``quick``: the first only); None: only ground-truth detections and the controlled-detection hijacking."""
    out = Path(out)
    start = time.perf_counter()
    n_seq, frames = (1, [0, 1, 2, 3]) if quick else (8, [0, 1, 2, 3, 4, 5])
    seqs = [make_sequence(seed + i) for i in range(n_seq)]
    truth_dets = [s.detections() for s in seqs]
    results = {"settings": {"sequences": n_seq, "seed": seed, "sort": SORT, "start": START, "after": AFTER,
                            "attacks": [list(a) for a in attacks], "steps": steps, "frames": frames,
                            "score_threshold": SCORE},
               "clean": {"truth": _clean(seqs, truth_dets)}, "hijack": {}}
    rows = [r for s, d in zip(seqs, truth_dets) for r in hijack_sequence(s, d, detections_attack, frames)]
    results["hijack"]["controlled detections"] = _curve(rows, frames)
    if model is not None:
        model.eval()
        det = [detect_frames(model, s.frames, SCORE) for s in seqs]
        results["clean"]["detector"] = _clean(seqs, det)
        for objective, eps in attacks[:1] if quick else attacks:
            rows = _detector_rows(model, seqs[: 1 if quick else 4], det, frames[:3] if quick else frames,
                                  objective=objective, eps=eps, steps=steps, seed=seed)
            results["hijack"][f"detector, {objective}, PGD Linf {eps * 255:.0f}/255 x {steps}"] = _curve(rows, frames)
    rows, shown = _hijacked_rows(seqs[0], truth_dets[0])
    if model is not None:   # the same through the detector, on its first object tracked before the attack
        objective, eps = attacks[0]
        attack = detector_attack(model, seqs[0].frames, score_threshold=SCORE, objective=objective, eps=eps,
                                 steps=steps, seed=seed)
        rows.update(_detector_figure_rows(seqs[0], det[0], attack))
    tracks_figure(out / "figures" / "tracks-hijacked.png", seqs[0], rows, shown)
    results["seconds"] = time.perf_counter() - start
    atomic_write_json(out / "tracking.json", results)
    return tracking_markdown(results), results


def _detector_rows(model, seqs: list[VideoSequence], detections: list, frames: list[int], **attack) -> list[dict]:
    """``hijack_sequence`` on each sequence with ``detector_attack(model, frames, score_threshold=SCORE, **attack)``."""
    rows = []
    for s, d in progress_bar(list(zip(seqs, detections)), desc=f"hijack through the detector ({attack['objective']})",
                             unit="seq"):
        attack_for = lambda _d, s=s: detector_attack(model, s.frames, score_threshold=SCORE, **attack)  # noqa: E731
        rows += hijack_sequence(s, d, attack_for, frames)
    return rows


def _rate(rate: float, runs: int) -> str:
    """A success rate over ``runs`` with its 95% Wilson interval: "60% (31-83)"."""
    lo, hi = wilson_interval(round(rate * runs), runs)
    return f"{100 * rate:.0f}% ({100 * lo:.0f}-{100 * hi:.0f})"


def tracking_markdown(results: dict) -> str:
    """The section: clean MOTA/IDF1 per detection source, hijacking success against attacked frames."""
    s = results["settings"]
    md = ["## Tracking: SORT and tracker hijacking", "",
          f"{s['sequences']} crossing-shape sequences (seed {s['seed']}), SORT max_age {s['sort']['max_age']}, "
          f"min_hits {s['sort']['min_hits']}, IoU {s['sort']['iou_threshold']}. Hijacking from frame {s['start']}, "
          f"each object in turn, perpendicular to its motion; judged on the {s['after']} frames after the attack.", "",
          "| detections | MOTA | IDF1 | id switches |", "|---|---|---|---|"]
    md += [f"| {k} | {v['mota']:.3f} | {v['idf1']:.3f} | {v['num_switches']:.1f} |" for k, v in results["clean"].items()]
    md += ["", "| hijacking | attacked frames | runs | success (95% CI) | id lost | drift (px) | MOTA | IDF1 |",
           "|---|---|---|---|---|---|---|---|"]
    for name, curve in results["hijack"].items():
        md += [f"| {name} | {c['frames']} | {c['runs']} | {_rate(c['success'], c['runs'])} | {100 * c['id_lost']:.0f}% | "
               f"{round(c['drift'], 1) + 0.0:.1f} | {c['mota']:.3f} | {c['idf1']:.3f} |" for c in curve]
    return "\n".join(md + ["", "![tracks of a hijacked sequence](figures/tracks-hijacked.png)", ""])


def _hijacked_rows(seq: VideoSequence, detections: list, target: int = 1, frames: int = 3, attack=None,
                   name: str = "") -> tuple[dict, list]:
    """The clean tracks and those with object ``target`` hijacked for ``frames`` frames (by ``attack``, default
    controlled detections), each row's name prefixed by ``name``; the frames worth showing."""
    k = int(np.flatnonzero(seq.ids == target)[0])
    hijacked = hijack_curve(seq, detections, attack, target=target, frames=(frames,), start=START, after=AFTER,
                            direction=perpendicular(seq, k, START), **SORT)[0]
    rows = {f"{name}clean": track_sequence(detections, **SORT),
            f"{name}hijacked ({frames} frames from {START}, object {target})": hijacked.tracks}
    return rows, list(range(START - 1, min(len(seq), START + frames + AFTER + 1)))


def _detector_figure_rows(seq: VideoSequence, detections: list, attack) -> dict:
    """``_hijacked_rows`` through the detector for the first object it tracks before the attack ({} if none)."""
    for target in seq.ids.tolist():
        try:
            return _hijacked_rows(seq, detections, target, attack=attack, name="detector: ")[0]
        except InputError:
            continue
    return {}


def tracks_figure(path: Path, seq: VideoSequence, rows: dict, shown: list[int] | None = None) -> None:
    """Frames ``shown`` of ``seq`` (default: 8 spread over the sequence), one row per entry of ``rows`` (name ->
    the tracker's reported [N, 5] per frame), boxes coloured and labelled by track id."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = list(range(0, len(seq), max(1, len(seq) // 8)))[:8] if shown is None else shown
    fig, axes = plt.subplots(len(rows), len(shown), figsize=(1.6 * len(shown), 1.8 * len(rows)), squeeze=False)
    colours = plt.get_cmap("tab10")
    for r, (name, tracks) in enumerate(rows.items()):
        for c, t in enumerate(shown):
            ax = axes[r, c]
            ax.imshow(seq.frames[t].transpose(1, 2, 0))
            for x1, y1, x2, y2, i in tracks[t]:
                ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.5, color=colours(int(i) % 10)))
                ax.text(x1, y1 - 1, str(int(i)), color=colours(int(i) % 10), fontsize=7)
            ax.set_title(f"{name if c == 0 else ''}\nframe {t}", fontsize=7, loc="left")
            ax.axis("off")
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.9, wspace=0.05, hspace=0.35)
    save_figure(fig, path)
