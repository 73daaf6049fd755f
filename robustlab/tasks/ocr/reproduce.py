"""`robustlab ocr reproduce`: untargeted and targeted attacks on rendered and scanned lines against
Tesseract and the CRNN; success vs queries at two perturbation sizes, with and without masks; the
white-box CTC upper bound on the CRNN (PGD at both Linf sizes, Carlini-Wagner at a small L2); CRNN -> Tesseract
transfer from the reference CRNN and from an ensemble of ``ensemble`` CRNNs (``pretrained_ensemble``).

Attacks run on the lines each recogniser reads exactly when clean (the counts are in the tables); where
it reads none exactly (the CRNN on the scanned page), its own clean readings are the reference.
Writes ``results.json``, ``results.md``, figures and ``report.html`` under ``out``.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from ...fileio import atomic_write_json, atomic_write_text
from .attacks import attack_lines, reader, transfer_to
from .objectives import change_one_word
from .pretrained import pretrained_crnn, pretrained_ensemble
from .render import LineDataset, scanned_lines, synthetic_lines
from .report import curves_figure, lines_figure, success_curve, write_html

log = logging.getLogger(__name__)


def _correct(read, data: LineDataset) -> LineDataset:
    got = read(data.x)
    keep = [i for i, (g, t) in enumerate(zip(got, data.texts)) if g == t]
    return data[keep]


def _row(cfg: dict, m: dict) -> list[str]:
    pct = lambda v: f"{100 * v:.0f}%"  # noqa: E731
    q = f"{m['queries_mean']:.0f} / {m['queries_median']:.0f}" if "queries_mean" in m else "-"
    eps = f"{m['eps']:g}" + (" (L2)" if m["norm"] == "l2" else "")
    return [cfg["target"], cfg["data"], cfg["attack"], m["goal"], eps, m["mask"], str(m["n"]),
            pct(m["success_rate"]), q, f"{100 * m['cer_clean']:.1f} -> {100 * m['cer_adv']:.1f}",
            f"{100 * m['wer_clean']:.0f} -> {100 * m['wer_adv']:.0f}", f"{m['l2']:.2f}", f"{m['linf']:.2f}",
            f"{m['l0']:.0f}", f"{100 * m['in_mask']:.0f}%" if "in_mask" in m else "-"]


HEADER = ["target", "lines", "attack", "goal", "eps", "mask", "n", "success", "queries mean / median",
          "CER % clean -> adv", "WER % clean -> adv", "L2", "Linf", "L0", "in mask"]


@dataclass
class _Reproduction:
    """Settings of one reproduction and what it collects: ``results`` (results.json), the table rows
    (attacks, transfer), the success-vs-queries curves and the figures written under ``out``."""

    out: Path
    n: int
    budget: int
    eps: tuple[float, ...]
    seed: int
    whitebox_steps: int
    marks: list[int]
    results: dict
    rows: list = field(default_factory=list)
    trows: list = field(default_factory=list)
    curves: dict = field(default_factory=dict)
    figs: list = field(default_factory=list)

    def lines_figure(self, name: str, lines, res, title: str) -> None:
        lines_figure(self.out / "figures" / name, lines.x, res.x_adv, res.texts["clean"], res.texts["adversarial"],
                     title=title)
        self.figs.append(f"figures/{name}")

    def add_attack(self, cfg: dict, res, m: dict) -> None:
        """One attack's row: its numbers and its success-vs-queries curve at the query marks."""
        m["curve"] = {"queries": self.marks, "success": success_curve(res.success, res.queries, self.marks)}
        self.results["attacks"].append({**cfg, **m})
        self.rows.append(_row(cfg, m))


def reproduce(out: Path, n: int = 50, budget: int = 500, eps: tuple[float, ...] = (0.05, 0.2), workers: int = 1,
              seed: int = 0, whitebox_steps: int = 50, hsj_l2_eps: float = 4.0, cw_l2_eps: float = 1.0,
              ensemble: int = 3) -> dict:
    """Run every configuration; returns the results dict (also written to ``out/results.json``).
    ``eps`` are Linf sizes; ``cw_l2_eps`` bounds Carlini-Wagner on the CRNN, ``hsj_l2_eps`` the targeted
    HopSkipJump on Tesseract; ``ensemble`` CRNNs (>= 2) add an ensemble -> Tesseract transfer row."""
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    crnn = pretrained_crnn()
    targets = {"crnn": crnn, **_tesseract(workers)}
    datasets = {"rendered": synthetic_lines(n, 999), "scanned": scanned_lines()}
    marks = sorted({m for m in (1, 10, 50, 100, 250, 500, 1000, 5000, 10000) if m <= budget} | {budget})
    rep = _Reproduction(out, n, budget, tuple(eps), seed, whitebox_steps, marks,
                        {"settings": {"n": n, "budget": budget, "eps": list(eps), "workers": workers, "seed": seed,
                                      "cw_l2_eps": cw_l2_eps, "ensemble": ensemble},
                         "clean": {}, "attacks": [], "transfer": []})
    for tname, model in targets.items():
        for dname, data in datasets.items():
            _attack_lines_of(rep, tname, model, dname, data, cw_l2_eps)
    if "tesseract" in targets:
        _targeted_from_rendered(rep, targets["tesseract"], hsj_l2_eps)
    for key, cv in rep.curves.items():
        name = f"curve-{key.replace('/', '-')}.png"
        curves_figure(out / "figures" / name, cv, title=f"Square, untargeted: {key}")
        rep.figs.append(f"figures/{name}")
    if "tesseract" in targets:
        _transfer(rep, crnn, targets["tesseract"], datasets, ensemble)
    rep.results["seconds"] = time.perf_counter() - start
    _write(rep)
    if "tesseract" in targets:
        targets["tesseract"].close()
    log.info("wrote %s (%.0f s)", out, rep.results["seconds"])
    return rep.results


