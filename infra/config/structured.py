"""Parsers of the JSON-valued `trainstack:` keys: label maps (nodeSelector, monitoringLabels)
and tolerations, checked with the API server's own rules (infra/config/labels.py)."""

from __future__ import annotations

import json
from typing import Any

from infra.config.labels import (
    LABEL_KEY_RULE,
    LABEL_VALUE_RULE,
    is_label_key,
    is_label_value,
    toleration_problem,
)
from infra.config.values import Parser, allows, invalid

TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}
TOLERATION_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def _json(key: str, raw: Any, allowed: str) -> Any:
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise invalid(key, allowed, raw) from None


def label_map(example: str) -> Parser:
    """A JSON object of label keys to label values, as the API server accepts them."""
    @allows(f"a JSON object of label strings, e.g. {example}")
    def parse(key: str, raw: Any) -> dict[str, str]:
        value = _json(key, raw, parse.allowed)
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise invalid(key, parse.allowed, raw)
        for label, label_value in value.items():
            if not is_label_key(label):
                raise invalid(key, f"label keys only: {label!r} is not one ({LABEL_KEY_RULE})",
                              raw)
            if not is_label_value(label_value):
                raise invalid(key, f"label values only: {label_value!r} (for {label!r}) is "
                                   f"not one ({LABEL_VALUE_RULE})", raw)
        return value

    return parse


node_selector = label_map('{"nvidia.com/gpu.present": "true"}')


@allows("a JSON list of tolerations with keys key/operator/value/effect/tolerationSeconds, "
        f"operator Exists|Equal, effect {'|'.join(TOLERATION_EFFECTS)}")
def tolerations(key: str, raw: Any) -> list[dict[str, Any]]:
    allowed = tolerations.allowed
    value = _json(key, raw, allowed)
    if not isinstance(value, list):
        raise invalid(key, allowed, raw)
    for item in value:
        if (
            not isinstance(item, dict)
            or not set(item) <= TOLERATION_KEYS
            or item.get("operator", "Equal") not in ("Exists", "Equal")
            or item.get("effect", "NoSchedule") not in TOLERATION_EFFECTS
        ):
            raise invalid(key, allowed, raw)
        problem = toleration_problem(item)
        if problem:
            raise invalid(key, f"{allowed}; {problem}", raw)
    return value
