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


class ModelTimer(torch.nn.Module):
    """Wraps a model and adds up the wall time spent inside it: forward passes, and backward passes
    through it (from the gradient reaching its output to the gradient reaching its input, by
    backward hooks). Everything else an attack does is overhead."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.seconds = 0.0
        self._back_start = None
        self.register_full_backward_pre_hook(self._pre_backward)
        self.register_full_backward_hook(self._post_backward)

    def forward(self, x):
        t0 = time.perf_counter()
        out = self.model(x)
        self.seconds += time.perf_counter() - t0
        return out

    def _pre_backward(self, module, grad_output):
        self._back_start = time.perf_counter()

    def _post_backward(self, module, grad_input, grad_output):
        if self._back_start is not None:
            self.seconds += time.perf_counter() - self._back_start
            self._back_start = None


def bench_suite(model, x, y, eps, label, pyautoattack, torchattacks, repeats: int = 2):
    """robustlab's standard suite vs the reference AutoAttack (pyautoattack) on the same points, in one
    process, interleaved repeats (medians); with the share of wall time spent inside the model."""
    for p in model.parameters():
        p.requires_grad_(False)
    threat = rl.ThreatModel("linf", eps)
    runs = {"robustlab": [], "reference": []}
    per_attack, broken_by = {}, ""
    # warm-up on a few points (allocator, kernel selection): the first timed run is otherwise ~20% slower
    rl.evaluate(model, (x[:20], y[:20]), threat, "standard", sanity=None, batch_size=500)
    if pyautoattack is not None:
        warm = pyautoattack.AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=0, device="cpu")
        warm.verbose = False
        warm.run_standard_evaluation(x[:20], y[:20], batch_size=500)
    for _ in range(repeats):
        timer = ModelTimer(model)
        t0 = time.perf_counter()
        rep = rl.evaluate(timer, (x, y), threat, "standard", sanity=None, batch_size=500)
        t = time.perf_counter() - t0
        runs["robustlab"].append((t, rep.robust_accuracy, timer.seconds / t))
        per_attack = {k: per_attack.get(k, []) + [v] for k, v in rep.attack_time_s.items()}
        broken_by = ", ".join(f"{k} {v}" for k, v in rep.per_attack.items())
        print("robustlab", runs["robustlab"][-1], flush=True)
        if pyautoattack is None:
            continue
        import logging

        logging.getLogger("auto-attack").setLevel(logging.WARNING)
        timer = ModelTimer(model)
        aa = pyautoattack.AutoAttack(timer, norm="Linf", eps=eps, version="standard", seed=0, device="cpu")
        aa.verbose = False
        t0 = time.perf_counter()
        adv = aa.run_standard_evaluation(x, y, batch_size=500)
        t = time.perf_counter() - t0
        adv = adv[0] if isinstance(adv, tuple) else adv  # pyautoattack 0.2 returns (x_adv, y_adv)
        with torch.no_grad():
            acc = float((model(adv).argmax(1) == y).float().mean())
        runs["reference"].append((t, acc, timer.seconds / t))
        print("reference", runs["reference"][-1], flush=True)
    med = {k: (statistics.median(r[0] for r in v), v[-1][1], statistics.median(r[2] for r in v))
           for k, v in runs.items() if v}
    ref_t = med["reference"][0] if "reference" in med else float("nan")
    rows = [("robustlab standard (APGD-CE, APGD-T, FAB-T, Square)", *med["robustlab"], broken_by)]
    if "reference" in med:
        rows.append(("reference AutoAttack (pyautoattack 0.2.0, standard)", *med["reference"], ""))
    if torchattacks is not None:
        aa = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=0)
        t0 = time.perf_counter()
        adv = aa(x, y)
        t = time.perf_counter() - t0
        with torch.no_grad():
            acc = float((model(adv).argmax(1) == y).float().mean())
        rows.append(("torchattacks AutoAttack (10 iterations, not the reference)", t, acc, float("nan"), ""))
    lines = [f"### Standard suite, Linf eps={eps}, {label}, {len(y)} points, median of {repeats} interleaved runs", "",
             "| implementation | robust accuracy | time (s) | vs reference | time inside the model | broken by |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {n} | {a:.2%} | {t:.1f} | {t / ref_t:.2f}x | {'-' if sh != sh else f'{sh:.0%}'} | {b} |"
              for n, t, a, sh, b in rows]
    times = ", ".join(f"{k} {statistics.median(v):.1f} s" for k, v in per_attack.items())
    return lines + ["", f"robustlab per attack (median): {times}.", ""]


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
