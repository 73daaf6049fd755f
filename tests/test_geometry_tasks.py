"""`robustlab landscape` on a non-classification run: the stereo plug-in's ``run_inputs`` hook."""
import json
from dataclasses import asdict

import torch

from robustlab import geometry as G
from robustlab.experiments.geometry import landscape, run_inputs
from robustlab.runs.rundir import Run
from robustlab.tasks.stereo.pretrained import MODEL_FILE, StereoSetup, save_stereo_model


def _stereo_run(tmp_path):
    setup = StereoSetup(h=16, w=32, max_disp=8, n_train=4, n_val=2, steps=1, features=4, hidden=8)
    torch.manual_seed(0)
    model = setup.new_model()
    run = Run(tmp_path / "stereo-run")
    run.write_config({"kind": "stereo-model", "task": "stereo", "setup": asdict(setup), "eps": 0.03})
    save_stereo_model(model, setup, run.checkpoints / MODEL_FILE)
    return run, model


def test_landscape_of_a_stereo_run(tmp_path):
    run, model = _stereo_run(tmp_path)
    inputs = run_inputs(run.path, n=3)
    assert inputs.objective.name == "smooth_l1" and inputs.threat.eps == 0.03 and len(inputs.train) == 3
    # the measures' loss is the stereo objective's mean over the run's own scenes
    x, (d, m) = inputs.train.x, (inputs.train.disparity, inputs.train.mask)
    assert torch.equal(inputs.model.features[0][0].weight, model.features[0][0].weight)
    with torch.no_grad():
        direct = float(inputs.objective.loss(inputs.model(x), (d, m)).mean())
    assert direct > 0
    assert abs(G.LossFunction(inputs.model, inputs.train, inputs.objective).loss() - direct) < 1e-6
    out = landscape(run.path, "hessian,trace,sharpness", n=3, progress=False, figures=False, attack_steps=2)
    stored = json.loads((run.path / "geometry.json").read_text())
    assert stored["objective"] == "smooth_l1" and stored["n"] == 3 and stored["eps"] == 0.03
    s = out["scalars"]
    assert s["top_eigenvalue"] > 0 and s["trace"] == s["trace"] and s["sam"] >= 0
    assert s["keskar"] >= 0 and out["gaps"]["train"]["loss"] > 0
    assert out["gaps"]["robust_loss_gap"] == out["gaps"]["robust_loss_gap"]
