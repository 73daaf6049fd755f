"""The detector's training loss on the dense raw output, per image (CenterNet, Zhou et al. 2019):

- classes: the penalty-reduced focal loss (Lin et al. 2017; CenterNet's eq. 1). Each target box is
  assigned to the candidate whose anchor is nearest its centre (a positive for its class); every other
  candidate is a negative for class k, weighted down by ``(1 - y)^4`` where
  ``y = max_g exp(-|a - c_g|^2 / (2 sigma_g^2))`` over the class-k boxes g near it (sigma_g = max side / 6):
  ``-sum_pos (1 - p)^2 log p - sum_neg (1 - y)^4 p^2 log(1 - p)``, over the number of boxes (at least 1);
- boxes: ``box_weight`` x the mean L1 distance (pixels) of each positive's box to its target box.

With no target box the loss is the focal negative term on every candidate: minimising it empties
the image, which is what the vanishing objective maximises the opposite of.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .boxes import ANCHOR, BOX, LOGITS, Detections, check_raw, pad_truth

BOX_WEIGHT = 0.1


def _heat(anchor, gt_boxes, gt_labels, valid, k: int):
    """Per candidate and class the Gaussian y in [0, 1] and the positive mask [B, N, K]; nearest anchors [B, G]."""
    centre = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2                          # [B, G, 2]
    sigma = (gt_boxes[..., 2:] - gt_boxes[..., :2]).amax(-1).clamp_min(1.0) / 6    # [B, G]
    d2 = (anchor[:, :, None, :] - centre[:, None, :, :]).pow(2).sum(-1)           # [B, N, G]
    g = torch.exp(-d2 / (2 * sigma[:, None, :] ** 2)) * valid[:, None, :]
    onehot = F.one_hot(gt_labels, k).to(g.dtype) * valid[..., None]               # [B, G, K]
    y = (g[..., None] * onehot[:, None]).amax(2)                                  # [B, N, K]
    nearest = d2.argmin(1)                                                        # [B, G]
    pos = torch.zeros_like(y)
    pos.scatter_(1, nearest[..., None].expand(-1, -1, k), onehot)
    pos = pos.clamp_max(1.0)
    return torch.maximum(y, pos), pos, nearest


def detection_loss(raw: torch.Tensor, targets: Sequence[Detections], box_weight: float = BOX_WEIGHT) -> torch.Tensor:
    """The training loss [B] of a dense raw output against one ``Detections`` per image."""
    k = check_raw(raw)
    gt_boxes, gt_labels, valid = pad_truth(targets, raw.device)
    gt_labels = gt_labels.clamp(0, k - 1)
    anchor, logits = raw[..., ANCHOR].detach(), raw[..., LOGITS:]
    y, pos, nearest = _heat(anchor, gt_boxes, gt_labels, valid.to(raw.dtype), k)
    log_p, log_q = F.logsigmoid(logits), F.logsigmoid(-logits)
    p = torch.sigmoid(logits)
    focal = -(pos * (1 - p) ** 2 * log_p + (1 - pos) * (1 - y) ** 4 * p ** 2 * log_q)
    n_obj = valid.sum(1).clamp_min(1).to(raw.dtype)
    pred = raw[..., BOX].gather(1, nearest[..., None].expand(-1, -1, 4))          # [B, G, 4]
    l1 = ((pred - gt_boxes).abs().mean(-1) * valid).sum(1)
    return (focal.flatten(1).sum(1) + box_weight * l1) / n_obj
