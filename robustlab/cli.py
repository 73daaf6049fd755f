"""`robustlab <command>`: train, attack, evaluate, run a config, render reports."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("robustlab")


def _floats(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _model_kwargs(text: str | None) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"--model-kwargs must be JSON, e.g. '{{\"width\": 2}}': {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--model-kwargs must be a JSON object")
    return value


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model (standard, PGD-AT, FGSM-RS) into a run directory",
                       description="Train a model; writes runs/<name>/ with config, metrics, checkpoints.")
    p.add_argument("--model", default="fast_mnist", help="registered model name or package.module:callable")
    p.add_argument("--model-kwargs", type=_model_kwargs, default={}, help="JSON keyword arguments for the model")
    p.add_argument("--data", default="mnist", help="dataset name or path (.npz, image folder, IDX dir, CIFAR dir)")
    p.add_argument("--data-dir", default=None, help="directory with the full MNIST (IDX) or CIFAR-10 batches")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the train/val/test split")
    p.add_argument("--method", default="standard", help="standard | pgd | fgsm_rs")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--schedule", default="constant", choices=["constant", "cyclic", "step"])
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--norm", default="linf", choices=["linf", "l2", "l1"])
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--eps-warmup-epochs", type=float, default=0.0)
    p.add_argument("--attack-steps", type=int, default=10, help="PGD steps for PGD-AT")
    p.add_argument("--attack-step-size", type=float, default=None)
    p.add_argument("--fgsm-alpha", type=float, default=None, help="FGSM-RS step (default 1.25*eps)")
    p.add_argument("--eval-n", type=int, default=500, help="points for per-epoch clean/robust accuracy")
    p.add_argument("--co-action", default="warn", choices=["warn", "stop"], help="on catastrophic overfitting")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", default="runs", help="root folder of run directories")
    p.add_argument("--name", default=None, help="run name (default: <model>-<method>)")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")


def _add_model_source(p) -> None:
    p.add_argument("run", help="a model run directory (from `robustlab train` or models/<x> of a job)")
    p.add_argument("--weights", default="best", choices=["best", "last"])
    p.add_argument("--n", type=int, default=1000, help="number of test points")
    p.add_argument("--norm", default="linf", choices=["linf", "l2", "l1"])
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robustlab", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)

    p = sub.add_parser("attack", help="attack a trained model with one attack",
                       description="Run one attack on a model run's test points; prints and saves the result.")
    _add_model_source(p)
    p.add_argument("--attack", default="pgd", help="attack name (see `robustlab attack --list`)")
    p.add_argument("--eps", type=float, required=False, default=0.3)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--step-size", type=float, default=None)
    p.add_argument("--restarts", type=int, default=None)
    p.add_argument("--save", default=None, help="save x, x_adv, y, success to this .pt file")

    p = sub.add_parser("evaluate", help="robust accuracy of a model run over eps with an attack cascade",
                       description="Cascade evaluation (per-point worst case) over a list of eps; writes evaluation.json.")
    _add_model_source(p)
    p.add_argument("--eps", type=_floats, default=[0.0, 0.1, 0.2, 0.3], help="comma-separated eps values")
    p.add_argument("--attacks", default="standard", help="'standard', 'rand', 'fast' or comma-separated attack names")
    p.add_argument("--report", action="store_true", help="also render report.html in the run directory")

    p = sub.add_parser("run", help="run a YAML job (train + evaluate several models, write a report)",
                       description="Run a job config such as configs/quickstart.yaml.")
    p.add_argument("config", help="YAML job file")
    p.add_argument("--runs", default="runs", help="root folder of run directories")
    p.add_argument("--resume", action="store_true", help="continue a killed job")

    p = sub.add_parser("report", help="render runs side by side as a static HTML page",
                       description="Render one or several runs into one HTML page.")
    p.add_argument("runs", nargs="+", help="run directories (model runs or jobs)")
    p.add_argument("-o", "--out", default=None, help="output HTML (default: <first run>/report.html)")

    sub.add_parser("list", help="list registered models, datasets, attacks and training methods")
    return parser


def cmd_train(args) -> int:
    from .runs.job import train_model_run

    name = args.name or f"{args.model.replace(':', '_').replace('.', '_')}-{args.method}"
    run_dir = Path(args.runs) / name
    cfg = {
        "method": args.method, "epochs": args.epochs, "batch_size": args.batch_size, "optimizer": args.optimizer,
        "lr": args.lr, "schedule": args.schedule, "weight_decay": args.weight_decay, "norm": args.norm,
        "eps": args.eps, "eps_warmup_epochs": args.eps_warmup_epochs, "attack_steps": args.attack_steps,
        "attack_step_size": args.attack_step_size, "fgsm_alpha": args.fgsm_alpha, "eval_n": args.eval_n,
        "co_action": args.co_action, "seed": args.seed,
    }
    data = {"name": args.data, "seed": args.data_seed, "data_dir": args.data_dir}
    summary = train_model_run(run_dir, {"name": args.model, "kwargs": args.model_kwargs}, data, cfg,
                              resume=args.resume, progress=not args.no_progress)
    final = summary.get("final", {})
    print(f"{run_dir}: val acc {final.get('val_acc', float('nan')):.4f}, val PGD acc "
          f"{final.get('val_robust_acc', float('nan')):.4f} (best epoch {summary['best_epoch']}, "
          f"{summary['train_time_s']:.1f}s)")
    return 0


def cmd_attack(args) -> int:
    import torch

    from .attacks import create_attack
    from .data import load_dataset
    from .runs.job import _data_spec, load_model_from_run
    from .threat import ThreatModel

    model, config = load_model_from_run(args.run, args.weights)
    spec = _data_spec(config["data"])
    test = load_dataset(spec["name"], "test", seed=spec.get("seed", 0), data_dir=spec.get("data_dir")).subset(args.n)
    kwargs = {k: v for k, v in (("steps", args.steps), ("step_size", args.step_size), ("restarts", args.restarts)) if v is not None}
    attack = create_attack(args.attack, ThreatModel(args.norm, args.eps), seed=args.seed, **kwargs)
    with torch.no_grad():
        clean_ok = model(test.x).argmax(1) == test.y
    result = attack(model, test.x, test.y)
    robust = clean_ok & ~result.success
    out = {**result.summary(), "clean_accuracy": float(clean_ok.float().mean()),
           "robust_accuracy": float(robust.float().mean())}
    print(json.dumps(out, indent=2))
    if args.save:
        from .fileio import atomic_torch_save

        atomic_torch_save({"x": test.x, "x_adv": result.x_adv, "y": test.y, "success": result.success}, args.save)
    return 0


def cmd_evaluate(args) -> int:
    from .runs.job import evaluate_model_run

    attacks = args.attacks if args.attacks in ("standard", "rand", "fast") else [a for a in args.attacks.split(",") if a]
    out = evaluate_model_run(args.run, args.eps, args.norm, attacks, args.n, args.batch_size, args.seed, args.weights)
    print(f"{'eps':>8} {'clean':>8} {'robust':>8} {'95% CI':>17}  broken by")
    for r in out["reports"]:
        lo, hi = r["robust_accuracy_ci95"]
        print(f"{r['eps']:>8g} {r['clean_accuracy']:>8.2%} {r['robust_accuracy']:>8.2%} "
              f"[{lo:>6.2%}, {hi:>6.2%}]  {r['per_attack']}")
    if args.report:
        from .runs.report import render_report

        print(render_report([args.run], Path(args.run) / "report.html"))
    return 0


def cmd_run(args) -> int:
    from .runs.job import run_config

    job = run_config(args.config, args.runs, resume=args.resume, progress=not args.no_progress)
    print(f"report: {job / 'report.html'}")
    return 0


def cmd_report(args) -> int:
    from .runs.report import render_report

    out = Path(args.out) if args.out else Path(args.runs[0]) / "report.html"
    print(render_report(args.runs, out))
    return 0


def cmd_list(args) -> int:
    from .attacks import list_attacks
    from .data import list_datasets
    from .models import list_models
    from .training import METHODS

    print("models:   ", ", ".join(list_models()))
    print("datasets: ", ", ".join(list_datasets()))
    print("attacks:  ", ", ".join(list_attacks()))
    print("methods:  ", ", ".join(sorted(METHODS)))
    return 0


COMMANDS = {"train": cmd_train, "attack": cmd_attack, "evaluate": cmd_evaluate, "run": cmd_run,
            "report": cmd_report, "list": cmd_list}


def main(argv: list[str] | None = None) -> int:
    from .errors import RobustlabError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command](args)
    except RobustlabError as e:
        print(f"robustlab {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
