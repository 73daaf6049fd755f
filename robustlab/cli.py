"""`robustlab <command>`: train, attack, evaluate, run a config, render reports.

Every command's flags are generated from the settings models in ``SETTINGS`` (declared with the code
that uses them), and the parsed flags are validated with those models before the command runs."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("robustlab")


from .experiments.attack import AttackSettings  # noqa: E402
from .experiments.geometry import CompareGeometrySettings, GeometrySettings  # noqa: E402
from .experiments.job import (BatchSizeSweepSettings, ModelDataSettings, ModelRunSource, RunTarget,  # noqa: E402
                              TrainSourceSettings, ZooEvaluationSource)
from .models.zoo import ZooSettings  # noqa: E402
from .experiments.represent import RepresentSettings  # noqa: E402
from .experiments.sweeps import EpsSweepSettings  # noqa: E402
from .experiments.poisoning.cli import add_cli as add_poison_cli, run_cli as run_poison_cli  # noqa: E402
from .runs.schema import DeviceSettings, EvaluationSettings, ExecutorSettings, LaunchSettings  # noqa: E402
from .settings import (add_model_arguments, cli_problems, help_with_default, raise_problems,  # noqa: E402
                       settings_from_args, values_from_args)
from .progress import TENSORBOARD_DIR, TensorBoardSettings, write_evaluation_scalars  # noqa: E402
from .runs.summary_table import evaluation_rows, results_table, training_table  # noqa: E402
from .training.config import TrainConfig  # noqa: E402

#: the training settings `robustlab sweep` takes (for every cell), and its defaults that differ from TrainConfig's
_SWEEP_TRAIN = ("method", "epochs", "lr", "optimizer", "eps", "attack_steps", "eval_n", "seed")
_SWEEP_DEFAULTS = {"epochs": 5, "optimizer": "sgd"}

#: the settings models each command's flags are generated from and validated with before it runs
#: (``(model, fields)``: only those fields of it)
SETTINGS = {
    "train": (TrainSourceSettings, TrainConfig, RunTarget, DeviceSettings),
    "attack": (AttackSettings, RunTarget, DeviceSettings),
    "evaluate": ((ModelRunSource, ("trust_code",)), ZooEvaluationSource, ZooSettings, EvaluationSettings, RunTarget,
                 DeviceSettings, TensorBoardSettings),
    "sweep": (ModelDataSettings, (TrainConfig, _SWEEP_TRAIN + ("norm",)), BatchSizeSweepSettings, EpsSweepSettings,
              RunTarget, ExecutorSettings, DeviceSettings),
    "launch": (LaunchSettings, DeviceSettings),
    "landscape": (GeometrySettings, DeviceSettings),
    "compare-geometry": (CompareGeometrySettings, DeviceSettings),
    "represent": (RepresentSettings, DeviceSettings),
}

#: the names each command's flags give, checked against the registries before any work starts
#: (``experiments.names``): ``(flag, kind of name, more flags the check takes)``; the settings models
#: check the training methods and the --attacks of evaluate themselves
NAMES = {
    "train": (("model", "model"), ("data", "data", "data_dir")),
    "attack": (("run", "run"), ("attack", "attack")),
    "evaluate": (("run", "run"), ("model", "model"), ("data", "data", "data_dir")),
    "sweep": (("model", "model"), ("data", "data"), ("attacks", "attacks")),
    "landscape": (("run", "run"), ("measures", "measures")),
    "compare-geometry": (("runs", "run"), ("measures", "measures")),
    "represent": (("run", "run"), ("compare", "run"), ("analyses", "analyses")),
}


def _check_names(args) -> None:
    """One InputError (exit 2) for every unknown name the command's flags give, before any work starts."""
    from .experiments.names import check_names

    given = vars(args)
    check_names([(dest.upper() if dest in ("run", "runs") else f"--{dest.replace('_', '-')}", kind, given.get(dest),
                  *(given.get(d) for d in more))
                 for dest, kind, *more in NAMES.get(args.command, ())], f"`robustlab {args.command}` arguments")


