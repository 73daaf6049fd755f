"""Every task's page in the same summary style: human labels with units (runs/labels.py), the query
budgets up to the attack's own only, the OCR lines that flipped marked as such, stereo units in the
headers. Pages are built from tiny fake results (no training): seconds."""
import json
from types import SimpleNamespace

import pytest
import torch

from robustlab.runs import labels
from robustlab.runs.rundir import Run

SNAKE = ("success_rate", "cer_adv", "queries_median", "time_s", "success_at", "clean_correct", "in_mask")


# ----- the shared labels --------------------------------------------------------------------------
def test_labels_units_and_formats():
    assert labels.header("epe") == "EPE (px)" and labels.header("bad3") == "bad-3 (%)" and labels.header("time_s") == "time (s)"
    assert labels.header("queries_median") == "queries per success (median) (queries)"
    assert labels.value("epe", 0.51234) == "0.512" and labels.value("bad3", 0.4126) == "41.3"
    assert labels.cell("bad3", 0.4126) == "41.3%" and labels.cell("epe", 0.5) == "0.500 px" and labels.cell("time_s", 4.24) == "4.2 s"
    assert labels.cell("queries_median", 1234.0) == "1,234 queries" and labels.value("eps", 0.03) == "0.03"
    assert labels.cell("cer_adv", float("nan")) == "-" and labels.value("n", 1000) == "1,000"
    assert labels.header("some_new_key") == "some new key"   # unknown keys: no underscores, no unit
    assert labels.rows({"cer_clean": 0.05, "time_s": 2.0}, ["time_s", "absent", "cer_clean"]) == [
        ["time", "2.0 s"], ["character error rate, clean", "5.0%"]]
    assert labels.count_of(3, 12, "line") == "3 of 12 lines (25%)" and labels.count_of(1, 1, "line") == "1 of 1 line (100%)"


# ----- OCR ----------------------------------------------------------------------------------------
def test_ocr_record_counts_success_only_within_the_attacks_own_budget():
    from robustlab.tasks.ocr import CRNN, attack_lines
    from robustlab.tasks.ocr.attacks import budget_marks
    from robustlab.tasks.ocr.render import render_lines

    assert budget_marks(5000) == (100, 500, 1000, 5000) and budget_marks(300) == (100, 300) and budget_marks(50) == (50,)
    torch.manual_seed(0)
    model = CRNN().eval()
    x = render_lines(["ab", "cd"], width=64)
    _, black = attack_lines(model, x, ["ab", "cd"], attack="square", eps=0.1, budget=30)
    assert list(black["success_at"]) == [30]
    _, white = attack_lines(model, x, ["ab", "cd"], attack="pgd", eps=0.01, steps=1)
    assert not [k for k in white if k.startswith("queries") or k == "success_at"]   # steps are not queries


def ocr_attack_page(tmp_path, flips=(True, False, False, False), budget=300, attack="square"):
    """An OCR attack page from a fake result: line 2 misread when clean, the others flipped where `flips` says."""
    from robustlab.tasks.ocr.metrics import attack_metrics
    from robustlab.tasks.ocr.render import render_lines
    from robustlab.tasks.ocr.report import flipped_lines, write_attack_page

    truth = ["the first line", "a second one", "third line", "and a fourth"]
    clean = [t if i != 2 else "thlrd line" for i, t in enumerate(truth)]
    adv = [c[::-1] if f else c for c, f in zip(clean, flips)]
    x = render_lines(truth, width=192)
    x_adv = (x + 0.1 * torch.tensor(flips, dtype=torch.float).view(-1, 1, 1, 1)).clamp(0, 1)
    success = torch.tensor([f or i == 2 for i, f in enumerate(flips)])
    queries = torch.tensor([40, budget, 0, budget])
    marks = tuple(m for m in (100, 500, 1000, 5000, 10000) if m < budget) + (budget,)
    metrics = attack_metrics(x, x_adv, success, queries, truth, clean, adv, marks=marks)
    metrics.update(attack=attack, norm="linf", eps=0.1, mask="whole", budget=budget, goal="untargeted", time_s=3.25)
    res = SimpleNamespace(x_adv=x_adv, success=success, queries=queries, texts={"truth": truth, "clean": clean, "adversarial": adv})
    run = Run(tmp_path / "ocr")
    run.write_config({"kind": "ocr-attack", "task": "ocr"})
    flipped = flipped_lines(success, res.texts)
    setting = {"target": "crnn", "attack": attack, "goal": "untargeted", "norm": "linf", "eps": 0.1, "mask": "whole",
               "budget": budget, "steps": 50, "data": "synthetic"}
    headline = write_attack_page(run, setting, x, res, metrics, flipped)
    return run.path / "report.html", headline


