"""`monitoring: prometheus-operator` on the real API server, with the Prometheus Operator's
CRDs of its pinned release (tools/controlplane/components.txt): the stack stops with one
line while the cluster lacks them, and once they are there the ServiceMonitor, the
PrometheusRule and the dashboard ConfigMap the stack renders are accepted (server-side
apply, validated against the CRDs' schemas)."""

from __future__ import annotations

import pytest
import yaml

from infra.config.cluster import ClusterAccess
from infra.config.errors import StackConfigError
from infra.config.keys import parse_config
from infra.preflight.crds import PROMETHEUS_CRDS, check_crds
from tests.cluster.components import component_root
from tests.infra.infra_helpers import PUSHED
from tests.infra.render import render

NAMESPACE = "ts-monitoring"
CONFIG = {**PUSHED, "namespace": NAMESPACE, "monitoring": "prometheus-operator",
          "monitoringLabels": '{"release": "kube-prometheus"}',
          "inferenceAuthToken": "monitoring-token-0123456789abcdef0123"}


def crds() -> list[dict]:
    folder = component_root("prometheus-operator") / "prometheus-operator-crd"
    return [yaml.safe_load((folder / f"monitoring.coreos.com_{name.split('.')[0]}.yaml")
                           .read_text()) for name in PROMETHEUS_CRDS]


def test_monitoring_needs_the_operators_crds_and_its_objects_are_accepted(control_plane):
    access = ClusterAccess(kubeconfig=str(control_plane.kubeconfig))
    cfg = parse_config({k: v for k, v in CONFIG.items() if k != "inferenceAuthToken"},
                       frozenset({"inferenceAuthToken"}))
    with pytest.raises(StackConfigError) as stopped:
        check_crds(cfg, access)
    assert stopped.value.key == "monitoring"
    assert "servicemonitors.monitoring.coreos.com" in str(stopped.value)
    control_plane.apply(crds())
    try:
        for name in PROMETHEUS_CRDS:
            control_plane.kubectl("wait", "--for=condition=Established", f"crd/{name}",
                                  "--timeout=60s")
        check_crds(cfg, access)  # passes now
        objects = render(CONFIG).objects
        wanted = [objects[k] for k in ("ServiceMonitor/inference", "PrometheusRule/trainstack",
                                       "ConfigMap/trainstack-dashboard")]
        control_plane.apply([{"apiVersion": "v1", "kind": "Namespace",
                              "metadata": {"name": NAMESPACE}}])
        done = control_plane.apply(wanted)
        assert "servicemonitor.monitoring.coreos.com/inference" in done.stdout
        assert "prometheusrule.monitoring.coreos.com/trainstack" in done.stdout
        monitor = control_plane.get("servicemonitor", "inference", "-n", NAMESPACE)
        endpoint = monitor["spec"]["endpoints"][0]
        assert endpoint["authorization"]["credentials"]["name"].startswith("inference-auth")
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
        bad = dict(objects["PrometheusRule/trainstack"])
        bad["spec"] = {"groups": [{"name": "x", "rules": [{"alert": "A"}]}]}  # no expr
        refused = control_plane.apply([bad], dry_run=True, check=False)
        assert refused.returncode != 0  # the CRD's schema is really checked
    finally:
        control_plane.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found",
                              "--wait=false")
        for name in PROMETHEUS_CRDS:
            control_plane.kubectl("delete", "crd", name, "--ignore-not-found")
