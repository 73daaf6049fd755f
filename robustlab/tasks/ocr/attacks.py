"""Attacks on text recognisers through the shared engine, unchanged: Square, SimBA (pixel, DCT) and
HopSkipJump against Tesseract or the CRNN; PGD / APGD / Carlini-Wagner L2 on the CRNN's CTC loss
(white-box upper bound);
MI-FGSM transfer from CRNNs to Tesseract.

``attack_lines`` runs one attack on the whole batch and returns the engine's ``AttackResult`` plus the
OCR metrics; a per-line mask (strokes, edges) is a per-sample threat mask, which the engine subsets with
the lines still attacked.
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence

import torch

from ...attacks import APGD, PGD, MIFGSM, CarliniWagnerL2, HopSkipJump, SimBA, Square, transfer_attack
from ...attacks.base import AttackResult
from ...errors import InputError
from ...oracles import Oracle
from ...threat import ThreatModel
from .masks import text_threat
from .metrics import QUERY_MARKS, attack_metrics
from .objectives import TextTargeted, TextUntargeted, targeted_pairs
from .train import read as crnn_read

log = logging.getLogger(__name__)

BLACK_BOX = ("square", "simba-pixel", "simba-dct", "hopskipjump")
WHITE_BOX = ("pgd", "apgd", "cw")
ATTACK_NAMES = BLACK_BOX + WHITE_BOX


def build_attack(name: str, threat: ThreatModel, objective, budget: int = 1000, steps: int = 50, seed: int = 0,
                 starting_points: torch.Tensor | None = None):
    """An engine attack for text: ``budget`` is the per-line query limit of black-box attacks;
    ``starting_points`` (HopSkipJump) are lines already read as wanted, e.g. the wanted text rendered."""
    if name == "square":
        return Square(threat, objective, max_queries=budget, p_init=0.1, seed=seed)
    if name in ("simba-pixel", "simba-dct"):
        basis = name.split("-")[1]
        step = threat.eps if basis == "pixel" else threat.eps * 8
        return SimBA(threat, objective, step_size=step, basis=basis, steps=max(budget // 2, 1), max_queries=budget,
                     seed=seed)
    if name == "hopskipjump":
        return HopSkipJump(threat, objective, max_queries=budget, starting_points=starting_points, seed=seed)
    if name == "pgd":
        return PGD(threat, objective, steps=steps, step_size=threat.eps / 8, seed=seed)
    if name == "apgd":
        return APGD(threat, objective, steps=steps, seed=seed)
    if name == "cw":
        if threat.norm != "l2":
            raise InputError(f"cw (Carlini-Wagner L2) is an L2 attack: use --norm l2 (got {threat.norm})")
        # the smallest L2 change found within `steps` Adam steps x 5 binary-search steps on the constant
        return CarliniWagnerL2(threat, objective, steps=steps, binary_search_steps=5, initial_const=0.1, lr=0.01,
                               seed=seed)
    raise InputError(f"unknown OCR attack {name!r}; known: {', '.join(ATTACK_NAMES)}")


def budget_marks(budget: int) -> tuple[int, ...]:
    """The query budgets success is counted within: the standard marks below the attack's own budget,
    then the budget itself (never a mark the attack could not reach)."""
    return tuple(m for m in QUERY_MARKS if m < budget) + (budget,)


def reader(model) -> Callable[[torch.Tensor], list[str]]:
    """Text of lines for a CRNN or an oracle (oracle reads of already-queried points are memoised)."""
    if isinstance(model, Oracle):
        return lambda x: [r if isinstance(r, str) else r.text for r in model(x)]
    return lambda x: crnn_read(model, x)


def attack_lines(model, x: torch.Tensor, truth: Sequence[str], *, attack: str = "square", norm: str = "linf",
                 eps: float = 0.2, mask: str = "whole", budget: int = 1000, steps: int = 50,
                 wanted: Sequence[str] | None = None, k: int = 1, seed: int = 0,
                 starting_points: torch.Tensor | None = None) -> tuple[AttackResult, dict]:
    """Attack lines ``x`` (untargeted: edit distance >= k; targeted when ``wanted`` is given) against a
    CRNN or a ``TesseractOracle``. Returns the engine result and ``attack_metrics``; ``res.texts`` holds
    the truth, clean and adversarial readings. ``budget`` bounds each line's queries (the attack's
    own limit)."""
    truth = list(truth)
    if len(truth) != x.shape[0]:
        raise InputError(f"{x.shape[0]} lines for {len(truth)} transcriptions")
    if attack in WHITE_BOX and isinstance(model, Oracle):
        raise InputError(f"{attack} needs the CRNN's gradients; against Tesseract use {', '.join(BLACK_BOX)} or transfer")
    threat = text_threat(norm, eps, mask, x)
    objective = TextUntargeted(k) if wanted is None else TextTargeted()
    target = truth if wanted is None else targeted_pairs(truth, wanted)
    read = reader(model)
    clean = read(x)
    res = build_attack(attack, threat, objective, budget, steps, seed, starting_points)(model, x, target)
    adv = read(res.x_adv)
    metrics = attack_metrics(x, res.x_adv, res.success, res.queries, truth, clean, adv, mask=threat.mask,
                             marks=budget_marks(budget))
    if attack in WHITE_BOX:  # its passes are gradient steps, not queries: no query statistics
        metrics = {k: v for k, v in metrics.items() if k != "success_at" and not k.startswith("queries_")}
    metrics.update(attack=attack, norm=norm, eps=eps, mask=mask, budget=budget,
                   goal="untargeted" if wanted is None else "targeted", time_s=res.time_s)
    res.texts = {"truth": truth, "clean": clean, "adversarial": adv}  # type: ignore[attr-defined]
    return res, metrics


def transfer_to(sources, target_reader: Callable[[torch.Tensor], list[str]], x: torch.Tensor, truth: Sequence[str],
                *, eps: float = 0.2, norm: str = "linf", steps: int = 20, seed: int = 0) -> dict:
    """Craft untargeted MI-FGSM lines on CRNN(s) (a list is their averaged log-probabilities) and read
    them with the target (e.g. ``tesseract.read``): 2 target queries per line."""
    threat = ThreatModel(norm, eps)
    att = MIFGSM(threat, TextUntargeted(), steps=steps, step_size=eps / 4, early_stop=False, seed=seed, keep_last=True)
    res = transfer_attack(sources, target_reader, x, list(truth), threat, attack=att, seed=seed)
    correct = res.target_correct_clean
    return {"source_success_rate": float(res.source_success.float().mean()),
            "target_correct_clean": int(correct.sum()), "transfer_rate": res.transfer_rate,
            "linf": float(res.norms.mean()) if norm == "linf" else None, "n": int(x.shape[0]), "x_adv": res.x_adv}
