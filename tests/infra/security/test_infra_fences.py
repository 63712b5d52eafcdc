"""Least privilege as rendered: the NetworkPolicies (one definition of the labels they
select), each workload's own ServiceAccount without a token, read-only root filesystems
with emptyDirs only where a process writes, and the app's optional access token."""

from __future__ import annotations

import json
import re

import pytest

from infra.config.keys import ConfigError
from infra.workloads.catalog import APP, BUCKETS, INGEST, STORE, TRACKING, TRAINER
from infra.workloads.pod import APP_UID, TMP, WRITABLE_ENV
from tests.e2e.netpol import Connection, Endpoint, Policies
from tests.infra.infra_helpers import (
    EXTERNAL,
    EXTERNAL_KEYS,
    PUSHED,
    RENDERED,
    env_of,
    pod_specs,
    pytorchjob,
    replica_pods,
    secret_ref,
    versioned,
    workload_specs,
)
from tests.infra.render import render

TOKEN = "0123456789abcdef0123456789abcdef"  # 32 characters, as `pulumi config set --secret`
EGRESS = {**PUSHED, "networkPolicy": "ingress-egress"}
INGRESS_NGINX = {**PUSHED, "inferenceServiceType": "ClusterIP",
                 "inferenceIngressNamespace": "ingress-nginx"}
NAME = "app.kubernetes.io/name"


def policies(rendering) -> dict[str, dict]:
    return {k.split("/", 1)[1]: o for k, o in rendering.objects.items()
            if k.startswith("NetworkPolicy/")}


def pods(rendering) -> list[Endpoint]:
    """Every pod the objects make, with its labels (the operator's for PyTorchJob pods)."""
    found = []
    for key, obj in rendering.objects.items():
        if obj["kind"] in ("Deployment", "Job"):
            template = obj["spec"]["template"]
            found.append({"metadata": {"name": key, "namespace": obj["metadata"]["namespace"],
                                       "labels": template["metadata"]["labels"]},
                          "spec": template["spec"]})
        elif obj["kind"] == "PyTorchJob":
            found += replica_pods(obj)
    return [Endpoint.of_pod(p, f"10.0.0.{i}") for i, p in enumerate(found)]


def test_default_deny_then_one_policy_per_workload(default_stack):
    fences = policies(default_stack)
    assert fences["default-deny"]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    assert set(fences) == {"default-deny", STORE.name, BUCKETS.name, INGEST.name, TRAINER.name,
                           APP.name, TRACKING.name}
    for workload in (STORE, BUCKETS, INGEST, TRAINER, APP, TRACKING):
        spec = fences[workload.name]["spec"]
        assert spec["podSelector"] == {"matchLabels": workload.labels}
        assert spec["policyTypes"] == ["Ingress"] and "egress" not in spec
    # Jobs accept no connection at all; nothing but default-deny's silence.
    assert "ingress" not in fences[BUCKETS.name]["spec"]
    assert "ingress" not in fences[INGEST.name]["spec"]


@pytest.mark.parametrize("config", [PUSHED, EGRESS, EXTERNAL, INGRESS_NGINX, RENDERED,
                                    {**PUSHED, "dataset": "digits", "workers": "1"}])
def test_each_policy_selects_exactly_its_workloads_pods(config):
    """Selectors and pod labels come from one definition: each workload's policy selects
    its pods and no others, default-deny every pod, and none selects nothing."""
    rendering = render(config)
    everyone = pods(rendering)
    fences = Policies(policies(rendering).values())
    for name, policy in policies(rendering).items():
        selected = fences.selected_pods(policy, everyone)
        if name == "default-deny":
            assert selected == everyone
        else:
            assert selected and {p.labels[NAME] for p in selected} == {name}, name
    deployed = {p.labels[NAME] for p in everyone}
    assert set(policies(rendering)) == {"default-deny"} | deployed


def _pod(rendering, name: str) -> Endpoint:
    return next(p for p in pods(rendering) if p.labels[NAME] == name)


