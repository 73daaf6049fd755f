"""Perturbation-based poisons (issue 22) on tiny models: clean-label, gradient matching (Witches' Brew),
adversarial poisons and unlearnable examples. Each stays in its eps ball and the box, changes exactly the
samples it drew (without replacement, from the right class), keeps the labels; the gradient-matching loss
is the hand computation; signed Adam and its decay schedule follow the recurrence; error-minimising noise
lowers the training loss."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from robustlab.attacks.gradient import SignedAdam
from robustlab.errors import InputError
from robustlab.objectives import GradientMatchingLoss, Objective
from robustlab.poisoning.base import POISONS
from robustlab.poisoning.clean_label import CleanLabel, checker_patch
from robustlab.poisoning.delusive import AdversarialPoison, Unlearnable
from robustlab.poisoning.gradient_matching import DifferentiableAugment, GradientMatching
from robustlab.threat import ThreatModel

K = 3


def tiny_net(seed=0):
    """A strided conv (the CPU's fast input-gradient path) and a linear layer."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, K))


def data(n=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.arange(n) % K


def assert_poison_contract(p, x, y, eps, pool, count, free=None):
    """Only the drawn samples (``count`` distinct ones, all in ``pool``) changed, within eps (off ``free``
    pixels) and the box; labels unchanged."""
    idx = p.poisoned_indices
    assert len(idx) == count == len(set(idx.tolist())) and pool[idx].all()
    assert torch.equal(p.x[~p.poisoned], x[~p.poisoned])
    assert torch.equal(p.y, y) and torch.equal(p.original_y, y)
    delta = (p.x - x)[idx]
    if free is not None:
        delta = delta * (~free).float()
    assert delta.abs().max() <= eps + 1e-6 and p.x.min() >= 0 and p.x.max() <= 1
    assert delta.abs().max() > 0.5 * eps  # it did move


def test_registered():
    assert {"clean_label", "gradient_matching", "adversarial_poison", "unlearnable"} <= set(POISONS.names())


def test_clean_label_draws_target_class_and_stamps_the_trigger():
    x, y = data()
    attack = CleanLabel(tiny_net(), target=1, rate=0.5, steps=5, amplitude=0.25, position=(2, 3), seed=3)
    p = attack.poison((x, y))
    free = attack.trigger_mask(x.shape)
    assert_poison_contract(p, x, y, 8 / 255, y == 1, round(0.5 * int((y == 1).sum())), free)
    assert free.nonzero().tolist() == [[r, c] for r in range(2, 5) for c in range(3, 6)]
    # poison-time amplitude 0.25, test-time full trigger: x + a (pattern - x) on the patch, nothing elsewhere
    pattern = checker_patch()
    unperturbed = CleanLabel(target=1, rate=0.5, perturb=False, amplitude=0.25, position=(2, 3), seed=3).poison((x, y))
    assert torch.equal(unperturbed.poisoned, p.poisoned)
    i = int(p.poisoned_indices[0])
    assert torch.allclose(unperturbed.x[i, :, 2:5, 3:6], x[i, :, 2:5, 3:6] + 0.25 * (pattern - x[i, :, 2:5, 3:6]))
    full = attack.apply_trigger(x[:2])
    assert torch.equal(full[:, :, 2:5, 3:6], pattern.expand(2, 1, 3, 3))
    assert torch.equal(full[:, :, ~free], x[:2, :, ~free])
    assert torch.equal(attack.target_labels(y), torch.full_like(y, 1))
    with pytest.raises(InputError):
        CleanLabel(target=1)  # no surrogate to perturb with


def test_adversarial_poison_moves_towards_the_permuted_class():
    x, y = data()
    model = tiny_net()
    p = AdversarialPoison(model, eps=0.1, steps=10, rate=0.5, seed=1).poison((x, y))
    assert_poison_contract(p, x, y, 0.1, torch.ones_like(y, dtype=torch.bool), 15)
    idx = p.poisoned_indices
    with torch.no_grad():
        before = F.cross_entropy(model(x[idx]), (y[idx] + 1) % K)
        after = F.cross_entropy(model(p.x[idx]), (y[idx] + 1) % K)
    assert after < before - 0.01


def test_unlearnable_lowers_the_training_loss_against_random_noise():
    x, y = data(60)
    eps = 32 / 255  # a larger ball than the paper's: 8x8 random images, a few steps
    attack = Unlearnable(tiny_net(1), eps=eps, pgd_steps=10, train_steps=10, lr=0.1, max_rounds=10, seed=2)
    p = attack.poison((x, y))
    assert_poison_contract(p, x, y, eps, torch.ones_like(y, dtype=torch.bool), 60)
    assert 1 <= len(attack.rounds) <= 10 and attack.rounds[-1] >= 0.99
    # a fresh model trained on error-minimising noise reaches a lower training loss than on random noise
    g = torch.Generator().manual_seed(5)
    noisy = (x + (2 * torch.rand(x.shape, generator=g) - 1) * eps).clamp(0, 1)

    def train_loss(inputs):
        net = tiny_net(7)
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        for _ in range(30):
            opt.zero_grad()
            loss = F.cross_entropy(net(inputs), y)
            loss.backward()
            opt.step()
        return float(loss.detach())

    assert train_loss(p.x) < 0.7 * train_loss(noisy)


def hand_matching_loss(model, x_t, y_adv, x_p, y_p):
    params = list(model.parameters())
    g_t = torch.autograd.grad(F.cross_entropy(model(x_t), y_adv), params)
    g_p = torch.autograd.grad(F.cross_entropy(model(x_p), y_p), params, create_graph=True)
    a, b = torch.cat([g.flatten() for g in g_t]), torch.cat([g.flatten() for g in g_p])
    return 1 - (a @ b) / (a.norm() * b.norm())


def test_gradient_matching_loss_is_the_hand_computation():
    x, y = data()
    model = tiny_net()
    x_t, y_adv = x[:2], torch.tensor([1, 1])
    x_p = x[3:9].clone().requires_grad_(True)
    hand = hand_matching_loss(model, x_t, y_adv, x_p, y[3:9])
    objective = GradientMatchingLoss(model.parameters(), model(x_t), y_adv)
    engine = objective.loss(model(x_p), y[3:9])
    assert engine.shape == (6,) and torch.allclose(engine, (-hand).expand(6), atol=1e-6)
    assert not objective.success(model(x_p), y[3:9]).any()
    attack = GradientMatching(model, x_t, 1, rate=0.2)
    assert attack.matching_loss(x[3:9], y[3:9]) == pytest.approx(float(hand.detach()), abs=1e-6)
    # the engine's input gradient (strided conv: the CPU's fast path, double backward) is the hand gradient
    grad_hand, = torch.autograd.grad(hand, x_p)
    ctx_attack = SignedAdam(ThreatModel("linf", 0.1), objective, steps=1, random_start=False, early_stop=False)
    seen = {}
    original = SignedAdam.step

    def spy(self, ctx, state, i):
        seen["loss_grad"] = ctx.loss_and_grad(state["x_adv"])
        return original(self, ctx, state, i)

    SignedAdam.step = spy
    try:
        ctx_attack(model, x[3:9], y[3:9])
    finally:
        SignedAdam.step = original
    loss, grad, _, _ = seen["loss_grad"]
    assert torch.allclose(loss, (-hand.detach()).expand(6), atol=1e-6)
    assert torch.allclose(grad, -6 * grad_hand, atol=1e-5)  # summed over the batch's 6 equal rows


@pytest.mark.parametrize("augment", [True, False])
def test_gradient_matching_poisons_the_adversarial_class_and_lowers_the_loss(augment):
    x, y = data(100)
    model = tiny_net()
    attack = GradientMatching(model, x[:1], adv_class=2, rate=0.05, steps=12, restarts=2, augment=augment,
                              flip=False, shift=1, seed=4)
    p = attack.poison((x, y))
    assert_poison_contract(p, x, y, 16 / 255, y == 2, 5)
    assert attack.target_success(model).shape == (1,)
    if not augment:  # the poisons' loss (the best of the steps and restarts) is below the clean images'
        idx = p.poisoned_indices
        assert attack.final_loss == pytest.approx(attack.matching_loss(p.x[idx], y[idx]), abs=1e-6)
        assert attack.final_loss < 0.9 * attack.matching_loss(x[idx], y[idx])


def test_signed_adam_step_and_decay_schedule():
    attack = SignedAdam(ThreatModel("linf", 16 / 255), steps=250)
    base = 0.1 * 16 / 255
    assert attack.step_size(0, 16 / 255) == pytest.approx(base)
    assert [attack.step_size(i, 16 / 255) / base for i in (92, 93, 155, 156, 217, 218, 249)] == \
        pytest.approx([1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    # two steps on a linear objective (constant gradient c): sign Adam moves by lr * m_hat / sqrt(v_hat) = lr
    c = torch.tensor([[1.0, -2.0, 0.0, 3.0]])

    class Linear(Objective):
        def success(self, output, target):
            return torch.zeros(output.shape[0], dtype=torch.bool)

        def loss(self, output, target):
            return (output * c).sum(1)

    x = torch.full((1, 4), 0.5)
    lr = 0.01
    res = SignedAdam(ThreatModel("linf", 0.1), Linear(), steps=3, lr=lr, milestones=(2 / 3,), random_start=False,
                     early_stop=False)(nn.Identity(), x, torch.zeros(1, dtype=torch.long))
    # steps 0 and 1 at lr, step 2 at lr/10; the best point offered is the iterate before the last step
    assert torch.allclose(res.x_adv, x + 2 * lr * c.sign(), atol=1e-6)


def test_differentiable_augment_shifts_and_flips_with_gradients():
    src = torch.arange(1.0, 17.0).reshape(1, 1, 4, 4)
    x = src.repeat(16, 1, 1, 1).requires_grad_(True)
    out = DifferentiableAugment(nn.Identity(), flip=True, shift=1, seed=0)(x)

    def shifted(img, dr, dc):  # img moved down dr and right dc pixels, zero fill
        return F.pad(img, (1, 1, 1, 1))[..., 1 - dr:5 - dr, 1 - dc:5 - dc]

    views = [shifted(s, dr, dc) for s in (src, src.flip(3)) for dr in (-1, 0, 1) for dc in (-1, 0, 1)]
    seen = [next(k for k, v in enumerate(views) if torch.equal(img[None], v)) for img in out.detach()]
    assert len(set(seen)) > 4 and any(k >= 9 for k in seen) and any(k < 9 for k in seen)  # varied draws
    out.sum().backward()
    assert x.grad.abs().sum() > 0


NO_CUDA = "no CUDA device on this machine (CPU-only torch); the cuda variant runs where a GPU is"


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason=NO_CUDA))])
def test_poisons_run_with_the_model_on_the_device(device):
    """The data stay on the CPU; each poison runs the model where it lives and returns CPU tensors."""
    x, y = data(24)
    model = tiny_net().to(device)
    attacks = [CleanLabel(model, target=0, rate=0.5, steps=2), AdversarialPoison(model, steps=2, rate=0.5),
               Unlearnable(model, pgd_steps=2, train_steps=2, max_rounds=1),
               GradientMatching(model, x[:1], adv_class=1, rate=0.1, steps=2, restarts=1, shift=1)]
    for attack in attacks:
        p = attack.poison((x, y))
        assert p.x.device.type == "cpu" and p.poisoned.any() and torch.equal(p.y, y)
        assert torch.equal(p.x[~p.poisoned], x[~p.poisoned]) and not torch.equal(p.x, x)