def _add_train(sub) -> None:
    from .training import METHODS

    methods = ", ".join(METHODS.names())
    p = sub.add_parser("train", help=f"train a model ({methods}) into a run directory",
                       description=f"Train a model with one of the training methods ({methods}); writes "
                                   "runs/<name>/ with config, metrics, checkpoints.")
    add_model_arguments(p, TrainSourceSettings)
    add_model_arguments(p.add_argument_group("training settings"), TrainConfig)
    add_model_arguments(p, RunTarget)
    add_model_arguments(p, DeviceSettings)
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")


def _add_run_verb(sub, verb: str, text: str, description: str, *models):
    """A verb on one model run (``robustlab <verb> RUN``) with the flags of `models`."""
    p = sub.add_parser(verb, help=text, description=description)
    p.add_argument("run", help="a model run directory (from `robustlab train` or models/<x> of a job)")
    for model in (*models, DeviceSettings):
        add_model_arguments(p, model)
    return p


def _add_attack(sub) -> None:
    p = _add_run_verb(sub, "attack", "attack a trained model with one attack",
                      "Run one attack on a model run's test points; prints and saves the result.", AttackSettings)
    p.add_argument("--save", default=None, help="also save x, x_adv, y, success to this .pt file")
    add_model_arguments(p, RunTarget)


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="robust accuracy of a model run (or a zoo --model) over eps with an attack cascade",
                       description="Cascade evaluation (per-point worst case) over a list of eps; writes "
                                   "RUN/evaluations/<settings>/evaluation.json, beside the run's other evaluations (the same settings again "
                                   "reuse or continue it; --overwrite replaces it). "
                                   "With --model robustbench:<name>|timm:<name>|torchvision:<name> --data DATA instead "
                                   "of RUN, the zoo model is evaluated into a new run (--runs/--name).")
    p.add_argument("run", nargs="?", default=None,
                   help="a model run directory (from `robustlab train` or models/<x> of a job); omit it with --model")
    add_model_arguments(p, ModelRunSource, include=("trust_code",))
    for model in (ZooEvaluationSource, ZooSettings, EvaluationSettings, RunTarget, DeviceSettings, TensorBoardSettings):
        add_model_arguments(p, model)
    p.add_argument("--report", action="store_true", help="also render report.html in the run directory")
    p.add_argument("--resume", action="store_true", help="kept for old scripts: the same settings always continue a "
                   "killed evaluation from the results it stored")


def _add_run_and_report(sub) -> None:
    p = sub.add_parser("run", help="run a YAML job (train + evaluate several models, write a report)",
                       description="Run a job config such as configs/quickstart.yaml.")
    p.add_argument("config", help="YAML job file")
    p.add_argument("--runs", default="runs", help="root folder of run directories")
    p.add_argument("--resume", action="store_true", help="continue a killed job")
    p.add_argument("--trust-code", action="store_true",
                   help="allow the config to name model factories module:callable (imports and runs them)")
    # unset flags stay None, so the job config's executor: key holds unless a flag is given
    g = p.add_argument_group("executor and device (a flag given overrides the job config's executor: and device: keys)")
    add_model_arguments(g, ExecutorSettings, defaults=dict.fromkeys(ExecutorSettings.model_fields))
    add_model_arguments(g, DeviceSettings, defaults={"device": None})  # None: the config's device: (else auto)
    p = sub.add_parser("report", help="render runs side by side as a static HTML page",
                       description="Render one or several runs into one HTML page.")
    p.add_argument("runs", nargs="+", help="run directories (model runs or jobs)")
    p.add_argument("-o", "--out", default=None, help="output HTML page: PAGE.html is written with its figures in "
                   "PAGE_files/ beside it (default: <first run>/report.html, figures in that run's figures/)")


def _add_launch(sub) -> None:
    p = sub.add_parser("launch", help="run a command on N processes with torchrun (DDP)",
                       description="A thin wrapper around torchrun: robustlab launch --nproc 2 -- train ...")
    add_model_arguments(p, LaunchSettings)
    add_model_arguments(p, DeviceSettings)
    p.add_argument("rest", nargs=argparse.REMAINDER, help="-- then the robustlab command to run")


