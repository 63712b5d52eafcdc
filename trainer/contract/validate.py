"""Validation helpers of the contract records: construction validates, so an object
that exists is valid; a reader ignores keys it does not know, so an older app keeps
reading what a newer trainer wrote with extra fields. Stdlib only."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from trainer.contract.errors import MetaError


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def require(ok: bool, where: str, expected: str, got: Any) -> None:
    if not ok:
        raise MetaError(f"{where} must be {expected}, got {got!r:.200}")


def known_fields(cls, values: Any, where: str) -> dict[str, Any]:
    """The keys of ``values`` that are fields of ``cls``; every required field present."""
    require(isinstance(values, dict), where, "a JSON object", type(values).__name__)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    required = [n for n, f in fields.items() if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    missing = [n for n in required if n not in values]
    if missing:
        raise MetaError(f"{where} lacks {', '.join(missing)}")
    return {k: v for k, v in values.items() if k in fields}


def loads(data: bytes | str, where: str) -> Any:
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MetaError(f"{where} is not valid JSON: {e}") from None


def record_from_json(cls, data: bytes | str, where: str):
    """Parse and validate one of the small trainer-written JSON records below."""
    try:
        return cls(**known_fields(cls, loads(data, where), where))
    except TypeError as e:
        raise MetaError(f"{where}: {e}") from None
