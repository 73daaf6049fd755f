"""The classification report a reader trusts at a glance (issue 26): warnings in the summary, suite and
n beside every robust accuracy, "broken by" in cascade order, plurals, one colour per model, checks
that did not run, readable figures, flipped examples, a collapsible config, self-contained output.
The runs are written by hand (tiny files): each test takes well under a second or two."""
import json
import re

import matplotlib.image as mpimg
import pytest
import torch
import yaml

from robustlab.cli import main
from robustlab.evaluation.checks import Check, SanityReport
from robustlab.runs import render_report
from robustlab.runs.report_summary import broken_by_text, cascade_order, plural
from robustlab.runs.report_figures import PALETTE, curve_figure, model_colours, training_figure

STANDARD = ["apgd-ce", "apgd-t", "fab-t", "square"]


def _row(eps, n, robust, per_attack, sanity=None):
    return {"eps": eps, "n": n, "clean_accuracy": 0.9, "robust_accuracy": robust,
            "robust_accuracy_ci95": [max(0.0, robust - 0.05), min(1.0, robust + 0.05)], "per_attack": per_attack,
            "time_s": 1.0, "sanity": sanity}


def _examples(k=4, flipped=2):
    y = torch.arange(k) % 10
    pred = torch.where(torch.arange(k) < flipped, (y + 1) % 10, y)
    x = torch.rand(k, 1, 8, 8)
    return {"eps": 0.3, "x": x, "x_adv": (x + 0.1).clamp(0, 1), "y": y, "pred_adv": pred}