def _add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="parameter sweeps: `robustlab sweep batch-size|eps ...`",
                       description="Parameter sweeps: batch-size trains at several global batch sizes x LR rules (the "
                                   "large-batch generalisation experiment); eps trains at several eps (and TRADES "
                                   "betas) and evaluates each model (the clean/robust trade-off).")
    p.add_argument("kind", choices=["batch-size", "eps"], help="batch-size: global batch sizes x LR rules; eps: "
                   "training eps (and TRADES beta) x evaluation eps, with the clean/robust Pareto front")
    add_model_arguments(p, BatchSizeSweepSettings)
    add_model_arguments(p, ModelDataSettings)
    add_model_arguments(p.add_argument_group("training settings of every model of the sweep"), TrainConfig, include=_SWEEP_TRAIN,
                        defaults=_SWEEP_DEFAULTS)
    add_model_arguments(p, RunTarget)
    add_model_arguments(p, DeviceSettings)
    p.add_argument("--resume", action="store_true", help="continue a killed sweep (finished models are kept)")
    add_model_arguments(p, ExecutorSettings)
    g = p.add_argument_group("eps sweep (`robustlab sweep eps`)")
    add_model_arguments(g, EpsSweepSettings)
    add_model_arguments(g, TrainConfig, include=("norm",))


def _add_geometry(sub) -> None:
    for verb, model, text in (
            ("landscape", GeometrySettings, "loss-landscape geometry of a model run (Hessian, sharpness, surfaces, ...)"),
            ("compare-geometry", CompareGeometrySettings,
             "geometry of several runs side by side, Kendall tau vs generalisation gap")):
        p = sub.add_parser(verb, help=text, description=text + "; writes JSON and figures into the run(s).")
        several = verb == "compare-geometry"
        p.add_argument("runs" if several else "run", nargs="+" if several else None,
                       help="model run directories" if several else "a model run directory (from `robustlab train` "
                       "or models/<x> of a job)")
        add_model_arguments(p, model)
        add_model_arguments(p, DeviceSettings)


def _add_represent(sub) -> None:
    _add_run_verb(sub, "represent", "representation analyses of a model run (saliency, CKA, inversion, ...)",
                  "Writes representations.json, figures/repr-*.png and representations.html into RUN.", RepresentSettings)


class OneLineParser(argparse.ArgumentParser):
    """argparse's parser, but a usage error is one line (what is wrong and where to look), exit code 2,
    instead of the usage text followed by the error. Subcommand parsers inherit it."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="robustlab", description=__doc__.split("\n\n")[0] + " `robustlab list` shows the "
                           "names of models, datasets, attacks and methods; `robustlab <command> --help` a command's flags.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_train, _add_attack, _add_evaluate, _add_run_and_report, _add_launch, _add_sweep):
        add(sub)
    p = sub.add_parser("list", help="list the registered tasks, attacks, models, datasets, objectives, training "
                                    "methods, ...: `robustlab list attacks`", description="List what is registered: "
                                    "the names other commands' flags take.")
    p.add_argument("kind", nargs="?", choices=list(LISTS), help="list only this kind (default: all but the measures)")
    _add_geometry(sub)
    _add_represent(sub)
    add_poison_cli(sub)
    for task in _cli_tasks():
        task.add_cli(sub)
    _show_defaults(parser)
    return parser


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Every flag's help, in every command (the tasks' too), ends with its default; the flags made from
    settings models have it already (``settings.add_model_arguments``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                _show_defaults(command)
        elif action.option_strings and action.help is not argparse.SUPPRESS:
            action.help = help_with_default(action.help, action.default)


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


def _validated_settings(args) -> dict:
    """The command's settings models built from its flags (one InputError listing every problem)."""
    settings = settings_from_args(SETTINGS.get(args.command, ()), args, f"`robustlab {args.command}` arguments")
    for s in settings.values():
        if hasattr(s, "warn_pointless_eps"):  # legal, but every input is reachable
            s.warn_pointless_eps("--eps")
    return settings


def _device(args):
    """The command's ``--device`` as this process's ``torch.device`` (``cuda:LOCAL_RANK`` under torchrun)."""
    from .runtime import resolve_device

    return resolve_device(args.settings[DeviceSettings].device)


