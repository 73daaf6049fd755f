"""OCR task: rendering, metrics, CRNN + CTC, sequence objectives, masks, the Tesseract oracle, attacks
through the shared engine, the plug-in and its CLI."""
import json

import pytest
import torch

from robustlab.errors import InputError
from robustlab.oracles import QueryBudgetExceeded
from robustlab.tasks.ocr import (CRNN, TextTargeted, TextUntargeted, attack_lines, cer, ctc_log_likelihood,
                                 greedy_decode, render_lines, scanned_lines, synthetic_lines, wer)
from robustlab.tasks.ocr.masks import edge_mask, per_line, stroke_mask, text_threat, watermark_mask
from robustlab.tasks.ocr.model import n_parameters
from robustlab.tasks.ocr.objectives import change_one_word
from robustlab.tasks.ocr.tesseract import Reading, tesseract_status

HAVE_TESSERACT, WHY_NOT = tesseract_status()
needs_tesseract = pytest.mark.skipif(not HAVE_TESSERACT, reason=WHY_NOT)


# ----- rendering -----------------------------------------------------------------------------
def test_render_lines_shape_levels_and_seed():
    x = render_lines(["Hello world", "a"], height=32, ink=0.2, background=0.9)
    assert x.shape[:3] == (2, 1, 32) and x.shape[3] % 4 == 0
    assert abs(float(x.max()) - 0.9) < 1 / 255 and abs(float(x.min()) - 0.2) < 0.02
    assert (x[1] < 0.5).sum() < (x[0] < 0.5).sum()           # fewer glyphs, less ink
    a = render_lines(["noise"], width=80, noise=0.05, jitter=2, blur=0.5, seed=3)
    b = render_lines(["noise"], width=80, noise=0.05, jitter=2, blur=0.5, seed=3)
    c = render_lines(["noise"], width=80, noise=0.05, jitter=2, blur=0.5, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert 0 <= float(a.min()) and float(a.max()) <= 1
    with pytest.raises(InputError, match="do not fit"):
        render_lines(["a very long line of text"], width=40)


def test_synthetic_and_scanned_lines():
    d1, d2 = synthetic_lines(8, seed=5), synthetic_lines(8, seed=5)
    assert d1.texts == d2.texts and torch.equal(d1.x, d2.x) and d1.x.shape == (8, 1, 32, 256)
    assert synthetic_lines(8, seed=6).texts != d1.texts
    s = scanned_lines()
    assert len(s) == 7 and s.x.shape[:3] == (7, 1, 32)
    assert s.texts[1] == "Let us first determine markers of the coins and the"
    # every band holds dark ink on a light page
    assert bool(((s.x < 0.4).flatten(1).float().mean(1) > 0.005).all())
    assert bool((s.x.flatten(1).median(1).values > 0.8).all())


# ----- metrics -------------------------------------------------------------------------------
def test_cer_wer():
    assert cer("abc", "abd") == pytest.approx(1 / 3)
    assert cer(["abc", "hello"], ["abc", "help"]) == pytest.approx(2 / 7)   # corpus level: 2 edits / 7 chars
    assert wer("the cat sat", "the hat sat") == pytest.approx(1 / 3)
    assert wer(["a b", "c"], ["a b", "c d"]) == pytest.approx(1 / 4)   # 1 missing word of 4
    assert cer("", "abc") == 1.0
    with pytest.raises(InputError):
        cer(["a"], ["a", "b"])


# ----- CRNN and CTC --------------------------------------------------------------------------
def test_crnn_shape_size_and_ctc():
    torch.manual_seed(0)
    m = CRNN().eval()
    assert 120_000 <= n_parameters(m) <= 160_000
    out = m(torch.rand(2, 1, 32, 64))
    assert out.shape == (2, 16, 96)
    assert torch.allclose(out.exp().sum(-1), torch.ones(2, 16), atol=1e-5)
    with pytest.raises(InputError, match="32"):
        m(torch.rand(1, 1, 28, 64))
    # a hand-made path: blank a a blank a b -> "aab"
    idx = {"a": 1 + __import__("robustlab.tasks.ocr.render", fromlist=["CHARSET"]).CHARSET.index("a")}
    idx["b"] = idx["a"] + 1
    path = [0, idx["a"], idx["a"], 0, idx["a"], idx["b"]]
    lp = torch.full((1, 6, 96), -20.0)
    lp[0, torch.arange(6), torch.tensor(path)] = 0.0
    lp = lp.log_softmax(-1)
    assert greedy_decode(lp) == ["aab"]
    ll = ctc_log_likelihood(lp, ["aab"])
    assert float(ll) > -1e-3                       # the only likely alignment: log p ~ 0
    assert float(ctc_log_likelihood(lp, ["ab"])) < -10
    with pytest.raises(InputError, match="charset"):
        ctc_log_likelihood(lp, ["\u00e9"])


# ----- objectives ----------------------------------------------------------------------------
def test_objectives_on_strings_and_readings():
    u = TextUntargeted(k=2)
    out = ["hello wrld", "hxllo wxrld", "hello world"]
    truth = ["hello world"] * 3
    assert u.success(out, truth).tolist() == [False, True, False]
    assert u.loss(out, truth).tolist() == [1.0, 2.0, 0.0]
    w = TextUntargeted(word=1)
    assert w.success(["hello wrld", "helo world"], truth[:2]).tolist() == [True, False]
    # Tesseract readings: at equal text a lower confidence ranks higher (closer to a change)
    r = [Reading("hello world", (99.0,) * 10), Reading("hello world", (60.0,) * 10)]
    lo, hi = u.loss(r, truth[:2]).tolist()
    assert hi > lo and 0 <= lo < 1
    t = TextTargeted()
    pairs = [("hello world", "hello word"), ("hello world", "hello world!")]
    assert t.success(["hello word", "hello world"], pairs).tolist() == [True, False]
    l_ok, l_far = t.loss(["hello word", "hello world"], pairs).tolist()
    assert l_ok > l_far
    assert change_one_word("the markers are found", 0) != "the markers are found"
    assert len(change_one_word("the markers are found", 0)) == len("the markers are found")
    with pytest.raises(InputError):
        u.success(["a"], ["a", "b"])


def test_ctc_objective_on_crnn_output():
    torch.manual_seed(0)
    m = CRNN().eval()
    x = render_lines(["abc", "xyz"], width=64)
    out = m(x)
    lu = TextUntargeted().loss(out, ["abc", "xyz"])
    lt = TextTargeted().loss(out, [("abc", "abd"), ("xyz", "xyz")])
    assert lu.shape == (2,) and torch.allclose(lu, -ctc_log_likelihood(out, ["abc", "xyz"]))
    assert torch.allclose(lt, ctc_log_likelihood(out, ["abd", "xyz"]))


# ----- masks ---------------------------------------------------------------------------------
def test_masks():
    x = render_lines(["Robust text", "ab"], width=128)
    s = stroke_mask(x, radius=2)
    ink = x < 0.5
    assert bool((s[ink] == 1).all()) and 0 < float(s.mean()) < 0.6
    assert float(s[1].mean()) < float(s[0].mean())
    e = edge_mask(x)
    assert float(e.mean()) > 0 and float((e * (1 - stroke_mask(x, 2))).sum()) == 0   # edges lie at the strokes
    wm = watermark_mask(x)
    assert torch.equal(wm[0], wm[1]) and 0.05 < float(wm.mean()) < 0.7
    assert per_line(s) and not per_line(wm)
    th = text_threat("linf", 0.1, "strokes", x)
    assert th.mask is not None and th.mask.shape == x.shape and th.eps == 0.1
    assert text_threat("linf", 0.1, "watermark", x).mask.shape == (1, 1, 32, 128)
    with pytest.raises(InputError):
        text_threat("linf", 0.1, "strokes")
    with pytest.raises(InputError, match="unknown text mask"):
        text_threat("linf", 0.1, "stars", x)


# ----- attacks on a CRNN through the engine --------------------------------------------------
WORDS = ["cat", "dog", "sun", "map", "red", "box", "hi", "ok", "ten", "one"]


@pytest.fixture(scope="module")
def tiny_crnn():
    """A ~28k-parameter CRNN trained for 250 steps on ten short words (a few seconds)."""
    import random

    torch.manual_seed(0)
    m = CRNN(hidden=24, channels=(8, 16, 24, 32))
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    rng = random.Random(0)
    for i in range(250):
        texts = [rng.choice(WORDS) for _ in range(16)]
        loss = -ctc_log_likelihood(m(render_lines(texts, width=64, jitter=1, seed=i)), texts).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval()


def test_white_box_ctc_attacks_on_crnn(tiny_crnn):
    """PGD on the CTC loss: untargeted changes the reading; targeted makes line i read line j's text."""
    x = render_lines(WORDS[:4], width=64)
    own = greedy_decode(tiny_crnn(x))                     # attack the net's own readings
    res, met = attack_lines(tiny_crnn, x, own, attack="pgd", eps=0.1, steps=20)
    assert res.success.all() and all(a != o for a, o in zip(res.texts["adversarial"], own))
    assert met["linf"] <= 0.1 + 1e-5 and met["success_rate"] == 1.0 and met["cer_adv"] > 0
    wanted = own[1:] + own[:1]
    res, met = attack_lines(tiny_crnn, x, own, attack="pgd", eps=0.3, steps=60, wanted=wanted)
    assert res.success.float().mean() >= 0.75, res.texts
    assert [a == w for a, w in zip(res.texts["adversarial"], wanted)] == res.success.tolist()


def test_square_with_stroke_mask_keeps_perturbation_inside(tiny_crnn):
    x = render_lines(WORDS[4:7], width=64)
    own = greedy_decode(tiny_crnn(x))
    res, met = attack_lines(tiny_crnn, x, own, attack="square", eps=0.3, mask="strokes", budget=100, k=1)
    mask = stroke_mask(x)
    assert float(((res.x_adv - x).abs() * (1 - mask)).max()) == 0.0
    assert met["in_mask"] == pytest.approx(1.0) and met["linf"] <= 0.3 + 1e-6
    assert (res.queries <= 100).all() and res.success.any()
    # the reported success is the objective at x_adv
    assert TextUntargeted().success(greedy_decode(tiny_crnn(res.x_adv)), own).tolist() == res.success.tolist()
    # a mask shared by the lines (watermark) runs batched while the engine's active set shrinks
    res, met = attack_lines(tiny_crnn, x, own, attack="square", eps=0.3, mask="watermark", budget=30)
    assert met["in_mask"] == pytest.approx(1.0) and res.success.any()


def test_cw_on_the_ctc_loss(tiny_crnn):
    """The registered CW-L2 runs on the CRNN with the text objectives unchanged (hinge at success). Grey
    lines: CW's tanh box freezes pixels sitting exactly at 0 or 1 (white page, black ink)."""
    x = render_lines(WORDS[:4], width=64, ink=0.05, background=0.95)
    own = greedy_decode(tiny_crnn(x))
    res, met = attack_lines(tiny_crnn, x, own, attack="cw", norm="l2", eps=1.5, steps=30)
    adv = greedy_decode(tiny_crnn(res.x_adv))
    assert res.success.all() and all(a != o for a, o in zip(adv, own)), adv
    assert met["l2"] <= 1.5 and float(res.perturbation_norms.max()) <= 1.5 * (1 + 1e-5)
    # targeted, and a per-line stroke mask is honoured
    wanted = own[1:] + own[:1]
    res, met = attack_lines(tiny_crnn, x, own, attack="cw", norm="l2", eps=6.0, steps=40, wanted=wanted,
                            mask="strokes")
    assert float(((res.x_adv - x).abs() * (1 - stroke_mask(x))).max()) == 0.0
    assert [a == w for a, w in zip(greedy_decode(tiny_crnn(res.x_adv)), wanted)] == res.success.tolist()
    assert res.success.any()
    with pytest.raises(InputError, match="--norm l2"):
        attack_lines(tiny_crnn, x, own, attack="cw", norm="linf", eps=0.1)


@pytest.mark.parametrize("attack", ["square", "simba-dct", "simba-pixel", "hopskipjump"])
def test_per_line_masks_run_batched(tiny_crnn, attack):
    """One engine call for the whole batch with a per-sample mask: each line's perturbation stays inside its
    own mask while the active set shrinks; the reported successes are the readings of x_adv."""
    x = render_lines(WORDS[:6], width=64)
    own = greedy_decode(tiny_crnn(x))
    threat = text_threat("linf", 0.3, "strokes", x)
    assert threat.mask_per_sample and threat.has_per_sample_state
    masks = threat.mask
    assert not torch.equal(masks[0], masks[1])
    res, met = attack_lines(tiny_crnn, x, own, attack=attack, eps=0.3, mask="strokes", budget=150)
    assert float(((res.x_adv - x).abs() * (1 - masks)).max()) == 0.0
    assert met["linf"] <= 0.3 + 1e-6 and (res.queries <= 150).all() and met["in_mask"] == pytest.approx(1.0)
    assert TextUntargeted().success(greedy_decode(tiny_crnn(res.x_adv)), own).tolist() == res.success.tolist()
    assert int(res.success.sum()) >= (1 if attack == "simba-pixel" else 2), res.texts   # pixel SimBA: slowest


def test_in_mask_share_ignores_unchanged_lines():
    from robustlab.tasks.ocr import attack_metrics

    x = torch.ones(2, 1, 4, 4)
    mask = torch.zeros_like(x)
    mask[..., :2] = 1
    x_adv = x.clone()
    x_adv[0, 0, 0, 0] = 0.5                      # line 0 moved inside its mask, line 1 not at all
    m = attack_metrics(x, x_adv, torch.tensor([True, False]), torch.tensor([3, 9]), ["a", "b"], ["a", "b"],
                       ["c", "b"], mask=mask)
    assert m["in_mask"] == 1.0
    x_adv[1, 0, 0, 3] = 0.5                      # line 1 moved outside: half the lines' share
    assert attack_metrics(x, x_adv, torch.tensor([True, False]), torch.tensor([3, 9]), ["a", "b"], ["a", "b"],
                          ["c", "b"], mask=mask)["in_mask"] == 0.5


def test_ensemble_is_cached_and_transfers(tmp_path, monkeypatch):
    """pretrained_ensemble trains its members once (tiny, untrained-quality nets here), reloads them from the
    cache, and transfer_to crafts on their average and reports the documented keys."""
    import robustlab.tasks.ocr.pretrained as pre
    from robustlab.tasks.ocr import pretrained_ensemble, transfer_to

    real_lines = pre.synthetic_lines
    monkeypatch.setattr(pre, "synthetic_lines", lambda n, seed, **kw: real_lines(4, seed, **kw))  # a short validation
    base = pre.CRNNSetup(hidden=8, channels=(4, 4, 8, 8), steps=2, batch_size=4)
    models = pretrained_ensemble(3, steps=2, cache=tmp_path, base=base)
    assert len(models) == 3 and len(list(tmp_path.glob("crnn-*.safetensors"))) == 3
    assert not torch.equal(models[1].head.weight, models[2].head.weight)   # different seeds

    def no_training(*a, **k):
        raise AssertionError("the cached ensemble was retrained")

    monkeypatch.setattr(pre, "train_crnn", no_training)
    again = pretrained_ensemble(3, steps=2, cache=tmp_path, base=base)
    assert all(torch.equal(a.head.weight, b.head.weight) for a, b in zip(models, again))
    data = synthetic_lines(3, 7)

    def target(z):   # a stand-in recogniser: reads a line right exactly when it is unchanged
        return [t if torch.equal(zi, xi) else "?" for zi, xi, t in zip(z, data.x, data.texts)]

    r = transfer_to(models, target, data.x, data.texts, eps=0.1, steps=3)
    assert set(r) == {"source_success_rate", "target_correct_clean", "transfer_rate", "linf", "n", "x_adv"}
    assert r["n"] == 3 and r["target_correct_clean"] == 3 and r["transfer_rate"] == 1.0
    assert r["linf"] <= 0.1 + 1e-6 and 0 <= r["source_success_rate"] <= 1
    with pytest.raises(InputError):
        pretrained_ensemble(0, cache=tmp_path, base=base)


def test_reproduce_defaults_to_fifty_lines():
    import argparse
    import inspect

    from robustlab.taskspec import get_task
    from robustlab.tasks.ocr.reproduce import reproduce

    assert inspect.signature(reproduce).parameters["n"].default == 50
    parser = argparse.ArgumentParser()
    get_task("ocr").add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["ocr", "reproduce"])
    assert args.n == 50 and args.ensemble == 3 and args.cw_eps == 1.0 and args.max_queries == 500