def _model_run(path, method, evaluation=None, examples=None, epochs=4):
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"kind": "model", "train": {"method": method, "epochs": epochs},
                                                      "environment": {"torch": "x"}}))
    (path / "summary.json").write_text(json.dumps({"n_parameters": 100, "train_time_s": 2.0, "best_epoch": epochs}))
    lines = [{"kind": "epoch", "epoch": i + 1, "train_acc": 0.5 + 0.1 * i, "train_robust_acc": 0.2 + 0.05 * i,
              "val_acc": 0.5, "val_robust_acc": 0.3, "local_linearity": 0.1} for i in range(epochs)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    if evaluation is not None:
        (path / "evaluation.json").write_text(json.dumps(evaluation, sort_keys=True))
    if examples is not None:
        torch.save(examples, path / "examples.pt")
    return path


WARN = {"name": "one_step_vs_iterative", "verdict": "warn", "message": "FGSM is stronger than PGD-20", "evidence": {}}
NOT_RUN = {"name": "cascade_black_box", "verdict": "not run", "message": "no black-box attack in the cascade",
           "evidence": {}}
OLD_SKIP = {"name": "probabilities", "verdict": "pass", "message": "skipped: outputs are not class scores", "evidence": {}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A PGD model on the standard suite (n=500, a warning at eps 0.3) and a standard model on the fast
    suite (n=1000) whose examples are empty: every point was broken at a smaller eps."""
    pgd = {"norm": "linf", "attacks": "standard", "n": 500, "reports": [
        _row(0.0, 500, 0.9, {"clean": 50, **dict.fromkeys(STANDARD, 0)}),
        _row(0.3, 500, 0.4, {"clean": 50, "apgd-ce": 200, "apgd-t": 20, "fab-t": 0, "square": 30, "smaller-eps": 0},
             [WARN, OLD_SKIP, {**WARN, "name": "gradients", "verdict": "pass", "message": "fine"}])]}
    std = {"norm": "linf", "attacks": "fast", "n": 1000, "reports": [
        _row(0.0, 1000, 0.95, {"clean": 50, "apgd-ce": 0, "apgd-t": 0}),
        _row(0.3, 1000, 0.0, {"clean": 50, "apgd-ce": 0, "apgd-t": 0, "smaller-eps": 950}, [NOT_RUN])]}
    root = tmp_path_factory.mktemp("report")
    a = _model_run(root / "runs" / "pgd-at", "pgd", pgd, _examples())
    b = _model_run(root / "runs" / "standard", "standard", std, {**_examples(0), "x": torch.empty(0)})
    return a, b


@pytest.fixture(scope="module")
def page(runs):
    """The two runs side by side, rendered once: ``p.html`` with ``p_files/`` beside it."""
    return render_report(list(runs), runs[0].parent.parent / "out" / "p.html")


def _summary(page):
    return page[page.index('<h2 id="summary">'):page.index("Per-attack breakdown")]


def test_the_summary_carries_every_warning_with_a_link_to_its_section(page):
    page = page.read_text()
    items = re.findall(r'<li class="warn"><a href="#([^"]+)">([^<]+)</a></li>', _summary(page))
    texts = [t for _, t in items]
    assert any("pgd-at: gradient-masking check one_step_vs_iterative warns at eps 0.3" in t for t in texts)
    assert any("evaluated differently" in t and "standard suite, n=500" in t and "fast suite, n=1,000" in t for t in texts)
    assert any(t.startswith("standard: no adversarial examples: no attack broke a point at eps=0.3") for t in texts)
    assert not any("probabilities" in t or "cascade_black_box" in t for t in texts)  # not run is no warning
    for target, _ in items:
        assert f'id="{target}"' in page, target


def test_suite_and_n_stand_beside_every_robust_accuracy(runs, page, tmp_path):
    page = page.read_text()
    summary = _summary(page)
    cells = re.findall(r"<td>(?:[\d.]+%.*?)</td>", summary, flags=re.S)
    assert len(cells) == 4 and all(("standard suite, n=500" in c) != ("fast suite, n=1,000" in c) for c in cells)
    assert "robust acc<br><small>standard suite, n=500</small>" in page  # the per-attack tables too
    one = render_report([runs[0]], tmp_path / "one.html").read_text()  # alike: once, in the column headers
    assert ">robust accuracy (standard suite, n=500)</th>" in one and "<th>eps=0.3</th>" in one
    assert "evaluated differently" not in one and "<small>standard suite" not in _summary(one)


def test_broken_by_lists_attacks_in_cascade_order_apart_from_the_points_not_attacked(page):
    page = page.read_text()
    assert '>apgd-ce 200, apgd-t 20, fab-t 0, square 30</td>\n<td class="text">already wrong 50</td>' in page
    assert '>apgd-ce 0, apgd-t 0</td>\n<td class="text">already wrong 50; broken at a smaller eps 950</td>' in page
    assert "clean:" not in page and "smaller-eps" not in page
    order = cascade_order({"attacks": "standard", "norm": "linf", "reports": [{"eps": 0.3}]})
    assert order == STANDARD  # the cascade, not the alphabet (evaluation.json stores its keys sorted)
    text = broken_by_text({"apgd-t": 3, "clean": 12, "apgd-ce": 41, "fab-t": 0, "square": 0, "smaller-eps": 0}, order)
    assert text == "apgd-ce 41, apgd-t 3, fab-t 0, square 0; already wrong 12"
    assert cascade_order({"attacks": "no-such-attack", "norm": "linf"}) == []


def test_plurals(tmp_path):
    assert (plural(1, "point"), plural(2, "point"), plural(1000, "example")) == ("1 point", "2 points", "1,000 examples")
    run = _model_run(tmp_path / "r", "pgd")
    (run / "geometry.json").write_text(json.dumps({"loss": "clean", "n": 1, "scalars": {"top_eigenvalue": 1.0}}))
    page = render_report([run], tmp_path / "g.html").read_text()
    assert "(clean loss, 1 point)" in page and "1 points" not in page


def test_checks_that_did_not_run_say_so_and_why_never_pass(page):
    page = page.read_text()
    assert '<td class="notrun">not run</td>\n<td style="text-align:left">no black-box attack in the cascade' in page
    # a record written before "not run" existed: its skipped check is shown as not run too
    assert '<td>probabilities</td><td class="notrun">not run</td>\n<td style="text-align:left">outputs are not class scores' in page
    # checks that all passed fold away; a warning keeps its table open
    assert "<details open><summary>Gradient-masking checks at eps=0.3: <span class=\"warn\">1 warn, 1 pass, 1 not run</span>" in page
    assert "<details><summary>Gradient-masking checks at eps=0.3: <span class=\"\">1 not run</span>" in page
    report = SanityReport([Check("a", "pass", "ok"), Check.not_run("b", "no images")])
    assert report.ok and [c.name for c in report.not_run] == ["b"] and "not run" in str(report)


def test_each_model_keeps_one_colour_on_every_figure_and_page(runs):
    a = model_colours(["pgd-at", "standard", "trades"])
    assert len(set(a.values())) == 3 and set(a.values()) <= set(PALETTE)
    assert len(set(model_colours([f"m{i}" for i in range(10)]).values())) == 10
    two_jobs = model_colours(["quickstart/standard", "rerun/standard"])  # the same model name in two jobs
    assert two_jobs["quickstart/standard"] != two_jobs["rerun/standard"]
    assert model_colours(["standard"])["standard"] == a["standard"]  # another page, fewer models
    assert model_colours(["job/standard", "pgd-at"])["job/standard"] == a["standard"]
    from robustlab.runs.report import _model_entry
    from robustlab.runs.rundir import Run

    entries = [_model_entry(Run(p, create=False), p.name) for p in runs]
    entries[1]["epochs"] = []  # a model without training records must not shift the others' colours
    colours = model_colours([e["label"] for e in entries])
    train, curve = training_figure(entries, colours), curve_figure(entries, colours)
    assert [tuple(line.get_color()) for line in train.axes[0].lines] == [tuple(colours["pgd-at"])] * 2
    curve_colours = [tuple(c.lines[0].get_color()) for c in curve.axes[0].containers]
    assert curve_colours == [tuple(colours["pgd-at"]), tuple(colours["standard"])]


def test_figures_are_readable_at_1000_px(runs, page):
    from robustlab.runs.report import _model_entry
    from robustlab.runs.rundir import Run

    entries = [_model_entry(Run(p, create=False), p.name) for p in runs]
    fig = training_figure(entries, model_colours([e["label"] for e in entries]))
    for ax in fig.axes:
        assert ax.get_legend() is None  # one legend, outside the axes
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
        assert min(t.get_fontsize() for t in ax.get_xticklabels()) >= 10 and ax.title.get_fontsize() >= 11
    assert fig.legends and min(t.get_fontsize() for t in fig.legends[0].get_texts()) >= 10
    for name in ("training_curves.png", "robustness_curve.png"):
        width = mpimg.imread(page.parent / "p_files" / name).shape[1]
        assert 700 <= width <= 1400, (name, width)  # shown near its natural size on a 1000-1400 px page


def test_examples_are_the_flipped_ones_and_a_model_without_says_why(page):
    files, page = page.parent / "p_files", page.read_text()
    assert '<img src="p_files/examples_pgd-at.png"' in page
    assert "2 examples the attack flipped" in page  # of 4 kept, 2 kept their label
    assert mpimg.imread(files / "examples_pgd-at.png").shape[1] < 800  # two columns, not four
    assert not (files / "examples_standard.png").exists()
    why = re.search(r'<div id="examples-standard"><p class="note">No adversarial examples: ([^<]+)</p>', page)
    assert why and "no attack broke a point at eps=0.3" in why.group(1) and "broken at a smaller eps 950" in why.group(1)


def test_the_config_is_collapsible(page):
    page = page.read_text()
    assert page.count("<details><summary>config: ") == 2
    assert re.search(r"<details><summary>config: pgd-at</summary><pre>kind: model", page)


def test_report_o_is_self_contained_and_the_default_stays_in_place(runs, tmp_path):
    import shutil

    a, b = (shutil.copytree(r, tmp_path / "runs" / r.name) for r in runs)
    (a / "figures").mkdir()
    (a / "figures" / "geometry_slice.png").write_bytes(b"png")
    assert main(["report", str(a), str(b), "-o", str(tmp_path / "site" / "page.html")]) == 0
    page = (tmp_path / "site" / "page.html").read_text()
    files = tmp_path / "site" / "page_files"
    assert (files / "robustness_curve.png").is_file() and (files / "pgd-at" / "figures" / "geometry_slice.png").is_file()
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert srcs and all(s.startswith("page_files/") for s in srcs), srcs
    assert not (tmp_path / "site" / "figures").exists() and not (tmp_path / "runs" / "figures").exists()
    assert main(["report", str(a)]) == 0  # default: in place, figures in the run's figures/
    assert (a / "report.html").is_file() and (a / "figures" / "robustness_curve.png").is_file()
    assert 'src="figures/geometry_slice.png"' in (a / "report.html").read_text()


def test_a_task_runs_page_is_self_contained_too(tmp_path):
    """Stereo and OCR runs (their own report hook): figures copied into page_files/, config collapsible."""
    run = tmp_path / "runs" / "att"
    (run / "figures").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"kind": "stereo-attack", "task": "stereo", "environment": {}}))
    (run / "figures" / "maps.png").write_bytes(b"png")
    (run / "report.json").write_text(json.dumps({"title": "att", "sections": [["headline", "EPE 3 px"]],
                                                 "tables": [], "figures": ["figures/maps.png"]}))
    page = render_report([run], tmp_path / "stereo.html").read_text()
    assert (tmp_path / "stereo_files" / "att" / "figures" / "maps.png").read_bytes() == b"png"
    assert "src='stereo_files/att/figures/maps.png'" in page and "<details><summary>config</summary>" in page


def test_a_foreign_broken_by_record_is_one_line_naming_the_file(runs, tmp_path):
    from robustlab.errors import InputError

    run = _model_run(tmp_path / "odd", "pgd", {"norm": "linf", "attacks": {"odd": 1}, "reports": [
        _row(0.1, 10, 0.5, {"apgd-ce": "many"}, [{"verdict": "warn"}])]})
    with pytest.raises(InputError, match="evaluation.json is corrupt"):
        render_report([run], tmp_path / "odd.html")
