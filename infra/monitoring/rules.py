"""The alerts of `monitoring: prometheus-operator`, as a PrometheusRule's spec.

Each alert is a query of infra/monitoring/queries.py (its ``signal``, which returns series
whenever the app runs) and a condition on it; `promtool check rules` accepts the rendered
groups and a real Prometheus evaluates them in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infra.monitoring.queries import Queries

GROUP = "trainstack"


@dataclass(frozen=True)
class Alert:
    name: str
    signal: str
    condition: str
    duration: str
    severity: str
    summary: str

    @property
    def expr(self) -> str:
        return f"{self.signal} {self.condition}"


def alerts(queries: Queries, drift_windows: int, accuracy_drop: float,
           latency_p99_s: float = 2.5, error_ratio: float = 0.05) -> list[Alert]:
    """``drift_windows``: checks in a row with drift before the alert; ``accuracy_drop``:
    the estimated accuracy below the test accuracy by more than this (a fraction)."""
    return [
        Alert("TrainstackDrift", queries.drift_in_a_row(), f">= {drift_windows}", "0m",
              "warning", f"{{{{ $labels.model }}}} {{{{ $labels.version }}}}: drift in "
              f"{drift_windows}+ checks in a row: it is asked what it was not trained on"),
        Alert("TrainstackAccuracyBelowTest", queries.accuracy_gap(), f"> {accuracy_drop:g}",
              "15m", "warning", "{{ $labels.model }} {{ $labels.version }}: estimated "
              f"accuracy more than {accuracy_drop:.0%} below its test accuracy"),
        Alert("TrainstackErrors", queries.error_ratio(), f"> {error_ratio:g}", "10m",
              "critical", f"more than {error_ratio:.0%} of the app's answers are 5xx"),
        Alert("TrainstackSlowPredictions", queries.latency(0.99), f"> {latency_p99_s:g}",
              "10m", "warning", f"p99 of POST /predict above {latency_p99_s:g} s"),
        Alert("TrainstackNoModel", queries.model_loaded(), "== 0", "30m", "warning",
              "the app has served no model for 30 minutes (none published yet, or none "
              "loads)"),
        Alert("TrainstackTrainingFailed", queries.training_failed(), "> 0", "0m", "critical",
              "{{ $labels.model }}: the newest training run stopped with an error"),
    ]


def rule_spec(rules: list[Alert], namespace: str) -> dict[str, Any]:
    """``spec`` of the PrometheusRule (also a valid rule file for promtool)."""
    return {"groups": [{
        "name": GROUP,
        "rules": [{"alert": a.name, "expr": a.expr, "for": a.duration,
                   "labels": {"severity": a.severity, "namespace": namespace},
                   "annotations": {"summary": a.summary}} for a in rules],
    }]}