def test_the_flows_each_mode_allows_and_nothing_else(default_stack):
    egress = render(EGRESS)
    for rendering in (default_stack, egress):
        fences = Policies(policies(rendering).values(), ["trainstack", "ingress-nginx"])
        store, app = _pod(rendering, "minio"), _pod(rendering, "inference")
        master, worker = [p for p in pods(rendering) if p.labels[NAME] == "trainer"]
        buckets, ingest = _pod(rendering, BUCKETS.name), _pod(rendering, INGEST.name)
        controller = Endpoint("ingress controller", "10.1.0.1", "ingress-nginx", {})
        user = Endpoint("browser", "203.0.113.7")
        for client in (buckets, ingest, master, worker, app):
            assert fences.allowed(Connection(client, store, 9000)), client.name
            assert not fences.allowed(Connection(client, store, 9001)), client.name  # console
        assert fences.allowed(Connection(worker, master, 23456))
        assert fences.allowed(Connection(master, worker, 41000))  # Gloo: a port it picked
        assert fences.allowed(Connection(user, app, 7860))
        assert fences.allowed(Connection(controller, app, 7860))
        for denied in (Connection(app, master, 23456), Connection(master, app, 7860),
                       Connection(buckets, master, 23456), Connection(store, app, 7860),
                       Connection(user, store, 9000), Connection(controller, store, 9000),
                       Connection(user, master, 23456), Connection(app, buckets, 8080)):
            assert not fences.allowed(denied), str(denied)
    internet = Endpoint("www.cs.toronto.edu", "128.100.3.30")
    fences = Policies(policies(egress).values())
    assert fences.allowed(Connection(_pod(egress, INGEST.name), internet, 443))
    assert not fences.allowed(Connection(_pod(egress, "inference"), internet, 443))
    assert not fences.allowed(Connection(_pod(egress, "trainer"), internet, 443))
    dns = Endpoint("kube-dns", "10.2.0.10", "kube-system", {"k8s-app": "kube-dns"})
    for pod in pods(egress):
        assert fences.allowed(Connection(pod, dns, 53, "UDP")), pod.name


def test_an_external_store_is_reached_on_its_port_only_with_egress():
    rendering = render({**EXTERNAL, "storeEndpoint": "https://ceph.example.com:8443",
                        "networkPolicy": "ingress-egress"})
    fences = Policies(policies(rendering).values())
    ceph = Endpoint("ceph", "192.0.2.10")
    for pod in pods(rendering):
        assert fences.allowed(Connection(pod, ceph, 8443)), pod.name
        assert not fences.allowed(Connection(pod, ceph, 443)) or pod.labels[NAME] == INGEST.name
    assert "minio" not in policies(rendering)


@pytest.mark.parametrize("host", ["ceph.storage.svc", "ceph.storage.svc.cluster.local"])
def test_a_store_inside_the_cluster_is_reached_with_egress(host):
    """storeEndpoint naming a Service of another namespace (Rook's RGW, an existing MinIO):
    the policy sees the store's pod address and its container port (kube-proxy translated
    the Service's), which no `ipBlock` on the URL's port matches on every CNI."""
    rendering = render({**EXTERNAL_KEYS, "storeEndpoint": f"http://{host}:7480",
                        "networkPolicy": "ingress-egress"})
    fences = Policies(policies(rendering).values(), ["trainstack", "storage", "other"])
    # Service port 7480 -> the RGW pods' container port 8080.
    rgw = Endpoint("rook-ceph-rgw", "10.3.0.5", "storage", {"app": "rook-ceph-rgw"},
                   {"http": (8080, "TCP")})
    elsewhere = Endpoint("someone-else", "10.4.0.9", "other", {"app": "x"})
    for pod in pods(rendering):
        assert fences.allowed(Connection(pod, rgw, 8080)), pod.name
        assert not fences.allowed(Connection(pod, elsewhere, 8080)), pod.name
        assert not fences.allowed(Connection(pod, Endpoint("internet", "198.51.100.7"), 7480))


