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
from pathlib import Path

import torch

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


def reproduce(out: Path, n: int = 50, budget: int = 500, eps: tuple[float, ...] = (0.05, 0.2), workers: int = 1,
              seed: int = 0, whitebox_steps: int = 50, hsj_l2_eps: float = 4.0, cw_l2_eps: float = 1.0,
              ensemble: int = 3) -> dict:
    """Run every configuration; returns the results dict (also written to ``out/results.json``).
    ``eps`` are Linf sizes; ``cw_l2_eps`` bounds Carlini-Wagner on the CRNN, ``hsj_l2_eps`` the targeted
    HopSkipJump on Tesseract; ``ensemble`` CRNNs (>= 2) add an ensemble -> Tesseract transfer row."""
    from .tesseract import TesseractOracle, tesseract_status

    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    crnn = pretrained_crnn()
    targets = {"crnn": crnn}
    ok, why = tesseract_status()
    if ok:
        targets["tesseract"] = TesseractOracle(workers=workers)
    else:
        log.warning("%s: only the CRNN is attacked", why)
    datasets = {"rendered": synthetic_lines(n, 999), "scanned": scanned_lines()}
    marks = sorted({m for m in (1, 10, 50, 100, 250, 500, 1000, 5000, 10000) if m <= budget} | {budget})
    results: dict = {"settings": {"n": n, "budget": budget, "eps": list(eps), "workers": workers, "seed": seed,
                                  "cw_l2_eps": cw_l2_eps, "ensemble": ensemble},
                     "clean": {}, "attacks": [], "transfer": []}
    rows, curves, figs = [], {}, []
    for tname, model in targets.items():
        read = reader(model)
        for dname, data in datasets.items():
            got = read(data.x)
            from .metrics import ocr_metrics

            results["clean"][f"{tname}/{dname}"] = {**ocr_metrics(got, data.texts), "n": len(data)}
            lines = _correct(read, data)
            ref = "truth"
            if len(lines) == 0:   # e.g. the CRNN on the scanned page: attack its own clean readings instead
                log.warning("%s reads none of the %s lines exactly; attacking its own clean readings", tname, dname)
                lines, ref = LineDataset(data.x, got, data.name), "own reading"
            configs = [("square", e, m, None, "linf") for e in eps for m in ("whole", "strokes")]
            configs.append(("square", max(eps), "whole", "targeted", "linf"))
            if tname == "tesseract" and dname == "rendered":
                configs += [("simba-dct", max(eps), "whole", None, "linf"), ("hopskipjump", max(eps), "whole", None, "linf"),
                            ("square", max(eps), "watermark", None, "linf"), ("square", max(eps), "edges", None, "linf")]
            if tname == "crnn":
                configs += [("pgd", e, "whole", None, "linf") for e in eps] + [("pgd", max(eps), "whole", "targeted", "linf")]
                configs += [("cw", cw_l2_eps, "whole", None, "l2"), ("cw", cw_l2_eps, "whole", "targeted", "l2")]
            for attack, e, mask, goal, norm in configs:
                wanted = [change_one_word(t, i) for i, t in enumerate(lines.texts)] if goal else None
                t0 = time.perf_counter()
                res, m = attack_lines(model, lines.x, lines.texts, attack=attack, norm=norm, eps=e, mask=mask,
                                      budget=budget, steps=whitebox_steps, wanted=wanted, seed=seed)
                cfg = {"target": tname, "data": dname if ref == "truth" else f"{dname} (vs own reading)",
                       "attack": attack}
                m["curve"] = {"queries": marks, "success": success_curve(res.success, res.queries, marks)}
                results["attacks"].append({**cfg, **m})
                rows.append(_row(cfg, m))
                log.info("%s %s %s %s eps=%g mask=%s: success %.0f%% of %d (%.0f s)", tname, dname, attack,
                         m["goal"], e, mask, 100 * m["success_rate"], m["n"], time.perf_counter() - t0)
                if attack in ("square", "simba-dct", "hopskipjump") and goal is None:
                    curves.setdefault(f"{tname}/{dname}", {})[f"{attack} eps={e:g} {mask}"] = (marks, m["curve"]["success"])
                if attack == "square" and goal is None and (e == min(eps) and mask == "strokes" or mask == "watermark") \
                        or attack == "hopskipjump":
                    name = f"lines-{tname}-{dname}-{attack}-{mask}.png"
                    lines_figure(out / "figures" / name, lines.x, res.x_adv, res.texts["clean"],
                                 res.texts["adversarial"], title=f"{attack} on {tname}, Linf {e:g}, mask {mask}")
                    figs.append(f"figures/{name}")
    # targeted, label-only: HopSkipJump (L2) from the wanted line rendered in the same style (plain lines,
    # whose style is known), shrinking the difference while Tesseract keeps reading the wanted text
    if "tesseract" in targets:
        from .render import render_lines

        tess = targets["tesseract"]
        plain = _correct(reader(tess), synthetic_lines(n, 999, styles=False))
        if len(plain):
            wanted = [change_one_word(t, i) for i, t in enumerate(plain.texts)]
            starts = render_lines(wanted, width=plain.x.shape[-1])
            l2 = hsj_l2_eps
            res, m = attack_lines(tess, plain.x, plain.texts, attack="hopskipjump", norm="l2", eps=l2, budget=budget,
                                  wanted=wanted, seed=seed, starting_points=starts)
            cfg = {"target": "tesseract", "data": "rendered plain (start: wanted line rendered)", "attack": "hopskipjump"}
            m["curve"] = {"queries": marks, "success": success_curve(res.success, res.queries, marks)}
            results["attacks"].append({**cfg, **m})
            rows.append(_row(cfg, m))
            log.info("tesseract targeted HopSkipJump L2 %g from rendered targets: success %.0f%% of %d", l2,
                     100 * m["success_rate"], m["n"])
            lines_figure(out / "figures" / "lines-tesseract-targeted-hopskipjump.png", plain.x, res.x_adv,
                         res.texts["clean"], res.texts["adversarial"], title=f"targeted HopSkipJump on Tesseract, L2 {l2:g}")
            figs.append("figures/lines-tesseract-targeted-hopskipjump.png")
    for key, cv in curves.items():
        name = f"curve-{key.replace('/', '-')}.png"
        curves_figure(out / "figures" / name, cv, title=f"Square, untargeted: {key}")
        figs.append(f"figures/{name}")
    # transfer: MI-FGSM (untargeted) / PGD (targeted) on the CRNN, read by Tesseract; MI-FGSM on an ensemble
    trows = []
    if "tesseract" in targets:
        members = pretrained_ensemble(ensemble) if ensemble > 1 else []
        tess_read = reader(targets["tesseract"])
        for dname, data in datasets.items():
            both = _correct(tess_read, _correct(reader(crnn), data))
            if len(both) == 0:
                continue
            for e in eps:
                r = transfer_to(crnn, tess_read, both.x, both.texts, eps=e, seed=seed)
                r.pop("x_adv")
                results["transfer"].append({"data": dname, "eps": e, **r})
                trows.append([dname, "CRNN", "untargeted (MI-FGSM 20)", f"{e:g}", str(r["n"]),
                              f"{100 * r['source_success_rate']:.0f}%", f"{100 * r['transfer_rate']:.0f}%"])
                if members:   # the same lines, MI-FGSM on the ensemble's averaged log-probabilities
                    r = transfer_to(members, tess_read, both.x, both.texts, eps=e, seed=seed)
                    r.pop("x_adv")
                    results["transfer"].append({"data": dname, "eps": e, "source": f"ensemble of {len(members)}", **r})
                    trows.append([dname, f"CRNN ensemble ({len(members)})", "untargeted (MI-FGSM 20)", f"{e:g}",
                                  str(r["n"]), f"{100 * r['source_success_rate']:.0f}%",
                                  f"{100 * r['transfer_rate']:.0f}%"])
            wanted = [change_one_word(t, i) for i, t in enumerate(both.texts)]
            e = max(eps)
            res, _ = attack_lines(crnn, both.x, both.texts, attack="pgd", eps=e, steps=whitebox_steps, wanted=wanted,
                                  seed=seed)
            hit = [a == w for a, w in zip(tess_read(res.x_adv), wanted)]
            r = {"n": len(both), "source_success_rate": float(res.success.float().mean()),
                 "transfer_rate": sum(hit) / len(hit)}
            results["transfer"].append({"data": dname, "eps": e, "goal": "targeted", **r})
            trows.append([dname, "CRNN", f"targeted (PGD {whitebox_steps})", f"{e:g}", str(r["n"]),
                          f"{100 * r['source_success_rate']:.0f}%", f"{100 * r['transfer_rate']:.0f}%"])
    results["seconds"] = time.perf_counter() - start
    atomic_write_json(out / "results.json", results)
    clean_rows = [[k, str(v["n"]), f"{100 * v['cer']:.1f}", f"{100 * v['wer']:.1f}", f"{100 * v['line_accuracy']:.0f}%"]
                  for k, v in results["clean"].items()]
    tables = [("clean reading", ["target/lines", "n", "CER %", "WER %", "lines exact"], clean_rows),
              ("attacks (on the lines read exactly when clean; queries per line)", HEADER, rows),
              ("transfer CRNN -> Tesseract (lines both read exactly when clean)",
               ["lines", "source", "goal (attack on the source)", "eps", "n", "success on the source",
                "success on Tesseract"], trows)]
    md = [f"# OCR reproduction ({results['seconds']:.0f} s; n={n} rendered lines, budget {budget})", ""]
    for caption, header, trs in tables:
        md += [f"## {caption}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        md += ["| " + " | ".join(r) + " |" for r in trs] + [""]
    atomic_write_text(out / "results.md", "\n".join(md))
    write_html(out / "report.html", "OCR reproduction", tables, figs)
    if "tesseract" in targets:
        targets["tesseract"].close()
    log.info("wrote %s (%.0f s)", out, results["seconds"])
    return results
