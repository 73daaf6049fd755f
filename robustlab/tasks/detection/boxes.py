"""Boxes and detections: the interface every detector of the task shares (and the tracker reads).

- ``Detections``: one image's detections (or ground truth): ``boxes`` xyxy float [M, 4] in pixels,
  ``scores`` [M] (1 for ground truth), ``labels`` int64 [M].
- A detector's ``forward(x)`` (x [B, C, H, W] in [0, 1]) returns a *dense* raw tensor, differentiable
  in x: ``raw [B, N, 6 + K]`` over N candidates, ``raw[..., 0:2]`` the candidate's anchor point (x, y)
  in pixels (a constant: where the candidate looks), ``raw[..., 2:6]`` its box xyxy in pixels,
  ``raw[..., 6:]`` its K class logits (score = sigmoid(logit), one independent score per class as in
  focal-loss detectors). Every objective, metric and attack reads this one format.
- ``decode(raw, score_threshold, iou_threshold)``: per candidate its best class; the (at most 100)
  highest-scoring candidates above the threshold are kept and class-wise greedy non-maximum suppression removes any box
  overlapping a higher-scoring box of its class by IoU > ``iou_threshold``. NMS only removes
  candidates, so "no detection" is exactly "no class score above the threshold".
- ``padded_detections``: the same detections for a whole batch as padded tensors on the output's device,
  computed without a host read (no ``nonzero``, ``.item()`` or boolean-mask indexing), so that an attack step can
  judge success on a GPU without syncing: exactly ``decode``'s detections (tests/test_detection.py checks it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ...errors import InputError

#: candidates kept per image before NMS (COCO evaluates at most 100 detections per image)
MAX_CANDIDATES = 100
#: the columns of the dense raw output before the class logits
ANCHOR, BOX, LOGITS = slice(0, 2), slice(2, 6), 6


@dataclass
class Detections:
    """One image's boxes xyxy [M, 4] (pixels), scores [M] and labels [M] (int64)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self):
        self.boxes = torch.as_tensor(self.boxes, dtype=torch.float32).reshape(-1, 4)
        self.labels = torch.as_tensor(self.labels, dtype=torch.int64).reshape(-1).to(self.boxes.device)
        if self.scores is None:
            self.scores = torch.ones(self.labels.shape[0], device=self.boxes.device)
        self.scores = torch.as_tensor(self.scores, dtype=torch.float32).reshape(-1).to(self.boxes.device)
        if not (self.boxes.shape[0] == self.scores.shape[0] == self.labels.shape[0]):
            raise InputError(f"detections need as many boxes, scores and labels, got {self.boxes.shape[0]}, "
                             f"{self.scores.shape[0]}, {self.labels.shape[0]}")

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def to(self, device) -> "Detections":
        return Detections(self.boxes.to(device), self.scores.to(device), self.labels.to(device))

    def detach(self) -> "Detections":
        return Detections(self.boxes.detach(), self.scores.detach(), self.labels)

    def take(self, keep: torch.Tensor) -> "Detections":
        return Detections(self.boxes[keep], self.scores[keep], self.labels[keep])

    @classmethod
    def empty(cls, device=None) -> "Detections":
        return cls(torch.zeros(0, 4, device=device), torch.zeros(0, device=device),
                   torch.zeros(0, dtype=torch.int64, device=device))


def truth(boxes, labels) -> Detections:
    """Ground truth: boxes and labels with score 1."""
    return Detections(boxes, None, labels)


def box_area(b: torch.Tensor) -> torch.Tensor:
    return (b[..., 2] - b[..., 0]).clamp_min(0) * (b[..., 3] - b[..., 1]).clamp_min(0)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every box of a [..., N, 4] with every box of b [..., M, 4] (xyxy): [..., N, M]."""
    lt = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    inter = (rb - lt).clamp_min(0).prod(-1)
    union = box_area(a)[..., :, None] + box_area(b)[..., None, :] - inter
    return inter / union.clamp_min(1e-9)


def nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_threshold: float = 0.5) -> torch.Tensor:
    """Class-wise greedy non-maximum suppression: indices of the kept boxes, by decreasing score."""
    order = torch.argsort(scores, descending=True, stable=True)
    if order.numel() == 0:
        return order
    b, lab = boxes[order], labels[order]
    suppress = (box_iou(b, b) > iou_threshold) & (lab[:, None] == lab[None, :])
    suppress = torch.triu(suppress, diagonal=1).cpu().numpy()
    kept = np.ones(order.numel(), dtype=bool)
    for i in range(order.numel()):  # a box removes later ones only if it is kept itself
        if kept[i]:
            kept &= ~suppress[i]
    return order[torch.from_numpy(kept).to(order.device)]


def check_raw(raw: torch.Tensor) -> int:
    """The number of classes of a dense raw output [B, N, 6 + K] (InputError otherwise)."""
    if not isinstance(raw, torch.Tensor) or raw.dim() != 3 or raw.shape[-1] < LOGITS + 1:
        shape = tuple(raw.shape) if isinstance(raw, torch.Tensor) else type(raw).__name__
        raise InputError(f"a detector's raw output is [B, N, 6 + classes] (anchor, box, logits), got {shape}")
    return raw.shape[-1] - LOGITS


def candidate_scores(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per candidate its best class score (sigmoid of the logit) and that class: [B, N] each."""
    check_raw(raw)
    score, label = torch.sigmoid(raw[..., LOGITS:]).max(-1)
    return score, label


