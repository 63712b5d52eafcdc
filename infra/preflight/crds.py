"""Before `pulumi up` registers anything: does the cluster know the kinds the config asks
for? `monitoring: prometheus-operator` declares a ServiceMonitor and a PrometheusRule; on a
cluster without the Prometheus Operator's CRDs the provider would fail half-way, after
the workloads exist. `queue` needs Kueue: without it a suspended job would wait forever.
One line instead, naming the key and what to do.
"""

from __future__ import annotations

import pulumi

from infra.config.cluster import ClusterAccess
from infra.config.errors import StackConfigError
from infra.config.stack_config import StackConfig
from infra.preflight.cluster import TIMEOUT_S, UNANSWERED, connect, reason

PROMETHEUS_CRDS = ("servicemonitors.monitoring.coreos.com",
                   "prometheusrules.monitoring.coreos.com")
KUEUE_CRDS = tuple(f"{kind}.kueue.x-k8s.io" for kind in (
    "resourceflavors", "clusterqueues", "localqueues", "workloads"))
WHAT_TO_DO = {
    "monitoring": "install the Prometheus Operator (e.g. the kube-prometheus-stack Helm "
                  "chart) first, or set monitoring none",
    "queue": "install Kueue (v0.17 or later, with the training API in its "
             "integrations.frameworks) first, or unset queue",
}


def required_crds(cfg: StackConfig) -> dict[str, tuple[str, ...]]:
    """config key -> the CRDs it needs; none in render mode (another cluster applies)."""
    if cfg.render_yaml_to:
        return {}
    needed = {}
    if cfg.monitors:
        needed["monitoring"] = PROMETHEUS_CRDS
    if cfg.queue is not None:
        needed["queue"] = KUEUE_CRDS
    return needed


def check_crds(cfg: StackConfig, access: ClusterAccess) -> None:
    """Raise StackConfigError naming the key whose CRDs the cluster lacks; return when it
    has them, or when it cannot be asked."""
    needed = required_crds(cfg)
    if not needed:
        return
    from kubernetes import client

    api = connect(access, "CRD check")
    if api is None:
        return
    with api:
        extensions = client.ApiextensionsV1Api(api)
        for key, names in needed.items():
            missing = []
            for name in names:
                try:
                    extensions.read_custom_resource_definition(name, _request_timeout=TIMEOUT_S)
                except UNANSWERED as exc:
                    if getattr(exc, "status", None) != 404:
                        pulumi.log.info(f"the CRDs of {key} were not checked ({reason(exc)})")
                        return
                    missing.append(name)
            if missing:
                raise StackConfigError(
                    f"invalid config trainstack:{key} = '{getattr(cfg, key)}': the cluster has "
                    f"no {' or '.join(missing)}: {WHAT_TO_DO[key]}", key=key)
