"""Every name a command or a job gives is checked before any work starts: an unknown model, dataset,
attack, measure or analysis is one line (exit 2) listing the known names, no run folder is made and
nothing is trained or loaded."""
import pytest
import yaml

from helpers import assert_clear_error, cli


@pytest.fixture
def no_work(monkeypatch):
    """Training, loading a model run or running a job fails the test if it starts."""
    import robustlab.experiments.job as job

    def started(*args, **kwargs):
        raise AssertionError("work started before the names were checked")

    for name in ("train_model_run", "load_model_from_run", "evaluate_model_run", "_run_job", "sweep_batch_size"):
        monkeypatch.setattr(job, name, started)


CASES = [  # (command line, the words of the one-line error)
    (["train", "--model", "mpl", "--data", "digits"], ["--model", "unknown model 'mpl'", "fast_mnist"]),
    (["train", "--model", "mlp", "--data", "digitz"], ["--data", "unknown dataset 'digitz'", "digits"]),
    (["train", "--model", "timmm:resnet18"], ["no module 'timmm'", "timm:<name>"]),
    (["train", "--method", "trade"], ["--method", "trades"]),
    (["sweep", "batch-size", "--model", "mpl"], ["--model", "unknown model"]),
    (["sweep", "eps", "--attacks", "pgd,squre"], ["--attacks", "unknown attack 'squre'", "square"]),
    (["evaluate", "RUN", "--attacks", "apgd-ce,fab"], ["--attacks", "fab-t"]),
    (["evaluate", "--model", "timmm:resnet18", "--data", "digits"], ["no module 'timmm'"]),
    (["attack", "RUN", "--attack", "pgdd"], ["--attack", "unknown attack 'pgdd'", "apgd-ce"]),
    (["landscape", "RUN", "--measures", "hessian,sharpnes"], ["--measures", "'sharpnes'", "sharpness"]),
    (["compare-geometry", "RUN", "RUN", "--measures", "tr"], ["--measures", "trace"]),
    (["represent", "RUN", "--analyses", "cka,saliancy"], ["--analyses", "'saliancy'", "saliency"]),
    (["stereo", "attack", "--model", "pretrained.safetensors"], ["--model pretrained.safetensors", "'pretrained'"]),
    (["stereo", "evaluate", "--model", "pretrained", "--model", "nope"], ["--model nope", "'pretrained'"]),
    (["ocr", "attack", "--target", "crnn", "--model", "nope"], ["--model nope", "'pretrained'"]),
]


@pytest.mark.parametrize("argv,words", CASES, ids=[" ".join(c[0][:3]) for c in CASES])
def test_an_unknown_name_fails_before_any_work(tmp_path, capsys, no_work, argv, words):
    run, runs = tmp_path / "model", tmp_path / "runs"  # a model run without weights: they must never be read
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"kind": "model"}))
    argv = [str(run) if a == "RUN" else a for a in argv]
    if argv[0] not in ("landscape", "compare-geometry", "represent"):  # the verbs that write a new run
        argv += ["--runs", str(runs)]
    code, out, err = cli(capsys, *argv)
    assert_clear_error(code, err, 2, *words)
    assert err.count("\n") == 1, err
    assert not runs.exists(), "a run folder was made"


@pytest.mark.parametrize("verb", ["attack", "evaluate", "landscape", "represent", "compare-geometry"])
def test_a_job_folder_for_a_model_run_names_its_model_runs_first(tmp_path, capsys, no_work, verb):
    """`robustlab <verb> runs/quickstart` (the demo's job) says which model runs to give, before anything else."""
    job = tmp_path / "quickstart"
    for label in ("pgd-at", "standard"):
        (job / "models" / label).mkdir(parents=True)
        (job / "models" / label / "config.yaml").write_text(yaml.safe_dump({"kind": "model"}))
    (job / "config.yaml").write_text(yaml.safe_dump({"kind": "job"}))
    code, out, err = cli(capsys, verb, job, *([job] if verb == "compare-geometry" else []))
    assert_clear_error(code, err, 2, "is a job run, not a model run", str(job / "models" / "pgd-at"),
                       str(job / "models" / "standard"))


def test_a_job_names_every_unknown_name_before_the_first_model_trains(tmp_path, capsys, no_work):
    config = {"name": "job", "data": {"name": "mnist", "data_dir": str(tmp_path / "no-such-dir")},
              "models": [{"name": "ok", "model": "mlp", "train": {"method": "standard"}},
                         {"name": "typo", "model": "fast_mnst"},
                         {"name": "elsewhere", "run": str(tmp_path / "no-such-run")}]}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    code, out, err = cli(capsys, "run", path, "--runs", tmp_path / "runs")
    assert_clear_error(code, err, 2, "models.1 (typo).model: unknown model 'fast_mnst'", "fast_mnist",
                       "no-such-dir", "models.2 (elsewhere).run", "no such directory")
    assert not (tmp_path / "runs").exists()


def test_known_names_pass_the_check():
    from robustlab.experiments.names import name_problems

    assert name_problems([("m", "model", "fast_mnist"), ("m", "model", "timm:resnet18"), ("d", "data", "digits"),
                          ("d", "data", "imagenet:/data/imagenet?size=224"), ("a", "attack", "APGD_CE"),
                          ("s", "attacks", "standard"), ("s", "attacks", ["pgd", "square"]), ("g", "measures", "all"),
                          ("r", "analyses", ["cka"]), ("t", "method", "fgsm-rs"), ("x", "model", None)]) == []
