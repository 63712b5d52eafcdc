"""`monitoring` under Pulumi's mocks: what prometheus-operator adds (and none does not), the
ServiceMonitor pointing at the app's Service and its token, the thresholds in the rules,
the dashboard ConfigMap for Grafana's sidecar, and the config's errors."""

from __future__ import annotations

import json

import pytest

from infra.config.keys import ConfigError, parse_config
from tests.infra.infra_helpers import PUSHED, pod_specs
from tests.infra.render import render

TOKEN = "monitoring-token-0123456789abcdef0123"
MONITORED = {**PUSHED, "monitoring": "prometheus-operator"}
KINDS = ("ServiceMonitor/", "PrometheusRule/", "ConfigMap/trainstack-dashboard")


def test_none_adds_nothing_and_prometheus_operator_adds_three_objects():
    plain = render(PUSHED)
    assert not [k for k in plain.objects if k.startswith(KINDS)]
    monitored = render(MONITORED)
    added = set(monitored.objects) - set(plain.objects)
    assert added == {"ServiceMonitor/inference", "PrometheusRule/trainstack",
                     "ConfigMap/trainstack-dashboard"}
    assert "monitor --model resnet18-cifar10" in plain.exports["driftCheck"]


def test_the_service_monitor_scrapes_the_apps_service_with_its_token():
    rendering = render({**MONITORED, "inferenceAuthToken": TOKEN,
                        "monitoringLabels": '{"release": "kube-prometheus"}'})
    monitor = rendering.objects["ServiceMonitor/inference"]
    service = rendering.objects["Service/inference"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    env = pod_specs(rendering)["Deployment/inference"]["containers"][0]["env"]
    token_ref = next(e["valueFrom"]["secretKeyRef"] for e in env
                     if e["name"] == "TRAINSTACK_AUTH_TOKEN")
    assert endpoint["authorization"]["credentials"] == {"name": token_ref["name"],
                                                        "key": token_ref["key"]}
    assert TOKEN not in json.dumps(monitor)
    for key in ("ServiceMonitor/inference", "PrometheusRule/trainstack"):
        assert rendering.objects[key]["metadata"]["labels"]["release"] == "kube-prometheus"


def test_the_thresholds_are_the_configs():
    rule = render({**MONITORED, "driftAlertWindows": "5", "accuracyDropAlert": "7.5"}
                  ).objects["PrometheusRule/trainstack"]
    alerts = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    assert alerts["TrainstackDrift"]["expr"].endswith(">= 5")
    assert alerts["TrainstackAccuracyBelowTest"]["expr"].endswith("> 0.075")
    assert 'namespace="trainstack"' in alerts["TrainstackErrors"]["expr"]
    defaults = render(MONITORED).objects["PrometheusRule/trainstack"]
    drift = next(r for r in defaults["spec"]["groups"][0]["rules"]
                 if r["alert"] == "TrainstackDrift")
    assert drift["expr"].endswith(">= 3")


def test_the_dashboard_is_a_grafana_sidecar_configmap():
    dashboard = render(MONITORED).objects["ConfigMap/trainstack-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    model = json.loads(dashboard["data"]["trainstack.json"])
    assert model["uid"] == "trainstack-trainstack"
    titles = [p["title"] for p in model["panels"]]
    assert "Estimated vs test accuracy" in titles and "5xx ratio" in titles
    assert len({p["id"] for p in model["panels"]}) == len(model["panels"])


@pytest.mark.parametrize("config, key, allowed", [
    ({"monitoring": "grafana"}, "monitoring", "none, or prometheus-operator"),
    ({"monitoringNamespace": "prom"}, "monitoringNamespace", "unset when monitoring is none"),
    ({"driftAlertWindows": "3"}, "driftAlertWindows", "unset when monitoring is none"),
    ({"monitoring": "prometheus-operator", "accuracyDropAlert": "150"}, "accuracyDropAlert",
     "percentage points from 0 to 100"),
    ({"monitoring": "prometheus-operator", "monitoringLabels": '{"bad key!": "x"}'},
     "monitoringLabels", "label keys only"),
])
def test_bad_monitoring_config_is_one_line_naming_the_key(config, key, allowed):
    with pytest.raises(ConfigError) as refused:
        parse_config({**PUSHED, **config})
    assert refused.value.key == key and allowed in str(refused.value)
