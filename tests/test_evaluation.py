import pytest
import torch
import torch.nn as nn

import robustlab as rl
from robustlab import attacks as A
from robustlab.evaluation import build_suite, wilson_interval

from helpers import assert_valid_adversarials


class Quantized(nn.Module):
    """A masked-gradient defence: input quantisation (zero gradient almost everywhere)."""

    def __init__(self, inner, levels=4):
        super().__init__()
        self.inner, self.levels = inner, levels

    def forward(self, x):
        return self.inner(torch.round(x * self.levels) / self.levels)


class Noisy(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner((x + 0.05 * torch.randn_like(x)).clamp(0, 1))


def test_wilson_interval():
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0


def test_standard_suite_is_the_autoattack_protocol():
    suite = build_suite("standard", rl.ThreatModel("linf", 0.3))
    assert [a.name for a in suite] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert suite[0].steps == 100 and suite[1].n_targets == 9 and suite[2].n_targets == 9
    assert suite[3].max_queries == 5000 and suite[3].p_init == 0.8
    rand = build_suite("rand", rl.ThreatModel("linf", 0.3))
    assert [a.eot for a in rand] == [20, 20]


def test_evaluate_is_the_per_point_worst_case(digits_model, digits_test):
    x, y = digits_test
    threat = rl.ThreatModel("linf", 0.06)
    attacks = [A.FGSM(threat), A.PGD(threat, steps=10), A.APGD(threat, steps=20)]
    report = rl.evaluate(digits_model, (x, y), threat, attacks, batch_size=64, sanity=None)
    with torch.no_grad():
        correct = digits_model(x).argmax(1) == y
    any_success = torch.zeros_like(correct)
    for a in attacks:
        any_success |= a(digits_model, x, y).success
    assert torch.equal(report.robust_correct, correct & ~any_success)
    counts = report.per_attack
    assert counts["clean"] == int((~correct).sum())
    assert sum(counts.values()) == report.n - int(report.robust_correct.sum())
    lo, hi = report.robust_accuracy_ci
    assert lo <= report.robust_accuracy <= hi


def test_evaluate_accepts_dataloaders_and_datasets(digits_model):
    test = rl.load_dataset("digits", "test")
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(test.x, test.y), batch_size=50)
    a = rl.evaluate(digits_model, loader, rl.ThreatModel("linf", 0.05), "fast", n=120, sanity=None)
    b = rl.evaluate(digits_model, test, rl.ThreatModel("linf", 0.05), "fast", n=120, batch_size=50, sanity=None)
    assert a.n == b.n == 120 and a.robust_accuracy == b.robust_accuracy


def test_fab_t_finds_adversarials_inside_the_ball(digits_model, digits_correct):
    x, y = digits_correct
    for norm, eps in (("linf", 0.1), ("l2", 1.0)):
        threat = rl.ThreatModel(norm, eps)
        res = A.FABT(threat, steps=50, n_targets=3)(digits_model, x, y)
        assert res.success_rate > 0.4
        assert_valid_adversarials(digits_model, threat, x, y, res)


def test_masked_gradients_are_flagged_and_the_black_box_part_still_breaks_the_model(digits_model, digits_test):
    x, y = digits_test
    masked = Quantized(digits_model).eval()
    threat = rl.ThreatModel("linf", 0.1)
    checks = rl.sanity_checks(masked, (x, y), threat)
    assert checks["gradients"].verdict == "warn" and checks["gradients"].evidence["zero_gradient_fraction"] > 0.9
    assert checks["black_box_vs_white_box"].verdict == "warn"
    assert checks["large_eps"].verdict == "warn"
    white_only = rl.evaluate(masked, (x, y), threat, ["apgd-ce", "apgd-t"], sanity=None)
    full = rl.evaluate(masked, (x, y), threat, "standard")
    assert full.per_attack["square"] > 10
    assert full.robust_accuracy < white_only.robust_accuracy - 0.05
    assert full.sanity["cascade_black_box"].verdict == "warn"
    # the undefended model passes the gradient checks
    clean = rl.sanity_checks(digits_model, (x, y), threat, checks=("gradients", "large_eps", "randomness"))
    assert clean.ok


def test_randomised_model_is_flagged_and_eot_is_stronger(digits_model, digits_test):
    x, y = digits_test
    noisy = Noisy(digits_model).eval()
    threat = rl.ThreatModel("linf", 0.05)
    assert rl.sanity_checks(noisy, (x, y), threat, checks=("randomness",))["randomness"].verdict == "warn"
    torch.manual_seed(0)
    plain = A.APGD(threat, steps=20)
    eot = A.APGD(threat, steps=20, eot=10)
    r_eot = eot(noisy, x, y)
    assert r_eot.grad_calls.max() <= 10 * 21
    assert r_eot.success_rate >= plain(noisy, x, y).success_rate - 0.05


