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
    p.add_argument("--method", default="standard", help="standard | pgd | fgsm_rs | trades | llr")
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
    p.add_argument("--grad-align", type=float, default=0.0, help="GradAlign weight for fgsm_rs")
    p.add_argument("--trades-beta", type=float, default=1.0)
    p.add_argument("--llr-lambda", type=float, default=4.0)
    p.add_argument("--llr-mu", type=float, default=3.0)
    p.add_argument("--llr-steps", type=int, default=10)
    p.add_argument("--lr-scaling", default="none", choices=["none", "linear"], help="scale lr by the world size")
    p.add_argument("--warmup-epochs", type=float, default=0.0, help="linear LR warm-up")
    p.add_argument("--local-sgd-period", type=int, default=0, help="post-local SGD model averaging period")
    p.add_argument("--snapshot-every", type=int, default=0, help="save parameters every k epochs")
    p.add_argument("--dist-timeout", type=float, default=300.0, help="seconds before a collective gives up")
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
    p.add_argument("--queries", type=int, default=None, help="query budget per point (black-box attacks)")
    p.add_argument("--black-box", action="store_true", help="give the attack only a score/decision oracle of the model")
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

    p = sub.add_parser("launch", help="run a command on N processes with torchrun (DDP)",
                       description="A thin wrapper around torchrun: robustlab launch --nproc 2 -- train ...")
    p.add_argument("--nproc", type=int, default=2, help="processes on this node")
    p.add_argument("--nnodes", default="1", help="number of nodes (torchrun --nnodes)")
    p.add_argument("--rdzv-endpoint", default=None, help="host:port of the rendezvous (multi-node)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per process")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="-- then the robustlab command to run")

    p = sub.add_parser("sweep", help="parameter sweeps: `robustlab sweep batch-size ...`",
                       description="The large-batch generalisation experiment: several global batch sizes x LR rules.")
    p.add_argument("kind", choices=["batch-size"])
    p.add_argument("--batch-sizes", default="32,128,512", help="comma-separated global batch sizes")
    p.add_argument("--lr-rules", default="constant,linear", help="comma-separated: constant, linear, sqrt")
    p.add_argument("--model", default="fast_mnist")
    p.add_argument("--data", default="mnist")
    p.add_argument("--method", default="standard")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--optimizer", default="sgd", choices=["adam", "sgd"])
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--attack-steps", type=int, default=10)
    p.add_argument("--eval-n", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", default="runs")
    p.add_argument("--name", default="sweep-batch-size")
    p.add_argument("--resume", action="store_true")

    sub.add_parser("list", help="list registered models, datasets, attacks and training methods")
    from .tasks.stereo import cli as stereo_cli

    stereo_cli.add_parser(sub)
    from .taskspec import get_task
    get_task("ocr").add_cli(sub)
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
        "co_action": args.co_action, "seed": args.seed, "grad_align": args.grad_align,
        "trades_beta": args.trades_beta, "llr_lambda": args.llr_lambda, "llr_mu": args.llr_mu,
        "llr_steps": args.llr_steps, "lr_scaling": args.lr_scaling, "warmup_epochs": args.warmup_epochs,
        "local_sgd_period": args.local_sgd_period, "snapshot_every": args.snapshot_every,
    }
    data = {"name": args.data, "seed": args.data_seed, "data_dir": args.data_dir}
    from .distributed import init_from_env, shutdown

    rank = init_from_env(args.dist_timeout)
    try:
        summary = train_model_run(run_dir, {"name": args.model, "kwargs": args.model_kwargs}, data, cfg,
                                  resume=args.resume, progress=not args.no_progress)
    finally:
        shutdown()
    if rank != 0:
        return 0
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
    import inspect

    from .attacks import ATTACKS
    from .errors import InputError, unknown_name
    from .oracles import DecisionOracle, ScoreOracle

    key = args.attack.lower().replace("_", "-")
    if key not in ATTACKS:
        raise unknown_name("attack", args.attack, ATTACKS)
    accepted = inspect.signature(ATTACKS[key].__init__).parameters
    wanted = {"steps": args.steps, "step_size": args.step_size, "restarts": args.restarts}
    if args.queries is not None:
        wanted["n_queries" if "n_queries" in accepted else "max_queries"] = args.queries
    kwargs = {k: v for k, v in wanted.items() if v is not None}
    bad = [k for k in kwargs if k not in accepted]
    if bad:
        raise InputError(f"attack {key!r} has no option {', '.join(bad)}; its options: "
                         f"{', '.join(p for p in accepted if p not in ('self', 'threat', 'objective'))}")
    attack = create_attack(key, ThreatModel(args.norm, args.eps), seed=args.seed, **kwargs)
    with torch.no_grad():
        clean_ok = model(test.x).argmax(1) == test.y
    target = model
    if args.black_box:
        if attack.needs_gradients:
            raise InputError(f"{key} is a white-box attack; --black-box needs a score- or decision-based attack")
        oracle_cls = DecisionOracle if attack.oracle_kind == "decision" else ScoreOracle
        target = oracle_cls.from_model(model)
    result = attack(target, test.x, test.y)
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


def cmd_sweep(args) -> int:
    from .runs.job import sweep_batch_size

    cfg = {"method": args.method, "epochs": args.epochs, "lr": args.lr, "optimizer": args.optimizer, "eps": args.eps,
           "attack_steps": args.attack_steps, "eval_n": args.eval_n, "seed": args.seed}
    root = sweep_batch_size(Path(args.runs) / args.name, {"name": args.model}, {"name": args.data, "seed": 0}, cfg,
                            [int(b) for b in args.batch_sizes.split(",")], args.lr_rules.split(","),
                            resume=args.resume, progress=not args.no_progress)
    rows = json.loads((root / "sweep.json").read_text())["rows"]
    print(f"{'batch':>6} {'rule':>8} {'lr':>9} {'val acc':>8} {'gap':>7} {'val rob':>8} {'rob gap':>8}")
    for r in rows:
        print(f"{r['batch_size']:>6} {r['lr_rule']:>8} {r['lr']:>9.4g} {r['val_acc']:>8.3f} {r['generalization_gap']:>7.3f} "
              f"{r['val_robust_acc']:>8.3f} {r['robust_generalization_gap']:>8.3f}")
    return 0


def cmd_launch(args) -> int:
    from .distributed import launch

    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    if not rest:
        raise SystemExit("robustlab launch: give the command after --, e.g. robustlab launch --nproc 2 -- train ...")
    return launch(rest, args.nproc, args.nnodes, args.rdzv_endpoint, args.threads,
                  extra=["--no-progress"] if args.no_progress else [])


def cmd_stereo(args) -> int:
    from .tasks.stereo import cli as stereo_cli

    return stereo_cli.run(args)


COMMANDS = {"ocr": lambda args: __import__("robustlab.taskspec").taskspec.get_task("ocr").run_cli(args), "stereo": cmd_stereo, "sweep": cmd_sweep, "launch": cmd_launch, "train": cmd_train, "attack": cmd_attack, "evaluate": cmd_evaluate, "run": cmd_run,
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
