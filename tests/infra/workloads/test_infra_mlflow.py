"""The MLflow tracking server (`mlflow`) as rendered: hardened, fenced, wired into the
workloads by MLFLOW_TRACKING_URI, and `mlflow false` removing exactly it."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from infra.config.keys import ConfigError
from infra.workloads.catalog import labels
from infra.workloads.tracking.mlflow_server import (
    AWS_CONFIG,
    CREDENTIALS_DIR_ENV,
    DEFAULT_IMAGE,
    MLFLOW_VERSION,
)
from tests.e2e.netpol import Connection, Endpoint, Policies
from tests.infra.infra_helpers import (
    EXTERNAL,
    PUSHED,
    RENDERED,
    env_of,
    pod_specs,
    pytorchjob,
    versioned,
)
from tests.infra.render import render
from tests.mlflow_server import server_executable
from trainer.contract.env import TRACKING_URI_ENV
from trainer.contract.layout import MLFLOW_UI_URL_ENV

REPO_ROOT = Path(__file__).resolve().parents[3]
NAME = "app.kubernetes.io/name"
URI = "http://mlflow.trainstack.svc:5000"
EGRESS = {**PUSHED, "networkPolicy": "ingress-egress"}
MLFLOW_DIGEST = "sha256:" + "cd34" * 16


@pytest.fixture(scope="module")
def stack():
    return render(PUSHED)


def server(rendering) -> tuple[dict[str, Any], dict[str, Any]]:
    spec = rendering.objects["Deployment/mlflow"]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    return spec, container


def argument(container: dict[str, Any], flag: str) -> str:
    command = container["command"]
    return command[command.index(flag) + 1]


def test_the_server_runs_hardened_with_sqlite_on_its_volume(stack):
    deployment = stack.objects["Deployment/mlflow"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # one RWO volume, one writer
    spec, container = server(stack)
    assert container["image"] == DEFAULT_IMAGE and container["imagePullPolicy"] == "Always"
    assert spec["serviceAccountName"] == "mlflow" and spec["automountServiceAccountToken"] is False
    account = stack.objects["ServiceAccount/mlflow"]
    assert account["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["runAsNonRoot"] and security["runAsUser"] > 10000
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    resources = container["resources"]
    assert set(resources["requests"]) == set(resources["limits"]) == {
        "cpu", "memory", "ephemeral-storage"}
    # Writable: the PVC (the database) and one emptyDir (/tmp); everything else read-only.
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    writable = {path for path, m in mounts.items() if not m.get("readOnly")}
    assert writable == {"/var/lib/mlflow", "/tmp"}
    assert volumes[mounts["/tmp"]["name"]]["emptyDir"]["sizeLimit"]
    claim = volumes[mounts["/var/lib/mlflow"]["name"]]["persistentVolumeClaim"]["claimName"]
    pvc = stack.objects[f"PersistentVolumeClaim/{claim}"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert argument(container, "--backend-store-uri") == "sqlite:////var/lib/mlflow/mlflow.db"
    assert argument(container, "--workers") == "1"
    assert argument(container, "--artifacts-destination") == "s3://mlflow/"
    service = stack.objects["Service/mlflow"]["spec"]
    assert service["type"] == "ClusterIP" and service["selector"][NAME] == "mlflow"
    assert service["ports"] == [{"name": "http", "port": 5000, "targetPort": "http"}]


def test_the_store_credentials_reach_it_as_files_only(stack):
    """No secret env var (not even by secretKeyRef): boto3 reads the Secret's files."""
    spec, container = server(stack)
    env = env_of(container)
    assert all(isinstance(value, str) for value in env.values()), env
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio.trainstack.svc:9000"
    # No job runner (it would write to /dev/shm), no usage reports to the internet.
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    volumes = {v["name"]: v for v in spec["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == env[CREDENTIALS_DIR_ENV]]
    secret = volumes[mount["name"]]["secret"]
    # The store's Secret named by its content: a new password rolls the server.
    assert secret["secretName"] == versioned(stack, "Secret", "minio-credentials")
    assert secret["defaultMode"] == 0o440
    (config_mount,) = [m for m in container["volumeMounts"]
                       if env["AWS_CONFIG_FILE"].startswith(m["mountPath"] + "/")]
    config_map = volumes[config_mount["name"]]["configMap"]["name"]
    assert stack.objects[f"ConfigMap/{config_map}"]["data"] == {"config": AWS_CONFIG}


def test_boto3_reads_the_credentials_through_the_rendered_config(tmp_path, monkeypatch):
    import botocore.session

    (tmp_path / "credentials").mkdir()
    (tmp_path / "credentials" / "AWS_ACCESS_KEY_ID").write_text("file-access-key\n")
    (tmp_path / "credentials" / "AWS_SECRET_ACCESS_KEY").write_text("file-secret-key\n")
    (tmp_path / "config").write_text(AWS_CONFIG)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE",
                "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv(CREDENTIALS_DIR_ENV, str(tmp_path / "credentials"))
    credentials = botocore.session.Session().get_credentials().get_frozen_credentials()
    assert (credentials.access_key, credentials.secret_key) == ("file-access-key",
                                                                "file-secret-key")


def test_mlflow_accepts_the_service_names_and_port_forward_only(stack):
    """MLflow's own Host check (the tests' server package) with the rendered list."""
    _, container = server(stack)
    hosts = argument(container, "--allowed-hosts").split(",")
    code = ("import json, sys; from mlflow.server.security_utils import is_allowed_host_header "
            "as ok; hosts, asked = json.loads(sys.argv[1]); "
            "print(json.dumps([ok(hosts, h) for h in asked]))")
    asked = ["mlflow.trainstack.svc:5000", "mlflow:5000", "mlflow.trainstack.svc.cluster.local",
             "localhost:5000", "127.0.0.1:5000",
             "mlflow.trainstack.svc.evil.example", "evil.example:5000", "10.0.0.7:5000"]
    python = server_executable().parent / "python"
    result = subprocess.run([str(python), "-c", code, json.dumps([hosts, asked])],
                            capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(result.stdout) == [True] * 5 + [False] * 3


def test_workloads_get_the_tracking_uri_and_the_bucket_job_makes_its_bucket(stack):
    job = pytorchjob(stack)
    tracking = stack.objects["ConfigMap/mlflow-tracking"]["data"]
    assert tracking == {TRACKING_URI_ENV: URI}
    for replica in job["spec"]["pytorchReplicaSpecs"].values():
        (container,) = replica["template"]["spec"]["containers"]
        assert container["envFrom"][0] == {
            "configMapRef": {"name": "mlflow-tracking", "optional": True}}
    # Created only once the server is up (the old env's Output dependency, kept).
    assert stack.urn_of("Deployment", "mlflow") in stack.registration(
        "PyTorchJob", job["metadata"]["name"]).dependencies
    (app,) = stack.objects["Deployment/inference"]["spec"]["template"]["spec"]["containers"]
    assert env_of(app)[TRACKING_URI_ENV] == URI
    # The app's links go where a browser reaches the UI: the exported port-forward.
    assert env_of(app)[MLFLOW_UI_URL_ENV] == "http://localhost:5000"
    assert stack.exports["mlflowAccess"].endswith(env_of(app)[MLFLOW_UI_URL_ENV])
    (buckets,) = stack.objects["Job/trainstack-buckets"]["spec"]["template"]["spec"]["containers"]
    assert buckets["command"][-1] == "--tracking" and TRACKING_URI_ENV not in env_of(buckets)
    assert stack.exports["mlflowUrl"] == URI
    assert stack.exports["mlflowAccess"].startswith(
        "kubectl -n trainstack port-forward svc/mlflow 5000:5000")
    assert "mlflow" in stack.exports["buckets"]


def test_an_external_store_with_a_prefix_and_region():
    rendering = render({**EXTERNAL, "mlflowImage": f"ghcr.io/mlflow/mlflow@{MLFLOW_DIGEST}"})
    spec, container = server(rendering)
    env = env_of(container)
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "https://s3.eu-west-1.amazonaws.com"
    assert env["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert argument(container, "--artifacts-destination") == "s3://acme-ml-mlflow/"
    assert [v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v] == ["team-s3"]
    assert container["image"].endswith(MLFLOW_DIGEST)
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert "acme-ml-mlflow" in rendering.exports["buckets"]


def _mlflow_peer(peer: dict[str, Any]) -> bool:
    return peer.get("podSelector", {}).get("matchLabels", {}).get(NAME) == "mlflow"


def without_mlflow(objects: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The objects less what `mlflow` adds: its own objects (its labels; its policy, by the
    pods it selects), the env var, the bucket Job's --tracking and every policy rule or
    peer naming its pods."""
    kept = {}
    for key, obj in copy.deepcopy(objects).items():
        if obj["metadata"].get("labels", {}).get(NAME) == "mlflow" or (
                obj["kind"] == "NetworkPolicy" and _mlflow_peer(obj["spec"])):
            continue
        for spec in _pod_specs_of(obj):
            for container in spec["containers"]:
                container["env"] = [e for e in container.get("env", [])
                                    if e["name"] not in (TRACKING_URI_ENV, MLFLOW_UI_URL_ENV)]
                if container.get("command", [])[-1:] == ["--tracking"]:
                    container["command"] = container["command"][:-1]
        if obj["kind"] == "NetworkPolicy":
            _drop_mlflow_rules(obj["spec"])
        kept[key] = obj
    return kept


def _pod_specs_of(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] in ("Deployment", "Job"):
        return [obj["spec"]["template"]["spec"]]
    if obj["kind"] == "PyTorchJob":
        return [r["template"]["spec"] for r in obj["spec"]["pytorchReplicaSpecs"].values()]
    return []


def _drop_mlflow_rules(spec: dict[str, Any]) -> None:
    for direction, peers in (("ingress", "from"), ("egress", "to")):
        rules = []
        for rule in spec.get(direction) or []:
            if any(_mlflow_peer(p) for p in rule.get(peers, [])):
                rule = {**rule, peers: [p for p in rule[peers] if not _mlflow_peer(p)]}
                if not rule[peers]:
                    continue
            rules.append(rule)
        if direction in spec:
            spec[direction] = rules or None


@pytest.mark.parametrize("config", [PUSHED, EGRESS, EXTERNAL, RENDERED],
                         ids=["default", "egress", "external", "rendered"])
def test_mlflow_false_removes_the_server_and_changes_nothing_else(config):
    on, off = render(config), render({**config, "mlflow": "false"})
    added = sorted(set(on.objects) - set(off.objects))
    assert added == [f"ConfigMap/{versioned(on, 'ConfigMap', 'mlflow-aws-config')}",
                     "ConfigMap/mlflow-tracking",
                     "Deployment/mlflow", "NetworkPolicy/mlflow",
                     "PersistentVolumeClaim/mlflow-data", "Service/mlflow",
                     "ServiceAccount/mlflow"]
    for key in off.objects:  # the stripping below can fail: each object really differs
        if key.startswith(("Deployment/inference", "Job/trainstack-buckets")):
            assert on.objects[key] != off.objects[key], key
    assert without_mlflow(on.objects) == _normalized(off.objects)
    assert {k: v for k, v in on.exports.items() if not k.startswith("mlflow")} == {
        **off.exports, "buckets": [*off.exports["buckets"], on.exports["buckets"][-1]]}
    assert not [k for k in off.exports if k.startswith("mlflow")]
    for spec in pod_specs(off).values():
        for container in spec["containers"]:
            assert TRACKING_URI_ENV not in env_of(container)
            assert MLFLOW_UI_URL_ENV not in env_of(container)


# What `mlflow true|false` changes besides the server's own objects (docs/operations.md,
# "Experiment tracking"): the app rolls (its MLflow links), the bucket Job makes or skips
# the `<prefix>mlflow` bucket, and the policies whose rules name the server's pods.
TOGGLED = {"default": {"Deployment/inference", "Job/trainstack-buckets", "NetworkPolicy/minio"},
           "egress": {"Deployment/inference", "Job/trainstack-buckets", "NetworkPolicy/minio",
                      "NetworkPolicy/trainer", "NetworkPolicy/inference"},
           "external": {"Deployment/inference", "Job/trainstack-buckets"},
           "rendered": {"Deployment/inference", "Job/trainstack-buckets", "NetworkPolicy/minio"}}


@pytest.mark.parametrize("name, config", [("default", PUSHED), ("egress", EGRESS),
                                          ("external", EXTERNAL), ("rendered", RENDERED)])
def test_mlflow_toggle_keeps_the_training_job_and_replaces_jobs_delete_first(name, config):
    """The PyTorchJob's inputs are the same either way (training goes on: its pods read
    MLFLOW_TRACKING_URI from an optional ConfigMap at their next start); a Job that must
    change is deleted before its same-name replacement is created."""
    on, off = render(config), render({**config, "mlflow": "false"})
    changed = {k for k in set(on.objects) & set(off.objects) if on.objects[k] != off.objects[k]}
    assert changed == TOGGLED[name]
    for job in on.by_type("kubernetes:batch/v1:Job"):
        assert job.delete_before_replace, job.name


def _normalized(objects):
    """The off rendering through the same copying (None for emptied rule lists)."""
    kept = copy.deepcopy(objects)
    for obj in kept.values():
        if obj["kind"] == "NetworkPolicy":
            _drop_mlflow_rules(obj["spec"])
    return kept


def fences_of(config: dict[str, str]) -> Policies:
    rendering = render(config)
    return Policies([o for k, o in rendering.objects.items() if k.startswith("NetworkPolicy/")],
                    ["trainstack", "elsewhere", "ingress-nginx"])


def endpoint(name: str, ip: str, namespace: str = "trainstack", **ports) -> Endpoint:
    return Endpoint(name, ip, namespace, labels(name), ports)


TRACKING_POD = endpoint("mlflow", "10.0.0.9", http=(5000, "TCP"))
USER = Endpoint("a user", "198.51.100.7")


OTHER_NAMESPACE_POD = endpoint("ingress", "10.0.1.2", "elsewhere")
LOGIN = {"mlflowAccess": "login"}


@pytest.mark.parametrize("mode", [PUSHED, EGRESS], ids=["ingress", "egress"])
def test_by_default_only_the_stacks_pods_reach_mlflow(mode):
    """No login by default, so no user reaches it through the fences: the trainers and
    the app only (users come through `kubectl port-forward`, which needs no rule)."""
    fences = fences_of(mode)
    store = endpoint("minio", "10.0.0.8", api=(9000, "TCP"))
    allowed = [Connection(endpoint("trainer", "10.0.0.2"), TRACKING_POD, 5000),
               Connection(endpoint("inference", "10.0.0.3"), TRACKING_POD, 5000),
               Connection(TRACKING_POD, store, 9000)]
    denied = [Connection(USER, TRACKING_POD, 5000),
              Connection(OTHER_NAMESPACE_POD, TRACKING_POD, 5000),
              Connection(endpoint("trainstack-buckets", "10.0.0.4"), TRACKING_POD, 5000),
              Connection(endpoint("stranger", "10.0.0.5"), TRACKING_POD, 5000),
              Connection(TRACKING_POD, endpoint("inference", "10.0.0.3", http=(7860, "TCP")),
                         7860),
              Connection(TRACKING_POD, endpoint("trainer", "10.0.0.2", **{
                  "pytorchjob-port": (23456, "TCP")}), 23456)]
    assert [str(c) for c in allowed if not fences.allowed(c)] == []
    assert [str(c) for c in denied if fences.allowed(c)] == []
    rule_peers = str(render(mode).objects["NetworkPolicy/mlflow"]["spec"]["ingress"])
    assert "0.0.0.0/0" not in rule_peers and "namespaceSelector" not in rule_peers


def test_with_a_login_users_reach_it_as_the_app():
    fences = fences_of({**EGRESS, **LOGIN})
    for user in (USER, OTHER_NAMESPACE_POD):
        assert fences.allowed(Connection(user, TRACKING_POD, 5000))
    assert not fences.allowed(Connection(endpoint("stranger", "10.0.0.5"), TRACKING_POD, 5000))


def test_behind_an_ingress_only_its_namespace_reaches_the_ui():
    fences = fences_of({**EGRESS, **LOGIN, "inferenceServiceType": "ClusterIP",
                        "inferenceIngressNamespace": "ingress-nginx"})
    controller = endpoint("ingress-nginx-controller", "10.0.2.2", "ingress-nginx")
    assert fences.allowed(Connection(controller, TRACKING_POD, 5000))
    assert not fences.allowed(Connection(USER, TRACKING_POD, 5000))
    assert not fences.allowed(Connection(endpoint("x", "10.0.1.2", "elsewhere"), TRACKING_POD,
                                         5000))


def test_a_login_is_asked_with_generated_credentials_by_reference_only():
    rendering = render({**PUSHED, **LOGIN})
    _, container = server(rendering)
    assert argument(container, "--app-name") == "basic-auth"
    env = env_of(container)
    # What the server reads is named by its content: a new login rolls it.
    auth = versioned(rendering, "Secret", "mlflow-auth")
    for name in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert env[name] == {"secretKeyRef": {"name": auth, "key": name}}
    ini = rendering.objects[f"ConfigMap/{versioned(rendering, 'ConfigMap', 'mlflow-auth-config')}"
                            ]["data"]["basic_auth.ini"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert env["MLFLOW_AUTH_CONFIG_PATH"].rsplit("/", 1)[0] in mounts
    # A fresh auth database at each start (/tmp): the Secret's password always works.
    assert "database_uri = sqlite:////tmp/" in ini and "password" not in ini
    for name in (auth, "mlflow-client"):
        registration = rendering.registration("Secret", name)
        assert "stringData" in registration.secret_props
    client = rendering.objects["Secret/mlflow-client"]["stringData"]
    assert client["MLFLOW_TRACKING_USERNAME"] == "trainstack"
    assert client["MLFLOW_TRACKING_PASSWORD"] == rendering.objects[f"Secret/{auth}"][
        "stringData"]["MLFLOW_AUTH_ADMIN_PASSWORD"]
    for replica in pytorchjob(rendering)["spec"]["pytorchReplicaSpecs"].values():
        (trainer,) = replica["template"]["spec"]["containers"]
        assert {"secretRef": {"name": "mlflow-client", "optional": True}} in trainer["envFrom"]
    # The app's links are unchanged: port-forward works with a login too.
    (app,) = rendering.objects["Deployment/inference"]["spec"]["template"]["spec"]["containers"]
    assert env_of(app)[MLFLOW_UI_URL_ENV] == "http://localhost:5000"
    # Without a login nothing of it exists, and the training pods' template is the same.
    plain = render(PUSHED)
    assert not [k for k in plain.objects if k.startswith(("Secret/mlflow", "ConfigMap/mlflow-auth"))]
    assert "--app-name" not in server(plain)[1]["command"]
    assert pytorchjob(plain)["spec"] == pytorchjob(rendering)["spec"]


@pytest.mark.parametrize("config, key", [
    ({"mlflow": "maybe"}, "mlflow"),
    ({"mlflowAccess": "open"}, "mlflowAccess"),
    ({"mlflow": "false", "mlflowAccess": "login"}, "mlflowAccess"),
    ({**RENDERED, "mlflowAccess": "login"}, "mlflowAccess"),
    ({"mlflow": "false", "mlflowImage": DEFAULT_IMAGE}, "mlflowImage"),
    ({"mlflow": "false", "mlflowStorageClass": "fast"}, "mlflowStorageClass"),
    ({"mlflowImage": "mlflow/mlflow:v3.17.2-full"}, "mlflowImage"),  # no registry host
    ({"mlflowImage": "ghcr.io/mlflow/mlflow"}, "mlflowImage"),  # neither tag nor digest
    ({"mlflowImage": "ghcr.io/mlflow/mlflow:bad tag"}, "mlflowImage"),
    ({"mlflowStorageClass": "Fast_SSD"}, "mlflowStorageClass"),
])
def test_bad_mlflow_settings_name_the_key(config, key):
    with pytest.raises(ConfigError, match=rf"trainstack:{key}\b") as raised:
        render({**PUSHED, **config})
    assert raised.value.key == key and "allowed" in str(raised.value)


def test_the_storage_class_reaches_the_claim():
    rendering = render({**PUSHED, "mlflowStorageClass": "fast-ssd"})
    assert rendering.objects["PersistentVolumeClaim/mlflow-data"]["spec"][
        "storageClassName"] == "fast-ssd"


def _pin(path: str, package: str) -> str:
    (line,) = [ln for ln in (REPO_ROOT / path).read_text().splitlines()
               if ln.startswith(f"{package}==")]
    return line.split("==", 1)[1]


def test_server_image_client_and_test_server_are_one_release():
    assert _pin("trainer/requirements.txt", "mlflow-skinny") == MLFLOW_VERSION
    assert _pin("requirements-mlflow-server.txt", "mlflow") == MLFLOW_VERSION
    assert re.search(rf":v{re.escape(MLFLOW_VERSION)}-full$", DEFAULT_IMAGE)
