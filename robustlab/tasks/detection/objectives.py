"""Detection objectives on the shared ``Objective`` interface (``loss -> [B]`` maximised,
``success -> bool[B]``), each with an exact per-image success read from the decoded detections
(``score > score_threshold``, class-wise NMS at ``iou_threshold``; a box *matches* another when their
IoU is at least ``match_iou``, 0.5 as in mAP@0.5).

Outputs are the dense raw tensor [B, N, 6 + K] (scores, differentiable) or a list of ``Detections``
(success only). Targets are lists with one ``Detections`` per image (the engine's ``index_target``
selects them):

- ``Untargeted``: target = the detector's own detections on the clean image (``attacks.attack_targets``, the
  default, as the untargeted attacks of DAG and TOG; or the ground truth); loss = the detector's training loss
  (``detection_loss``) towards the target, maximised; success = the detections D changed from the target T:
  some box of T has no box of D of its label at IoU >= match_iou (it vanished, moved or changed label), or some
  box of D has none of T (a new box). Against its own detections a clean image never succeeds: every box matches
  itself (and an image with no detection has nothing to change until a box appears).
- ``Vanishing``: loss = ``-T sum_{i,k} softplus((z_ik - logit(score_threshold)) / T)`` over candidates i and
  classes k (T = 0.25): a soft hinge at the threshold, so the scores above it are pushed down first
  (the many background candidates far below it weigh nothing); success = no detection at all.
- ``Fabrication``: loss = the largest class logit (a soft maximum) among candidates anchored outside
  every target box; success = some detection overlaps no target box (IoU < match_iou with each, of
  any label): a false positive in mAP's sense. (The loss leaves out candidates *anchored* inside a true
  box, so a small box fabricated inside a large object counts as a success but gets no gradient.)
- ``Mislabel``: target = the wanted boxes (the truth with other labels, ``relabelled``); loss = minus
  the training loss towards them; success = every wanted box is matched by a detection of its wanted
  label and by none of another label (an image without boxes never succeeds).
- ``BoxShift``: target = the wanted boxes (``shifted``, which keeps where each box was); loss = minus the
  training loss towards them; success = every wanted box is matched by a detection of its label and no
  detection of that label is left on the original box (none without boxes): a copy next to the object is
  no move.

Every success is computed for the whole batch on the output's device, with no host read inside an attack step
(no ``nonzero``, ``.item()`` or boolean-mask indexing): ``boxes.padded_detections`` decodes into padded tensors
(``decode``'s detections exactly, NMS as vectorised steps) and the rules above are reductions over
[batch, target box, detection] masks. Only padding the targets loops over the Python list of ``Detections``
(copies on the device, no read).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from ...errors import InputError
from ...objectives import Objective
from .boxes import (ANCHOR, LOGITS, Detections, box_iou, candidate_scores, check_raw, detections_of, pad_truth,
                    padded_detections, padded_overlaps)
from .losses import detection_loss


def _targets(target, n: int) -> list[Detections]:
    if isinstance(target, Detections):
        target = [target]
    if not isinstance(target, (list, tuple)) or len(target) != n or not all(isinstance(t, Detections) for t in target):
        raise InputError(f"detection targets are a list of {n} Detections (one per image), got {type(target).__name__}")
    return list(target)


class DetectionObjective(Objective):
    """Shared settings: the decoding thresholds and the IoU at which two boxes match."""

    task = "detection"
    name = "detection"

    def __init__(self, score_threshold: float = 0.5, iou_threshold: float = 0.5, match_iou: float = 0.5):
        for v, what in ((score_threshold, "score_threshold"), (iou_threshold, "iou_threshold"), (match_iou, "match_iou")):
            if not 0.0 <= float(v) <= 1.0:
                raise InputError(f"{what} must lie in [0, 1], got {v}")
        self.score_threshold, self.iou_threshold, self.match_iou = float(score_threshold), float(iou_threshold), float(match_iou)

    def detections(self, output) -> list[Detections]:
        return detections_of(output, self.score_threshold, self.iou_threshold)

    def _padded(self, output, target) -> tuple[tuple, tuple, torch.Tensor, torch.Tensor]:
        """The decoded detections and the targets of a batch as padded tensors on the output's device (no host
        read: ``boxes.padded_detections``), and ``(over, same)`` [B, G, M] between target box g and detection m."""
        dets = padded_detections(output, self.score_threshold, self.iou_threshold)
        truth = pad_truth(_targets(target, dets[0].shape[0]), dets[0].device)
        over, same = padded_overlaps(dets, truth, self.match_iou)
        return dets, truth, over, same

    def _towards(self, output, target) -> torch.Tensor:
        return -detection_loss(output, _targets(target, output.shape[0]))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(score_threshold={self.score_threshold}, match_iou={self.match_iou})"


class Untargeted(DetectionObjective):
    """Untargeted: away from the target (the detector's own clean detections, or the truth); success = some target
    box has no detection of its label at IoU >= match_iou, or some detection has no target box of its label."""

    name = "detection_untargeted"

    def loss(self, output, target):
        return detection_loss(output, _targets(target, output.shape[0]))

    def success(self, output, target):
        (_, _, _, kept), (_, _, valid), over, same = self._padded(output, target)
        hit = over & same
        return (valid & ~hit.any(2)).any(1) | (kept & ~hit.any(1)).any(1)


class Vanishing(DetectionObjective):
    name = "detection_vanishing"

    #: the temperature of the soft hinge
    temperature = 0.25

    def loss(self, output, target=None):
        check_raw(output)
        p = min(max(self.score_threshold, 1e-6), 1 - 1e-6)  # thresholds 0 and 1 hinge far below and far above
        t = math.log(p / (1 - p))
        above = torch.nn.functional.softplus((output[..., LOGITS:] - t) / self.temperature)
        return -self.temperature * above.flatten(1).sum(1)

    def success(self, output, target=None):
        if isinstance(output, torch.Tensor):  # on the device: NMS only removes boxes, and never the best one
            return ~(candidate_scores(output)[0] > self.score_threshold).any(1)
        return ~padded_detections(output)[3].any(1)


class Fabrication(DetectionObjective):
    name = "detection_fabrication"

    def loss(self, output, target):
        check_raw(output)
        boxes, _, valid = pad_truth(_targets(target, output.shape[0]), output.device)
        a = output[..., ANCHOR].detach()[:, :, None, :]                              # [B, N, 1, 2]
        inside = ((a >= boxes[:, None, :, :2]) & (a <= boxes[:, None, :, 2:])).all(-1) & valid[:, None, :]
        z = output[..., LOGITS:].amax(-1).masked_fill(inside.any(-1), -1e4)
        return torch.logsumexp(z, dim=1)

    def success(self, output, target):  # some detection overlaps no true box, of any label
        (_, _, _, kept), _, over, _ = self._padded(output, target)
        return (kept & ~over.any(1)).any(1)


class Mislabel(DetectionObjective):
    name = "detection_mislabel"

    def loss(self, output, target):
        return self._towards(output, target)

    def success(self, output, target):
        (_, _, _, kept), (_, _, valid), over, same = self._padded(output, target)
        every_wanted = ((over & same).any(2) | ~valid).all(1)
        return valid.any(1) & kept.any(1) & every_wanted & ~(over & ~same).flatten(1).any(1)


@dataclass
class ShiftedBoxes(Detections):
    """One image's box-shift goal: the wanted (moved) boxes, and ``origin`` [M, 4], where each box was."""

    origin: torch.Tensor | None = None

    def to(self, device) -> "ShiftedBoxes":
        return ShiftedBoxes(self.boxes.to(device), self.scores.to(device), self.labels.to(device),
                            None if self.origin is None else self.origin.to(device))


class BoxShift(DetectionObjective):
    name = "detection_box_shift"

    def loss(self, output, target):
        return self._towards(output, target)

    def success(self, output, target):
        dets, (_, _, valid), over, same = self._padded(output, target)
        # a ShiftedBoxes keeps where each box was: no detection of its label may stay there (plain Detections: no test)
        origins = [Detections(t.origin, None, t.labels) if getattr(t, "origin", None) is not None
                   else Detections.empty(valid.device) for t in _targets(target, valid.shape[0])]
        stayed, same_there = padded_overlaps(dets, pad_truth(origins, valid.device), self.match_iou)
        every_wanted = ((over & same).any(2) | ~valid).all(1)
        return valid.any(1) & every_wanted & ~(stayed & same_there).flatten(1).any(1)


def relabelled(targets: Sequence[Detections], num_classes: int, shift: int = 1) -> list[Detections]:
    """The mislabelling goal: every box with label (label + shift) mod num_classes."""
    if num_classes < 2 or shift % num_classes == 0:
        raise InputError(f"relabelling needs 2+ classes and a shift that changes the label, got {num_classes}, {shift}")
    return [Detections(t.boxes, None, (t.labels + shift) % num_classes) for t in targets]


def shifted(targets: Sequence[Detections], dx: float = 0.0, dy: float = 0.0, relative: bool = True,
            match_iou: float = 0.5) -> list[ShiftedBoxes]:
    """The box-shift goal: every box moved by (dx, dy), in units of its own width and height when
    ``relative`` (0.5: half a box to the right), else in pixels; each keeps where it was (``origin``). A shift
    that leaves some box at IoU >= ``match_iou`` with where it was is refused: the moved box would also
    count as the original one."""
    out = []
    for t in targets:
        wh = (t.boxes[:, 2:] - t.boxes[:, :2]) if relative else torch.ones_like(t.boxes[:, :2])
        step = wh * torch.tensor([dx, dy], dtype=t.boxes.dtype, device=t.boxes.device)
        moved = ShiftedBoxes(t.boxes + step.repeat(1, 2), None, t.labels, t.boxes)
        if len(t) and bool((box_iou(moved.boxes, t.boxes).diagonal() >= match_iou).any()):
            raise InputError(f"a shift of ({dx}, {dy}) leaves a box at IoU >= {match_iou} with where it was: "
                             "shift further")
        out.append(moved)
    return out


OBJECTIVES = {"untargeted": Untargeted, "vanishing": Vanishing, "fabrication": Fabrication, "mislabel": Mislabel,
              "box-shift": BoxShift}
