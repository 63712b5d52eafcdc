"""Monitoring (config `monitoring: prometheus-operator`): a ServiceMonitor for the app's
/metrics, a PrometheusRule with the alerts, and the Grafana dashboard as a ConfigMap.

The ServiceMonitor and PrometheusRule are the Prometheus Operator's custom resources (no
typed pulumi-kubernetes classes exist for them: their specs are built here and checked by
the tests against the CRDs of the operator's release, on a real API server). With an access
token the scrape sends it as a bearer token, read by the operator from the app's Secret.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from infra.monitoring import dashboard
from infra.monitoring.queries import Queries
from infra.monitoring.rules import alerts, rule_spec
from infra.workloads.catalog import APP
from trainer.contract.layout import AUTH_TOKEN_ENV

API_VERSION = "monitoring.coreos.com/v1"
DASHBOARD_LABEL = {"grafana_dashboard": "1"}  # kube-prometheus-stack's Grafana sidecar
SCRAPE_INTERVAL = "30s"


@dataclass
class MonitoringArgs:
    namespace: str
    """The stack's namespace (a plain name: the queries select it)."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """Added to the ServiceMonitor and PrometheusRule, for the Prometheus's selectors
    (kube-prometheus-stack: release=<its release name>)."""
    drift_windows: int = 3
    accuracy_drop: float = 0.1
    auth_secret: pulumi.Input[str] | None = None
    """The Secret holding the app's token (key TRAINSTACK_AUTH_TOKEN), when it has one."""
    depends_on: Sequence[pulumi.Resource] = field(default_factory=list)


def service_monitor_spec(auth_secret: str | None) -> dict:
    endpoint = {"port": "http", "path": "/metrics", "interval": SCRAPE_INTERVAL,
                "scheme": "http"}
    if auth_secret is not None:
        endpoint["authorization"] = {"type": "Bearer", "credentials": {
            "name": auth_secret, "key": AUTH_TOKEN_ENV}}
    return {"selector": {"matchLabels": APP.labels}, "endpoints": [endpoint]}


class Monitoring(pulumi.ComponentResource):
    def __init__(self, name: str, args: MonitoringArgs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("trainstack:index:Monitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on))
        labels = {**APP.labels, **args.labels}
        auth = (pulumi.Output.from_input(args.auth_secret) if args.auth_secret is not None
                else pulumi.Output.from_input(None))
        self.service_monitor = k8s.apiextensions.CustomResource(
            "service-monitor", api_version=API_VERSION, kind="ServiceMonitor",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=APP.name, namespace=args.namespace,
                                                labels=labels),
            spec=auth.apply(service_monitor_spec), opts=child)
        rules = alerts(Queries(args.namespace), args.drift_windows, args.accuracy_drop)
        self.rule = k8s.apiextensions.CustomResource(
            "prometheus-rule", api_version=API_VERSION, kind="PrometheusRule",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="trainstack", namespace=args.namespace,
                                                labels=labels),
            spec=rule_spec(rules, args.namespace), opts=child)
        self.dashboard = k8s.core.v1.ConfigMap(
            "dashboard",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="trainstack-dashboard",
                                                namespace=args.namespace,
                                                labels={**APP.labels, **DASHBOARD_LABEL}),
            data={"trainstack.json": json.dumps(dashboard.build(args.namespace),
                                                sort_keys=True)},
            opts=child)
        self.register_outputs({})
