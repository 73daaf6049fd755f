"""Models from the field's zoos, named ``robustbench:<name>``, ``timm:<name>`` or ``torchvision:<name>``.

A zoo source names a registry entry of an installed package, not code of the user's, so it needs no
``trust_code``. The packages do the work; robustlab only finds the files and wraps the result:

- ``robustbench:<name>``: ``robustbench.utils.load_model(name, model_dir, dataset, threat_model)``.
  The checkpoint lives at ``<model_dir>/<dataset>/<threat>/<name>.pt`` (ensembles ``<name>.pt_m{i}.pt``);
  RobustBench reads it offline when it exists and downloads it only when it is missing. Inputs are in
  [0, 1]; the normalisation is inside RobustBench's models.
- ``timm:<name>``: ``timm.create_model(name, pretrained=False)``, weights from ``weights`` (a
  ``.safetensors`` file or a torch state dict, read with ``weights_only=True``), wrapped in
  ``Normalize(mean, std)`` from ``timm.data.resolve_model_data_config(model)`` (the model's
  ``pretrained_cfg``), so attacks work in [0, 1].
- ``torchvision:<name>``: ``torchvision.models.get_model(name, weights=None)``, weights from ``weights``,
  wrapped in ``Normalize`` with the ImageNet mean and std.

The settings of a zoo source (``ZooSettings``) are declared once: they are the CLI flags
(``--weights``, ``--model-dir``, ``--zoo-dataset``, ``--zoo-threat``) and the keys of a job's model
``kwargs``. A run records the source and the SHA-256 of its weights files (``zoo_spec``); reloading
the run checks that digest (``load_recorded``).
"""
from __future__ import annotations

import hashlib
import importlib
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

import torch
import torch.nn as nn
from pydantic import Field

from ..errors import CheckpointError, InputError
from ..settings import StrictSettings
from .normalize import Normalize