def test_a_killed_evaluation_resumes_from_its_cells_with_the_same_result(digits_model, digits_test, tmp_path):
    """Cells are written after every (attack, batch); a rerun continues after the last one and reaches
    the uninterrupted result without repeating finished work."""
    import robustlab as rl

    x, y = digits_test
    threat = rl.ThreatModel("linf", 0.06)
    attacks = ["fgsm", "pgd"]
    full = rl.evaluate(digits_model, (x, y), threat, attacks, batch_size=50, sanity=None)

    class Killed(Exception):
        pass

    calls = {"n": 0}

    def dying(inp):  # the model dies during the third batch's second attack
        calls["n"] += 1
        if calls["n"] > 30:
            raise Killed
        return digits_model(inp)

    with pytest.raises(Killed):
        rl.evaluate(dying, (x, y), threat, attacks, batch_size=50, sanity=None, cells_dir=tmp_path)
    cells = sorted(p.name for p in tmp_path.iterdir())
    assert 1 <= len(cells) < 4
    counted = {"n": 0}

    def counting(inp):
        counted["n"] += 1
        return digits_model(inp)

    resumed = rl.evaluate(counting, (x, y), threat, attacks, batch_size=50, sanity=None, cells_dir=tmp_path)
    assert torch.equal(resumed.robust_correct, full.robust_correct)
    assert resumed.broken_by == full.broken_by
    fresh = {"n": 0}

    def counting_fresh(inp):
        fresh["n"] += 1
        return digits_model(inp)

    rl.evaluate(counting_fresh, (x, y), threat, attacks, batch_size=50, sanity=None)
    assert counted["n"] < fresh["n"]  # finished cells were not recomputed


def test_the_signature_of_catastrophic_overfitting_is_named():
    """The shape of a catastrophically overfitted net (Wong et al. 2020): the loss dips back at the
    corner a single FGSM step of size eps lands on, but a ring inside the ball is misclassified, so
    PGD's small steps find it. The check must name it."""
    import robustlab as rl

    class Overfitted(nn.Module):
        def forward(self, x):
            d = x[:, 0] - x[:, 1]          # clean points have d = 0; linf eps 0.1 reaches |d| <= 0.2
            margin = 1 - 0.5 * d - 3 * torch.exp(-((d.abs() - 0.1) / 0.03) ** 2)
            return torch.stack([margin + 1, torch.ones_like(margin)], 1)  # logits, not probabilities

    torch.manual_seed(0)
    c = 0.3 + 0.4 * torch.rand(100, 1)
    x, y = torch.cat([c, c], 1), torch.zeros(100, dtype=torch.long)
    report = rl.sanity_checks(Overfitted(), (x, y), rl.ThreatModel("linf", 0.1), ("one_step_vs_iterative",))
    check = report["one_step_vs_iterative"]
    assert check.evidence["fgsm_robust_accuracy"] == 1.0 and check.evidence["pgd_robust_accuracy"] < 0.2, check.evidence
    assert check.verdict == "warn" and "catastrophic overfitting" in check.message


def test_rand_suites_judge_on_the_mean_or_on_one_fresh_draw():
    """'rand' judges a randomised model on the mean of 20 draws, 'rand-draw' on one fresh draw (AutoAttack):
    a model that is right on average but wrong on 20% of draws is robust under the first, not the second."""
    import robustlab as rl

    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.gen = torch.Generator().manual_seed(0)

        def forward(self, x):
            flip = (torch.rand(x.shape[0], generator=self.gen) < 0.2).float()[:, None]
            base = torch.stack([x.sum(1) * 0 + 1.0, x.sum(1) * 0], 1)  # class 0, margin 1
            return base * (1 - flip) + base.flip(1) * flip * 1.5

    x, y = torch.full((60, 4), 0.5), torch.zeros(60, dtype=torch.long)
    t = rl.ThreatModel("linf", 0.01)
    mean = build_suite("rand", t)[0]
    draw = build_suite("rand-draw", t)[0]
    for a in (mean, draw):
        a.steps = 2
    r_mean, r_draw = mean(Noisy(), x, y), draw(Noisy(), x, y)
    assert mean.eot_judge == "mean" and draw.eot_judge == "draw"
    assert float(r_mean.success.float().mean()) < 0.05  # the mean of 20 draws is (almost) never wrong
    assert 0.08 < float(r_draw.success.float().mean()) < 0.4  # about 20% of fresh draws are


def test_task_metrics_at_the_worst_case_match_robust_accuracy_along_a_curve(digits_model, digits_test):
    """The adversarial metrics are measured at each point's worst case, also for points broken at a
    smaller eps (carried forward, not re-measured at the clean point): for a classifier the
    adversarial accuracy is exactly the robust accuracy at every eps."""
    x, y = digits_test
    curve = rl.robustness_curve(digits_model, (x, y), rl.ThreatModel("linf", 0.0), [0.02, 0.05, 0.1], "fast",
                                sanity=None)
    for rep in curve.reports:
        assert rep.metrics["adversarial_accuracy"] == pytest.approx(rep.robust_accuracy, abs=1e-6), rep.metrics
        assert rep.x_adv is None  # points are kept only on request
    assert curve.reports[-1].robust_accuracy < curve.reports[0].robust_accuracy


def test_black_box_vs_white_box_runs_for_l1_and_flags_masked_gradients(digits_model, digits_correct):
    """Square-L1 vs l1-APGD: the check runs for L1 and flags input quantisation."""
    from robustlab.evaluation import sanity
    from robustlab.objectives import CrossEntropy

    x, y = digits_correct[0][:60], digits_correct[1][:60]
    threat = rl.ThreatModel("l1", 2.0)
    masked = Quantized(digits_model).eval()
    warn = sanity.check_black_box_vs_white_box(masked, x, y, threat, CrossEntropy(), max_queries=300)
    assert warn.verdict == "warn", warn.message
    ev = warn.evidence
    assert ev["apgd_success"] < 0.1 and ev["points_square_only"] >= 20  # Square-L1 breaks what APGD-L1 cannot
    ok = sanity.check_black_box_vs_white_box(digits_model, x, y, threat, CrossEntropy(), max_queries=300)
    assert ok.verdict == "pass" and ok.evidence["apgd_success"] > ok.evidence["square_success"] > 0.2
    flat = sanity.check_black_box_vs_white_box(digits_model, x.flatten(1), y, threat, CrossEntropy())
    assert flat.verdict == "not run" and "image inputs" in flat.message