def _tesseract(workers: int) -> dict:
    """{"tesseract": its oracle} when Tesseract 5 is installed, else {} (only the CRNN is attacked)."""
    from .tesseract import TesseractOracle, tesseract_status

    ok, why = tesseract_status()
    if ok:
        return {"tesseract": TesseractOracle(workers=workers)}
    log.warning("%s: only the CRNN is attacked", why)
    return {}


def _configs(tname: str, dname: str, eps: tuple[float, ...], cw_l2_eps: float) -> list[tuple]:
    """(attack, eps, mask, goal, norm) for one recogniser on one set of lines: Square at every Linf
    size, whole and on strokes, and targeted; on Tesseract's rendered lines SimBA-DCT, HopSkipJump and
    the watermark/edge masks; on the CRNN the white-box PGD and Carlini-Wagner (L2) upper bounds."""
    configs = [("square", e, m, None, "linf") for e in eps for m in ("whole", "strokes")]
    configs.append(("square", max(eps), "whole", "targeted", "linf"))
    if tname == "tesseract" and dname == "rendered":
        configs += [("simba-dct", max(eps), "whole", None, "linf"), ("hopskipjump", max(eps), "whole", None, "linf"),
                    ("square", max(eps), "watermark", None, "linf"), ("square", max(eps), "edges", None, "linf")]
    if tname == "crnn":
        configs += [("pgd", e, "whole", None, "linf") for e in eps] + [("pgd", max(eps), "whole", "targeted", "linf")]
        configs += [("cw", cw_l2_eps, "whole", None, "l2"), ("cw", cw_l2_eps, "whole", "targeted", "l2")]
    return configs


def _attack_lines_of(rep: _Reproduction, tname: str, model, dname: str, data: LineDataset, cw_l2_eps: float) -> None:
    """Clean reading of ``data`` by ``model``, then every configuration on the lines it reads exactly
    (or, when it reads none, on its own clean readings)."""
    from .metrics import ocr_metrics

    read = reader(model)
    got = read(data.x)
    rep.results["clean"][f"{tname}/{dname}"] = {**ocr_metrics(got, data.texts), "n": len(data)}
    lines = _correct(read, data)
    ref = "truth"
    if len(lines) == 0:   # e.g. the CRNN on the scanned page: attack its own clean readings instead
        log.warning("%s reads none of the %s lines exactly; attacking its own clean readings", tname, dname)
        lines, ref = LineDataset(data.x, got, data.name), "own reading"
    for attack, e, mask, goal, norm in _configs(tname, dname, rep.eps, cw_l2_eps):
        wanted = [change_one_word(t, i) for i, t in enumerate(lines.texts)] if goal else None
        t0 = time.perf_counter()
        res, m = attack_lines(model, lines.x, lines.texts, attack=attack, norm=norm, eps=e, mask=mask,
                              budget=rep.budget, steps=rep.whitebox_steps, wanted=wanted, seed=rep.seed)
        cfg = {"target": tname, "data": dname if ref == "truth" else f"{dname} (vs own reading)", "attack": attack}
        rep.add_attack(cfg, res, m)
        log.info("%s %s %s %s eps=%g mask=%s: success %.0f%% of %d (%.0f s)", tname, dname, attack,
                 m["goal"], e, mask, 100 * m["success_rate"], m["n"], time.perf_counter() - t0)
        if attack in ("square", "simba-dct", "hopskipjump") and goal is None:
            rep.curves.setdefault(f"{tname}/{dname}", {})[f"{attack} eps={e:g} {mask}"] = (rep.marks, m["curve"]["success"])
        if attack == "square" and goal is None and (e == min(rep.eps) and mask == "strokes" or mask == "watermark") \
                or attack == "hopskipjump":
            rep.lines_figure(f"lines-{tname}-{dname}-{attack}-{mask}.png", lines, res,
                             f"{attack} on {tname}, Linf {e:g}, mask {mask}")


