"""Contracts for every registry but the attacks' (``test_attack_contract.py`` has those): models,
datasets, objectives, training methods, geometry measures and tasks. Each test is parametrised over
its registry's names at collection time, so an entry is covered the day it is registered; the case
tables below must name every entry (a new one fails ``test_every_entry_has_a_case`` until it gets a
tiny case of its own). Inputs are tiny: the contract, not the quality, is under test."""
import collections
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from robustlab.data import list_datasets, load_dataset
from robustlab.geometry import model_state, rescale
from robustlab.geometry.measures import MEASURES
from robustlab.models import MODELS
from robustlab.objectives import OBJECTIVES, Objective
from robustlab.taskspec import TASKS
from robustlab.threat import ThreatModel
from robustlab.training import METHODS, BatchContext
from robustlab.weights import load_weights, save_weights

# ----- case tables: one tiny case per registered name ----------------------------------------------
#: model -> the input shape it is documented for (its ``input`` metadata); built with its defaults
MODEL_INPUTS = {"madry_cnn": (1, 28, 28), "fast_mnist": (1, 28, 28), "mlp": (1, 28, 28), "preact_resnet18": (3, 32, 32)}
#: classification objective -> (its target is (labels, target classes), its success rule): "untargeted"
#: (argmax != label) or "targeted" (argmax == target class); targeted DLR's default success is any
#: misclassification (its use in APGD-T)
CLASSIFICATION_RULES = {"ce": (False, "untargeted"), "margin": (False, "untargeted"), "dlr": (False, "untargeted"),
                        "targeted_ce": (True, "targeted"), "targeted_margin": (True, "targeted"),
                        "targeted_dlr": (True, "untargeted")}
#: regression objective -> its per-sample error as a function of a constant offset c (threshold 1) and
#: whether success is error above (True) or below (False) the threshold
REGRESSION_ERRORS = {
    "regression": (lambda c: c, True),
    "regression_target": (lambda c: c, False),
    "smooth_l1": (lambda c: torch.where(c < 1, 0.5 * c ** 2, c - 0.5), True),  # Huber, beta 1
}
TASK_CASES = {}  # filled below, one builder per task


def test_every_entry_has_a_case():
    assert set(MODEL_INPUTS) == set(MODELS.names()), "add the new model to MODEL_INPUTS"
    assert set(CLASSIFICATION_RULES) == set(OBJECTIVES.names(task="classification")), "add it to CLASSIFICATION_RULES"
    assert set(REGRESSION_ERRORS) == set(OBJECTIVES.names(task="regression")), "add it to REGRESSION_ERRORS"
    assert set(CLASSIFICATION_RULES) | set(REGRESSION_ERRORS) == set(OBJECTIVES.names()), "a task kind without a case"
    assert set(TASK_CASES) == set(TASKS.names()), "add the new task to TASK_CASES"
    for registry in (MODELS, OBJECTIVES, METHODS, MEASURES, TASKS):
        assert len(registry) > 0, registry
    assert list_datasets()


# ----- models ---------------------------------------------------------------------------------------
def _documented(doc: str, shape: tuple) -> bool:
    """Does ``shape`` fit an ``input`` metadata such as "1x28x28", "3xHxW" or "any (flattened)"?"""
    if doc.startswith("any"):
        return True
    dims = doc.split("x")
    return len(dims) == len(shape) and all(not d.isdigit() or int(d) == s for d, s in zip(dims, shape))


def _model(name, seed=0, num_classes=7):
    torch.manual_seed(seed)
    return MODELS.create(name, num_classes=num_classes)


def _batch(name, n=2):
    return torch.rand(n, *MODEL_INPUTS[name], generator=torch.Generator().manual_seed(1))


def _mode_dependent(model) -> bool:
    return any(isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)) for m in model.modules())


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", MODELS.names())
def test_model_forward_gives_finite_logits_of_num_classes(name):
    assert _documented(MODELS.metadata(name)["input"], MODEL_INPUTS[name]), MODELS.metadata(name)
    model = _model(name).eval()
    with torch.no_grad():
        out = model(_batch(name))
    assert out.shape == (2, 7) and out.dtype == torch.float32 and bool(out.isfinite().all()), (name, out.shape)


