"""What ``robustlab audio attack`` and ``evaluate`` do with a model and clips: run the attack (engine
attacks, a universal perturbation, over the air with EOT, through a BPDA-wrapped preprocessing defence),
then write the summary, the figures, the WAV files and the page of the run."""
from __future__ import annotations

import copy

import torch

from ...attacks.universal import UniversalPerturbation
from ...data import Dataset
from ...errors import InputError
from ...threat import ThreatModel, lp_norm
from .attacks import OneRow, OverTheAir, attack_clips, defended, over_the_air
from .metrics import audio_metrics, predict
from ...runs import write_run_page
from .report import clips_figure, write_clips
from .threats import BOUNDS, RelativeThreat, audio_threat, same_peak


def universal(model, x: torch.Tensor, y: torch.Tensor, bound_db: float, epochs: int = 5, seed: int = 0):
    """One perturbation for every clip within ``bound_db`` of each clip: a waveform delta for clips of one
    peak (one radius), else v with x_adv = clamp(x + max|x| v), ||v||_inf <= 10^(bound_db / 20) (one radius
    per clip, ``RelativeThreat``); returns the perturbed clips and the fitted perturbation. On other
    clips: ``uap.apply(x2, universal_threat(x2, uap))``."""
    if same_peak(x):  # the radius as the reproduction has always computed it
        threat = ThreatModel("linf", float(x[0].abs().max()) * 10 ** (bound_db / 20), bounds=BOUNDS)
    else:
        threat = audio_threat(x, bound_db=bound_db, relative=True)
    uap = UniversalPerturbation.fit(model, x, y, threat, epochs=epochs, batch_size=32, seed=seed)
    return uap.apply(x), uap


def universal_threat(x: torch.Tensor, uap: UniversalPerturbation):
    """The threat under which ``uap`` applies to clips ``x``: its own for a waveform delta, else a
    ``RelativeThreat`` of these clips' peaks at the same relative radius."""
    if isinstance(uap.threat, ThreatModel):
        return uap.threat
    return RelativeThreat("linf", uap.threat.eps, lp_norm(x, "linf"))


def run_attack(model, x: torch.Tensor, y: torch.Tensor, args) -> tuple[torch.Tensor, dict]:
    """The adversarial clips and metrics of ``args`` (attack, db / snr, steps, max_queries, eot, defence);
    with eot > 1, also the share of (clip, room) pairs misclassified over the air and the success over the
    pairs right when clean (``over_the_air``)."""
    target = defended(model, args.defence) if args.defence != "none" else model
    attacked = OverTheAir(target, seed=args.seed) if args.eot > 1 else target
    if args.attack == "universal":
        if args.snr is not None:
            raise InputError("the universal perturbation is bounded in dB (Linf, --db), not by SNR")
        x_adv, _ = universal(attacked, x, y, args.db, seed=args.seed)
        metrics = audio_metrics(target, x, x_adv, y, bound_db=args.db)
    else:
        x_adv, _, metrics = attack_clips(attacked, x, y, attack=args.attack, bound_db=args.db, bound_snr=args.snr,
                                         steps=args.steps, max_queries=args.max_queries, seed=args.seed, eot=args.eot)
        if attacked is not target:  # judged on the model without the channel too
            metrics.update({k: v for k, v in audio_metrics(target, x, x_adv, y, args.db, args.snr).items()
                            if k.endswith("accuracy") or k == "success_rate"})
    if args.eot > 1:
        metrics.update(over_the_air(target, x, x_adv, y, seed=args.seed + 1))
    return x_adv, metrics