def cmd_train(args) -> int:
    from .distributed import init_from_env, shutdown
    from .experiments.job import train_model_run

    src, target, device = args.settings[TrainSourceSettings], args.settings[RunTarget], _device(args)
    run_dir = Path(target.runs) / (target.name or f"{src.model.replace(':', '_').replace('.', '_').replace('/', '_')}-{args.method}")
    data = {"name": src.data, "seed": src.data_seed, "data_dir": src.data_dir}
    rank = init_from_env(src.dist_timeout, device)
    try:
        summary = train_model_run(run_dir, {"name": src.model, "kwargs": src.model_kwargs}, data,
                                  values_from_args(TrainConfig, args), resume=args.resume,
                                  progress=not args.no_progress, trust_code=True, device=device)
    finally:
        shutdown()
    if rank != 0:
        return 0
    print(training_table(run_dir.name, summary, args.settings[TrainConfig].epochs))
    print(f"wrote {run_dir} (checkpoint: {summary.get('checkpoint_selection', 'best on validation data')})")
    return 0


def cmd_attack(args) -> int:
    from .experiments.attack import attack_model_run

    target = args.settings[RunTarget]
    record = {k: v for k, v in vars(args).items() if k not in ("func", "settings")}
    out, run = attack_model_run(args.run, args.settings[AttackSettings], runs=target.runs, name=target.name,
                                save=args.save, record=record, device=_device(args), progress=not args.no_progress)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}, indent=2))
    print(f"wrote {run.path}")
    return 0


def cmd_evaluate(args) -> int:
    from .distributed import init_from_env, shutdown
    from .experiments.job import evaluate_model_run

    settings, source = args.settings[EvaluationSettings], args.settings[ModelRunSource]
    settings = settings.model_copy(update={"attacks": settings.attack_list()})
    device = _device(args)
    run_dir, evaluate = _evaluation_target(args, settings)
    rank = init_from_env(device=device)
    try:
        out = evaluate(progress=not args.no_progress, device=device) if run_dir != args.run else evaluate_model_run(
            args.run, settings, args.settings[ZooSettings].weights or "best", trust_code=source.trust_code,
            progress=not args.no_progress, device=device)
    finally:
        shutdown()
    if rank != 0:
        return 0
    from .runs.report_summary import suite_label

    print(f"{suite_label(out)}, {out.get('norm', '?')}")
    print(results_table(evaluation_rows(Path(run_dir).name, out)))
    if out.get("key"):
        from .runs.evaluations import evaluation_dir

        print(f"stored in {evaluation_dir(run_dir, out['key'])}")
    if args.settings[TensorBoardSettings].tensorboard:
        print(f"tensorboard: {write_evaluation_scalars(Path(run_dir) / TENSORBOARD_DIR, out)}")
    if run_dir != args.run:
        print(f"wrote {run_dir}")
    if args.report:
        from .runs.report import render_report

        print(render_report([run_dir], Path(run_dir) / "report.html"))
    return 0


def _evaluation_target(args, settings):
    """`robustlab evaluate`'s run directory, and for ``--model`` the call that evaluates the zoo model into it."""
    from functools import partial

    from .errors import InputError
    from .experiments.job import evaluate_zoo_model, zoo_run_name

    src, zoo, target = args.settings[ZooEvaluationSource], args.settings[ZooSettings], args.settings[RunTarget]
    if (args.run is None) == (src.model is None):
        raise InputError("give a model RUN directory or --model SOURCE (robustbench:<name>, timm:<name>, "
                         "torchvision:<name>) with --data, not both" if args.run else
                         "give a model RUN directory, or --model SOURCE with --data DATA")
    if args.run is not None:
        if zoo.weights not in (None, "best", "last"):
            raise InputError(f"--weights {zoo.weights!r}: a run's weights are best or last; a weights FILE goes with --model")
        return args.run, None
    if src.data is None:
        raise InputError(f"--model {src.model}: give the data to evaluate it on with --data (e.g. cifar10 --data-dir DIR)")
    robustbench = src.model.lower().startswith("robustbench:")  # the others have no model folder
    kwargs = {k: v for k, v in zoo.model_dump().items() if v is not None and (robustbench or k != "model_dir")}
    run_dir = str(Path(target.runs) / (target.name or zoo_run_name(src.model)))
    data = {"name": src.data, "seed": src.data_seed, "data_dir": src.data_dir}
    return run_dir, partial(evaluate_zoo_model, run_dir, {"name": src.model, "kwargs": kwargs}, data, settings)