@pytest.mark.parametrize("name", MODELS.names())
def test_model_respects_eval_and_train_mode(name):
    model, x = _model(name), _batch(name)
    model.eval()
    assert not any(m.training for m in model.modules())
    before = _state(model)
    with torch.no_grad():
        out = model(x)
        assert torch.equal(model(x), out)  # eval is deterministic
        assert torch.allclose(model(x[:1]), out[:1], atol=1e-5)  # and each sample is independent of the batch
    assert _states_equal(_state(model), before), "an eval-mode forward changed the state (running statistics?)"
    model.train()
    assert all(m.training for m in model.modules())
    with torch.no_grad():
        out_train = model(x)
    # batch norm / dropout layers make the train-mode output differ; without them both modes agree
    assert torch.allclose(out_train, out, atol=1e-6) != _mode_dependent(model), name


@pytest.mark.parametrize("name", MODELS.names())
def test_model_weights_round_trip_to_equal_outputs(name, tmp_path):
    model, x = _model(name, seed=0).eval(), _batch(name)
    save_weights(model, tmp_path / "w.safetensors")
    other = _model(name, seed=1).eval()
    with torch.no_grad():
        assert not torch.equal(other(x), model(x))  # else the check below would pass without loading
        load_weights(other, tmp_path / "w.safetensors")
        assert torch.equal(other(x), model(x))
    assert _states_equal(_state(other), _state(model))


# ----- datasets -------------------------------------------------------------------------------------
def _load(name, split, seed=0):
    try:
        return load_dataset(name, split, seed=seed)
    except ImportError as e:
        pytest.skip(f"dataset {name} needs the absent module {e.name}")


def _rows(d) -> collections.Counter:
    """The samples (input bytes and label) as a multiset."""
    flat = d.x.reshape(len(d), -1).numpy()
    return collections.Counter((flat[i].tobytes(), int(d.y[i])) for i in range(len(d)))


@pytest.mark.parametrize("name", list_datasets())
def test_dataset_splits_are_images_in_the_unit_range_with_labels(name):
    splits = {s: _load(name, s) for s in ("train", "val", "test")}
    shapes = {d.input_shape for d in splits.values()}
    assert len(shapes) == 1 and len(shapes.pop()) == 3, (name, shapes)  # one C x H x W for every split
    for split, d in splits.items():
        assert len(d) > 0 and d.x.dtype == torch.float32, (name, split, d.x.dtype)
        assert float(d.x.min()) >= 0 and float(d.x.max()) <= 1, (name, split)
        assert isinstance(d.y, torch.Tensor) and d.y.shape == (len(d),) and d.y.dtype == torch.int64, (name, split)
        assert int(d.y.min()) >= 0 and int(d.y.max()) < d.num_classes, (name, split)


@pytest.mark.parametrize("name", list_datasets())
def test_dataset_splits_partition_the_pool_deterministically(name):
    train, val, test, pool = (_load(name, s) for s in ("train", "val", "test", "all"))
    assert len(train) + len(val) + len(test) == len(pool)
    # disjoint: together the splits are the pool, each sample exactly once
    assert _rows(train) + _rows(val) + _rows(test) == _rows(pool), name
    again = _load(name, "test")
    assert torch.equal(again.x, test.x) and torch.equal(again.y, test.y), "the same seed must give the same split"
    other = _load(name, "test", seed=1)
    assert not torch.equal(other.x, test.x), "the split should depend on the seed"


# ----- objectives -----------------------------------------------------------------------------------
#: hand-built logits (5 classes): row 0 argmax = label, row 1 = target class, row 2 = neither, row 3 = target
LOGITS = torch.tensor([[3.0, 1.0, 0.0, -1.0, 0.5], [0.0, 1.0, 4.0, -2.0, 0.2],
                       [0.3, 2.5, 1.0, 0.0, 0.1], [2.0, -1.0, 0.5, 1.5, 0.0]])
LABELS = torch.tensor([0, 1, 2, 3])
TARGET_CLASSES = torch.tensor([1, 2, 4, 0])
OFFSETS = torch.tensor([0.25, 0.75, 1.25, 3.0])  # per-sample output error of the regression case


def _regression_case():
    """Outputs [4, 1, 2, 3] off their targets by OFFSETS on the valid pixels; one NaN pixel per sample
    is masked out (masked targets may be invalid)."""
    g = torch.Generator().manual_seed(0)
    target = torch.randn(4, 1, 2, 3, generator=g)
    output = target + OFFSETS[:, None, None, None]
    mask = torch.ones_like(target, dtype=torch.bool)
    mask[:, 0, 1, 2] = False
    target[:, 0, 1, 2] = float("nan")
    return output, (target, mask)


