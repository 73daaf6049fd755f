"""The numbers of a poisoning attack and of a defence against it.

- clean accuracy: the model's accuracy on the clean test set;
- attack-success rate (ASR): the share of triggered test images classified as the attacker's label,
  over the test images whose true label is not the target (all-to-all: over all of them, the attacker's
  label being ``(y + 1) mod K``);
- original-label accuracy: the share of those same triggered images still classified as their true label;
- per-target success (targeted poisons such as gradient matching): whether each target image gets the
  adversarial label;
- defence-effectiveness rate (BackdoorBench, Wu et al. 2022):
  ``DER = [max(0, ΔASR) - max(0, ΔACC) + 1] / 2`` with ``ΔASR = ASR_before - ASR_after`` (the ASR the defence
  removes) and ``ΔACC = ACC_before - ACC_after`` (the clean accuracy it costs); 1 is a perfect defence,
  0.5 one that changes nothing, 0 one that costs all accuracy and removes nothing.

Every model metric runs in batches on the model's device, in eval mode (``runtime.eval_mode``: the
model's own modes are restored afterwards), without gradients.
"""
from __future__ import annotations

import torch

from ..errors import InputError
from ..runtime import device_of, eval_mode
from .base import Backdoor

__all__ = ["predict", "clean_accuracy", "backdoor_metrics", "target_success", "defence_effectiveness_rate"]


@torch.no_grad()
def predict(model, x: torch.Tensor, batch_size: int = 512, transform=None) -> torch.Tensor:
    """The model's predicted classes (int64[N], on the CPU) for `x` (optionally ``transform(batch)`` first,
    e.g. a trigger), batch by batch on the model's device."""
    device, out = device_of(model), []
    with eval_mode(model):
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].to(device)
            out.append(model(transform(xb) if transform is not None else xb).argmax(1).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def _checked(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    y = torch.as_tensor(y)
    if y.dim() != 1 or len(y) != len(x):
        raise InputError(f"need one label per input: x has {len(x)}, y has shape {tuple(y.shape)}")
    return y.long().cpu()


def clean_accuracy(model, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Share of `x` classified as `y`."""
    y = _checked(x, y)
    return float((predict(model, x, batch_size) == y).float().mean()) if len(y) else float("nan")


def backdoor_metrics(model, backdoor: Backdoor, x: torch.Tensor, y: torch.Tensor, num_classes: int | None = None,
                     batch_size: int = 512) -> dict:
    """Clean accuracy on (x, y), and on the triggered images of the points the ASR counts (true label not
    the target; all-to-all: all): ASR and original-label accuracy, with their counts (``n_clean``,
    ``clean_correct``, ``n_triggered``, ``successes``, ``original_correct``) for confidence intervals."""
    y = _checked(x, y)
    pred = predict(model, x, batch_size)
    counted = torch.ones_like(y, dtype=torch.bool) if backdoor.all_to_all else y != backdoor.target
    xt, yt = x[counted.to(x.device)], y[counted]
    wanted = backdoor.target_labels(yt, num_classes)
    pred_t = predict(model, xt, batch_size, transform=backdoor.apply_trigger)
    n, k = len(y), len(yt)
    out = {"n_clean": n, "clean_correct": int((pred == y).sum()), "n_triggered": k,
           "successes": int((pred_t == wanted).sum()), "original_correct": int((pred_t == yt).sum())}
    out["clean_accuracy"] = out["clean_correct"] / n if n else float("nan")
    out["asr"] = out["successes"] / k if k else float("nan")
    out["original_label_accuracy"] = out["original_correct"] / k if k else float("nan")
    return out


def target_success(model, x_targets: torch.Tensor, adversarial_labels: torch.Tensor, batch_size: int = 512) -> dict:
    """For a targeted poison: ``success`` (bool[T]) says whether each target image is classified as its
    adversarial label, and ``rate`` the share of them."""
    labels = _checked(x_targets, adversarial_labels)
    success = predict(model, x_targets, batch_size) == labels
    return {"success": success, "rate": float(success.float().mean()) if len(labels) else float("nan"),
            "successes": int(success.sum()), "n": len(labels)}


def defence_effectiveness_rate(acc_before: float, asr_before: float, acc_after: float, asr_after: float) -> float:
    """BackdoorBench's DER (Wu et al. 2022, eq. in section 4.1): ``[max(0, ASR_before - ASR_after) -
    max(0, ACC_before - ACC_after) + 1] / 2``, rates in [0, 1]."""
    values = (acc_before, asr_before, acc_after, asr_after)
    if any(not 0.0 <= float(v) <= 1.0 for v in values):
        raise InputError(f"the defence-effectiveness rate takes rates in [0, 1]; got {values}")
    return (max(0.0, asr_before - asr_after) - max(0.0, acc_before - acc_after) + 1.0) / 2.0