# ----- Tesseract -----------------------------------------------------------------------------
def test_missing_tesseract_message(monkeypatch):
    import robustlab.tasks.ocr.tesseract as tess

    monkeypatch.setattr(tess, "tesseract_status", lambda lang="eng": (False, tess.MISSING.format(why="test")))
    with pytest.raises(tess.TesseractUnavailable, match="tesseract-ocr tesseract-ocr-eng"):
        tess.TesseractOracle()


@pytest.fixture(scope="module")
def tesseract():
    from robustlab.tasks.ocr import TesseractOracle

    if not HAVE_TESSERACT:
        pytest.skip(WHY_NOT)
    return TesseractOracle(budget=200)


@needs_tesseract
def test_tesseract_reads_counts_and_memoises(tesseract):
    x = render_lines(["Hello world 42", "the markers are found"], width=256)
    tesseract.reset()
    r = tesseract(x, ids=[0, 1])
    assert [q.text for q in r] == ["Hello world 42", "the markers are found"]
    assert len(r[0].confidences) == len("Helloworld42") and r[0].confidence > 0.8
    assert tesseract.total_queries == 2 and tesseract.per_sample == {0: 1, 1: 1}
    # quantised to uint8 before the query: a change below half a grey level hits the cache
    again = tesseract.read(x + 1e-4 * (x < 0.5), ids=[0, 1])
    assert again == ["Hello world 42", "the markers are found"]
    assert tesseract.per_sample == {0: 1, 1: 1} and tesseract.cache_hits == 2
    small = TesseractOracle_budget(1)
    small(x[:1], ids=[0])
    with pytest.raises(QueryBudgetExceeded):
        small(x[:1] * 0.5 + 0.5, ids=[0])