def _check_per_sample(objective, output, target):
    loss, success = objective.loss(output, target), objective.success(output, target)
    assert loss.shape == (4,) and loss.is_floating_point() and bool(loss.isfinite().all()), (objective, loss)
    assert success.shape == (4,) and success.dtype == torch.bool, (objective, success)
    if objective.margin_like:  # declared: loss > 0 exactly on the successful samples
        assert torch.equal(loss > 0, success), (objective, loss, success)
    return loss, success


@pytest.mark.parametrize("name", OBJECTIVES.names(task="classification"))
def test_classification_objective_success_is_the_argmax_rule(name):
    objective = OBJECTIVES.create(name)
    assert isinstance(objective, Objective) and objective.task == "classification"
    pair, rule = CLASSIFICATION_RULES[name]
    _, success = _check_per_sample(objective, LOGITS, (LABELS, TARGET_CLASSES) if pair else LABELS)
    pred = LOGITS.argmax(1)
    want = pred != LABELS if rule == "untargeted" else pred == TARGET_CLASSES
    assert torch.equal(success, want), (name, success, want)


def test_targeted_dlr_can_ask_for_the_target_class_itself():
    objective = OBJECTIVES.create("targeted_dlr", untargeted_success=False)
    _, success = _check_per_sample(objective, LOGITS, (LABELS, TARGET_CLASSES))
    assert torch.equal(success, LOGITS.argmax(1) == TARGET_CLASSES)


@pytest.mark.parametrize("name", OBJECTIVES.names(task="regression"))
def test_regression_objective_measures_the_masked_error(name):
    objective = OBJECTIVES.create(name, threshold=1.0)
    assert isinstance(objective, Objective) and objective.task == "regression"
    output, target = _regression_case()
    loss, success = _check_per_sample(objective, output, target)
    error_of, above = REGRESSION_ERRORS[name]
    error = error_of(OFFSETS)
    assert torch.allclose(loss, error - 1.0 if above else 1.0 - error, atol=1e-5), (name, loss, error)
    assert torch.equal(success, error > 1.0 if above else error < 1.0), (name, success, error)


# ----- training methods -----------------------------------------------------------------------------
def _digits(n=4):
    d = load_dataset("digits", "train")
    return d.x[:n], d.y[:n]


def _method_case(name):
    """(method, tiny MLP, x, y): 4 digits points (8x8); on_manifold on the same points upsampled to
    1x28x28 with a tiny untrained class-conditional VAE (the registered entry would train the MNIST one)."""
    from robustlab.models import MLP
    from robustlab.models.vae import VAE
    from robustlab.training import make_on_manifold_method

    x, y = _digits()
    torch.manual_seed(0)
    if name != "on_manifold":
        return METHODS.get(name), MLP(in_features=64, hidden=(8,)), x, y
    vae = VAE((1, 28, 28), latent_dim=2, hidden=16, num_classes=10)
    x28 = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False).clamp(0, 1)
    return make_on_manifold_method(vae, steps=2), MLP(in_features=784, hidden=(8,)), x28, y


def _train_step(name, seed, global_seed=0):
    method, model, x, y = _method_case(name)
    model.train()
    ctx = BatchContext(threat=ThreatModel("linf", 0.1), seed=seed)
    torch.manual_seed(global_seed)  # the method's random numbers must come from ctx.seed, not from here
    loss, out = method(model, x, y, ctx)
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return loss, out, dict(zip(params, grads)), model


@pytest.mark.parametrize("name", METHODS.names())
def test_training_method_gives_a_finite_loss_with_gradients_for_every_parameter(name):
    loss, out, grads, model = _train_step(name, seed=5)
    assert loss.dim() == 0 and bool(loss.isfinite()), (name, loss)
    assert out.shape == (4, 10), (name, out.shape)
    missing = [k for k, g in grads.items() if g is None]
    assert not missing, f"{name}: no gradient for {missing}"
    assert all(bool(g.isfinite().all()) for g in grads.values()), name
    assert all(m.training for m in model.modules()), f"{name} left the model out of train mode"


