"""Verdicts of the gradient-masking checks: one ``Check`` per check, gathered in a ``SanityReport``.

A verdict is "pass", "warn", "fail" or "not run" (the check could not apply: its message says why;
it is neither evidence for nor against the evaluation, and never shown as "pass")."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PASS, WARN, FAIL, NOT_RUN = "pass", "warn", "fail", "not run"
VERDICTS = (PASS, WARN, FAIL, NOT_RUN)
WARNINGS = (WARN, FAIL)  # the verdicts a reader must see


@dataclass
class Check:
    name: str
    verdict: str              # pass | warn | fail | not run
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def not_run(cls, name: str, reason: str, evidence: dict[str, Any] | None = None) -> "Check":
        """A check that could not apply, with the reason it did not run."""
        return cls(name, NOT_RUN, reason, evidence or {})

    @property
    def is_warning(self) -> bool:
        return self.verdict in WARNINGS

    def to_dict(self) -> dict:
        return {"name": self.name, "verdict": self.verdict, "message": self.message, "evidence": self.evidence}


@dataclass
class SanityReport:
    checks: list[Check]

    @property
    def ok(self) -> bool:
        """No check warns or fails (checks that did not run are no evidence either way)."""
        return not any(c.is_warning for c in self.checks)

    @property
    def not_run(self) -> list[Check]:
        return [c for c in self.checks if c.verdict == NOT_RUN]

    def __getitem__(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> list[dict]:
        return [c.to_dict() for c in self.checks]

    def __str__(self) -> str:
        return "\n".join(f"[{c.verdict:>7}] {c.name}: {c.message}" for c in self.checks)
