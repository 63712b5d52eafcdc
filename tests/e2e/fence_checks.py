"""The rendered NetworkPolicies against the recorded traffic (tests/e2e/traffic.py).

For each policy mode the stack offers (the workloads render identically in both):
every policy selects a pod, every recorded connection is allowed, the flows nobody needs
are denied. Then the proof is broken on purpose (a rule removed, a pod mislabelled) and
must notice.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import replace
from typing import Any

from infra.workloads.jobparts import progress
from tests.e2e.cluster import LocalCluster
from tests.e2e.netpol import Connection, Endpoint, Policies
from tests.e2e.traffic import USER, Traffic, denied, idle, network_policies
from tests.infra.render import render
from trainer.contract.reporting.job_status import API_CREDENTIALS_ENV, PROGRESS_JOB_ENV

log = logging.getLogger(__name__)
MODES = ("ingress", "ingress-egress")
ELSEWHERE = "elsewhere"  # another namespace of the same cluster
NAME = "app.kubernetes.io/name"


def renderings(config: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The objects of `config` in each policy mode; only the NetworkPolicies may differ, and
    the PyTorchJob's progress credentials, which ingress-egress leaves out (a NetworkPolicy
    cannot name the API server: infra/workloads/jobparts/progress.py). Pods and labels,
    what the traffic is checked by, are the same."""
    by_mode = {mode: render({**config, "networkPolicy": mode}).objects for mode in MODES}
    workloads = [{k: without_progress(v) for k, v in objects.items()
                  if not k.startswith("NetworkPolicy/")
                  and v["metadata"]["name"] != progress.ROLE}
                 for objects in by_mode.values()]
    assert all(w == workloads[0] for w in workloads), "the workloads differ between modes"
    return by_mode


PROGRESS_ENV = {progress.JOB_NAME_ENV, PROGRESS_JOB_ENV, API_CREDENTIALS_ENV}


def without_progress(value: Any) -> Any:
    """`value` without the progress env, volume and mount (anywhere in it)."""
    if isinstance(value, list):
        return [without_progress(v) for v in value
                if not (isinstance(v, dict) and (v.get("name") in PROGRESS_ENV
                                                 or v.get("name") == progress.CREDENTIALS_VOLUME))]
    if isinstance(value, dict):
        return {k: without_progress(v) for k, v in value.items()}
    return value


def policies(objects: dict[str, Any]) -> Policies:
    namespace = objects["Namespace/trainstack"]["metadata"]["name"]
    return Policies(network_policies(objects), [namespace, "kube-system", ELSEWHERE])


def pods(cluster: LocalCluster) -> dict[str, Endpoint]:
    """Every pod the rendered objects make (not only those the test ran)."""
    return {p["metadata"]["name"]: Endpoint.of_pod(p, f"10.244.2.{i + 1}")
            for i, p in enumerate(cluster.rendered_pods())}


def unwanted(cluster: LocalCluster, traffic: Traffic, mlflow_login: bool = False
             ) -> list[Connection]:
    """Connections no workload needs, which the fences must deny. Users reach MLflow
    only behind its login (`mlflowAccess login`); by default only the stack's pods do."""
    everyone = pods(cluster)
    by_name = {e.labels.get(NAME): [] for e in everyone.values()}
    for e in everyone.values():
        by_name[e.labels.get(NAME)].append(e)
    app, store = by_name["inference"][0], (by_name.get("minio") or [None])[0]
    trainers, jobs = by_name["trainer"], by_name["trainstack-buckets"]
    # Every port training pods were seen using between them (rendezvous + Gloo's own).
    ports = {c.port for c in traffic.connections
             if c.source.labels.get(NAME) == c.dest.labels.get(NAME) == "trainer"}
    ports |= {t.ports["pytorchjob-port"][0] for t in trainers}
    flows = [Connection(app, t, port) for t in trainers for port in sorted(ports)]
    flows += [Connection(t, app, app.ports["http"][0]) for t in trainers]
    # A pod someone else runs in the namespace: users come from outside it.
    stranger = Endpoint("an unrelated pod of the namespace", "10.244.3.2", app.namespace)
    flows += [Connection(stranger, app, app.ports["http"][0])]
    flows += [Connection(stranger, t, t.ports["pytorchjob-port"][0]) for t in trainers]
    flows += [Connection(jobs[0], t, t.ports["pytorchjob-port"][0]) for t in trainers]
    # A pod of another namespace, even one labelled like a trainstack workload.
    spoof = Endpoint("a pod of another namespace", "10.244.3.1", ELSEWHERE,
                     dict(trainers[0].labels))
    flows += [Connection(spoof, t, t.ports["pytorchjob-port"][0]) for t in trainers]
    if store is not None:
        api = store.ports["api"][0]
        flows += [Connection(spoof, store, api), Connection(USER, store, api),
                  Connection(replace(spoof, labels={NAME: "other"}), store, api)]
    for tracking in by_name.get("mlflow", []):
        http = tracking.ports["http"][0]
        flows += [Connection(stranger, tracking, http), Connection(jobs[0], tracking, http)]
        flows += [Connection(tracking, t, t.ports["pytorchjob-port"][0]) for t in trainers]
        flows += [Connection(tracking, app, app.ports["http"][0])]
        if not mlflow_login:
            flows += [Connection(USER, tracking, http),
                      Connection(replace(spoof, labels={NAME: "ingress-nginx"}), tracking, http)]
    return flows