@torch.no_grad()
def decode(raw: torch.Tensor, score_threshold: float = 0.5, iou_threshold: float = 0.5,
           max_candidates: int = MAX_CANDIDATES) -> list[Detections]:
    """The detections per image of a dense raw output: best class per candidate, score > threshold, the
    ``max_candidates`` highest-scoring ones, NMS."""
    score, label = candidate_scores(raw)
    out = []
    for i in range(raw.shape[0]):
        keep = torch.nonzero(score[i] > score_threshold).squeeze(1)
        keep = keep[torch.argsort(score[i, keep], descending=True, stable=True)[:max_candidates]]
        d = Detections(raw[i, keep, BOX].float(), score[i, keep], label[i, keep])
        out.append(d.take(nms(d.boxes, d.scores, d.labels, iou_threshold)))
    return out


@torch.no_grad()
def decode_padded(raw: torch.Tensor, score_threshold: float = 0.5, iou_threshold: float = 0.5,
                  max_candidates: int = MAX_CANDIDATES) -> tuple[torch.Tensor, ...]:
    """``decode`` batched on the device: ``(boxes [B, M, 4], scores [B, M], labels [B, M], kept bool [B, M])``,
    M = min(N, ``max_candidates``), by decreasing score; image i's detections are ``decode``'s, in its order,
    where ``kept[i]``.

    The candidates above the threshold sort first (a stable sort, as ``decode``'s), the others are never kept;
    greedy NMS runs as M vectorised steps over the batch: step i, if candidate i is still kept, removes the later
    candidates of its class overlapping it by IoU > ``iou_threshold``."""
    score, label = candidate_scores(raw)
    candidate = score > score_threshold
    _, order = torch.sort(torch.where(candidate, score, torch.full_like(score, -1.0)), dim=1, descending=True,
                          stable=True)
    order = order[:, :max_candidates]
    kept = candidate.gather(1, order)
    boxes = raw[..., BOX].float().gather(1, order[..., None].expand(-1, -1, 4))
    labels = label.gather(1, order)
    suppress = torch.triu((box_iou(boxes, boxes) > iou_threshold) & (labels[:, :, None] == labels[:, None, :]), 1)
    for i in range(order.shape[1]):
        kept = kept & ~(kept[:, i, None] & suppress[:, i])
    return boxes, score.gather(1, order), labels, kept


def padded_detections(output, score_threshold: float = 0.5, iou_threshold: float = 0.5) -> tuple[torch.Tensor, ...]:
    """``(boxes [B, M, 4], scores [B, M], labels [B, M], kept bool [B, M])`` of any detector output: a dense raw
    tensor (``decode_padded``, on its device) or a list of Detections (padded; ``kept`` marks the real ones)."""
    if isinstance(output, torch.Tensor):
        return decode_padded(output, score_threshold, iou_threshold)
    dets = detections_of(output)
    device = dets[0].boxes.device if dets else None
    boxes, labels, kept = pad_truth(dets, device)
    scores = torch.zeros(kept.shape, device=device)
    for i, d in enumerate(dets):
        scores[i, :len(d)] = d.scores.to(device)
    return boxes, scores, labels, kept


def padded_overlaps(dets: tuple[torch.Tensor, ...], target: tuple[torch.Tensor, ...],
                    iou: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """``(over, same)``, bool [B, G, M], for padded detections ``(boxes, scores, labels, kept)`` and padded targets
    ``(boxes, labels, valid)`` (``pad_truth``): target box g and kept detection m overlap at IoU >= ``iou`` (both
    real); they have the same label."""
    boxes, _, labels, kept = dets
    t_boxes, t_labels, valid = (v.to(boxes.device) for v in target)
    over = (box_iou(t_boxes, boxes) >= iou) & valid[:, :, None] & kept[:, None, :]
    return over, t_labels[:, :, None] == labels[:, None, :]


def detections_of(output, score_threshold: float = 0.5, iou_threshold: float = 0.5) -> list[Detections]:
    """Detections per image of any detector output: a dense raw tensor (decoded) or a list of Detections."""
    if isinstance(output, torch.Tensor):
        return decode(output, score_threshold, iou_threshold)
    if isinstance(output, (list, tuple)) and all(isinstance(d, Detections) for d in output):
        return list(output)
    raise InputError(f"a detector output is a raw tensor [B, N, 6 + classes] or a list of Detections, "
                     f"got {type(output).__name__}")


def overlaps(pred: Detections, target: Detections, iou: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """``(over, same)``, both bool [len(target), len(pred)] on the target's device: target box i and predicted
    box j overlap at IoU >= ``iou``; they have the same label."""
    over = box_iou(target.boxes, pred.boxes.to(target.boxes.device)) >= iou
    return over, target.labels[:, None] == pred.labels.to(target.labels.device)[None, :]


def matched(pred: Detections, target: Detections, iou: float = 0.5, same_label: bool = True) -> torch.Tensor:
    """bool [len(target)]: each target box has a predicted box with IoU >= ``iou`` (of its label)."""
    if len(target) == 0:
        return torch.zeros(0, dtype=torch.bool)
    if len(pred) == 0:
        return torch.zeros(len(target), dtype=torch.bool)
    over, same = overlaps(pred, target, iou)
    return (over & same if same_label else over).any(1).cpu()


def pad_truth(targets: Sequence[Detections], device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Targets of a batch as padded tensors: boxes [B, G, 4], labels [B, G] and a validity mask [B, G]
    (G = the most boxes of an image, at least 1)."""
    g = max([len(t) for t in targets] + [1])
    boxes = torch.zeros(len(targets), g, 4, device=device)
    labels = torch.zeros(len(targets), g, dtype=torch.int64, device=device)
    valid = torch.zeros(len(targets), g, dtype=torch.bool, device=device)
    for i, t in enumerate(targets):
        boxes[i, :len(t)] = t.boxes.to(device)
        labels[i, :len(t)] = t.labels.to(device)
        valid[i, :len(t)] = True
    return boxes, labels, valid
