"""Settings declared once, as pydantic models, and everything derived from them: validation that
reports every problem at once (unknown keys with a did-you-mean, types, ranges) as one
``InputError``, and ``argparse`` flags generated from the fields (``--flag-name``, type, choices from
a ``Literal``, default, help from the field's description).

    class Settings(StrictSettings):
        steps: int = Field(10, ge=1, description="inner attack steps")

    add_model_arguments(parser, Settings)         # --steps (int, default 10)
    Settings(**values_from_args(Settings, args))
"""
from __future__ import annotations

import argparse
import difflib
import types
import typing
from typing import Any, ClassVar, Iterable, Literal, Union

from pydantic import BaseModel, ConfigDict, ValidationError

from .argtypes import float_list, int_list, json_object, name_list
from .errors import InputError


class SettingsError(InputError):
    """Bad settings: the message lists every problem; ``validation_error`` is pydantic's error (for
    callers that gather the problems of several models into one message)."""

    def __init__(self, message: str, validation_error: ValidationError):
        super().__init__(message)
        self.validation_error = validation_error


class StrictSettings(BaseModel):
    """A settings model: unknown keys are errors; constructing or validating one with bad values
    raises one ``SettingsError`` (an ``InputError``) listing every problem."""

    # NaN and +-inf are refused for every float (no setting means "unbounded" by inf; ``ge=0`` alone lets inf in)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    #: how the settings are named in error messages ("the training settings") and their key prefix
    settings_name: ClassVar[str] = "the settings"
    settings_prefix: ClassVar[str] = ""

    def __init__(self, **data: Any):
        try:
            super().__init__(**data)
        except ValidationError as e:
            problems = format_problems(e, self.settings_prefix, {(): type(self)})
            raise SettingsError(problems_message(problems, self.settings_name), e) from None


def validation_error(model: type[BaseModel], data: Any) -> ValidationError | None:
    """pydantic's error for `data` as a `model` (None when valid), for settings models too."""
    try:
        model.model_validate(data)
    except ValidationError as e:  # a settings model's own SettingsError comes back wrapped by pydantic
        wrapped = [x.get("ctx", {}).get("error") for x in e.errors()]
        if len(wrapped) == 1 and isinstance(wrapped[0], SettingsError):
            return wrapped[0].validation_error
        return e
    except SettingsError as e:
        return e.validation_error
    return None


