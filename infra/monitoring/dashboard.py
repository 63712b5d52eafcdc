"""The stack's Grafana dashboard, written as code with Grafana's own SDK
(grafana-foundation-sdk), never as hand-written JSON.

Two rows: the served model (drift verdict, checks with drift in a row, estimated vs test
accuracy, each test's adjusted p-value, calibrated confidence) and the app (answers per
second by status, 5xx ratio, latency, model loaded, training failed). The JSON goes into a
ConfigMap labelled `grafana_dashboard: "1"` (the kube-prometheus-stack sidecar's
convention), so Grafana picks it up without an import.
"""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import GridPos

from infra.monitoring.queries import Queries

UID_PREFIX = "trainstack-"
WIDTH = 24


def _target(expr: str, legend: str = "") -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr)
    return query.legend_format(legend) if legend else query


def _series(title: str, unit: str, *targets: prometheus.Dataquery) -> timeseries.Panel:
    panel = timeseries.Panel().title(title).unit(unit)
    for target in targets:
        panel = panel.with_target(target)
    return panel


def panels(q: Queries) -> list[tuple[str, Any]]:
    """(row title, panel builder), in reading order."""
    model = "Served model (no labels needed)"
    app = "The app"
    return [
        (model, stat.Panel().title("Drift in the last check").with_target(
            _target(q.drift_detected(), "{{model}} {{version}}"))),
        (model, _series("Checks in a row with drift", "short",
                        _target(q.drift_in_a_row(), "{{model}} {{version}}"))),
        (model, _series("Estimated vs test accuracy", "percentunit",
                        _target(q.estimated_accuracy(), "estimated {{version}}"),
                        _target(q.test_accuracy(), "test {{version}}"))),
        (model, _series("Adjusted p-value per test", "short",
                        _target(q.p_values(), "{{feature}}"))),
        (model, _series("Calibrated confidence (predictions/s per bucket)", "reqps",
                        _target(q.confidence(), "<= {{le}}"))),
        (app, _series("Answers per second by status", "reqps",
                      _target(q.requests(), "{{status}}"))),
        (app, _series("5xx ratio", "percentunit", _target(q.error_ratio(), "5xx"))),
        (app, _series("POST /predict latency", "s", _target(q.latency(0.5), "p50"),
                      _target(q.latency(0.99), "p99"))),
        (app, stat.Panel().title("Model loaded").with_target(_target(q.model_loaded()))),
        (app, stat.Panel().title("Training failed").with_target(
            _target(q.training_failed(), "{{model}}"))),
        (app, _series("Monitoring drops per second", "short",
                      _target(q.dropped(), "{{what}}"))),
    ]


def build(namespace: str) -> dict[str, Any]:
    """The dashboard model (Grafana's JSON) of the stack in ``namespace``."""
    board = (dashboard.Dashboard(f"trainstack ({namespace})").uid(f"{UID_PREFIX}{namespace}")
             .tags(["trainstack"]).refresh("30s").time("now-6h", "now"))
    y, row = 0, None
    for index, (title, panel) in enumerate(panels(Queries(namespace))):
        if title != row:
            board = board.with_row(dashboard.Row(title).id(100 + index)
                                   .grid_pos(GridPos(h=1, w=WIDTH, y=y)))
            row, y, x = title, y + 1, 0
        width = 6 if isinstance(panel, stat.Panel) else 12
        if x + width > WIDTH:
            x, y = 0, y + 8
        board = board.with_panel(panel.id(index + 1).grid_pos(GridPos(h=8, w=width, x=x, y=y)))
        x += width
    return json.loads(JSONEncoder(sort_keys=True).encode(board.build()))


def expressions(model: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a dashboard model (for checking them)."""
    return [target["expr"] for panel in model.get("panels", [])
            for target in panel.get("targets", []) if "expr" in target]
