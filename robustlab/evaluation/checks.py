"""Verdicts of the gradient-masking checks: one ``Check`` per check, gathered in a ``SanityReport``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Check:
    name: str
    verdict: str              # pass | warn | fail
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "verdict": self.verdict, "message": self.message, "evidence": self.evidence}


@dataclass
class SanityReport:
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.verdict == "pass" for c in self.checks)

    def __getitem__(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> list[dict]:
        return [c.to_dict() for c in self.checks]

    def __str__(self) -> str:
        return "\n".join(f"[{c.verdict:>4}] {c.name}: {c.message}" for c in self.checks)