def test_the_app_can_be_opened_to_an_ingress_controller_only():
    rendering = render(INGRESS_NGINX)
    rule = policies(rendering)["inference"]["spec"]["ingress"]
    assert rule == [{"from": [{"namespaceSelector": {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["ingress-nginx"]}]}}],
        "ports": [{"port": "http", "protocol": "TCP"}]}]
    fences = Policies(policies(rendering).values(), ["trainstack", "ingress-nginx", "other"])
    app = _pod(rendering, "inference")
    assert fences.allowed(Connection(Endpoint("nginx", "10.1.0.1", "ingress-nginx"), app, 7860))
    assert not fences.allowed(Connection(Endpoint("x", "10.1.0.2", "other"), app, 7860))
    assert not fences.allowed(Connection(Endpoint("browser", "203.0.113.7"), app, 7860))


def test_no_policies_when_asked():
    rendering = render({**PUSHED, "networkPolicy": "none"})
    assert policies(rendering) == {}
    assert not rendering.by_type("trainstack:index:NetworkFences")


def test_fences_stand_before_any_client_of_the_store(default_stack):
    job = set(default_stack.registration("Job", "trainstack-buckets").dependencies)
    fences = {r.urn for r in default_stack.by_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")}
    assert len(fences) == 7 and fences <= job  # the component's children: every policy
    rendered = render(RENDERED)
    waves = {k: o["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]
             for k, o in rendered.objects.items()}
    assert {w for k, w in waves.items() if k.startswith("NetworkPolicy/")} == {"0"}
    assert waves["Job/trainstack-buckets"] == "1"


def _all_pod_specs(rendering):
    return pod_specs(rendering).items()


@pytest.mark.parametrize("config", [PUSHED, EXTERNAL, RENDERED,
                                    {**PUSHED, "gpusPerWorker": "2", "workers": "3"},
                                    {**PUSHED, "retrainSchedule": "@weekly"}])
def test_every_pod_has_its_own_identity_without_a_token(config):
    rendering = render(config)
    accounts = {k.split("/", 1)[1]: o for k, o in rendering.objects.items()
                if k.startswith("ServiceAccount/")}
    assert all(a["automountServiceAccountToken"] is False for a in accounts.values())
    used = set()
    for key, spec in _all_pod_specs(rendering):
        assert spec["automountServiceAccountToken"] is False, key
        assert spec["serviceAccountName"] in accounts, key
        used.add(spec["serviceAccountName"])
    assert used == set(accounts)  # one per workload, none spare
    assert "default" not in accounts


@pytest.mark.parametrize("config", [PUSHED, EXTERNAL, {**PUSHED, "gpusPerWorker": "2"}])
def test_read_only_root_and_writable_volumes_only_where_processes_write(config):
    rendering = render(config)
    for key, spec in _all_pod_specs(rendering):
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, key
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"]:
            ctx = container["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True, key
            assert ctx["runAsUser"] >= 10000 and ctx["runAsNonRoot"] is True, key
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            assert volumes[mounts[TMP]["name"]]["emptyDir"]["sizeLimit"], key  # always /tmp
            writable = {path: volumes[m["name"]] for path, m in mounts.items()
                        if not m.get("readOnly") and "configMap" not in volumes[m["name"]]}
            for path, volume in writable.items():
                assert "emptyDir" in volume or (key, path) in DATA_VOLUMES, (key, path)
            disk = sum(_bytes(v["emptyDir"]["sizeLimit"]) for v in writable.values()
                       if "emptyDir" in v and v["emptyDir"].get("medium") != "Memory")
            limits = container["resources"]["limits"]
            assert _bytes(limits["ephemeral-storage"]) >= disk, key
            assert _bytes(container["resources"]["requests"]["ephemeral-storage"]) >= disk, key


# The stores' own volumes: MinIO's objects, MLflow's SQLite database.
DATA_VOLUMES = {("Deployment/minio", "/data"), ("Deployment/mlflow", "/var/lib/mlflow")}


def _bytes(quantity: str) -> int:
    number, unit = re.fullmatch(r"([\d.]+)(\w*)", quantity).groups()
    scale = {"": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3,
             "M": 10**6, "G": 10**9, "T": 10**12}[unit]
    return int(float(number) * scale)


def test_every_cache_points_into_the_writable_tmp(default_stack):
    for key, spec in workload_specs(default_stack).items():
        env = env_of(spec["containers"][0])
        for name, value in WRITABLE_ENV.items():
            assert env[name] == value, (key, name)
    app = default_stack.objects["Deployment/inference"]["spec"]["template"]["spec"]
    command = app["containers"][0]["command"]
    cache = command[command.index("--cache-dir") + 1]
    assert cache in {m["mountPath"] for m in app["containers"][0]["volumeMounts"]}


def test_minio_runs_as_its_own_high_uid_reading_credentials_as_files(default_stack):
    spec = default_stack.objects["Deployment/minio"]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert spec["securityContext"]["runAsUser"] > 10000 != APP_UID
    assert not [e for e in container["env"] if "valueFrom" in e]  # no secret as env var
    (secret,) = [v["secret"] for v in spec["volumes"] if "secret" in v]
    assert secret["defaultMode"] == 0o440  # readable by the pod's fsGroup only
    assert {i["key"] for i in secret["items"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    args = container["args"]
    assert args[args.index("--certs-dir") + 1].startswith(TMP + "/")
    assert env_of(container)["HOME"] == TMP


def test_the_app_token_reaches_the_app_by_reference_only():
    rendering = render({**PUSHED, "inferenceAuthToken": TOKEN})
    name = versioned(rendering, "Secret", "inference-auth")  # rolls the app when it changes
    secret = rendering.objects[f"Secret/{name}"]
    assert secret["stringData"] == {"TRAINSTACK_AUTH_TOKEN": TOKEN}
    registration = rendering.registration("Secret", name)
    assert registration.secret_props == ["stringData"]  # encrypted in the state
    app = rendering.objects["Deployment/inference"]["spec"]["template"]["spec"]["containers"][0]
    assert env_of(app)["TRAINSTACK_AUTH_TOKEN"] == secret_ref(name, "TRAINSTACK_AUTH_TOKEN")
    assert rendering.urn_of("Secret", name) in rendering.registration(
        "Deployment", "inference").dependencies
    for key, obj in rendering.objects.items():
        if key != f"Secret/{name}":
            assert TOKEN not in json.dumps(obj), key
    assert TOKEN not in json.dumps(rendering.exports)
    for key, spec in workload_specs(rendering).items():  # the app only
        has = "TRAINSTACK_AUTH_TOKEN" in env_of(spec["containers"][0])
        assert has == (key == "Deployment/inference"), key


def test_the_users_token_secret_in_render_mode():
    rendering = render({**RENDERED, "inferenceAuthSecret": "app-token"})
    assert not [k for k in rendering.objects if k.startswith("Secret/")]
    app = rendering.objects["Deployment/inference"]["spec"]["template"]["spec"]["containers"][0]
    assert env_of(app)["TRAINSTACK_AUTH_TOKEN"] == secret_ref("app-token",
                                                              "TRAINSTACK_AUTH_TOKEN")
    assert "TRAINSTACK_AUTH_TOKEN" not in env_of(
        render(PUSHED).objects["Deployment/inference"]["spec"]["template"]["spec"][
            "containers"][0])  # no token configured: no variable


@pytest.mark.parametrize("token", ["short-token", "a" * 31, "a" * 31 + " ", "é" * 40])
def test_a_weak_token_is_refused_unechoed(token):
    with pytest.raises(ConfigError, match="trainstack:inferenceAuthToken.*at least 32") as err:
        render({**PUSHED, "inferenceAuthToken": token})
    assert token not in str(err.value)


def test_a_token_in_plain_config_is_refused_unechoed():
    with pytest.raises(ConfigError, match="inferenceAuthToken.*--secret") as err:
        render({**PUSHED, "inferenceAuthToken": TOKEN}, secrets=())
    assert TOKEN not in str(err.value)


def test_every_pod_template_is_scanned_with_its_policy(default_stack):
    """The PyTorchJob's pods carry the operator's labels and still match the template's
    selector: the policy relies on the template labels only."""
    job = pytorchjob(default_stack)
    for pod in replica_pods(job):
        assert TRAINER.labels.items() <= pod["metadata"]["labels"].items()