#: the zoos and how to install their package
ZOOS = {
    "robustbench": "pip install git+https://github.com/RobustBench/robustbench.git",
    "timm": "pip install timm",
    "torchvision": "pip install torchvision",
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: robustlab's norm -> RobustBench's threat model
ROBUSTBENCH_THREATS = {"linf": "Linf", "l2": "L2"}
ROBUSTBENCH_DATASETS = ("cifar10", "cifar100", "imagenet")


class ZooSettings(StrictSettings):
    """Where a zoo model's weights come from (``robustbench:``, ``timm:``, ``torchvision:`` sources)."""

    settings_name: ClassVar[str] = "the zoo settings"

    weights: Optional[str] = Field(None, description="weights FILE of a timm:/torchvision: model (.safetensors or a "
                                                     "torch state dict); for a run: best or last (default best)")
    model_dir: str = Field("models", description="RobustBench's model folder: <dir>/<dataset>/<threat>/<name>.pt")
    zoo_dataset: Optional[Literal["cifar10", "cifar100", "imagenet"]] = Field(
        None, description="RobustBench dataset (default: from --data)")
    zoo_threat: Optional[Literal["Linf", "L2", "corruptions"]] = Field(
        None, description="RobustBench threat model (default: from --norm)")


def split_zoo_source(name: Any) -> tuple[str, str] | None:
    """``("timm", "resnet18")`` for ``"timm:resnet18"``; None when `name` names no zoo."""
    zoo, sep, entry = str(name).partition(":")
    return (zoo.lower(), entry) if sep and zoo.lower() in ZOOS else None


def is_zoo_source(name: Any) -> bool:
    return split_zoo_source(name) is not None


def import_zoo(module: str):
    """Import a zoo package (or one of its modules); absent or broken: a one-line InputError with the fix."""
    package = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except Exception as e:  # ImportError, or torchvision's RuntimeError against a torch of another build
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise InputError(
            f"{package}: models need the {package} package ({ZOOS[package]}); importing it failed: {first}. "
            "(timm and robustbench import torchvision; the registry's torchvision wheel is a CUDA build that fails "
            "against a CPU-only torch: install torch and torchvision from the same index)") from None


def zoo_settings(kwargs: dict) -> tuple[ZooSettings, dict]:
    """Split a model's kwargs into the zoo settings (validated) and the architecture's own keywords."""
    mine = {k: v for k, v in kwargs.items() if k in ZooSettings.model_fields}
    return ZooSettings(**mine), {k: v for k, v in kwargs.items() if k not in ZooSettings.model_fields}


def create_zoo_model(name: str, **kwargs) -> nn.Module:
    """The model a zoo source names, in eval mode, taking inputs in [0, 1] (see the module docstring)."""
    zoo, entry = split_zoo_source(name) or (None, "")
    if not entry:
        raise InputError(f"model {name!r}: give the zoo's model name after the colon, e.g. timm:resnet18")
    settings, arch = zoo_settings(kwargs)
    build = {"robustbench": _robustbench, "timm": _timm, "torchvision": _torchvision}[zoo]
    return build(entry, settings, arch).eval()


def robustbench_file(entry: str, settings: ZooSettings) -> Path:
    """``<model_dir>/<dataset>/<threat>/<name>.pt``, RobustBench's layout."""
    if settings.zoo_dataset is None or settings.zoo_threat is None:
        raise InputError(f"robustbench:{entry}: RobustBench needs a dataset and a threat model; pass --zoo-dataset "
                         "(cifar10, cifar100, imagenet) and --zoo-threat (Linf, L2, corruptions)")
    return Path(settings.model_dir) / settings.zoo_dataset / settings.zoo_threat / f"{entry}.pt"


def _robustbench(entry: str, settings: ZooSettings, arch: dict) -> nn.Module:
    if settings.weights or arch:
        raise InputError(f"robustbench:{entry} takes its weights from {robustbench_file(entry, settings)} "
                         "(RobustBench's layout), not --weights or model keywords; put the checkpoint there")
    path = robustbench_file(entry, settings)
    utils = import_zoo("robustbench.utils")
    try:
        return utils.load_model(model_name=entry, model_dir=str(settings.model_dir), dataset=settings.zoo_dataset,
                                threat_model=settings.zoo_threat)
    except KeyError:
        raise InputError(f"robustbench:{entry} is not in RobustBench's {settings.zoo_dataset} {settings.zoo_threat} "
                         "model zoo; see robustbench.model_zoo for the names") from None
    except Exception as e:
        if path.exists():
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise InputError(f"robustbench:{entry}: no checkpoint at {path} and RobustBench could not download it "
                         f"({type(e).__name__}: {first}); put the file there to load it offline") from None


def _timm(entry: str, settings: ZooSettings, arch: dict) -> nn.Module:
    timm = import_zoo("timm")
    data = import_zoo("timm.data")
    if not timm.is_model(entry):
        raise InputError(f"timm:{entry} is not a timm model; see timm.list_models()")
    model = _construct(f"timm:{entry}", timm.create_model, entry, pretrained=False, **arch)
    _load_weights_file(model, settings.weights, f"timm:{entry}")
    cfg = data.resolve_model_data_config(model)
    return Normalize(cfg["mean"], cfg["std"], model)


def _torchvision(entry: str, settings: ZooSettings, arch: dict) -> nn.Module:
    models = import_zoo("torchvision.models")
    try:
        model = _construct(f"torchvision:{entry}", models.get_model, entry, weights=None, **arch)
    except ValueError as e:
        raise InputError(f"torchvision:{entry}: {e}; see torchvision.models.list_models()") from None
    _load_weights_file(model, settings.weights, f"torchvision:{entry}")
    return Normalize(IMAGENET_MEAN, IMAGENET_STD, model)


def _construct(what: str, factory, *args, **kwargs) -> nn.Module:
    """``factory(*args, **kwargs)``; a keyword the architecture does not take is a one-line InputError."""
    try:
        return factory(*args, **kwargs)
    except TypeError as e:
        raise InputError(f"{what} rejected its keyword arguments ({e}); the zoo settings are "
                         f"{', '.join(ZooSettings.model_fields)}, the other keywords go to the architecture") from None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file or a torch state dict (``weights_only=True``: no code runs);
    a ``{"state_dict": ...}`` checkpoint gives its state dict, and DDP's ``module.`` prefix is dropped."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no weights file at {path}; pass --weights FILE (.safetensors or a torch state dict)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise InputError(f"{path} is not a torch state dict readable with weights_only=True: "
                             f"{(str(e).splitlines() or [''])[0]}") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise InputError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load_weights_file(model: nn.Module, path: str | None, what: str) -> None:
    """Load `path` into `model` strictly; keys or shapes that do not fit are one InputError (no file:
    the architecture's random initialisation)."""
    if path is None:
        return
    try:
        result = model.load_state_dict(read_state_dict(path), strict=False)
    except RuntimeError as e:  # a shape mismatch
        raise InputError(f"{path} does not fit {what}: {(str(e).splitlines() or [''])[-1].strip()}") from None
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        raise InputError(f"{path} does not fit {what}: {len(missing)} missing keys {missing[:3]}, "
                         f"{len(unexpected)} unexpected keys {unexpected[:3]}")


