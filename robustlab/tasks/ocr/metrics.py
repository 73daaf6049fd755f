"""Text metrics (character and word error rates, from rapidfuzz's Levenshtein distance) and the
per-attack summary: success rate, success within query budgets, queries per success, CER/WER before
and after, perturbation norms and the share of the perturbation inside the mask."""
from __future__ import annotations

from typing import Sequence

import torch
from rapidfuzz.distance import Levenshtein

from ...errors import InputError

QUERY_MARKS = (100, 500, 1000, 5000, 10000)


def _pairs(pred, truth) -> tuple[list[str], list[str]]:
    if isinstance(pred, str):
        pred = [pred]
    if isinstance(truth, str):
        truth = [truth]
    pred, truth = list(pred), list(truth)
    if len(pred) != len(truth):
        raise InputError(f"{len(pred)} predictions for {len(truth)} transcriptions")
    return pred, truth


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions cost 1)."""
    return int(Levenshtein.distance(a, b))


def cer(pred: Sequence[str] | str, truth: Sequence[str] | str) -> float:
    """Character error rate: sum of edit distances / sum of truth lengths (corpus level)."""
    pred, truth = _pairs(pred, truth)
    n = sum(len(t) for t in truth)
    return sum(Levenshtein.distance(p, t) for p, t in zip(pred, truth)) / max(n, 1)


def wer(pred: Sequence[str] | str, truth: Sequence[str] | str) -> float:
    """Word error rate: edit distance over whitespace-split word sequences / number of truth words."""
    pred, truth = _pairs(pred, truth)
    n = sum(len(t.split()) for t in truth)
    return sum(Levenshtein.distance(p.split(), t.split()) for p, t in zip(pred, truth)) / max(n, 1)


def ocr_metrics(pred: Sequence[str], truth: Sequence[str]) -> dict[str, float]:
    """CER, WER and the share of exactly read lines."""
    pred, truth = _pairs(pred, truth)
    return {"cer": cer(pred, truth), "wer": wer(pred, truth),
            "line_accuracy": sum(p == t for p, t in zip(pred, truth)) / max(len(truth), 1)}


def success_at(success: torch.Tensor, queries: torch.Tensor, marks: Sequence[int] = QUERY_MARKS) -> dict[int, float]:
    """Share of samples broken within each query budget."""
    n = max(success.numel(), 1)
    return {m: float((success & (queries <= m)).sum()) / n for m in marks}


def attack_metrics(x: torch.Tensor, x_adv: torch.Tensor, success: torch.Tensor, queries: torch.Tensor,
                   truth: Sequence[str], clean_pred: Sequence[str], adv_pred: Sequence[str],
                   mask: torch.Tensor | None = None, marks: Sequence[int] = QUERY_MARKS) -> dict:
    """Everything reported per attack (perturbations measured on the grid the engine sees, [0, 1])."""
    delta = (x_adv - x).flatten(1)
    success = success.bool().cpu()
    queries = queries.cpu()
    out = {
        "n": int(success.numel()),
        "success_rate": float(success.float().mean()) if success.numel() else float("nan"),
        "success_at": success_at(success, queries, marks),
        "cer_clean": cer(clean_pred, truth), "cer_adv": cer(adv_pred, truth),
        "wer_clean": wer(clean_pred, truth), "wer_adv": wer(adv_pred, truth),
        "l2": float(delta.norm(dim=1).mean()), "linf": float(delta.abs().amax(1).mean()),
        "l0": float((delta.abs() > 1 / 510).float().sum(1).mean()),
    }
    correct = torch.tensor([c == t for c, t in zip(clean_pred, truth)])
    out["clean_correct"] = int(correct.sum())
    out["success_rate_of_correct"] = float(success[correct].float().mean()) if correct.any() else float("nan")
    if success.any():
        q = queries[success].double()
        out["queries_mean"] = float(q.mean())
        out["queries_median"] = float(q.median())
    if mask is not None:
        m = torch.broadcast_to(mask.to(x_adv), x_adv.shape).flatten(1)
        total = delta.abs().sum(1)
        moved = total > 0   # lines left unchanged (failures of a decision attack) have no share to count
        share = (delta.abs() * m).sum(1)[moved] / total[moved]
        out["in_mask"] = float(share.mean()) if bool(moved.any()) else 1.0
    return out