def test_ocr_page_human_labels_budget_points_and_flipped_lines(tmp_path):
    page, headline = ocr_attack_page(tmp_path)
    html = page.read_text()
    assert not [k for k in SNAKE if k in html]
    # the denominator named: 1 of the 3 lines read correctly when clean flipped (line 2 was misread when clean)
    assert headline.startswith("square on crnn: attack success 33% of the 3 lines read correctly when clean (1 now read")
    assert "they are 3 of 4 lines (75%) attacked" in headline
    for text in ("queries per success (median)", "20 queries", "time", "3.2 s", "character error rate, attacked"):
        assert text in html
    tables = json.loads((page.parent / "report.json").read_text())["tables"]
    budgets = next(t for t in tables if t[0].startswith("lines flipped within"))
    assert [r[0] for r in budgets[2]] == ["100", "300"]   # never 10000 for a budget of 300
    examples = next(t for t in tables if t[0].startswith("example lines"))
    assert examples[0] == "example lines: the line that flipped"
    assert [r[0] for r in examples[2]] == ["0"] and examples[2][0][-1] == "flipped"


def test_ocr_page_says_when_no_line_flipped(tmp_path):
    page, headline = ocr_attack_page(tmp_path, flips=(False, False, False, False))
    tables = json.loads((page.parent / "report.json").read_text())["tables"]
    examples = next(t for t in tables if t[0].startswith("example lines"))
    assert examples[0].startswith("example lines: no line flipped")
    assert [r[-1] for r in examples[2]] == ["not flipped"] * 3 and "attack success 0%" in headline


# ----- stereo -------------------------------------------------------------------------------------
def stereo_attack_page(tmp_path):
    from robustlab.tasks.stereo.report import HEADER, change_text, disparity_figure, metric_rows, write_report

    gen = torch.Generator().manual_seed(0)
    gt = torch.rand(32, 64, generator=gen) * 16
    clean, attacked = gt + 0.3 * torch.randn(32, 64, generator=gen), gt + 4 * torch.randn(32, 64, generator=gen)
    mask = torch.ones(32, 64, dtype=torch.bool)
    run = Run(tmp_path / "stereo")
    run.write_config({"kind": "stereo-attack", "task": "stereo"})
    disparity_figure(run.figures / "maps.png", torch.rand(3, 32, 64, generator=gen), gt, mask,
                     {"clean": clean, "attacked (both)": attacked}, max_disp=16, title="PGD eps 0.03 on both")
    results = {"clean": {"epe": 0.2412, "bad1": 0.031, "bad3": 0.0, "d1": 0.0},
               "attacked": {"epe": 3.2041, "bad1": 0.8, "bad3": 0.4126, "d1": 0.39}}
    write_report(run.path / "report.html", "stereo attack tiny", [("summary", change_text(results["clean"], results["attacked"]))],
                 [("disparity error vs ground truth", HEADER, metric_rows(results))], ["figures/maps.png"])
    return run.path / "report.html"


def test_stereo_page_units_in_headers(tmp_path):
    from dataclasses import asdict

    from robustlab.tasks.stereo.defense import DefenseConfig
    from robustlab.tasks.stereo.pretrained import StereoSetup
    from robustlab.tasks.stereo.report import defence_text, setup_text

    html = stereo_attack_page(tmp_path).read_text()
    for text in ("EPE (px)", "bad-1 (%)", "bad-3 (%)", "D1 (%)", "<td>3.204</td>", "<td>41.3</td>",
                 "EPE 0.241 px clean, 3.204 px attacked; bad-3 0.0% clean, 41.3% attacked"):
        assert text in html
    assert "{" not in setup_text(asdict(StereoSetup())) and "1,600 steps" in setup_text(asdict(StereoSetup()))
    text = defence_text(asdict(DefenseConfig(lr_consistency=0.1)))
    assert "PGD-5 pairs (eps 0.02 on both views)" in text and "left-right consistency weight 0.1" in text
    assert "local-linearity" not in text


@pytest.fixture
def no_chromium(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)


def test_screenshot_without_chromium_is_one_clear_error(tmp_path, no_chromium):
    from robustlab.errors import InputError
    from robustlab.runs.screenshot import render

    (tmp_path / "p.html").write_text("<html><body>x</body></html>")
    with pytest.raises(InputError, match="no Chromium on PATH"):
        render(tmp_path / "p.html", tmp_path / "p.png", 1000)


def test_ocr_attack_cli_writes_the_page(tmp_path, capsys):
    """`robustlab ocr attack` end to end on an untrained CRNN (it reads no line right: nothing can flip)."""
    from helpers import cli

    from robustlab.tasks.ocr import CRNN
    from robustlab.tasks.ocr.pretrained import CRNNSetup, save_crnn

    torch.manual_seed(0)
    save_crnn(CRNN(), CRNNSetup(), tmp_path / "crnn.safetensors")
    code, _, err = cli(capsys, "ocr", "attack", "--runs", tmp_path, "--name", "a", "--target", "crnn", "--model",
                       tmp_path / "crnn.safetensors", "--n", "2", "--max-queries", "20")
    assert code == 0, err
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["flipped"] == [False, False] and list(summary["metrics"]["success_at"]) == ["20"]
    html = (tmp_path / "a" / "report.html").read_text()
    assert "none of the 2 lines was read correctly when clean" in html and "no line flipped" in html