def format_problems(err: ValidationError, where: str = "", models: dict[tuple, type[BaseModel]] | None = None) -> list[str]:
    """One line per problem of a pydantic error, ``<where><key>: <what is wrong>``; an unknown key
    gets a did-you-mean from the known keys of the model at its location (``models``: location with
    list indices removed -> model)."""
    out = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            key = str(e["loc"][-1])
            known = _known_keys(models or {}, tuple(e["loc"][:-1]))
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else (f"; known keys: {', '.join(sorted(known))}" if known else "")
            out.append(f"{where}{loc}: unknown key {key!r}{hint}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            got = e.get("input")
            shown = "" if isinstance(got, (dict, list)) and len(repr(got)) > 60 else f" (got {got!r})"
            out.append(f"{where}{loc}: {msg}{shown}")
    return out


def _known_keys(models: dict[tuple, type[BaseModel]], loc: tuple) -> list[str]:
    key = tuple(p for p in loc if not isinstance(p, int))
    model = models.get(key)
    return list(model.model_fields) if model is not None else []


def problems_message(problems: list[str], what: str) -> str:
    """One line for one problem; several are listed one per line under a heading."""
    if len(problems) == 1:
        return f"problem in {what}: {problems[0]}; fix it and run again"
    return f"problems in {what}:\n  " + "\n  ".join(problems) + "\nfix these and run again"


def raise_problems(problems: list[str], what: str) -> None:
    """Raise one ``InputError`` listing `problems` (nothing when there are none)."""
    if problems:
        raise InputError(problems_message(problems, what))


# ----- argparse flags from a model ------------------------------------------------------------------
def flag(name: str) -> str:
    """The command-line spelling of a field: ``attack_steps`` -> ``--attack-steps``."""
    return "--" + name.replace("_", "-")


def field_flag(name: str, field) -> str:
    """The flag of a field: ``flag(name)``, or its ``negative_flag`` (a boolean that defaults to true)."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return extra.get("negative_flag") or flag(name)


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _list_parser(field, item: Any):
    """The ``argtypes`` parser of a list field's items (numbers, integers or names); an empty list
    is accepted unless the field requires items (``min_length``)."""
    allow_empty = not any(getattr(m, "min_length", 0) for m in field.metadata)
    parse = {float: float_list, int: int_list}.get(item, name_list)

    def parse_list(text: str) -> list:
        return parse(text, allow_empty=allow_empty)
    parse_list.__name__ = parse.__name__
    return parse_list


def _argument_options(field) -> dict:
    """argparse keywords (type, choices, action, nargs, default, help) for one pydantic field. A
    field's ``json_schema_extra`` may set ``nargs`` (the list is given as separate words), for a
    boolean that defaults to true ``negative_flag`` (the flag that turns it off), or ``known``: a
    function returning the names the field takes (a registry's ``names``), listed in the help when the
    parser is built, so that names registered later (plug-ins) show too; for a list field ``action:
    append`` (the flag is repeated, one item each: ``--model a --model b``). ``aliases`` (read by
    ``add_model_arguments``) are older spellings of the flag that keep working, left out of ``--help`` (``--queries``)."""
    annotation = _unwrap_optional(field.annotation)
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    help = field.description and field.description.replace("%", "%%")  # argparse formats help with %
    if help and "known" in extra:
        help = f"{help}: {', '.join(extra['known']())}"
    opts: dict[str, Any] = {"default": field.default, "help": help}
    if annotation is bool:
        return {**opts, "action": "store_false" if field.default else "store_true"}
    if typing.get_origin(annotation) is Literal:
        opts["choices"] = list(typing.get_args(annotation))
    elif typing.get_origin(annotation) in (tuple, list) and extra.get("action") == "append":
        opts.update(action="append", type=typing.get_args(annotation)[0])  # --model a --model b
    elif typing.get_origin(annotation) in (tuple, list) and "nargs" in extra:
        opts.update(nargs=extra["nargs"], default=list(field.default))
    elif typing.get_origin(annotation) in (tuple, list):
        opts["type"] = _list_parser(field, typing.get_args(annotation)[0])
        opts["help"] = f"{help} (comma-separated)" if help else None
        opts["default"] = list(field.default) if field.default is not None else None
    elif annotation is dict or typing.get_origin(annotation) is dict:
        opts["type"] = json_object
    elif annotation in (int, float, str):
        opts["type"] = annotation
    return opts


def default_text(value: Any) -> str:
    """A default as a user types it on the command line: a list comma-separated, ``0.03`` as is."""
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def help_with_default(help: str | None, default: Any) -> str | None:
    """`help` followed by ``(default: <value>)``, unless there is no help or no default (None, empty,
    a boolean switch) or the help already says its default ("(default ...")."""
    none = default is None or isinstance(default, bool) or (isinstance(default, (list, tuple, dict)) and not default)
    if not help or none or default is argparse.SUPPRESS or "(default" in help:
        return help
    return f"{help} (default: {default_text(default).replace('%', '%%')})"


def add_model_arguments(parser, model: type[BaseModel], include: Iterable[str] | None = None,
                        exclude: Iterable[str] = (), defaults: dict | None = None) -> None:
    """Add a ``--flag-name`` argument per field of `model` (those in `include`, all by default, less
    `exclude`) to an argparse parser or argument group, its help ending with its default; `defaults`
    overrides the model's defaults (a command whose own defaults differ, e.g. a sweep's shorter
    training; an override None leaves the flag unset and the help shows the model's default)."""
    names = list(model.model_fields) if include is None else list(include)
    for name in names:
        if name in exclude:
            continue
        field = model.model_fields[name]
        opts = _argument_options(field)
        if defaults and name in defaults:
            opts["default"] = defaults[name]
        shown = opts["default"] if opts["default"] is not None else field.default
        opts["help"] = help_with_default(opts["help"], shown)
        parser.add_argument(field_flag(name, field), dest=name, **opts)
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        for alias in extra.get("aliases", ()):  # an older spelling: works, not shown in --help
            parser.add_argument(alias, dest=name, **{**opts, "help": argparse.SUPPRESS, "default": argparse.SUPPRESS})


def values_from_args(model: type[BaseModel], args: argparse.Namespace, include: Iterable[str] | None = None) -> dict:
    """The values of `model`'s fields (those in `include`, default all) that `args` holds."""
    names = list(model.model_fields) if include is None else list(include)
    given = vars(args)
    return {name: given[name] for name in names if name in given}


def cli_problems(model: type[BaseModel], values: dict) -> list[str]:
    """`values` checked as a `model`: one line per problem, named by its command-line flag."""
    err = validation_error(model, values)
    out = []
    for line in format_problems(err, "", {(): model}) if err is not None else []:
        key, _, rest = line.partition(":")
        name = key.split(".")[0]
        field = model.model_fields.get(name)
        out.append(f"{field_flag(name, field) if field is not None else flag(name)}:{rest}")
    return out


def settings_from_args(models: Iterable[type[BaseModel] | tuple[type[BaseModel], Iterable[str]]],
                       args: argparse.Namespace, what: str) -> dict[type[BaseModel], BaseModel]:
    """Each settings model (or ``(model, fields)``: only those fields, the others at their defaults)
    built from the parsed `args`, keyed by model; one ``InputError`` lists every problem of them all."""
    values = {}
    for entry in models:
        model, include = entry if isinstance(entry, tuple) else (entry, None)
        values[model] = values_from_args(model, args, include)
    problems = [p for model, v in values.items() for p in cli_problems(model, v)]
    raise_problems(list(dict.fromkeys(problems)), what)
    return {model: model.model_validate(v) for model, v in values.items()}