def assert_fenced(cluster: LocalCluster, traffic: Traffic, config: dict[str, str],
                  expected: list[tuple[str, str, int]]) -> dict[str, Policies]:
    """`expected`: (source pod, destination pod, port) that must have been recorded."""
    seen = {(c.source.name, c.dest.name, c.port) for c in traffic.connections}
    log.info("recorded connections:\n%s", "\n".join(map(str, traffic.connections)))
    missing = [flow for flow in expected if flow not in seen]
    assert not missing, f"expected connections not recorded: {missing}\nseen: {sorted(seen)}"
    checked = {}
    for mode, objects in renderings(config).items():
        fences = policies(objects)
        unselecting = idle(fences, pods(cluster).values())
        assert not unselecting, f"{mode}: policies that select no pod: {unselecting}"
        blocked = denied(fences, traffic.connections)
        assert not blocked, f"{mode}: recorded connections the policies deny: {blocked}"
        login = config.get("mlflowAccess") == "login"
        allowed = [str(c) for c in unwanted(cluster, traffic, login) if fences.allowed(c)]
        assert allowed == [], f"{mode}: flows nobody needs are allowed: {allowed}"
        checked[mode] = fences
    return checked


def without_ingress(fences: Policies, policy: str) -> Policies:
    changed = copy.deepcopy(fences.policies)
    (target,) = [p for p in changed if p["metadata"]["name"] == policy]
    target["spec"]["ingress"] = []
    return Policies(changed, fences.namespaces)


def mislabelled(traffic: Traffic, pod: str) -> list[Connection]:
    wrong = lambda e: replace(e, labels={**e.labels, NAME: "mislabelled"}) if e.name == pod else e
    return [replace(c, source=wrong(c.source), dest=wrong(c.dest)) for c in traffic.connections]


def assert_breaks_are_caught(cluster: LocalCluster, traffic: Traffic, fences: Policies,
                             store_pod: str | None) -> None:
    """The proof can fail: each break of the fences shows up as denied traffic or a policy
    that selects no pod."""
    master = next(n for n in traffic.endpoints if n.endswith("-master-0"))
    assert denied(without_ingress(fences, "trainer"), traffic.connections), "trainer rule"
    assert denied(fences, mislabelled(traffic, master)), "mislabelled Master"
    if any(c.dest.labels.get(NAME) == "mlflow" for c in traffic.connections):
        assert denied(without_ingress(fences, "mlflow"), traffic.connections), "MLflow rule"
    if store_pod is None:
        return
    assert denied(without_ingress(fences, "minio"), traffic.connections), "store rule"
    client = next(c.source.name for c in traffic.connections
                  if c.dest.name == store_pod and c.source.name != master)
    assert denied(fences, mislabelled(traffic, client)), f"mislabelled {client}"
    everyone = [replace(e, labels={**e.labels, NAME: "mislabelled"}) if e.name == store_pod
                else e for e in pods(cluster).values()]
    assert idle(fences, everyone) == ["minio"], "mislabelled MinIO"