def TesseractOracle_budget(b):
    from robustlab.tasks.ocr import TesseractOracle

    return TesseractOracle(budget=b)


@needs_tesseract
def test_square_untargeted_against_tesseract(tesseract):
    d = synthetic_lines(2, 999, styles=False)
    tesseract.reset()
    res, met = attack_lines(tesseract, d.x, d.texts, attack="square", eps=0.3, mask="strokes", budget=150)
    assert met["clean_correct"] >= 1
    assert met["success_rate_of_correct"] == 1.0
    assert met["cer_adv"] > met["cer_clean"]
    assert (res.queries <= 150).all() and met["in_mask"] == pytest.approx(1.0)
    # success is judged on what Tesseract reads at x_adv (quantised; memoised, so no new query)
    n = tesseract.total_queries - tesseract.verification_queries   # (re-queries that check determinism aside)
    assert [a != t for a, t in zip(tesseract.read(res.x_adv), d.texts)] == res.success.tolist()
    assert tesseract.total_queries - tesseract.verification_queries == n


@needs_tesseract
@pytest.mark.slow
def test_tesseract_worker_pool_agrees():
    from robustlab.tasks.ocr import TesseractOracle

    d = synthetic_lines(6, 3)
    one, two = TesseractOracle(), TesseractOracle(workers=2)
    try:
        assert two(d.x) == one(d.x)
    finally:
        two.close()


# ----- plug-in and CLI -----------------------------------------------------------------------
def test_plugin_declares_the_task():
    from robustlab.taskspec import get_task

    t = get_task("ocr")
    assert set(t.objectives) >= {"untargeted", "targeted"} and "pretrained" in t.models
    assert set(t.threats) == {"whole", "strokes", "edges", "watermark"} and "tesseract" in t.oracles
    assert t.metrics(["abd"], ["abc"])["cer"] == pytest.approx(1 / 3)
    assert isinstance(t.objective("targeted"), TextTargeted)


@needs_tesseract
def test_cli_attack_tesseract(tmp_path):
    import argparse

    from robustlab.taskspec import get_task

    task = get_task("ocr")
    parser = argparse.ArgumentParser()
    task.add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["ocr", "attack", "--runs", str(tmp_path), "--name", "a", "--data", "clean", "--n", "2",
                              "--max-queries", "40", "--eps", "0.3", "--mask", "strokes"])
    assert task.run_cli(args) == 0
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["metrics"]["n"] == 2 and len(summary["texts"]["adversarial"]) == 2
    assert (tmp_path / "a" / "figures" / "lines.png").exists() and (tmp_path / "a" / "report.html").exists()
