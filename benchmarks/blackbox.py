"""Benchmarks of the black-box attacks and the standard suite against other libraries."""
from __future__ import annotations

import statistics
import time

import numpy as np
import torch

import robustlab as rl


def _queries_stats(q: torch.Tensor) -> str:
    if q.numel() == 0:
        return "- / -"
    q = q.double()
    return f"{q.mean():.0f} / {q.median():.0f}"


def bench_square(model, x, y, eps, n_queries, label, torchattacks, art):
    """Square Linf, same budget and p_init, on points the model classifies correctly."""
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    x, y = x[ok], y[ok]
    rows = []
    t0 = time.perf_counter()
    res = rl.attacks.Square(rl.ThreatModel("linf", eps), max_queries=n_queries, p_init=0.8)(model, x, y)
    t = time.perf_counter() - t0
    rows.append(("robustlab Square", res.success_rate, _queries_stats(res.queries[res.success]), t))
    if torchattacks is not None:
        counter = {"n": 0}

        class Counted(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, z):
                counter["n"] += z.shape[0]
                return self.m(z)

        atk = torchattacks.Square(Counted(model), norm="Linf", eps=eps, n_queries=n_queries, p_init=0.8, n_restarts=1, seed=0)
        t0 = time.perf_counter()
        adv = atk(x, y)
        t = time.perf_counter() - t0
        with torch.no_grad():
            succ = model(adv).argmax(1) != y
        rows.append(("torchattacks Square", float(succ.float().mean()), f"{counter['n'] / len(y):.0f} (total/point) / -", t))
    if art is not None:
        clf = art["clf"](model, x.shape[1:])
        atk = art["Square"](estimator=clf, norm=np.inf, eps=eps, max_iter=n_queries, p_init=0.8, nb_restarts=1,
                            batch_size=len(y), verbose=False)
        t0 = time.perf_counter()
        adv = torch.from_numpy(atk.generate(x=x.numpy(), y=y.numpy()))
        t = time.perf_counter() - t0
        with torch.no_grad():
            succ = model(adv).argmax(1) != y
        rows.append(("ART SquareAttack", float(succ.float().mean()), "not reported", t))
    lines = [f"### Square Linf eps={eps}, {n_queries} queries, {label} ({len(y)} correctly classified points)", "",
             "| implementation | success rate | queries per success (mean / median) | time (s) |", "|---|---|---|---|"]
    lines += [f"| {n} | {s:.1%} | {q} | {t:.1f} |" for n, s, q, t in rows]
    return lines + [""]


def bench_suite(model, x, y, eps, label, pyautoattack, torchattacks):
    """robustlab's standard suite vs the reference AutoAttack (pyautoattack) on the same points."""
    threat = rl.ThreatModel("linf", eps)
    rows = []
    t0 = time.perf_counter()
    rep = rl.evaluate(model, (x, y), threat, "standard", sanity=None, batch_size=500)
    rows.append(("robustlab standard (APGD-CE, APGD-T, FAB-T, Square)", rep.robust_accuracy, time.perf_counter() - t0,
                 ", ".join(f"{k} {v}" for k, v in rep.per_attack.items())))
    print(rows[-1], flush=True)
    if pyautoattack is not None:
        import logging

        logging.getLogger("auto-attack").setLevel(logging.WARNING)
        aa = pyautoattack.AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=0, device="cpu")
        aa.verbose = False
        t0 = time.perf_counter()
        adv = aa.run_standard_evaluation(x, y, batch_size=500)
        t = time.perf_counter() - t0
        adv = adv[0] if isinstance(adv, tuple) else adv  # pyautoattack 0.2 returns (x_adv, y_adv)
        with torch.no_grad():
            acc = float((model(adv).argmax(1) == y).float().mean())
        rows.append(("reference AutoAttack (pyautoattack 0.2.0, standard)", acc, t, ""))
    if torchattacks is not None:
        aa = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=0)
        t0 = time.perf_counter()
        adv = aa(x, y)
        t = time.perf_counter() - t0
        with torch.no_grad():
            acc = float((model(adv).argmax(1) == y).float().mean())
        rows.append(("torchattacks AutoAttack (10 iterations, not the reference)", acc, t, ""))
    lines = [f"### Standard suite, Linf eps={eps}, {label}, {len(y)} points", "",
             "| implementation | robust accuracy | time (s) | broken by |", "|---|---|---|---|"]
    lines += [f"| {n} | {a:.2%} | {t:.1f} | {b} |" for n, a, t, b in rows]
    return lines + [""]


def bench_hsj(model, x, y, budgets, art):
    """HopSkipJump L2: median L2 distance after a number of queries per point."""
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    x, y = x[ok], y[ok]
    lines = [f"### HopSkipJump L2, undefended model, {len(y)} points", "",
             "| implementation | queries per point (mean) | median L2 | time (s) |", "|---|---|---|---|"]
    big = rl.ThreatModel("l2", 1000.0)
    oracle_model = rl.oracles.DecisionOracle.from_model(model)
    for b in budgets:
        t0 = time.perf_counter()
        res = rl.attacks.HopSkipJump(big, max_queries=b, iterations=10_000, early_stop=False)(oracle_model, x, y)
        t = time.perf_counter() - t0
        d = res.perturbation_norms[res.success]
        lines.append(f"| robustlab HopSkipJump | {res.queries.double().mean():.0f} | {d.median():.3f} | {t:.1f} |")
    if art is not None:
        counter = {"n": 0}
        for it in (5, 20, 50):
            clf = art["clf"](model, x.shape[1:], counter)
            counter["n"] = 0
            atk = art["HSJ"](classifier=clf, norm=2, max_iter=it, max_eval=10000, init_eval=100, batch_size=64, verbose=False)
            t0 = time.perf_counter()
            adv = torch.from_numpy(atk.generate(x=x.numpy(), y=y.numpy()))
            t = time.perf_counter() - t0
            with torch.no_grad():
                succ = model(adv).argmax(1) != y
            d = (adv - x).flatten(1).norm(dim=1)[succ]
            lines.append(f"| ART HopSkipJump (max_iter={it}) | {counter['n'] / len(y):.0f} | {d.median():.3f} | {t:.1f} |")
    return lines + [""]


def art_tools():
    try:
        from art.attacks.evasion import HopSkipJump, SquareAttack
        from art.estimators.classification import PyTorchClassifier
    except ImportError:
        return None

    def clf(model, shape, counter=None):
        class Counted(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, z):
                if counter is not None:
                    counter["n"] += z.shape[0]
                return self.m(z.float())  # ART's HopSkipJump sends float64

        return PyTorchClassifier(model=Counted(model), loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(shape),
                                 nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")

    return {"clf": clf, "Square": SquareAttack, "HSJ": HopSkipJump}
