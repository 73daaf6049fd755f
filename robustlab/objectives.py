"""Objectives: what the attacker wants, per sample.

An objective maps a model output and a target to ``loss -> [B]`` (to maximise) and
``success -> bool[B]``. Classification targets are label tensors; targeted objectives take
``(labels, target_classes)`` or just the target classes where the loss does not need the labels.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F

from .errors import InputError
from .registry import Registry


class Objective:
    """Base class. Subclasses implement `loss` and `success`."""

    name = "objective"
    #: the kind of task it belongs to ("classification", "regression", "sequence"); suites and
    #: checks choose their protocol by it
    task: str | None = None
    #: True when loss > 0 exactly on successful samples (needed by minimum-norm attacks such as CW).
    margin_like = False

    def loss(self, output: torch.Tensor, target) -> torch.Tensor:
        raise NotImplementedError

    def success(self, output: torch.Tensor, target) -> torch.Tensor:
        raise NotImplementedError

    def divergence(self, output: torch.Tensor, reference: torch.Tensor, target=None) -> torch.Tensor:
        """Per-sample distance between the output at a perturbed point and at the clean point (the
        TRADES term, Zhang et al. 2019). Defined for classification (KL of the softmax) and regression
        (mean squared difference over valid elements); other objectives do not define it."""
        raise NotImplementedError(f"{type(self).__name__} defines no output divergence, so TRADES is not defined "
                                  "for it; train with pgd or llr instead")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


_LABELS_CHECKED: ContextVar[bool] = ContextVar("robustlab_labels_checked", default=False)


@contextmanager
def labels_checked(checked: bool = True):
    """Inside the block ``labels_of`` skips its range check (a host read, which stalls a GPU): for a caller that
    has checked the labels of the whole batch against the model's outputs once already (the attack engine);
    ``checked=False`` restores the check inside the block (an attack call nested in another's)."""
    token = _LABELS_CHECKED.set(checked)
    try:
        yield
    finally:
        _LABELS_CHECKED.reset(token)


def labels_of(output: torch.Tensor, target) -> torch.Tensor:
    """The integer labels of a classification target ((labels, ...) tuples too), checked against the logits."""
    if isinstance(target, (tuple, list)):
        target = target[0]
    if not isinstance(target, torch.Tensor) or target.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise InputError("classification targets must be an integer label tensor of shape [B]")
    if output.dim() != 2:
        raise InputError(f"classification objectives need logits of shape [B, C], got {tuple(output.shape)}")
    if target.shape != output.shape[:1]:
        raise InputError(f"labels have shape {tuple(target.shape)}, expected ({output.shape[0]},)")
    if target.numel() and not _LABELS_CHECKED.get() and (int(target.min()) < 0 or int(target.max()) >= output.shape[1]):
        raise InputError(f"labels must lie in [0, {output.shape[1] - 1}] for a model with {output.shape[1]} outputs")
    return target.long()


def _target_classes(output: torch.Tensor, target) -> tuple[torch.Tensor | None, torch.Tensor]:
    if isinstance(target, (tuple, list)):
        if len(target) != 2:
            raise InputError("targeted objectives take (labels, target_classes) or target_classes")
        y = labels_of(output, target[0])
        t = labels_of(output, target[1])
        return y, t
    return None, labels_of(output, target)


def _reached_target(output, target) -> torch.Tensor:
    if isinstance(output, list):
        t = target[1] if isinstance(target, tuple) else target
        return _compare_decisions(output, t, equal=True)
    if isinstance(output, torch.Tensor) and output.dim() == 1:
        t = target[1] if isinstance(target, (tuple, list)) else target
        return output == t.to(output.device)
    _, t = _target_classes(output, target)
    return output.argmax(1) == t


def _other_max(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """max_{i != y} z_i."""
    masked = logits.scatter(1, y[:, None], float("-inf"))
    return masked.amax(1)


def decisions(output) -> torch.Tensor | list:
    """The decision per sample: argmax of scores [B, C], or the output itself for labels [B] / lists."""
    if isinstance(output, torch.Tensor) and output.dim() == 2:
        return output.argmax(1)
    return output


def _compare_decisions(output: list, target, equal: bool) -> torch.Tensor:
    """Decisions given as a list (e.g. strings from a DecisionOracle) against labels of the same kind."""
    labels = target.tolist() if isinstance(target, torch.Tensor) else list(target)
    if len(labels) != len(output):
        raise InputError(f"{len(output)} decisions for {len(labels)} labels")
    if isinstance(target, torch.Tensor) and not all(isinstance(o, (int, bool)) for o in output):
        kinds = sorted({type(o).__name__ for o in output})
        raise InputError(
            f"the decision oracle returns {'/'.join(kinds)} decisions but the labels are an integer tensor; pass "
            "the labels in the oracle's own terms (a list such as ['cat', 'dog', ...]) or make the oracle return "
            "integer class indices"
        )
    return torch.tensor([(o == t) == equal for o, t in zip(output, labels)], dtype=torch.bool)


def _misclassified(output, target) -> torch.Tensor:
    if isinstance(output, list):
        y = target[0] if isinstance(target, tuple) else target
        return _compare_decisions(output, y, equal=False)
    if isinstance(output, torch.Tensor) and output.dim() == 1:
        y = target[0] if isinstance(target, (tuple, list)) else target
        return output != y.to(output.device)
    return output.argmax(1) != labels_of(output, target)


def kl_divergence(output: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(softmax(reference) || softmax(output))."""
    return F.kl_div(F.log_softmax(output, 1), F.softmax(reference, 1), reduction="none").sum(1)


class CrossEntropy(Objective):
    """Untargeted: maximise CE(f(x), y); success = misclassification."""

    name = "ce"
    task = "classification"

    def loss(self, output, target):
        return F.cross_entropy(output, labels_of(output, target), reduction="none")

    def divergence(self, output, reference, target=None):
        return kl_divergence(output, reference)

    def success(self, output, target):
        return _misclassified(output, target)


class Margin(Objective):
    """Untargeted CW margin: max_{i != y} z_i - z_y (> 0 exactly when misclassified)."""

    name = "margin"
    task = "classification"
    margin_like = True

    def loss(self, output, target):
        y = labels_of(output, target)
        return _other_max(output, y) - output.gather(1, y[:, None]).squeeze(1)

    def success(self, output, target):
        return _misclassified(output, target)


class DLR(Objective):
    """Difference of logits ratio (Croce & Hein 2020): -(z_y - max_{i!=y} z_i) / (z_pi1 - z_pi3 + 1e-12).

    Invariant to shifts and positive rescaling of the logits. Needs at least 3 classes.
    """

    name = "dlr"
    task = "classification"

    def loss(self, output, target):
        y = labels_of(output, target)
        if output.shape[1] < 3:
            raise InputError("DLR needs at least 3 classes; use Margin or CrossEntropy")
        srt = output.sort(1, descending=True).values
        z_y = output.gather(1, y[:, None]).squeeze(1)
        return -(z_y - _other_max(output, y)) / (srt[:, 0] - srt[:, 2] + 1e-12)

    def success(self, output, target):
        return _misclassified(output, target)


class TargetedCE(Objective):
    """Targeted: maximise -CE(f(x), t); success = argmax == t."""

    name = "targeted_ce"
    task = "classification"

    def loss(self, output, target):
        _, t = _target_classes(output, target)
        return -F.cross_entropy(output, t, reduction="none")

    def success(self, output, target):
        return _reached_target(output, target)


class TargetedMargin(Objective):
    """Targeted CW margin: z_t - max_{i != t} z_i (> 0 exactly when classified as t)."""

    name = "targeted_margin"
    task = "classification"
    margin_like = True

    def loss(self, output, target):
        _, t = _target_classes(output, target)
        return output.gather(1, t[:, None]).squeeze(1) - _other_max(output, t)

    def success(self, output, target):
        return _reached_target(output, target)


class TargetedDLR(Objective):
    """Targeted DLR (Croce & Hein 2020): -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4)/2 + 1e-12).

    Target is ``(labels, target_classes)``. With ``untargeted_success=True`` (the APGD-T use in
    AutoAttack) any misclassification counts as success; otherwise only reaching t does.
    """

    name = "targeted_dlr"
    task = "classification"

    def __init__(self, untargeted_success: bool = True):
        self.untargeted_success = untargeted_success

    def loss(self, output, target):
        y, t = _target_classes(output, target)
        if y is None:
            raise InputError("TargetedDLR needs target=(labels, target_classes)")
        if output.shape[1] < 4:
            raise InputError("targeted DLR needs at least 4 classes")
        srt = output.sort(1, descending=True).values
        z_y = output.gather(1, y[:, None]).squeeze(1)
        z_t = output.gather(1, t[:, None]).squeeze(1)
        return -(z_y - z_t) / (srt[:, 0] - 0.5 * (srt[:, 2] + srt[:, 3]) + 1e-12)

    def success(self, output, target):
        if self.untargeted_success:
            return _misclassified(output, target)
        return _reached_target(output, target)


class RegressionError(Objective):
    """Regression: maximise the per-sample error between output and target; success = error > threshold.

    ``error`` is "l2" (per-sample root mean squared error), "l1" (mean absolute error, e.g. the
    end-point error of a disparity map) or "linf" (max abs error). A mask of valid elements
    restricts the mean, e.g. to non-occluded pixels: either one ``mask`` broadcastable to every
    output, or per sample by passing ``target=(values, mask)``. Further tuple entries are carried
    for the attack (e.g. the warp disparity of a stereo-consistent attack) and ignored here.
    """

    name = "regression"
    task = "regression"
    margin_like = True

    def __init__(self, threshold: float, error: str = "l1", mask: torch.Tensor | None = None):
        if error not in ("l1", "l2", "linf"):
            raise InputError(f"unknown error {error!r}; known: l1, l2, linf")
        if not abs(float(threshold)) < 1e6:
            raise InputError(f"threshold {threshold} is too large: the loss error - threshold loses float32 precision "
                             "(the engine could no longer rank points); for an attack that never stops early use a "
                             "threshold just above the output range, e.g. 1000 for disparities")
        self.threshold = float(threshold)
        self.error = error
        self.mask = mask

    def _error(self, output, target):
        mask = self.mask
        if isinstance(target, (tuple, list)):
            target, mask = target[0], target[1]
        if not isinstance(target, torch.Tensor) or target.shape != output.shape:
            raise InputError(
                f"regression targets must be a tensor of the output's shape {tuple(output.shape)} "
                "(or a (target, valid_mask) pair)"
            )
        diff = (output - target).reshape(output.shape[0], -1)
        if mask is None:
            m = torch.ones_like(diff)
        else:
            m = torch.broadcast_to(mask.to(diff.dtype), output.shape).reshape(output.shape[0], -1)
            diff = torch.where(m > 0, diff, torch.zeros_like(diff))  # masked targets may be inf or NaN
        count = m.sum(1).clamp_min(1)
        if self.error == "l1":
            return (diff.abs() * m).sum(1) / count
        if self.error == "l2":
            return ((diff.pow(2) * m).sum(1) / count + 1e-12).sqrt()
        return (diff.abs() * m).amax(1)

    def loss(self, output, target):
        return self._error(output, target) - self.threshold

    def success(self, output, target):
        return self._error(output, target) > self.threshold

    def divergence(self, output, reference, target=None):
        """Mean squared difference of the outputs over the valid elements of `target`'s mask."""
        mask = self.mask
        if isinstance(target, (tuple, list)):
            mask = target[1]
        diff = (output - reference).pow(2).reshape(output.shape[0], -1)
        if mask is None:
            return diff.mean(1)
        m = torch.broadcast_to(mask.to(diff.dtype), output.shape).reshape(output.shape[0], -1)
        return (diff * m).sum(1) / m.sum(1).clamp_min(1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(threshold={self.threshold}, error={self.error!r})"


class RegressionTarget(RegressionError):
    """Targeted regression: drive the output towards a chosen target map (e.g. a disparity shifted by
    s pixels); loss = threshold - error (maximised), success = error < threshold. Same targets and
    masks as ``RegressionError``."""

    name = "regression_target"
    margin_like = True

    def loss(self, output, target):
        return self.threshold - self._error(output, target)

    def success(self, output, target):
        return self._error(output, target) < self.threshold


class SmoothL1Error(RegressionError):
    """Regression training loss: the per-sample mean smooth-L1 (Huber, beta 1) error over valid
    elements (the usual disparity training loss); success = that error above ``threshold``."""

    name = "smooth_l1"

    def _error(self, output, target):
        mask = self.mask
        if isinstance(target, (tuple, list)):
            target, mask = target[0], target[1]
        if not isinstance(target, torch.Tensor) or target.shape != output.shape:
            raise InputError(f"regression targets must be a tensor of the output's shape {tuple(output.shape)}")
        m = torch.ones_like(output) if mask is None else torch.broadcast_to(mask.to(output.dtype), output.shape)
        t = torch.where(m > 0, target, output.detach())  # masked targets may be inf or NaN
        err = F.smooth_l1_loss(output, t, reduction="none") * m
        return err.reshape(output.shape[0], -1).sum(1) / m.reshape(output.shape[0], -1).sum(1).clamp_min(1)


class GradientMatchingLoss(Objective):
    """Witches' Brew's alignment (Geiping et al. 2021) as a quantity to maximise: ``cos(g_t, g_p) - 1`` with
    ``g_t = grad_theta L(f(x_t), y_adv)`` (the target images towards the adversarial class, fixed) and
    ``g_p = grad_theta mean_i L(f(x_i), y_i)`` over the whole batch of poisons, each over *all* parameters
    ``params`` concatenated into one vector (one cosine). Minimising the paper's ``1 - cos`` is maximising this.

    The loss is one number for the batch, returned for every row (so the engine's best point is the batch's
    best iterate); it needs outputs whose graph reaches ``params`` (a gradient pass), and nothing succeeds
    (poisons are judged on a retrained victim, not here). Not in the registry: it needs a model."""

    name = "gradient_matching"
    task = "classification"

    def __init__(self, params, target_output: torch.Tensor, target_labels: torch.Tensor):
        self.params = [p for p in params if p.requires_grad]
        loss = F.cross_entropy(target_output, labels_of(target_output, target_labels))
        self.target_grad = torch.cat([g.detach().reshape(-1) for g in torch.autograd.grad(loss, self.params)])

    def loss(self, output, target):
        if not output.requires_grad:
            raise InputError("the gradient-matching loss needs outputs with a graph to the parameters "
                             "(judge its points in a gradient pass)")
        mean_ce = F.cross_entropy(output, labels_of(output, target))
        grads = torch.autograd.grad(mean_ce, self.params, create_graph=True)
        g = torch.cat([t.reshape(-1) for t in grads])
        cos = F.cosine_similarity(g, self.target_grad.to(g), dim=0)
        return (cos - 1).expand(output.shape[0])

    def success(self, output, target):
        return torch.zeros(output.shape[0], dtype=torch.bool, device=output.device)


OBJECTIVES = Registry("objective")
for _cls, _aliases in ((CrossEntropy, ()), (Margin, ("cw",)), (DLR, ()), (TargetedCE, ()), (TargetedMargin, ()),
                       (TargetedDLR, ()), (RegressionError, ()), (RegressionTarget, ()), (SmoothL1Error, ())):
    OBJECTIVES.register(_cls.name, _cls, aliases=_aliases, task=_cls.task, margin_like=_cls.margin_like,
                        doc=(_cls.__doc__ or "").strip().splitlines()[0])


def list_objectives(**where) -> list[str]:
    """Registered objective names, filtered by metadata: ``list_objectives(task="regression")``."""
    return OBJECTIVES.names(**where)


def create_objective(name: str, **kwargs) -> Objective:
    """Build a registered objective by name, e.g. ``create_objective("cw", confidence=0.5)``."""
    return OBJECTIVES.create(str(name), **kwargs)


def get_objective(name_or_obj, **kwargs) -> Objective:
    """An objective argument as an instance: an Objective passes through, a name is created
    (``create_objective``). Not a registry verb: what an ``objective=`` parameter accepts."""
    if isinstance(name_or_obj, Objective):
        return name_or_obj
    return create_objective(name_or_obj, **kwargs)


_labels = labels_of  # old private name, kept for modules not yet moved to the public one
