"""The top-level API (``import robustlab as rl``): every public name resolves, the import stays light,
and every registry has its verbs (the rule in robustlab/registry.py)."""
import json
import os
import subprocess
import sys
import types

import pytest

import robustlab as rl

SUBPACKAGES = ("attacks", "training", "geometry", "representations", "evaluation", "objectives", "oracles", "threat",
               "tasks")


@pytest.mark.parametrize("name", rl.__all__)
def test_every_public_name_resolves(name):
    assert getattr(rl, name) is not None
    assert name in dir(rl)


def test_the_api_names_the_verbs_the_subpackages_and_the_errors():
    for name in ("create_attack", "list_attacks", "create_model", "list_models", "load_dataset", "list_datasets",
                 "train", "evaluate", "ThreatModel", "RobustlabError", "InputError", "ModelOutputError",
                 "CheckpointError", "UnknownNameError", *SUBPACKAGES):
        assert name in rl.__all__, name
    for name in SUBPACKAGES:
        assert isinstance(getattr(rl, name), types.ModuleType), name
    assert "runs" not in rl.__all__
    from robustlab.training import train
    assert rl.train is train
    assert issubclass(rl.InputError, rl.RobustlabError)


def test_unknown_names_are_attribute_errors():
    assert not hasattr(rl, "no_such_thing") and not hasattr(rl, "no.such")


def test_importing_robustlab_is_light():
    code = ("import json, sys; import robustlab; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'torch', 'robustlab'))))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (os.path.dirname(os.path.dirname(rl.__file__)),
                                                                   os.environ.get("PYTHONPATH")) if p)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    loaded = json.loads(out)
    assert not any(m.startswith("matplotlib") for m in loaded), loaded
    assert not any(m.startswith("torch.distributed") for m in loaded), loaded
    assert loaded == ["robustlab"], loaded  # nothing but the package itself until a name is used


def test_every_registry_has_its_verbs():
    from robustlab import geometry, objectives, taskspec, training

    assert "pgd" in rl.list_attacks() and "mlp" in rl.list_models() and "digits" in rl.list_datasets()
    assert "cw" not in objectives.list_objectives() and "margin" in objectives.list_objectives()
    assert isinstance(objectives.create_objective("cw"), objectives.Margin)
    assert objectives.get_objective("ce") is not None  # the coercion helper an objective= argument goes through
    assert "pgd" in training.list_methods() and callable(training.get_method("pgd"))
    assert "trace" in geometry.list_measures() and callable(geometry.get_measure("trace"))
    assert "asam" in geometry.list_measures(invariant=True) and "trace" not in geometry.list_measures(invariant=True)
    assert {"classification", "stereo", "ocr"} <= set(taskspec.list_tasks())
    with pytest.raises(rl.UnknownNameError):
        objectives.create_objective("hinge")
    with pytest.raises(rl.UnknownNameError):
        geometry.get_measure("flatness++")
