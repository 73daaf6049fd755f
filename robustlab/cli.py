"""`robustlab <command>`: train, attack, evaluate, run a config, render reports."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("robustlab")


from .argtypes import float_list as _floats  # noqa: E402
from .argtypes import json_object as _model_kwargs  # noqa: E402
from .argtypes import int_list, name_list  # noqa: E402
from .experiments.job import ModelRunSource  # noqa: E402
from .runs.schema import EvaluationSettings  # noqa: E402
from .settings import add_model_arguments, settings_from_args, values_from_args  # noqa: E402
from .training.config import TrainConfig  # noqa: E402

#: the settings models each command's flags are generated from, validated before the command runs
SETTINGS = {"evaluate": (ModelRunSource, EvaluationSettings)}

#: the training settings `robustlab sweep` takes (for every cell), and its defaults that differ from TrainConfig's
_SWEEP_TRAIN = ("method", "epochs", "lr", "optimizer", "eps", "attack_steps", "eval_n", "seed")
_SWEEP_DEFAULTS = {"epochs": 5, "optimizer": "sgd"}


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model (standard, PGD-AT, FGSM-RS) into a run directory",
                       description="Train a model; writes runs/<name>/ with config, metrics, checkpoints.")
    p.add_argument("--model", default="fast_mnist", help="registered model name or package.module:callable")
    p.add_argument("--model-kwargs", type=_model_kwargs, default={}, help="JSON keyword arguments for the model")
    p.add_argument("--data", default="mnist", help="dataset name or path (.npz, image folder, IDX dir, CIFAR dir)")
    p.add_argument("--data-dir", default=None, help="directory with the full MNIST (IDX) or CIFAR-10 batches")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the train/val/test split")
    add_model_arguments(p.add_argument_group("training settings (robustlab.training.TrainConfig)"), TrainConfig)
    p.add_argument("--dist-timeout", type=float, default=300.0, help="seconds before a collective gives up")
    p.add_argument("--runs", default="runs", help="root folder of run directories")
    p.add_argument("--name", default=None, help="run name (default: <model>-<method>)")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")


def _add_model_source(p) -> None:
    p.add_argument("run", help="a model run directory (from `robustlab train` or models/<x> of a job)")
    add_model_arguments(p, ModelRunSource)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robustlab", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)

    p = sub.add_parser("attack", help="attack a trained model with one attack",
                       description="Run one attack on a model run's test points; prints and saves the result.")
    _add_model_source(p)
    p.add_argument("--n", type=int, default=1000, help="number of test points")
    p.add_argument("--norm", default="linf", choices=["linf", "l2", "l1"])
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--attack", default="pgd", help="attack name (see `robustlab attack --list`)")
    p.add_argument("--eps", type=float, required=False, default=0.3)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--step-size", type=float, default=None)
    p.add_argument("--restarts", type=int, default=None)
    p.add_argument("--queries", type=int, default=None, help="query budget per point (black-box attacks)")
    p.add_argument("--black-box", action="store_true", help="give the attack only a score/decision oracle of the model")
    p.add_argument("--save", default=None, help="also save x, x_adv, y, success to this .pt file")
    p.add_argument("--runs", default="runs", help="root folder of run directories")
    p.add_argument("--name", default=None, help="run name (default: attack-<attack>-<model run>)")

    p = sub.add_parser("evaluate", help="robust accuracy of a model run over eps with an attack cascade",
                       description="Cascade evaluation (per-point worst case) over a list of eps; writes evaluation.json.")
    _add_model_source(p)
    add_model_arguments(p, EvaluationSettings)
    p.add_argument("--report", action="store_true", help="also render report.html in the run directory")
    p.add_argument("--resume", action="store_true", help="continue a killed evaluation from its stored cells")

    p = sub.add_parser("run", help="run a YAML job (train + evaluate several models, write a report)",
                       description="Run a job config such as configs/quickstart.yaml.")
    p.add_argument("config", help="YAML job file")
    p.add_argument("--runs", default="runs", help="root folder of run directories")
    p.add_argument("--resume", action="store_true", help="continue a killed job")
    p.add_argument("--trust-code", action="store_true",
                   help="allow the config to name model factories module:callable (imports and runs them)")

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
    p.add_argument("kind", choices=["batch-size", "eps"])
    p.add_argument("--batch-sizes", default="32,128,512", help="comma-separated global batch sizes")
    p.add_argument("--lr-rules", default="constant,linear", help="comma-separated: constant, linear, sqrt")
    p.add_argument("--model", default="fast_mnist")
    p.add_argument("--data", default="mnist")
    add_model_arguments(p.add_argument_group("training settings of every cell"), TrainConfig, include=_SWEEP_TRAIN,
                        defaults=_SWEEP_DEFAULTS)
    p.add_argument("--runs", default="runs")
    p.add_argument("--name", default=None, help="sweep folder name (default: sweep-<kind>)")
    p.add_argument("--resume", action="store_true")
    _add_eps_sweep_args(p)

    sub.add_parser("list", help="list registered tasks, models, datasets, attacks, objectives and training methods")
    _add_geometry(sub)
    _add_represent(sub)
    for task in _cli_tasks():
        task.add_cli(sub)
    return parser


def _cli_tasks():
    """The task plug-ins that declare CLI verbs (``robustlab <task> <verb>``)."""
    from .taskspec import TASKS, get_task

    out = []
    for name in TASKS.names():
        try:
            task = get_task(name)
        except ImportError as e:  # a task whose package is absent (optional plug-in)
            log.debug("task %s unavailable: %s", name, e)
            continue
        if task.add_cli is not None:
            out.append(task)
    return out


def cmd_train(args) -> int:
    from .experiments.job import train_model_run

    name = args.name or f"{args.model.replace(':', '_').replace('.', '_').replace('/', '_')}-{args.method}"
    run_dir = Path(args.runs) / name
    cfg = values_from_args(TrainConfig, args)
    data = {"name": args.data, "seed": args.data_seed, "data_dir": args.data_dir}
    from .distributed import init_from_env, shutdown

    rank = init_from_env(args.dist_timeout)
    try:
        summary = train_model_run(run_dir, {"name": args.model, "kwargs": args.model_kwargs}, data, cfg,
                                  resume=args.resume, progress=not args.no_progress, trust_code=True)
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
    from .experiments.attack import attack_model_run

    options = {"steps": args.steps, "step_size": args.step_size, "restarts": args.restarts, "max_queries": args.queries}
    out, run = attack_model_run(args.run, args.attack, args.norm, args.eps, n=args.n, runs=args.runs, name=args.name,
                                weights=args.weights, seed=args.seed, black_box=args.black_box, save=args.save,
                                trust_code=args.trust_code, options=options,
                                settings={k: v for k, v in vars(args).items() if k not in ("func",)})
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}, indent=2))
    print(f"wrote {run.path}")
    return 0


def cmd_evaluate(args) -> int:
    from .distributed import init_from_env, shutdown
    from .experiments.job import evaluate_model_run

    settings, source = args.settings[EvaluationSettings], args.settings[ModelRunSource]
    settings = settings.model_copy(update={"attacks": settings.attack_list()})
    rank = init_from_env()
    try:
        out = evaluate_model_run(args.run, settings, source.weights, trust_code=source.trust_code, resume=args.resume,
                                 progress=not args.no_progress)
    finally:
        shutdown()
    if rank != 0:
        return 0
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
    from .experiments.job import run_config

    job = run_config(args.config, args.runs, resume=args.resume, progress=not args.no_progress,
                     trust_code=args.trust_code)
    print(f"report: {job / 'report.html'}")
    return 0


def cmd_report(args) -> int:
    from .runs.report import render_report

    out = Path(args.out) if args.out else Path(args.runs[0]) / "report.html"
    print(render_report(args.runs, out))
    return 0


def cmd_list(args) -> int:
    from .attacks import ATTACKS
    from .data import list_datasets
    from .models import list_models
    from .objectives import OBJECTIVES
    from .taskspec import TASKS, get_task
    from .training import METHODS

    print("tasks:")
    for name in TASKS.names():
        try:
            t = get_task(name)
            print(f"  {name:<15} {t.description}")
            print(f"  {'':<15} objectives: {', '.join(t.objectives)}; datasets: {', '.join(t.datasets)}")
        except ImportError as e:
            print(f"  {name:<15} (unavailable: {e})")
    print("attacks:")
    for name, meta in ATTACKS.items():
        print(f"  {name:<15} {meta['access']:<10} norms {','.join(meta['norms']):<16} objective {meta['objective']}")
    print("models:    ", ", ".join(list_models()))
    print("datasets:  ", ", ".join(list_datasets()))
    print("objectives:", ", ".join(OBJECTIVES.names()))
    print("methods:   ", ", ".join(METHODS.names()))
    return 0


def cmd_sweep(args) -> int:
    if args.kind == "eps":
        return cmd_sweep_eps(args)
    from .experiments.job import sweep_batch_size

    args.name = args.name or "sweep-batch-size"

    cfg = values_from_args(TrainConfig, args, include=_SWEEP_TRAIN)
    root = sweep_batch_size(Path(args.runs) / args.name, {"name": args.model}, {"name": args.data, "seed": 0}, cfg,
                            int_list(args.batch_sizes), name_list(args.lr_rules),
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


# --- geometry (issue 11): `robustlab landscape RUN`, `robustlab compare-geometry RUN RUN ...` ---
def _add_geometry(sub) -> None:
    for verb, text in (("landscape", "loss-landscape geometry of a model run (Hessian, sharpness, surfaces, ...)"),
                       ("compare-geometry", "geometry of several runs side by side, Kendall tau vs generalisation gap")):
        p = sub.add_parser(verb, help=text, description=text + "; writes JSON and figures into the run(s).")
        p.add_argument("runs" if verb == "compare-geometry" else "run", nargs="+" if verb == "compare-geometry" else None,
                       help="model run directories")
        p.add_argument("--measures", default="all" if verb == "landscape" else "hessian,trace,sharpness,flatness",
                       help="comma-separated landscape measures, or 'all' (the groups of robustlab.geometry.MEASURES, "
                            "then flatness and the surfaces; an unknown name lists them all)")
        p.add_argument("--loss", default="clean", choices=["clean", "robust"])
        p.add_argument("--n", type=int, default=512, help="training (and test) points the measures use")
        p.add_argument("--eps", type=float, default=None,
                       help="attack radius (default: the run's training eps; compare-geometry: the largest among the runs)")
        p.add_argument("--attack-steps", type=int, default=10)
        p.add_argument("--grid", type=int, default=21, help="points per axis of the surfaces")
        p.add_argument("--weights", default="best", choices=["best", "last"])
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--trust-code", action="store_true",
                       help="allow runs whose model is a 'module:callable' (imports and runs that code)")
        if verb == "compare-geometry":
            p.add_argument("--out", default=None, help="folder for geometry_comparison.{json,md}")
            p.add_argument("--recompute", action="store_true", help="measure again even where geometry.json exists")


def _geometry_kwargs(args) -> dict:
    return {"n": args.n, "eps": args.eps, "attack_steps": args.attack_steps, "grid": args.grid, "which": args.weights,
            "seed": args.seed, "progress": not args.no_progress, "trust_code": args.trust_code}


def cmd_landscape(args) -> int:
    from .experiments.geometry import landscape

    res = landscape(args.run, args.measures, args.loss, **_geometry_kwargs(args))
    print(json.dumps({"scalars": res["scalars"], "acc_gap": res["gaps"]["acc_gap"],
                      "robust_acc_gap": res["gaps"]["robust_acc_gap"], "figures": res["figures"]}, indent=1))
    return 0


def cmd_compare_geometry(args) -> int:
    from .experiments.geometry import compare_geometry, comparison_markdown

    res = compare_geometry(args.runs, args.measures, args.loss, out=args.out, recompute=args.recompute,
                           **_geometry_kwargs(args))
    print(comparison_markdown(res))
    return 0
# --- end geometry ---


COMMANDS = {"sweep": cmd_sweep, "launch": cmd_launch, "train": cmd_train, "attack": cmd_attack, "evaluate": cmd_evaluate, "run": cmd_run,
            "report": cmd_report, "list": cmd_list, "landscape": cmd_landscape, "compare-geometry": cmd_compare_geometry}


def _exit_code_and_message(e: BaseException) -> tuple[int, str]:
    """Exit code (2: bad input, 1: a failure) and a message saying what went wrong and how to fix it."""
    from .errors import CheckpointError, InputError, RobustlabError, UnknownNameError

    if isinstance(e, (InputError, UnknownNameError, CheckpointError)):
        return 2, str(e)
    if isinstance(e, RobustlabError):
        return 1, str(e)
    if isinstance(e, PermissionError):
        return 2, f"permission denied: {e.filename or e}; choose a folder you can write (e.g. --runs ./runs) or fix its permissions"
    if isinstance(e, (NotADirectoryError, FileExistsError, IsADirectoryError)):
        return 2, f"{e.strerror or e}: {e.filename}; a path given (e.g. --runs) runs into a file where a folder is needed, or the reverse"
    if isinstance(e, FileNotFoundError):
        return 2, f"no such file or directory: {e.filename or e}; check the path"
    if isinstance(e, OSError):
        return 1, f"{e.strerror or e}{': ' + str(e.filename) if e.filename else ''}; check the disk and the paths"
    if isinstance(e, MemoryError):
        return 1, "out of memory; use a smaller --batch-size or --n"
    return 1, (f"unexpected {type(e).__name__}: {e}. This may be a bug in robustlab or in a user model/oracle; "
               "rerun with --debug for the traceback")


# ---- representations and the eps sweep (issue 12) -------------------------------------------------
def _add_eps_sweep_args(p) -> None:
    g = p.add_argument_group("eps sweep (`robustlab sweep eps`)")
    g.add_argument("--train-eps", type=_floats, default=[0.0, 0.05, 0.1, 0.2, 0.3],
                   help="PGD-AT training eps values (0 = standard training)")
    g.add_argument("--trades-betas", type=lambda text: _floats(text, allow_empty=True), default=[1.0, 6.0],
                   help="TRADES betas (at --trades-eps); an empty string trains no TRADES cells")
    g.add_argument("--trades-eps", type=float, default=None, help="TRADES training eps (default: the largest --train-eps)")
    g.add_argument("--eval-eps", type=float, default=None, help="robust accuracy eps (default: the largest training eps)")
    g.add_argument("--attacks", default="fast", help="evaluation suite: fast, standard or attack names")
    add_model_arguments(g, TrainConfig, include=("norm",))


def cmd_sweep_eps(args) -> int:
    from .experiments.sweeps import sweep_eps

    cfg = values_from_args(TrainConfig, args, include=[k for k in _SWEEP_TRAIN if k not in ("method", "eps")] + ["norm"])
    root = sweep_eps(Path(args.runs) / (args.name or "sweep-eps"), {"name": args.model}, {"name": args.data, "seed": 0},
                     cfg, args.train_eps, args.trades_betas, args.trades_eps, args.eval_eps, args.attacks,
                     eval_n=args.eval_n, resume=args.resume, progress=not args.no_progress)
    rows = json.loads((root / "sweep.json").read_text())["rows"]
    print(f"{'cell':>16} {'clean':>7} {'robust':>7} {'95% CI':>17} pareto")
    for r in rows:
        lo, hi = r["robust_acc_ci95"]
        print(f"{r['name']:>16} {r['clean_acc']:>7.3f} {r['robust_acc']:>7.3f} [{lo:>6.3f}, {hi:>6.3f}] {'*' if r['pareto'] else ''}")
    print(f"figure: {root / 'figures' / 'pareto.png'}")
    return 0


_ANALYSES = ("saliency", "alignment", "interpolation", "inversion", "cka", "probe", "manifold")  # experiments.represent.ANALYSES


def _add_represent(sub) -> None:
    p = sub.add_parser("represent", help="representation analyses of a model run (saliency, CKA, inversion, ...)",
                       description="Writes representations.json, figures/repr-*.png and representations.html into RUN.")
    p.add_argument("run", help="a model run directory")
    p.add_argument("--analyses", default=",".join(_ANALYSES[:6]), help=f"comma-separated, from: {', '.join(_ANALYSES)}")
    p.add_argument("--compare", nargs="*", default=[], help="other model runs for CKA (e.g. standard vs robust)")
    p.add_argument("--n", type=int, default=500, help="test points for alignment and CKA")
    p.add_argument("--weights", default="best", choices=["best", "last"])
    p.add_argument("--inversion-steps", type=int, default=300)
    p.add_argument("--eta", type=float, default=0.5, help="latent Linf radius of the on-manifold attack")
    p.add_argument("--unconditional-vae", action="store_true",
                   help="manifold: use the unconditional VAE (default: the class-conditional one, Stutz et al.)")
    p.add_argument("--no-finetune", action="store_true", help="probe: only the linear probe, no fine-tuning")
    p.add_argument("--finetune-epochs", type=int, default=3, help="probe: epochs of fine-tuning (Adam)")
    p.add_argument("--finetune-lr", type=float, default=1e-4, help="probe: learning rate of fine-tuning")
    p.add_argument("--trust-code", action="store_true",
                   help="allow run configs (this run and --compare runs) that name a module:callable model")


def cmd_represent(args) -> int:
    from .experiments.represent import represent_run

    analyses = name_list(args.analyses, allow_empty=True)
    out = represent_run(args.run, analyses, args.n, args.compare, args.weights,
                        {"inversion_steps": args.inversion_steps, "eta": args.eta,
                         "conditional_vae": not args.unconditional_vae, "finetune": not args.no_finetune,
                         "finetune_epochs": args.finetune_epochs, "finetune_lr": args.finetune_lr},
                        trust_code=args.trust_code)
    res = out["analyses"]
    for m, v in res.get("alignment", {}).items():
        if isinstance(v, dict) and "alignment" in v:
            a, e = v["alignment"], v["edge_correlation"]
            print(f"alignment ({m}): {a['mean']:.3f} [{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}]  "
                  f"edge corr: {e['mean']:.3f} [{e['ci95'][0]:.3f}, {e['ci95'][1]:.3f}]")
    if "inversion" in res:
        inv = res["inversion"]
        print(f"inversion: distance from noise {inv['from_noise']['distance_mean']:.3f}, from an image "
              f"{inv['from_image']['distance_mean']:.3f}; synthesis success {inv['synthesis']['success_rate']:.2f}")
    if "probe" in res:
        ft = res["probe"].get("finetune_accuracy")
        print(f"linear probe ({res['probe']['task']}): {res['probe']['accuracy']:.3f}"
              + (f", fine-tuned: {ft:.3f}" if ft is not None else ""))
    if "manifold" in res:
        m = res["manifold"]
        print(f"on-manifold robust acc {m['on_manifold_robust_acc']:.3f} (eta {m['eta']:g}, "
              f"{'class-conditional' if m['conditional_vae'] else 'unconditional'} VAE), "
              f"off-manifold {m['off_manifold_robust_acc']:.3f} ({m['norm']} {m['eps']:g})")
    if "cka" in res and "vs_runs" in res["cka"]:
        print("CKA (penultimate) vs " + ", ".join(f"{k}: {v:.3f}" for k, v in res["cka"]["vs_runs"].items()))
    print(f"wrote {Path(args.run) / 'representations.json'} and {Path(args.run) / 'representations.html'}")
    return 0


COMMANDS["represent"] = cmd_represent
# ---- end of representations block ------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    import signal

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--"]:  # from `robustlab launch`: torchrun passes its separator on
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # SIGTERM (e.g. a job scheduler's kill) unwinds like Ctrl-C: temporaries are removed, locks released
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    from .cpu import tune_allocator

    tune_allocator()  # keep freed buffers: passes stop page-faulting them in anew (robustlab.cpu)
    try:
        from .runs.schema import check_cli_args

        args.settings = settings_from_args(SETTINGS.get(args.command, ()), args, f"`robustlab {args.command}` arguments")
        for settings in args.settings.values():
            if hasattr(settings, "warn_pointless_eps"):
                settings.warn_pointless_eps("--eps")
        check_cli_args(args.command, vars(args))
        if args.command not in COMMANDS:
            from .taskspec import get_task

            return get_task(args.command).run_cli(args)
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print(f"robustlab {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if getattr(args, "debug", False):
            raise
        code, message = _exit_code_and_message(e)
        print(f"robustlab {args.command}: error: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
