"""`robustlab audio reproduce`: the voice task's table, on the synthesised corpus's unseen voices.

1. Clean and robust accuracy against the Linf bound in dB relative to the clip (APGD-CE) and against an
   SNR bound (APGD L2), for the standard and the adversarially trained (FGSM-RS at -50 dB) CNNs; the
   Carlini-Wagner L2 perturbation's SNR.
2. Black-box on the standard CNN: Square with 1-D windows and SimBA (low-frequency 1-D DCT).
3. Universal perturbations (fitted on training clips, applied to the test clips) and over-the-air
   success (PGD with EOT over random rooms, noise and gain; judged on fresh rooms).
4. Preprocessing defences (quantisation, down-sampling, low-pass): PGD through them without BPDA (the
   gradient of the non-differentiable part is zero or shattered) and with BPDA.

Writes ``results.json``, ``results.md``, figures, WAV files and ``report.html`` under ``out``.
``quick=True``: a three-voice, two-word corpus, one-epoch models and a few steps (a smoke test).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ...fileio import atomic_write_json, atomic_write_text
from .attacks import OverTheAir, attack_clips, defended, over_the_air
from .experiment import shared_curve, universal, universal_threat
from .metrics import accuracy, audio_metrics
from .pretrained import ADVERSARIAL, STANDARD, pretrained_kws
from ...runs import write_run_page
from .report import clips_figure, write_clips
from .speech import SpeechSetup, speech_commands, voices

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """The settings of one reproduction."""

    n: int = 100
    bounds_db: tuple[float, ...] = (-70.0, -60.0, -50.0, -40.0, -30.0)
    black_box_db: float = -40.0
    air_db: float = -30.0
    defence_db: float = -50.0
    bound_snr: float = 30.0
    steps: int = 20
    cw_steps: int = 100
    max_queries: int = 500
    n_black_box: int = 50
    eot: int = 8
    suite: str = "fast"  # of the shared evaluation (table 1b)
    data: SpeechSetup = SpeechSetup()
    models: dict = field(default_factory=lambda: {"standard": STANDARD, "adversarial (FGSM-RS, -50 dB)": ADVERSARIAL})


def quick_plan() -> Plan:
    data = SpeechSetup(words=("yes", "no"), voices=tuple(voices()[:3]), takes=1)
    tiny = replace(STANDARD, classes=2, epochs=1)
    return Plan(n=4, bounds_db=(-40.0, -20.0), suite="apgd-ce", steps=3, cw_steps=4, max_queries=20, n_black_box=2, eot=2, data=data,
                models={"standard": tiny, "adversarial (FGSM-RS, -50 dB)": replace(tiny, method="fgsm_rs")})


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _robust_rows(plan: Plan, models: dict, x, y) -> tuple[list, list]:
    """Table 1: accuracy clean and under APGD at each dB bound and at the SNR bound; CW's SNR."""
    rows, results = [], []
    for name, model in models.items():
        row = [name, _pct(accuracy(model, x, y))]
        for b in plan.bounds_db:
            _, _, m = attack_clips(model, x, y, attack="apgd", bound_db=b, steps=plan.steps)
            results.append({"model": name, "attack": "apgd", "bound_db": b, **m})
            row.append(_pct(m["adversarial_accuracy"]))
        _, _, m = attack_clips(model, x, y, attack="apgd", bound_db=None, bound_snr=plan.bound_snr, steps=plan.steps)
        results.append({"model": name, "attack": "apgd-l2", "bound_snr": plan.bound_snr, **m})
        row.append(_pct(m["adversarial_accuracy"]))
        k = plan.n_black_box  # the first clips only: CW runs steps x 5 binary-search steps
        _, _, m = attack_clips(model, x[:k], y[:k], attack="cw", bound_db=None, bound_snr=0.0, steps=plan.cw_steps)
        results.append({"model": name, "attack": "cw", **m})
        row.append(f"{m['snr_mean']:.1f} dB ({_pct(m['success_rate'])} fooled)")
        rows.append(row)
    return rows, results