def _job_overrides(args, executor: dict) -> dict | None:
    """What `robustlab run`'s flags change in the job config: the executor settings given, the device."""
    over = {"executor": executor} if executor else {}
    if args.device is not None:
        over["device"] = args.device
    return over or None


def cmd_run(args) -> int:
    from .experiments.job import run_config
    from .runs.leaderboard import leaderboard_table

    given = {k: v for k, v in values_from_args(ExecutorSettings, args).items() if v is not None}
    raise_problems(cli_problems(ExecutorSettings, given), "`robustlab run` arguments")
    job = run_config(args.config, args.runs, resume=args.resume, progress=not args.no_progress,
                     trust_code=args.trust_code, overrides=_job_overrides(args, given))
    print(leaderboard_table(json.loads((job / "leaderboard.json").read_text())["rows"]))
    if (job / "report.html").exists():
        print(f"report: {job / 'report.html'}")
    print(f"leaderboard: {job / 'leaderboard.html'}")
    return 0


def cmd_report(args) -> int:
    from .runs.report import render_report

    out = Path(args.out) if args.out else Path(args.runs[0]) / "report.html"
    print(render_report(args.runs, out))
    return 0


def _list_tasks(one: bool) -> None:
    from .taskspec import TASKS, get_task

    print("tasks:")
    for name in TASKS.names():
        try:
            t = get_task(name)
            print(f"  {name:<15} {t.description}")
            print(f"  {'':<15} objectives: {', '.join(t.objectives)}; datasets: {', '.join(t.datasets)}")
        except ImportError as e:
            print(f"  {name:<15} (unavailable: {e})")


def _list_attacks(one: bool) -> None:
    from .attacks import ATTACKS
    from .evaluation.suite import SUITES

    print("attacks:")
    for name, meta in ATTACKS.items():
        print(f"  {name:<15} {meta['access']:<10} norms {','.join(meta['norms']):<16} objective {meta['objective']}")
    if one:
        print("suites (robustlab evaluate --attacks):", ", ".join(SUITES))


def _listing(one: bool, brief: str, names, heading: str, rows, note: str = "") -> None:
    """`robustlab list`'s line of one kind (`brief`, then `names` and `note`), or `robustlab list KIND`'s
    `heading` and one of `rows` per entry."""
    if not one:
        print(brief, ", ".join(names), *([note] if note else []))
        return
    print(heading)
    for row in rows:
        print("  " + row)


def _list_models(one: bool) -> None:
    from .models import MODELS

    _listing(one, "models:    ", MODELS.names(), "models (also zoo sources, see `robustlab list zoos`, and "
             "package.module:callable with --trust-code):",
             (f"{name:<16} {meta.get('task', '')}, input {meta.get('input', 'any')}" for name, meta in MODELS.items()))


def _list_zoos(one: bool) -> None:
    from .models.zoo import ZOOS

    _listing(one, "model zoos:", [f"{z}:<name>" for z in ZOOS], "model zoos (--model <zoo>:<name>; see docs/gpu.md):",
             (f"{zoo + ':<name>':<22} needs: {install}" for zoo, install in ZOOS.items()),
             note="(their packages installed; see docs/gpu.md)")


def _list_datasets(one: bool) -> None:
    from .data import list_datasets

    print("datasets:  ", ", ".join(list_datasets()))
    if one:
        print("also a path (.npz, image folder, MNIST IDX or CIFAR folder), cifar10:PATH, cifar100:PATH, mnist:PATH "
              "(in memory), imagefolder:PATH, imagenet:PATH (streamed)")