def attack_run(run, model, data: Dataset, words: list[str], args) -> dict:
    """Attack, then write summary.json, figures/clips.png, audio/*.wav and report.html."""
    device = next(model.parameters()).device
    x, y = data.x.to(device), data.y.to(device)
    x_adv, metrics = run_attack(model, x, y, args)
    clean, adv = predict(model, x[:4]), predict(model, x_adv[:4])
    note = {"note": "the universal perturbation is fitted on the clips it is judged on"} if args.attack == "universal" else {}
    run.write_summary({"metrics": metrics, "clean": [words[i] for i in clean], "adversarial": [words[i] for i in adv],
                       **note})
    bound = f"SNR >= {args.snr:g} dB" if args.snr is not None else f"{args.db:g} dB"
    clips_figure(run.figures / "clips.png", x.cpu(), x_adv.cpu(), [words[i] for i in clean], [words[i] for i in adv],
                 frontend=copy.deepcopy(model.frontend).cpu() if hasattr(model, "frontend") else None,
                 title=f"{args.attack} at {bound}")
    wavs = write_clips(run.path, x.cpu(), x_adv.cpu())
    rows = [[k, f"{v:.4g}" if isinstance(v, float) else str(v)] for k, v in metrics.items()]
    write_run_page(run.path / "report.html", f"audio attack {run.name}", [], [("metrics", ["", "value"], rows)],
               ["figures/clips.png", *wavs])
    return metrics


def curve_threat(x: torch.Tensor, bounds_db: list[float]):
    """(threat, {bound: eps}) of a robustness curve over dB bounds: clips of one peak, the pixel threat with
    eps = peak 10^(D/20); else a ``RelativeThreat`` (one radius per clip) with eps = 10^(D/20), relative to
    each clip's peak. Both sets of balls are nested, as ``robustness_curve`` needs."""
    if same_peak(x):
        peak = float(x[0].abs().max())
        return ThreatModel("linf", 0.0, bounds=BOUNDS), {b: peak * 10 ** (b / 20) for b in bounds_db}
    return RelativeThreat("linf", 0.0, lp_norm(x, "linf")), {b: 10 ** (b / 20) for b in bounds_db}


def shared_curve(model, x: torch.Tensor, y: torch.Tensor, bounds_db: list[float], attacks: str, seed: int = 0,
                 sanity: str | None = None) -> tuple[list[list[str]], dict, bool]:
    """Clean and robust accuracy at each dB bound with the shared ``robustness_curve`` (nested balls) and,
    with ``sanity`` ("cheap", "all"), the shared gradient-masking checks at each bound. Returns the rows
    [bound, clean, robust, eps], the checks' verdicts per bound and whether eps is relative to each clip's
    peak (clips of different peaks: one radius per clip, ``curve_threat``)."""
    from ...evaluation import robustness_curve

    threat, eps = curve_threat(x, bounds_db)
    device = next(model.parameters()).device
    # clips as one-row images [B, 1, 1, T]: Square (in the standard suite) then uses 1-D windows
    curve = robustness_curve(OneRow(model), (x[:, :, None].to(device), y.to(device)), threat,
                             sorted(eps.values()), attacks, seed=seed, progress=False, sanity=sanity)
    by_eps = dict(zip(curve.eps, curve.reports))
    rows = [[f"{b:g}", f"{by_eps[eps[b]].clean_accuracy:.3f}", f"{by_eps[eps[b]].robust_accuracy:.3f}", f"{eps[b]:.3g}"]
            for b in sorted(bounds_db)]
    checks = {f"{b:g}": by_eps[eps[b]].sanity.to_dict() for b in sorted(bounds_db) if by_eps[eps[b]].sanity is not None}
    return rows, checks, isinstance(threat, RelativeThreat)


def evaluate_run(run, model, data: Dataset, bounds_db: list[float], attacks: str, seed: int = 0,
                 sanity: str | None = None, summary: dict | None = None) -> list[list[str]]:
    """``shared_curve`` on ``data``; writes summary.json (``summary`` added to it) and report.html; returns
    the table rows."""
    rows, checks, relative = shared_curve(model, data.x, data.y, bounds_db, attacks, seed, sanity)
    run.write_summary({**(summary or {}), "attacks": attacks, "n": len(data), "eps_relative_to_peak": relative,
                       "rows": [dict(zip(("db", "clean", "robust", "eps"), r)) for r in rows],
                       **({"sanity": checks} if checks else {})})
    tables = [(f"robust accuracy ({attacks} suite)", ["bound (dB)", "clean accuracy", "robust accuracy", "Linf eps"], rows)]
    tables += [(f"sanity checks at {b} dB", ["check", "verdict", "message"],
                [[c["name"], c["verdict"], c["message"]] for c in found]) for b, found in checks.items()]
    write_run_page(run.path / "report.html", f"audio evaluation {run.name}", [], tables, [])
    return rows