def _attack_rows(plan: Plan, model, train, x, y, out: Path) -> tuple[list, list, list]:
    """Tables 2-3 on the standard CNN: black-box, universal, over the air; returns rows, results, figures."""
    rows, results, figs = [], [], []
    xb, yb = x[:plan.n_black_box], y[:plan.n_black_box]
    for attack in ("square", "simba"):
        _, _, m = attack_clips(model, xb, yb, attack=attack, bound_db=plan.black_box_db, max_queries=plan.max_queries)
        results.append({"attack": attack, "bound_db": plan.black_box_db, **m})
        rows.append([f"{attack} ({plan.max_queries} queries)", f"{plan.black_box_db:g} dB", str(m["n"]), _pct(m["success_rate"]),
                     _pct(m["adversarial_accuracy"]), f"{m['queries_mean']:.0f}"])
    for b in (-50.0, -40.0):
        _, uap = universal(model, train.x, train.y, b, epochs=2)
        m = audio_metrics(model, x, uap.apply(x), y, bound_db=b)
        results.append({"attack": "universal", "bound_db": b, **m})
        rows.append(["universal (fitted on training clips)", f"{b:g} dB", str(m["n"]), _pct(m["success_rate"]),
                     _pct(m["adversarial_accuracy"]), "-"])
    x_adv, _, m = attack_clips(OverTheAir(model), xb, yb, attack="pgd", bound_db=plan.air_db, steps=plan.steps,
                               eot=plan.eot)
    m.update(over_the_air(model, xb, x_adv, yb))
    results.append({"attack": "over-the-air pgd", "bound_db": plan.air_db, "eot": plan.eot, **m})
    rows.append([f"over the air (PGD, EOT {plan.eot} rooms; 8 fresh rooms per clip: success of the (clip, room) pairs "
                 f"right when clean, accuracy over all pairs; error over all pairs {_pct(m['over_the_air_error'])})",
                 f"{plan.air_db:g} dB", str(m["n"]), _pct(m["over_the_air_success"]), _pct(1 - m["over_the_air_error"]),
                 f"clean clips through the rooms: {_pct(1 - m['over_the_air_error_clean'])} right"])
    clips_figure(out / "figures" / "over-the-air.png", xb.cpu(), x_adv.cpu(), [""] * len(xb), [""] * len(xb),
                 title=f"PGD with EOT over rooms, {plan.air_db:g} dB")
    figs += ["figures/over-the-air.png", *write_clips(out, xb, x_adv, n=2, prefix="air-")]
    return rows, results, figs


def shared_table(plan: Plan, models: dict, x, y, seed: int = 0) -> tuple[list, list]:
    """Table 1b: the shared evaluation (``robustness_curve``, ``plan.suite``: ``fast`` is APGD-CE and APGD-T,
    nested balls) with the cheap sanity checks at each bound, for each model: the robust accuracy as ``robustlab
    audio evaluate`` reports it, below table 1's single APGD-CE."""
    rows, results = [], []
    for name, model in models.items():
        found, checks, _ = shared_curve(model, x, y, list(plan.bounds_db), plan.suite, seed, sanity="cheap")
        warned = sorted({f"{c['name']} at {b} dB" for b, cs in checks.items() for c in cs if c["verdict"] in ("warn", "fail")})
        rows.append([name, _pct(float(found[0][1])), *[_pct(float(r[2])) for r in found], ", ".join(warned) or "none"])
        results.append({"model": name, "rows": found, "sanity": checks})
    return rows, results


def with_gains(x: torch.Tensor, seed: int, low_db: float = -20.0) -> torch.Tensor:
    """The clips at random gains, uniform in [low_db, 0] dB per clip (peaks 0.05 to 0.5 for the corpus)."""
    g = low_db * torch.rand(x.shape[0], generator=torch.Generator().manual_seed(seed))
    return x * (10 ** (g / 20)).reshape(-1, 1, 1)


def _loudness_rows(plan: Plan, model, train, x, y, seed: int = 0) -> tuple[list, list]:
    """Table 3: the black-box and universal attacks on clips of mixed loudness, in one batch, each clip
    within its own dB bound (one radius per clip, ``RelativeThreat``)."""
    rows, results = [], []
    x, train_x = with_gains(x, seed + 1), with_gains(train.x, seed + 2)
    xb, yb = x[:plan.n_black_box], y[:plan.n_black_box]
    for attack in ("square", "simba"):
        _, _, m = attack_clips(model, xb, yb, attack=attack, bound_db=plan.black_box_db, max_queries=plan.max_queries)
        results.append({"attack": attack, "bound_db": plan.black_box_db, "mixed_loudness": True, **m})
        rows.append([f"{attack} ({plan.max_queries} queries)", f"{plan.black_box_db:g} dB", str(m["n"]),
                     _pct(m["clean_accuracy"]), _pct(m["success_rate"]), _pct(m["adversarial_accuracy"]),
                     f"{m['db_max']:.2f}"])
    _, uap = universal(model, train_x, train.y, plan.black_box_db, epochs=2)
    m = audio_metrics(model, x, uap.apply(x, universal_threat(x, uap)), y, bound_db=plan.black_box_db)
    results.append({"attack": "universal", "bound_db": plan.black_box_db, "mixed_loudness": True, **m})
    rows.append(["universal (fitted on training clips)", f"{plan.black_box_db:g} dB", str(m["n"]),
                 _pct(m["clean_accuracy"]), _pct(m["success_rate"]), _pct(m["adversarial_accuracy"]),
                 f"{m['db_max']:.2f}"])
    return rows, results


