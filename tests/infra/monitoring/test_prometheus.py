"""The stack's alerts and dashboard against a real Prometheus scraping a real app: the
rules pass promtool, every dashboard query and every alert's signal returns series, the
drift alert stays silent on in-distribution traffic and fires on a shift."""

from __future__ import annotations

import yaml

from infra.monitoring import dashboard
from infra.monitoring.queries import Queries
from infra.monitoring.rules import alerts, rule_spec
from tests.inference.inference_helpers import V1, serve_app, wait_for_version
from tests.inference.modelkit import colour_images, publish_version
from tests.inference.monitoring.test_monitoring_app import send
from tests.prometheus_server import check_rules, prometheus

NAMESPACE = "trainstack-mon"
WINDOW = 32
DRIFT = 'ALERTS{alertname="TrainstackDrift",alertstate="firing"}'


def rules(drift_windows: int = 2) -> dict:
    return rule_spec(alerts(Queries(NAMESPACE), drift_windows, 0.1), NAMESPACE)


def test_promtool_accepts_the_rules(tmp_path):
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules(3)))
    done = check_rules(path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 6 rules found" in done.stdout


def test_prometheus_scrapes_the_app_and_the_drift_alert_fires_only_on_a_shift(local_store,
                                                                              tmp_path):
    publish_version(local_store, V1, reference=True)
    with serve_app(local_store.url, tmp_path / "cache", monitor_window=WINDOW) as (base, app):
        wait_for_version(base, V1)
        target = base.removeprefix("http://")
        with prometheus(tmp_path / "prom", target, {"namespace": NAMESPACE},
                        rules()) as prom:
            send(base, colour_images(3 * WINDOW, seed=61)[0])
            assert app.state.monitor.recorder.flush()
            q = Queries(NAMESPACE)
            prom.wait_for_series(q.drift_detected())
            signals = [a.signal for a in alerts(q, 2, 0.1)]
            for expr in [*dashboard.expressions(dashboard.build(NAMESPACE)), *signals]:
                prom.wait_for_series(expr)
            assert prom.query(q.drift_in_a_row())[0]["value"][1] == "0"
            prom.evaluations_since(3)
            assert prom.query(DRIFT) == []
            send(base, colour_images(2 * WINDOW, seed=62, brightness=0.45)[0])
            assert app.state.monitor.recorder.flush()
            firing = prom.wait_for_series(DRIFT)
            assert firing[0]["metric"]["version"] == V1
            assert firing[0]["metric"]["severity"] == "warning"


def test_the_fences_let_prometheus_scrape_and_nobody_else(local_store, tmp_path):
    """Prometheus really scrapes the app's http port (its `up` is 1); from the Prometheus
    namespace that connection is allowed by the rendered NetworkPolicies, in both policy
    modes; from another namespace, or without `monitoring`, it is denied."""
    from tests.e2e.netpol import Connection, Endpoint, Policies
    from tests.e2e.traffic import network_policies
    from tests.infra.infra_helpers import PUSHED, pod_specs
    from tests.infra.render import render

    publish_version(local_store, V1)
    with (serve_app(local_store.url, tmp_path / "cache") as (base, _),
          prometheus(tmp_path / "prom", base.removeprefix("http://"),
                     {"namespace": NAMESPACE}) as prom):
        assert prom.wait_for_series('up{job="trainstack"} == 1')
    fenced = {**PUSHED, "inferenceIngressNamespace": "ingress-nginx",
              "inferenceServiceType": "ClusterIP"}
    scraper = Endpoint("prometheus-0", "10.244.9.1", "monitoring",
                       {"app.kubernetes.io/name": "prometheus"})
    stranger = Endpoint("curl", "10.244.9.2", "elsewhere", {"app": "curl"})
    for mode in ("ingress", "ingress-egress"):
        for monitoring, allowed in (("prometheus-operator", True), ("none", False)):
            config = {**fenced, "networkPolicy": mode, "monitoring": monitoring}
            objects = render(config).objects
            spec = pod_specs(render(config))["Deployment/inference"]
            template = objects["Deployment/inference"]["spec"]["template"]
            app = Endpoint.of_pod({"metadata": {**template["metadata"], "name": "inference-0",
                                                "namespace": "trainstack"}, "spec": spec},
                                  "10.244.0.5")
            policies = Policies(network_policies(objects), ["trainstack", "monitoring",
                                                            "elsewhere", "ingress-nginx"])
            port = app.ports["http"][0]
            assert policies.allowed(Connection(scraper, app, port)) is allowed, (mode, monitoring)
            assert not policies.allowed(Connection(stranger, app, port)), mode
