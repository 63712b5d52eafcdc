"""The promotion gate's rule and its verdict, defined once. Stdlib only.

A newly published version becomes what ``latest.json`` names (the served version) only if,
on the same test split, its accuracy is not below the served version's by more than the
tolerance. The verdict is part of the version's ``meta.json`` (``promotion``), so the app,
MLflow and a person reading the store see why a version is served or only a candidate.
``latest.json`` says who moved it there (``promoted_by``): the gate, a person
(``python -m trainer promote``) or nobody in particular (gate off, and every store written
before the gate existed).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any

from trainer.contract.errors import ConfigError
from trainer.contract.validate import is_number, known_fields, require

PROMOTED, CANDIDATE = "promoted", "candidate"
DECISIONS = (PROMOTED, CANDIDATE)
# Who moved latest.json: the gate (a verdict "promoted"), a person, or "" (gate off, older
# stores): readers treat "" as today's rule, the version published last.
BY_GATE, BY_PERSON = "gate", "person"
PROMOTERS = ("", BY_GATE, BY_PERSON)

GATE_ENV = "TRAINSTACK_PROMOTION_GATE"
"""``on`` (default) or ``off``: the gate decides whether a new version is served."""
TOLERANCE_ENV = "TRAINSTACK_PROMOTION_TOLERANCE"
"""Percentage points a new version may fall below the served one and still be promoted."""
DEFAULT_TOLERANCE = 1.0
# Accuracies are counts over a split: a difference this small is rounding, not a change.
EPSILON = 1e-9


def passes(candidate_acc: float, current_acc: float, tolerance_pp: float) -> bool:
    """The gate's one rule: not worse than the served version by more than the tolerance."""
    return candidate_acc * 100.0 >= current_acc * 100.0 - tolerance_pp - EPSILON


@dataclass(frozen=True)
class Promotion:
    """``meta.json`` ``promotion``: the gate's verdict on a version at its publication."""

    decision: str
    """'promoted' (latest.json moves to it) or 'candidate' (published, not served)."""
    reason: str
    """One line a person reads: both accuracies and the tolerance, or why nothing was compared."""
    against: str = ""
    """The version latest.json named when the gate decided ('' for a model's first version)."""
    candidate_acc: float | None = None
    current_acc: float | None = None
    """Both on the same test split, ``split``."""
    split: str = ""
    """The data fingerprint of the test split both accuracies were measured on."""
    reevaluated: bool = False
    """The served version was evaluated again on this split (the dataset changed since it
    was trained), rather than its own meta.json's accuracy used."""
    tolerance: float = DEFAULT_TOLERANCE

    def __post_init__(self) -> None:
        require(self.decision in DECISIONS, "promotion decision", " or ".join(DECISIONS),
                self.decision)
        for name in ("reason", "against", "split"):
            require(isinstance(getattr(self, name), str), f"promotion {name}", "a string",
                    getattr(self, name))
        for name in ("candidate_acc", "current_acc"):
            value = getattr(self, name)
            require(value is None or (is_number(value) and 0 <= value <= 1),
                    f"promotion {name}", "null or a number from 0 to 1", value)
        require(isinstance(self.reevaluated, bool), "promotion reevaluated", "true or false",
                self.reevaluated)
        require(is_number(self.tolerance) and self.tolerance >= 0, "promotion tolerance",
                "a number >= 0", self.tolerance)

    @property
    def promoted(self) -> bool:
        return self.decision == PROMOTED

    @classmethod
    def from_dict(cls, values: Any) -> Promotion:
        return cls(**known_fields(cls, values, "meta.json promotion"))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class GateSettings:
    """Whether the gate decides, and its tolerance; read from the environment the stack
    sets (``promotionGate``, ``promotionTolerance``), else the defaults: on, 1 point."""

    enabled: bool = True
    tolerance: float = DEFAULT_TOLERANCE

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> GateSettings:
        env = os.environ if environ is None else environ
        raw_gate = env.get(GATE_ENV, "on").strip().lower() or "on"
        if raw_gate not in ("on", "off"):
            raise ConfigError(f"{GATE_ENV}: {raw_gate!r} is not allowed; use on or off",
                              key=GATE_ENV)
        raw_tolerance = env.get(TOLERANCE_ENV, "").strip()
        tolerance = DEFAULT_TOLERANCE
        if raw_tolerance:
            try:
                tolerance = float(raw_tolerance)
            except ValueError:
                tolerance = -1.0
            if not 0 <= tolerance <= 100:
                raise ConfigError(f"{TOLERANCE_ENV}: {raw_tolerance!r} is not allowed; use a "
                                  "number of percentage points from 0 to 100", key=TOLERANCE_ENV)
        return cls(enabled=raw_gate == "on", tolerance=tolerance)


def describe(promotion: Promotion | None) -> str:
    """The verdict as one line for logs and the app ('' for a version without one)."""
    if promotion is None:
        return ""
    return f"{promotion.decision}: {promotion.reason}"


def promotion_json(promotion: Promotion) -> str:
    return json.dumps(promotion.to_dict(), sort_keys=True)