@pytest.mark.parametrize("name", METHODS.names())
def test_training_method_is_deterministic_under_a_fixed_ctx_seed(name):
    loss, _, grads, _ = _train_step(name, seed=5, global_seed=1)
    again, _, grads_again, _ = _train_step(name, seed=5, global_seed=2)
    assert torch.equal(loss, again), (name, float(loss), float(again))
    assert all(torch.equal(grads[k], grads_again[k]) for k in grads), name


# ----- geometry measures ----------------------------------------------------------------------------
def _float64_mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 6), nn.ReLU(), nn.Linear(6, 3)).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(24, 5, generator=g, dtype=torch.float64)
    return model.eval(), (x, torch.randint(0, 3, (24,), generator=g))


@pytest.mark.parametrize("name", MEASURES.names())
def test_measure_is_a_finite_reproducible_number_and_leaves_the_model_alone(name):
    model, data = _float64_mlp()
    before = model_state(model)
    value = MEASURES.create(name, model, data)
    assert isinstance(value, float) and math.isfinite(value), (name, value)
    assert MEASURES.create(name, model, data) == value, name
    assert _states_equal(model_state(model), before) and not model.training, name


@pytest.mark.parametrize("name", MEASURES.names())
def test_measure_invariance_is_as_declared(name):
    """Under the ReLU rescaling (Dinh et al. 2017; the same function) an ``invariant`` measure keeps
    its value and the others change it."""
    model, data = _float64_mlp()
    value = MEASURES.create(name, model, data)
    rescaled = MEASURES.create(name, rescale(model, 4.0, example=data[0]), data)
    same = math.isclose(value, rescaled, rel_tol=1e-6, abs_tol=1e-12)
    assert same == MEASURES.metadata(name)["invariant"], (name, value, rescaled)


# ----- tasks ----------------------------------------------------------------------------------------
def _task_case(name):
    def register(build):
        TASK_CASES[name] = build
        return build
    return register


@_task_case("classification")
def _classification(task):
    d = task.datasets["digits"]("test")
    return task.models["mlp"](in_features=64, hidden=(8,)), d.x[:1], d.y[:1]


@_task_case("stereo")
def _stereo(task):
    from robustlab.tasks.stereo import StereoNet  # the network behind the task's "pretrained" model

    d = task.datasets["synthetic"](1, h=16, w=32, max_disp=8)
    return StereoNet(max_disp=8, features=8, hidden=8), d.x, (d.disparity, d.mask)


@_task_case("ocr")
def _ocr(task):
    from robustlab.errors import InputError

    try:
        d = task.datasets["synthetic"](n=1)
    except InputError as e:  # the renderer's DejaVu font
        pytest.skip(f"the ocr task needs a font to render lines: {e}")
    return task.models["crnn"](hidden=8, channels=(4, 4, 4, 4)), d.x, d.texts


@_task_case("detection")
def _detection(task):
    d = task.datasets["synthetic"](n=2, size=32)
    return task.models["tiny"](num_classes=4, width=4), d.x, d.targets


def _numbers(value) -> torch.Tensor:
    return torch.as_tensor(value, dtype=torch.float64).reshape(-1)


@pytest.mark.parametrize("name", TASKS.names())
def test_task_declares_objectives_datasets_and_metrics(name):
    task = TASKS.get(name)
    assert task.name == TASKS.canonical(name) and task.description
    assert task.objectives and task.datasets and callable(task.metrics), name
    assert task.train_objective is None or task.train_objective in task.objectives
    for key in task.objectives:
        assert isinstance(task.objective(key), Objective), (name, key)
    assert isinstance(task.objective(), Objective)


@pytest.mark.parametrize("name", TASKS.names())
def test_task_metrics_and_objective_run_on_its_models_output(name):
    task = TASKS.get(name)
    try:
        torch.manual_seed(0)
        model, x, target = TASK_CASES[name](task)
    except ImportError as e:
        pytest.skip(f"task {name} needs the absent module {e.name}")
    with torch.no_grad():
        out = model.eval()(x)
    metrics = task.metrics(out, target)
    assert metrics, name
    for key, value in metrics.items():
        v = _numbers(value)
        assert v.numel() in (1, len(x)) and bool(v.isfinite().all()), (name, key, value)
    for objective in (task.objective(), task.objective(task.train_objective or None)):
        loss, success = objective.loss(out, target), objective.success(out, target)
        assert loss.shape == (len(x),) and bool(loss.isfinite().all()), (name, objective, loss)
        assert success.shape == (len(x),) and success.dtype == torch.bool, (name, objective)
