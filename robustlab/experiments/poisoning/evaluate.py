"""`robustlab poison evaluate MODEL_RUN --poison POISON_RUN`: a model against a backdoor.

On the clean test split of the data the poison was crafted from: clean accuracy, the attack-success rate
(triggered test images whose true label is not the target) and the accuracy on the original labels of
those triggered images, each with a 95% Wilson interval. Writes ``poison_evaluation.json``,
``figures/poison-triggered.png`` and ``poison_report.html`` into the model run."""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import Field

from ...errors import InputError
from ...runs.schema import DeviceSettings
from ...settings import StrictSettings, add_model_arguments, settings_from_args

__all__ = ["PoisonEvaluateSettings", "evaluate_poison", "add_parser", "main"]


class PoisonEvaluateSettings(StrictSettings):
    """What `robustlab poison evaluate` measures."""

    poison: Optional[str] = Field(None, description="the poisoned-data run (from `robustlab poison craft`)")
    n: Optional[int] = Field(None, ge=1, description="test points (default: the whole test split)")
    batch_size: int = Field(256, ge=1, description="batch size of the forward passes")
    weights: Literal["best", "last"] = Field("best", description="the model run's best or last weights")
    trust_code: bool = Field(False, description="allow a model run config naming a factory module:callable")


def _with_cis(m: dict) -> dict:
    from ...evaluation.suite import wilson_interval

    return {**m, "clean_accuracy_ci95": list(wilson_interval(m["clean_correct"], m["n_clean"])),
            "asr_ci95": list(wilson_interval(m["successes"], m["n_triggered"])),
            "original_label_accuracy_ci95": list(wilson_interval(m["original_correct"], m["n_triggered"]))}


def poison_scores(model, attack, test, batch_size: int = 256) -> dict:
    """``backdoor_metrics`` with Wilson 95% intervals (an InputError for a poison without a trigger)."""
    from ...poisoning import Backdoor, backdoor_metrics

    if not isinstance(attack, Backdoor):
        raise InputError(f"{getattr(attack, 'name', attack)} has no trigger: its ASR is not defined (evaluate a "
                         "label-flip or perturbation poison with `robustlab evaluate` on the trained model)")
    return _with_cis(backdoor_metrics(model, attack, test.x, test.y, test.num_classes, batch_size))


def _example_figure(model, attack, test, path: Path, k: int = 6) -> Path:
    from ...poisoning import predict
    from .figures import triggered_examples

    counted = (test.y != attack.target) if not attack.all_to_all else test.y >= 0
    x = test.x[counted][:k]
    xt = attack.apply_trigger(x)
    pred = predict(model, xt)
    return triggered_examples([(attack.name, x, xt, [f"pred {int(p)}" for p in pred])], path)


def evaluate_poison(model_run: str | Path, poison_run: str | Path, s: PoisonEvaluateSettings, device="auto") -> dict:
    """Measure the model run against the poisoned-data run's backdoor; writes the record and the page."""
    from ...fileio import atomic_write_json
    from ...runs.report import write_page
    from ...runs.rundir import Run, split_run_dir
    from ..job import load_model_from_run
    from .runs import attack_from_run, source_split

    attack = attack_from_run(poison_run)
    model, _ = load_model_from_run(model_run, s.weights, trust_code=s.trust_code, device=device)
    test = source_split(poison_run, "test").subset(s.n)
    out = {"poison_run": str(poison_run), "attack": attack.settings(), "weights": s.weights,
           **poison_scores(model, attack, test, s.batch_size)}
    with Run.writing(*split_run_dir(model_run), "model", create=False) as run:
        atomic_write_json(run.path / "poison_evaluation.json", out)
        fig = _example_figure(model, attack, test, run.figures / "poison-triggered.png")
        rows = [[name, f"{out[key]:.4f}", f"[{out[key + '_ci95'][0]:.4f}, {out[key + '_ci95'][1]:.4f}]", str(n)]
                for name, key, n in (("clean accuracy", "clean_accuracy", out["n_clean"]),
                                     ("attack-success rate", "asr", out["n_triggered"]),
                                     ("original-label accuracy", "original_label_accuracy", out["n_triggered"]))]
        write_page(run.path / "poison_report.html", f"{run.name} against {Path(poison_run).name}",
                   [("Backdoor", f"{attack.name}: triggered test images whose true label is not the target")],
                   [("Metrics (95% Wilson intervals)", ["metric", "value", "95% CI", "n"], rows)],
                   [str(fig.relative_to(run.path))], {"attack": out["attack"], "poison_run": str(poison_run)})
    return out


def add_parser(subparsers):
    p = subparsers.add_parser("evaluate", help="clean accuracy and attack-success rate of a model run against a backdoor",
                              description="Writes poison_evaluation.json and poison_report.html into MODEL_RUN.")
    p.add_argument("run", help="a model run (e.g. trained with `robustlab train --data <poisoned run>`)")
    add_model_arguments(p, PoisonEvaluateSettings)
    add_model_arguments(p, DeviceSettings)
    return p


def main(args) -> int:
    from ...runtime import resolve_device

    settings = settings_from_args((PoisonEvaluateSettings, DeviceSettings), args, "`robustlab poison evaluate` arguments")
    s = settings[PoisonEvaluateSettings]
    if s.poison is None:
        raise InputError("give the poisoned-data run with --poison RUN (from `robustlab poison craft`)")
    out = evaluate_poison(args.run, s.poison, s, resolve_device(settings[DeviceSettings].device))
    for name, key in (("clean accuracy", "clean_accuracy"), ("ASR", "asr"), ("original-label acc", "original_label_accuracy")):
        lo, hi = out[key + "_ci95"]
        print(f"{name:>20}: {out[key]:.4f} [{lo:.4f}, {hi:.4f}]")
    print(f"wrote {Path(args.run) / 'poison_evaluation.json'} and {Path(args.run) / 'poison_report.html'}")
    return 0