# ----- the record of a zoo model in a run ---------------------------------------------------------
def weights_files(name: str, kwargs: dict) -> list[Path]:
    """The files a zoo source's weights come from (none: a timm/torchvision model at random init)."""
    zoo, entry = split_zoo_source(name)
    settings, _ = zoo_settings(kwargs)
    if zoo != "robustbench":
        return [Path(settings.weights)] if settings.weights else []
    path = robustbench_file(entry, settings)
    ensemble = sorted(path.parent.glob(f"{path.name}_m*.pt"))
    return [path] if path.exists() else ensemble


def files_digest(paths: list[Path]) -> str:
    """SHA-256 over the bytes of `paths` in order ("" for none)."""
    if not paths:
        return ""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def robustbench_defaults(data_name: str | None, norm: str | None) -> dict:
    """RobustBench's dataset and threat model derived from a run's data and norm (the keys it can derive)."""
    out = {}
    key = str(data_name or "").split(":")[0].lower()
    path = Path(str(data_name or ""))
    if key in ROBUSTBENCH_DATASETS:
        out["zoo_dataset"] = key
    elif path.is_dir() and (path / "data_batch_1").exists():
        out["zoo_dataset"] = "cifar10"
    elif path.is_dir() and (path / "train").is_file() and (path / "test").is_file():
        out["zoo_dataset"] = "cifar100"
    if norm in ROBUSTBENCH_THREATS:
        out["zoo_threat"] = ROBUSTBENCH_THREATS[norm]
    return out


def zoo_spec(spec: dict, data_name: str | None = None, norm: str | None = None) -> dict:
    """A zoo model spec ``{name, kwargs}`` completed for a run: RobustBench's dataset and threat from
    the data and norm when not given, and ``weights_sha256`` of the weights files (after loading)."""
    kwargs = dict(spec.get("kwargs") or {})
    if split_zoo_source(spec["name"])[0] == "robustbench":
        kwargs = {**robustbench_defaults(data_name, norm), **kwargs}
    zoo_settings(kwargs)  # validated now: a bad key is an error before anything loads
    return {"name": spec["name"], "kwargs": kwargs}


def record_digest(spec: dict) -> dict:
    """`spec` with the SHA-256 of its weights files (call after the model loaded: RobustBench may download)."""
    files = weights_files(spec["name"], spec["kwargs"])
    return {**spec, "weights_files": [str(p) for p in files], "weights_sha256": files_digest(files)}


def load_recorded(spec: dict) -> nn.Module:
    """The zoo model a run's config records, refused when its weights files changed since."""
    model = create_zoo_model(spec["name"], **(spec.get("kwargs") or {}))
    now = files_digest(weights_files(spec["name"], spec.get("kwargs") or {}))
    if spec.get("weights_sha256") is not None and now != spec["weights_sha256"]:
        raise CheckpointError(f"{spec['name']}: its weights files {spec.get('weights_files')} changed since the run "
                              f"was written (sha256 {now[:12] or 'none'} vs recorded {spec['weights_sha256'][:12]}); "
                              "evaluate it into a new run with --model")
    return model