def _list_objectives(one: bool) -> None:
    from .objectives import OBJECTIVES

    _listing(one, "objectives:", OBJECTIVES.names(), "objectives:",
             (f"{name:<18} {meta.get('task', ''):<15} {(meta.get('doc') or '').split(chr(10))[0]}"
              for name, meta in OBJECTIVES.items()))


def _list_methods(one: bool) -> None:
    from .training import METHODS

    _listing(one, "methods:   ", METHODS.names(), "training methods (robustlab train --method):",
             (f"{name:<12} {'adversarial' if meta.get('adversarial') else 'clean':<12} objectives: "
              f"{meta.get('objectives', 'any')}" for name, meta in METHODS.items()))


def _list_measures(one: bool) -> None:
    import robustlab.geometry as G

    from .experiments.geometry import _MEASURE, landscape_measures

    print("landscape measures (robustlab landscape --measures; the values each reports):")
    for group in landscape_measures():
        scalars = [n for n, meta in G.MEASURES.items() if meta.get("landscape") == group]
        what = ", ".join(scalars) or " ".join((_MEASURE[group].__doc__ or "").split("\n\n")[0].split()).split(";")[0]
        print(f"  {group:<12} {what}")


def _list_poisons(one: bool) -> None:
    from .poisoning import DETECTORS, POISONS

    def first_line(registry, name: str) -> str:
        return ((registry.get(name).__doc__ or "").strip().splitlines() or [""])[0]

    for registry, brief, heading in ((POISONS, "poisons:   ", "poisoning attacks (robustlab poison craft --attack):"),
                                     (DETECTORS, "detectors: ", "poison detectors (robustlab poison detect --detector):")):
        _listing(one, brief, registry.names(), heading,
                 (f"{name:<18} {first_line(registry, name)}" for name in registry.names()))


#: `robustlab list KIND`: what each kind prints; `robustlab list` alone prints all but the measures, briefly
LISTS = {"tasks": _list_tasks, "attacks": _list_attacks, "models": _list_models, "zoos": _list_zoos,
         "datasets": _list_datasets, "objectives": _list_objectives, "methods": _list_methods,
         "poisons": _list_poisons, "measures": _list_measures}


def cmd_list(args) -> int:
    for kind, show in LISTS.items():
        if args.kind == kind or (args.kind is None and kind != "measures"):
            show(one=args.kind is not None)
    return 0


def _sweep_inputs(args, default_name: str) -> tuple[Path, dict, dict]:
    """The sweep's folder, model spec and data spec."""
    target, md = args.settings[RunTarget], args.settings[ModelDataSettings]
    return Path(target.runs) / (target.name or default_name), {"name": md.model}, {"name": md.data, "seed": 0}


def cmd_sweep(args) -> int:
    if args.kind == "eps":
        return cmd_sweep_eps(args)
    from .experiments.job import sweep_batch_size

    cells = args.settings[BatchSizeSweepSettings]
    root = sweep_batch_size(*_sweep_inputs(args, "sweep-batch-size"), values_from_args(TrainConfig, args, include=_SWEEP_TRAIN),
                            cells.batch_sizes, cells.lr_rules, resume=args.resume, progress=not args.no_progress,
                            executor=args.settings[ExecutorSettings], device=args.settings[DeviceSettings].device)
    rows = json.loads((root / "sweep.json").read_text())["rows"]
    print(f"{'batch':>6} {'rule':>8} {'lr':>9} {'val acc':>8} {'gap':>7} {'val rob':>8} {'rob gap':>8}")
    for r in rows:
        print(f"{r['batch_size']:>6} {r['lr_rule']:>8} {r['lr']:>9.4g} {r['val_acc']:>8.3f} {r['generalization_gap']:>7.3f} "
              f"{r['val_robust_acc']:>8.3f} {r['robust_generalization_gap']:>8.3f}")
    return 0