def _defence_rows(plan: Plan, model, x, y) -> tuple[list, list]:
    """Table 4: each preprocessing defence, clean and under PGD at ``defence_db`` without and with BPDA."""
    from .attacks import DEFENCES

    rows, results = [], []
    for name in DEFENCES:
        wrapped, naive = defended(model, name), defended(model, name, backward="own")
        clean = accuracy(wrapped, x, y)
        _, _, m_naive = attack_clips(naive, x, y, attack="pgd", bound_db=plan.defence_db, steps=plan.steps)
        _, _, m_bpda = attack_clips(wrapped, x, y, attack="pgd", bound_db=plan.defence_db, steps=plan.steps)
        results.append({"defence": name, "clean": clean, "naive": m_naive, "bpda": m_bpda})
        rows.append([name, _pct(clean), _pct(m_naive["adversarial_accuracy"]), _pct(m_bpda["adversarial_accuracy"])])
    return rows, results


LOUDNESS_CAPTION = ("clips of mixed loudness (gains uniform in -20..0 dB), attacked in one batch with one radius "
                    "per clip, standard CNN")
LOUDNESS_HEADER = ["attack", "bound (each clip's own)", "n", "clean", "success (of clips right when clean)",
                   "accuracy after", "largest dB_x"]


def loudness_table(plan: Plan, model, train, test, seed: int = 0) -> tuple[list, list]:
    """The mixed-loudness table alone (also run by ``reproduce``): training clips for the universal
    perturbation, the first 500 as everywhere in the reproduction."""
    return _loudness_rows(plan, model, train.take(torch.arange(min(500, len(train)))), test.x, test.y, seed)


def reproduce(out: Path, n: int = 100, quick: bool = False, seed: int = 0) -> dict:
    """Run every table; returns the results (also ``out/results.json``)."""
    plan = quick_plan() if quick else Plan(n=n)
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    torch.manual_seed(seed)
    sets = speech_commands(plan.data)
    test = sets["test"].take(torch.randperm(len(sets["test"]), generator=torch.Generator().manual_seed(seed))[:plan.n])
    models = {k: pretrained_kws(s, plan.data) for k, s in plan.models.items()}
    standard = next(iter(models.values()))
    t1, r1 = _robust_rows(plan, models, test.x, test.y)
    t2, r2, figs = _attack_rows(plan, standard, sets["train"].take(torch.arange(min(500, len(sets["train"])))),
                                test.x, test.y, out)
    t4, r4 = _defence_rows(plan, standard, test.x, test.y)
    t3, r3 = loudness_table(plan, standard, sets["train"], test, seed)  # after the older tables: their numbers stay
    t1b, r1b = shared_table(plan, models, test.x, test.y, seed)
    results = {"settings": {"n": len(test), "quick": quick, "seed": seed, "steps": plan.steps, "max_queries": plan.max_queries},
               "robust": r1, "attacks": r2, "mixed_loudness": r3, "shared_evaluation": r1b, "defences": r4, "seconds": time.perf_counter() - start}
    bounds = [f"{b:g} dB" for b in plan.bounds_db]
    tables = [(f"accuracy on unseen voices (n={len(test)}): clean, APGD-CE ({plan.steps} steps) at each Linf bound "
               "(dB relative to the clip), APGD-L2 at SNR >= " f"{plan.bound_snr:g} dB; Carlini-Wagner's mean SNR",
               ["model", "clean", *bounds, f"SNR {plan.bound_snr:g} dB",
                f"CW L2: mean SNR (first {plan.n_black_box} clips)"], t1),
              (f"the shared evaluation (robustness_curve, {plan.suite} suite; nested balls) with the cheap sanity "
               "checks at each bound", ["model", "clean", *bounds, "sanity checks (cheap) warning"], t1b),
              ("black-box, universal and over-the-air attacks on the standard CNN",
               ["attack", "bound", "n", "success (of clips right when clean)", "accuracy after", "queries"], t2),
              (LOUDNESS_CAPTION, LOUDNESS_HEADER, t3),
              (f"preprocessing defences (standard CNN), PGD ({plan.steps} steps) at {plan.defence_db:g} dB",
               ["defence", "clean", "PGD through the defence's own gradient", "PGD with BPDA (identity backward)"], t4)]
    _write(out, results, tables, figs)
    log.info("wrote %s (%.0f s)", out, results["seconds"])
    return results


def _write(out: Path, results: dict, tables: list, figs: list) -> None:
    atomic_write_json(out / "results.json", results)
    md = [f"# Audio reproduction ({results['seconds']:.0f} s; n={results['settings']['n']} test clips)", ""]
    for caption, header, rows in tables:
        md += [f"## {caption}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        md += ["| " + " | ".join(r) + " |" for r in rows] + [""]
    atomic_write_text(out / "results.md", "\n".join(md))
    write_run_page(out / "report.html", "audio reproduction", [], tables, figs)
