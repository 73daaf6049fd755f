"""What the report says in words about each evaluation: its suite and n, what broke its points (the
attacks in cascade order, apart from the points no attack was needed for), the verdicts of its checks,
and every warning the summary carries, one line each with a link to its section."""
from __future__ import annotations

from ..errors import InputError

BROKEN_BEFORE = {"clean": "already wrong", "smaller-eps": "broken at a smaller eps"}


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 point``, ``2 points`` (``many``: an irregular plural)."""
    return f"{n:,} {word if n == 1 else many or word + 's'}"


def suite_label(evaluation: dict) -> str:
    """How an evaluation was run, in words: ``standard suite, n=500`` or ``attacks apgd-ce, square, n=100``."""
    attacks = evaluation.get("attacks")
    reports = evaluation.get("reports") or [{}]
    n = evaluation.get("n", reports[0].get("n"))
    from ..evaluation.suite import SUITES

    if isinstance(attacks, str) and attacks in SUITES:
        how = f"{attacks} suite"
    elif isinstance(attacks, (str, list)) and attacks:
        how = "attacks " + (attacks if isinstance(attacks, str) else ", ".join(map(str, attacks)))
    else:
        how = "attacks not recorded"
    return f"{how}, n={n:,}" if isinstance(n, int) else how


def cascade_order(evaluation: dict) -> list[str]:
    """The evaluation's attacks in the order they ran (the cascade of its suite or list); [] when the
    record names none that robustlab knows (an older or foreign record: the report then keeps the stored order)."""
    from ..evaluation.suite import build_suite
    from ..threat import ThreatModel

    attacks, reports = evaluation.get("attacks"), evaluation.get("reports") or []
    eps = max([r.get("eps", 0) for r in reports] + [0]) or 1.0
    try:
        return [a.name for a in build_suite(attacks, ThreatModel(evaluation.get("norm", "linf"), eps))]
    except (InputError, ValueError, TypeError, KeyError, AttributeError):
        return []


def broken_by(per_attack: dict, order: list[str]) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(attacks in cascade order with the points each broke first, the points no attack needed to break:
    [("already wrong", n), ("broken at a smaller eps", n)], the nonzero ones)."""
    names = [k for k in order if k in per_attack] + [k for k in per_attack if k not in order and k not in BROKEN_BEFORE]
    before = [(words, int(per_attack[k])) for k, words in BROKEN_BEFORE.items() if per_attack.get(k)]
    return [(k, int(per_attack[k])) for k in names], before


def broken_by_text(per_attack: dict, order: list[str]) -> str:
    """``apgd-ce 41, apgd-t 3; already wrong 12``: what broke the points, attacks in cascade order first."""
    attacks, before = broken_by(per_attack, order)
    parts = [", ".join(f"{k} {v}" for k, v in attacks) or "no attacks", *(f"{k} {v}" for k, v in before)]
    return "; ".join(parts)


def shown_verdict(check: dict) -> str:
    """A check's verdict as the page shows it: records written before the "not run" verdict stored a
    check that could not apply as "pass" with a "skipped: ..." message (or "no black-box attack ...")."""
    message = str(check.get("message", ""))
    if check.get("verdict") == "pass" and (message.startswith("skipped:") or message.startswith("no black-box attack")):
        return "not run"
    return str(check.get("verdict", "?"))


def anchor(kind: str, label: str) -> str:
    """An id for a model's section (``checks-pgd-at``), safe in a URL fragment."""
    return kind + "-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in label)


def _check_warnings(e: dict) -> list[dict]:
    """One line per check that warned or failed at any eps of a model's evaluation."""
    by_check: dict[str, list] = {}
    for r in e["evaluation"]["reports"]:
        for c in r.get("sanity") or []:
            if shown_verdict(c) in ("warn", "fail"):
                by_check.setdefault(c.get("name", "?"), []).append((r["eps"], shown_verdict(c), c.get("message", "")))
    lines = []
    for name, hits in by_check.items():
        eps = ", ".join(f"{h[0]:g}" for h in hits)
        message = " ".join(str(hits[-1][2]).split())
        message = message if len(message) <= 160 else message[:157] + "..."
        lines.append({"text": f"{e['label']}: gradient-masking check {name} {hits[-1][1]}s at eps {eps}: {message}",
                      "href": "#" + anchor("checks", e["label"])})
    return lines


def _model_warnings(e: dict) -> list[dict]:
    lines = []
    if e["summary"].get("catastrophic_overfitting_epoch"):
        lines.append({"text": f"{e['label']}: catastrophic overfitting at epoch {e['summary']['catastrophic_overfitting_epoch']} "
                              "(PGD accuracy on training points collapsed while FGSM accuracy stayed high)",
                      "href": "#" + anchor("training", "curves")})
    if not e["evaluation"]:
        return lines + [{"text": f"{e['label']}: not evaluated (no evaluation.json): no robust accuracy",
                         "href": "#summary"}]
    lines += _check_warnings(e)
    if e.get("examples_note"):
        lines.append({"text": f"{e['label']}: no adversarial examples: {e['examples_note']}",
                      "href": "#" + anchor("examples", e["label"])})
    return lines


def report_warnings(entries: list[dict]) -> list[dict]:
    """Every warning of the page, one line each with a link to its section (``{"text", "href"}``):
    checks that warned or failed at any eps, evaluations that differ in suite or n, missing examples,
    catastrophic overfitting, models not evaluated."""
    lines = []
    suites = {e["label"]: suite_label(e["evaluation"]) for e in entries if e["evaluation"]}
    if len(set(suites.values())) > 1:
        lines.append({"text": "the models were evaluated differently (" + "; ".join(f"{k}: {v}" for k, v in suites.items())
                              + "): their robust accuracies are not directly comparable", "href": "#summary"})
    for e in entries:
        lines += _model_warnings(e)
    return lines


def examples_note(e: dict) -> str | None:
    """Why a model's report shows no adversarial examples (None when it shows some)."""
    ex = e["examples"]
    if not e["evaluation"]:
        return None
    if ex is None:
        return "the run holds no examples.pt (evaluated by a robustlab that kept none)"
    if e.get("examples_shown"):
        return None
    last = e["evaluation"]["reports"][-1]
    if ex.get("x") is None or ex["x"].numel() == 0:
        _, before = broken_by(last.get("per_attack", {}), [])
        why = "; ".join(f"{k} {v}" for k, v in before)
        return (f"no attack broke a point at eps={last['eps']:g}, the eps the examples are kept from"
                + (f" (of {plural(last['n'], 'point')}: {why})" if why else ""))
    return f"none of the {plural(ex['x'].shape[0], 'example')} kept at eps={float(ex['eps']):g} changed the prediction"