def cmd_sweep_eps(args) -> int:
    from .experiments.sweeps import sweep_eps

    cfg = values_from_args(TrainConfig, args, include=[k for k in _SWEEP_TRAIN if k not in ("method", "eps")] + ["norm"])
    s = args.settings[EpsSweepSettings]
    root = sweep_eps(*_sweep_inputs(args, "sweep-eps"), cfg, s.train_eps, s.trades_betas, s.trades_eps, s.eval_eps,
                     s.attacks, eval_n=args.eval_n, resume=args.resume, progress=not args.no_progress,
                     executor=args.settings[ExecutorSettings], device=args.settings[DeviceSettings].device)
    rows = json.loads((root / "sweep.json").read_text())["rows"]
    print(f"{'cell':>16} {'clean':>7} {'robust':>7} {'95% CI':>17} pareto")
    for r in rows:
        lo, hi = r["robust_acc_ci95"]
        print(f"{r['name']:>16} {r['clean_acc']:>7.3f} {r['robust_acc']:>7.3f} [{lo:>6.3f}, {hi:>6.3f}] {'*' if r['pareto'] else ''}")
    print(f"figure: {root / 'figures' / 'pareto.png'}")
    return 0


def cmd_launch(args) -> int:
    from .distributed import launch

    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    if not rest:
        raise SystemExit("robustlab launch: give the command after --, e.g. robustlab launch --nproc 2 -- train ...")
    s = args.settings[LaunchSettings]
    return launch(rest, s.nproc, s.nnodes, s.rdzv_endpoint, s.threads, extra=["--no-progress"] if args.no_progress else [],
                  device=args.settings[DeviceSettings].device)


def cmd_landscape(args) -> int:
    from .experiments.geometry import landscape

    s = args.settings[GeometrySettings]
    res = landscape(args.run, s.measures, s.loss, progress=not args.no_progress, device=_device(args), **s.measure_kwargs())
    print(json.dumps({"scalars": res["scalars"], "acc_gap": res["gaps"]["acc_gap"],
                      "robust_acc_gap": res["gaps"]["robust_acc_gap"], "figures": res["figures"]}, indent=1))
    return 0


def cmd_compare_geometry(args) -> int:
    from .experiments.geometry import compare_geometry, comparison_markdown

    s = args.settings[CompareGeometrySettings]
    res = compare_geometry(args.runs, s.measures, s.loss, out=s.out, recompute=s.recompute,
                           progress=not args.no_progress, device=_device(args), **s.measure_kwargs())
    print(comparison_markdown(res))
    return 0


def cmd_represent(args) -> int:
    from .experiments.represent import represent_run

    s = args.settings[RepresentSettings]
    out = represent_run(args.run, s.analyses, s.n, s.compare, s.weights, s.analysis_settings(), trust_code=s.trust_code,
                        device=_device(args))
    _print_representations(out["analyses"])
    print(f"wrote {Path(args.run) / 'representations.json'} and {Path(args.run) / 'representations.html'}")
    return 0


def _print_representations(res: dict) -> None:
    """One line per analysis result of ``represent_run``."""
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


COMMANDS = {"sweep": cmd_sweep, "launch": cmd_launch, "train": cmd_train, "attack": cmd_attack, "evaluate": cmd_evaluate,
            "run": cmd_run, "report": cmd_report, "list": cmd_list, "landscape": cmd_landscape,
            "compare-geometry": cmd_compare_geometry, "represent": cmd_represent, "poison": run_poison_cli}


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
    first_line = (str(e).strip().splitlines() or [""])[0]  # the rest is in the --debug traceback
    return 1, (f"unexpected {type(e).__name__}: {first_line}. This may be a bug in robustlab or in a user model/oracle; "
               "rerun with --debug for the traceback")


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """The parsed command line; a flag the command does not take is that command's one-line usage error
    (pointing at `robustlab <command> --help`, where its flags are listed), not the top level's."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        commands = parser._subparsers._group_actions[0].choices
        commands.get(args.command, parser).error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    import signal

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--"]:  # from `robustlab launch`: torchrun passes its separator on
        argv = argv[1:]
    args = _parse(build_parser(), argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # SIGTERM (e.g. a job scheduler's kill) unwinds like Ctrl-C: temporaries are removed, locks released
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    from .cpu import tune_allocator

    tune_allocator()  # keep freed buffers: passes stop page-faulting them in anew (robustlab.cpu)
    try:
        args.settings = _validated_settings(args)
        _check_names(args)
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
