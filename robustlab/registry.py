"""One registry helper for every kind of plug-in (attacks, models, objectives, training methods,
datasets, measures, tasks), in the style of timm: register with metadata, look up by name, build
with one factory verb.

    ATTACKS = Registry("attack")

    @ATTACKS.register("pgd", access="white-box", norms=("linf", "l2", "l1"), objective="any")
    class PGD(...): ...

    ATTACKS.create("pgd", threat, steps=40)
    ATTACKS.metadata("pgd")["access"]

Names are matched case-insensitively with ``-`` and ``_`` treated alike. An entry may be given
lazily as ``"package.module:attribute"`` (a string written in robustlab's own source, never read
from user data): it is imported on first use, so registering a task does not import it.

The public verbs, one rule for every registry (each module exposes its registry through them):

- ``list_<things>(**where)``: the registered names, filtered by metadata where the registry has it.
- ``create_<thing>(name, ...)``: a new object built by the registered factory, for entries that are
  classes or factories (``create_attack``, ``create_model``, ``create_objective``).
- ``load_<thing>(name, ...)``: data read from a package or disk (``load_dataset``).
- ``get_<thing>(name)``: the registered object itself, shared and not built, for entries that are
  functions or singletons (``get_method``: a training method; ``get_measure``: a geometry measure;
  ``get_task``: a task).

So: attacks ``create_attack``/``list_attacks``; models ``create_model``/``list_models``; datasets
``load_dataset``/``list_datasets``; objectives ``create_objective``/``list_objectives``; training
methods ``get_method``/``list_methods``; geometry measures ``get_measure``/``list_measures``; tasks
``get_task``/``list_tasks``. Helpers that are not registry verbs keep their own names:
``get_objective`` coerces an argument (an Objective passes through, a name is created),
``measure_fn`` binds a measure to data, ``evaluation.build_suite`` builds a list of attacks from a
suite name.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Iterator

from .errors import InputError, unknown_name


def _key(name: str) -> str:
    return str(name).strip().lower().replace("_", "-")


class Registry:
    """Named entries with metadata. ``kind`` names the entries in error messages ("attack")."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Any] = {}
        self._meta: dict[str, dict] = {}
        self._names: dict[str, str] = {}   # key -> display name
        self._aliases: dict[str, str] = {}  # alias key -> key

    def register(self, name: str, obj: Any = None, *, aliases: tuple[str, ...] = (), **metadata) -> Any:
        """Register `obj` under `name` (or use as a decorator when `obj` is omitted)."""
        def add(target):
            key = _key(name)
            if key in self._entries or key in self._aliases:
                raise InputError(f"{self.kind} {name!r} is already registered")
            self._entries[key] = target
            self._names[key] = name
            self._meta[key] = dict(metadata)
            for a in aliases:
                self._aliases[_key(a)] = key
            return target

        return add if obj is None else add(obj)

    def _resolve(self, name: str) -> str:
        key = _key(name)
        key = self._aliases.get(key, key)
        if key not in self._entries:
            raise unknown_name(self.kind, str(name), self.names())
        return key

    def get(self, name: str) -> Any:
        """The registered object (imported on first use when registered lazily)."""
        key = self._resolve(name)
        entry = self._entries[key]
        if isinstance(entry, str):
            module, _, attr = entry.partition(":")
            entry = getattr(importlib.import_module(module), attr)
            self._entries[key] = entry
        return entry

    def create(self, name: str, *args, **kwargs) -> Any:
        """The one factory verb: ``get(name)(*args, **kwargs)``."""
        factory: Callable = self.get(name)
        return factory(*args, **kwargs)

    def metadata(self, name: str) -> dict:
        return dict(self._meta[self._resolve(name)])

    def canonical(self, name: str) -> str:
        """The registered spelling of `name` (resolving aliases)."""
        return self._names[self._resolve(name)]

    def names(self, **where) -> list[str]:
        """Registered names, optionally filtered by metadata: ``names(access="decision")``; a
        metadata value that is a tuple/list matches when it contains the wanted value."""
        out = []
        for key, meta in self._meta.items():
            ok = True
            for k, want in where.items():
                have = meta.get(k)
                if isinstance(have, (tuple, list, set, frozenset)):
                    ok &= want in have or "any" in have
                else:
                    ok &= have == want or have == "any"
            if ok:
                out.append(self._names[key])
        return sorted(out)

    def items(self) -> Iterator[tuple[str, dict]]:
        for key in sorted(self._entries):
            yield self._names[key], dict(self._meta[key])

    def __contains__(self, name: object) -> bool:
        k = _key(str(name))
        return k in self._entries or k in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} entries)"