def _targeted_from_rendered(rep: _Reproduction, tess, l2: float) -> None:
    """Targeted, label-only: HopSkipJump (L2) from the wanted line rendered in the same style (plain
    lines, whose style is known), shrinking the difference while Tesseract keeps reading the wanted text."""
    from .render import render_lines

    plain = _correct(reader(tess), synthetic_lines(rep.n, 999, styles=False))
    if not len(plain):
        return
    wanted = [change_one_word(t, i) for i, t in enumerate(plain.texts)]
    starts = render_lines(wanted, width=plain.x.shape[-1])
    res, m = attack_lines(tess, plain.x, plain.texts, attack="hopskipjump", norm="l2", eps=l2, budget=rep.budget,
                          wanted=wanted, seed=rep.seed, starting_points=starts)
    rep.add_attack({"target": "tesseract", "data": "rendered plain (start: wanted line rendered)",
                    "attack": "hopskipjump"}, res, m)
    log.info("tesseract targeted HopSkipJump L2 %g from rendered targets: success %.0f%% of %d", l2,
             100 * m["success_rate"], m["n"])
    rep.lines_figure("lines-tesseract-targeted-hopskipjump.png", plain, res, f"targeted HopSkipJump on Tesseract, L2 {l2:g}")


def _transfer_row(rep: _Reproduction, dname: str, source: str, goal: str, e: float, r: dict, **extra) -> None:
    rep.results["transfer"].append({"data": dname, "eps": e, **extra, **r})
    rep.trows.append([dname, source, goal, f"{e:g}", str(r["n"]), f"{100 * r['source_success_rate']:.0f}%",
                      f"{100 * r['transfer_rate']:.0f}%"])


def _transfer(rep: _Reproduction, crnn, tess, datasets: dict, ensemble: int) -> None:
    """CRNN -> Tesseract transfer on the lines both read exactly: MI-FGSM (untargeted) from the CRNN and
    from an ensemble's averaged log-probabilities, PGD (targeted) from the CRNN."""
    members = pretrained_ensemble(ensemble) if ensemble > 1 else []
    tess_read = reader(tess)
    for dname, data in datasets.items():
        both = _correct(tess_read, _correct(reader(crnn), data))
        if len(both) == 0:
            continue
        for e in rep.eps:
            r = transfer_to(crnn, tess_read, both.x, both.texts, eps=e, seed=rep.seed)
            r.pop("x_adv")
            _transfer_row(rep, dname, "CRNN", "untargeted (MI-FGSM 20)", e, r)
            if members:   # the same lines, MI-FGSM on the ensemble's averaged log-probabilities
                r = transfer_to(members, tess_read, both.x, both.texts, eps=e, seed=rep.seed)
                r.pop("x_adv")
                _transfer_row(rep, dname, f"CRNN ensemble ({len(members)})", "untargeted (MI-FGSM 20)", e, r,
                              source=f"ensemble of {len(members)}")
        wanted = [change_one_word(t, i) for i, t in enumerate(both.texts)]
        e = max(rep.eps)
        res, _ = attack_lines(crnn, both.x, both.texts, attack="pgd", eps=e, steps=rep.whitebox_steps, wanted=wanted,
                              seed=rep.seed)
        hit = [a == w for a, w in zip(tess_read(res.x_adv), wanted)]
        r = {"n": len(both), "source_success_rate": float(res.success.float().mean()), "transfer_rate": sum(hit) / len(hit)}
        _transfer_row(rep, dname, "CRNN", f"targeted (PGD {rep.whitebox_steps})", e, r, goal="targeted")


def _write(rep: _Reproduction) -> None:
    """results.json, results.md (the three tables) and report.html (tables and figures)."""
    results = rep.results
    atomic_write_json(rep.out / "results.json", results)
    clean_rows = [[k, str(v["n"]), f"{100 * v['cer']:.1f}", f"{100 * v['wer']:.1f}", f"{100 * v['line_accuracy']:.0f}%"]
                  for k, v in results["clean"].items()]
    tables = [("clean reading", ["target/lines", "n", "CER %", "WER %", "lines exact"], clean_rows),
              ("attacks (on the lines read exactly when clean; queries per line)", HEADER, rep.rows),
              ("transfer CRNN -> Tesseract (lines both read exactly when clean)",
               ["lines", "source", "goal (attack on the source)", "eps", "n", "success on the source",
                "success on Tesseract"], rep.trows)]
    md = [f"# OCR reproduction ({results['seconds']:.0f} s; n={rep.n} rendered lines, budget {rep.budget})", ""]
    for caption, header, trs in tables:
        md += [f"## {caption}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        md += ["| " + " | ".join(r) + " |" for r in trs] + [""]
    atomic_write_text(rep.out / "results.md", "\n".join(md))
    write_html(rep.out / "report.html", "OCR reproduction", tables, rep.figs)