def test_reproduction_markdown_says_what_reproduces():
    from robustlab.experiments.poisoning.repro_perturbation import BREW_EPS, TITLE, markdown

    cl = [{"rate": 0.1, "poisons": p, "n_poisoned": 35, "clean_acc": 0.9, "asr": a}
          for p, a in (("trigger only", 0.1), ("PGD 8/255 + trigger", 0.5), ("PGD 0.3 + trigger", 0.6))]
    gm = [{"eps": e, "target": t, "label": 1, "adv_class": 2, "n_poisoned": 35, "loss_clean": 0.5, "loss_poison": 0.2,
           "craft_s": 1.0, "success": t < 3, "clean_victim_hit": t == 0} for e in BREW_EPS for t in range(4)]
    delusive = [{"training set": n, "craft_s": 0.0, "standard": s, "pgd_at": a}
                for n, s, a in (("clean", 0.93, 0.91), ("adversarial poisons", 0.3, 0.8), ("unlearnable", 0.7, 0.85))]
    text = markdown({"sizes": {"n_train": None, "epochs": 5, "gm_steps": 250, "gm_restarts": 2}, "seed": 0,
                     "clean_acc": 0.93, "time_s": 60.0, "clean_label": cl, "gradient_matching": gm,
                     "delusive": delusive}, quick=False)
    assert text.startswith(TITLE) and "| adversarial poisons | 30.0% | 80.0% |" in text
    assert "+50.0 points, reproduces" in text                       # adversarial poisons vs PGD-AT
    assert "at most +50.0 points of ASR over the trigger alone, reproduces" in text
    assert "2/4 targets here beyond the clean victims' hits, reproduces" in text
    assert "(to 70.0%), does not reproduce" in text                 # unlearnable
