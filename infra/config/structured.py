"""Parsers of the JSON-valued `trainstack:` keys: label maps (nodeSelector, monitoringLabels)
and tolerations, checked with the API server's own rules (infra/config/labels.py), and
the quota of Kueue's queue (queueQuota)."""

from __future__ import annotations

import json
import re
from typing import Any

from infra.config.labels import (
    LABEL_KEY_RULE,
    LABEL_VALUE_RULE,
    is_label_key,
    is_label_value,
    toleration_problem,
)
from infra.config.quantities import canonical
from infra.config.values import BYTES, CPU, Parser, allows, invalid

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


QUOTA_EXAMPLE = '{"cpu": "16", "memory": "64Gi", "gpus": 4}'


@allows(f"a JSON object such as {QUOTA_EXAMPLE}: cpu a CPU quantity > 0, memory a memory "
        "quantity > 0 (both as Kubernetes writes them), gpus an integer >= 0 (optional)")
def queue_quota(key: str, raw: Any) -> dict[str, Any]:
    """The quota of the ClusterQueue the stack declares: {"cpu", "memory", "gpus"}, the
    quantities in the API server's canonical form."""
    allowed = queue_quota.allowed
    value = _json(key, raw, allowed)
    if not isinstance(value, dict):
        raise invalid(key, allowed, raw)
    unknown = sorted(set(value) - {"cpu", "memory", "gpus"})
    missing = [name for name in ("cpu", "memory") if name not in value]
    cpu, memory, gpus = str(value.get("cpu")), str(value.get("memory")), value.get("gpus", 0)
    problem = (f"{unknown[0]!r} is not one of cpu, memory, gpus" if unknown
               else f"{missing[0]} is missing" if missing
               else f"cpu {cpu!r} is not one" if not (CPU.fullmatch(cpu) and _number(cpu) > 0)
               else f"memory {memory!r} is not one" if not (BYTES.fullmatch(memory)
                                                            and _number(memory) > 0)
               else f"gpus {gpus!r} is not one" if isinstance(gpus, bool)
               or not isinstance(gpus, int) or gpus < 0 else None)
    if problem:
        raise invalid(key, f"{allowed} (here {problem})", raw)
    return {"cpu": canonical(cpu), "memory": canonical(memory), "gpus": gpus}


def _number(text: str) -> float:
    return float(re.match(r"[\d.]+", text).group())
