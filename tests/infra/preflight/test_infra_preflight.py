"""The storage check before `pulumi up` (infra/preflight/storage.py): which claims, and when they
can never bind. The same check against a real API server: tests/cluster/test_storage_check.py."""

from __future__ import annotations

import socket

import pytest
import yaml
from kubernetes.utils import parse_quantity

from infra.config.errors import StackConfigError
from infra.config.keys import parse_config
from infra.preflight.storage import (
    Claim,
    ClusterAccess,
    ClusterStorage,
    Volume,
    check_storage,
    claims_problem,
    stack_claims,
)
from tests.infra.infra_helpers import EXTERNAL, PUSHED, RENDERED

MINIO = Claim("minioStorageClass", "MinIO's volume", "minio-data", None, "10Gi")
MLFLOW = Claim("mlflowStorageClass", "MLflow's volume", "mlflow-data", None, "1Gi")
MLFLOW_FAST = Claim("mlflowStorageClass", "MLflow's volume", "mlflow-data", "fast", "1Gi")


def volume(size="10Gi", name="pv", rwo=True, filesystem=True, reserved_for=None) -> Volume:
    return Volume(name, int(parse_quantity(size)), rwo, filesystem, reserved_for)


def storage(classes=None, classless=0, bound=(), volumes=None):
    volumes = tuple(volumes) if volumes is not None else tuple(
        volume(name=f"pv-{i}") for i in range(classless))
    return ClusterStorage(classes or {}, volumes, frozenset(bound))


def test_the_dev_stack_claims_minio_and_mlflow_volumes_with_the_default_class():
    claims = stack_claims(parse_config(PUSHED))
    assert [(c.key, c.name, c.storage_class, c.size) for c in claims] == [
        ("minioStorageClass", "minio-data", None, "10Gi"),
        ("mlflowStorageClass", "mlflow-data", None, "1Gi")]
    sized = stack_claims(parse_config({**PUSHED, "minioStorageSize": "50Gi"}))
    assert sized[0].size == "50Gi"


def test_named_classes_external_store_no_mlflow_and_render_mode_change_the_claims():
    named = parse_config({**PUSHED, "minioStorageClass": "fast", "mlflowStorageClass": "slow"})
    assert [c.storage_class for c in stack_claims(named)] == ["fast", "slow"]
    external = parse_config({**EXTERNAL, "mlflow": "false"})
    assert stack_claims(external) == []
    rendered = parse_config(RENDERED)
    assert stack_claims(rendered) == []


def test_no_default_class_stops_naming_the_key_and_the_classes_there_are():
    error = claims_problem([MINIO], storage({"slow": False, "fast": False}))
    assert isinstance(error, StackConfigError) and error.key == "minioStorageClass"
    text = str(error)
    assert "MinIO's volume (PersistentVolumeClaim minio-data) would wait Pending forever" in text
    assert "no default StorageClass (it has: fast, slow)" in text
    assert "pulumi config set minioStorageClass <name>" in text
    assert "storageclass.kubernetes.io/is-default-class" in text


def test_a_cluster_without_any_class_says_none():
    assert "(it has: none)" in str(claims_problem([MINIO], storage()))


def test_a_named_class_that_does_not_exist_is_an_invalid_key():
    error = claims_problem([MINIO, MLFLOW_FAST], storage({"standard": True}))
    assert error.key == "mlflowStorageClass"
    assert str(error) == ("invalid config trainstack:mlflowStorageClass = 'fast': the cluster "
                          "has no StorageClass of that name (it has: standard)")


@pytest.mark.parametrize("cluster", [
    storage({"standard": True}),  # a default class
    storage({"slow": False}, classless=1),  # static provisioning: a classless volume
    storage({}, bound={"minio-data"}),  # the second `up`: the claim is already bound
], ids=["default-class", "classless-volume", "already-bound"])
def test_claims_that_can_bind_pass(cluster):
    assert claims_problem([MINIO], cluster) is None


def test_a_named_class_that_exists_needs_no_default():
    assert claims_problem([MLFLOW_FAST], storage({"fast": False})) is None


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed once the socket is: nothing listens there


def _kubeconfig(server: str) -> dict:
    return {"apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "c", "cluster": {"server": server}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}


def test_a_cluster_that_cannot_be_reached_is_left_to_the_provider(tmp_path):
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(_kubeconfig(f"http://127.0.0.1:{_closed_port()}")))
    cfg = parse_config(PUSHED)
    assert check_storage(cfg, ClusterAccess(kubeconfig=str(path))) is None
    # The provider's key may hold the kubeconfig itself rather than a path.
    assert check_storage(cfg, ClusterAccess(kubeconfig=path.read_text())) is None


def test_no_kubeconfig_at_all_is_left_to_the_provider(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert check_storage(parse_config(PUSHED), ClusterAccess()) is None
    # An unknown context is the provider's error to report, not ours.
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(_kubeconfig("http://127.0.0.1:1")))
    assert check_storage(parse_config(PUSHED), ClusterAccess(str(path), "elsewhere")) is None
    # Not YAML, or YAML that is no kubeconfig: skipped as well.
    assert check_storage(parse_config(PUSHED), ClusterAccess("token: s3cret\n  bad: [")) is None
    assert check_storage(parse_config(PUSHED), ClusterAccess("- a\n- b\n")) is None


@pytest.mark.parametrize("text", [
    "42\n",  # YAML, but a number
    "contexts: [1]\ncurrent-context: x\n",  # a context that is no mapping
    "current-context: c\ncontexts: [{name: c, context: 5}]\n",
    ("current-context: c\ncontexts: [{name: c, context: {cluster: c, user: u}}]\n"
     "clusters: [{name: c, cluster: {server: 5}}]\nusers: [{name: u, user: {token: t}}]\n"),
], ids=["number", "context-item", "context-value", "server-number"])
def test_kubeconfig_of_the_wrong_shape_is_left_to_the_provider(text, tmp_path):
    # Before: TypeError / AttributeError out of the kubernetes client stopped `pulumi up`
    # with a traceback instead of leaving the malformed kubeconfig to the provider.
    cfg = parse_config(PUSHED)
    assert check_storage(cfg, ClusterAccess(text)) is None
    path = tmp_path / "kubeconfig"
    path.write_text(text)
    assert check_storage(cfg, ClusterAccess(str(path))) is None


@pytest.mark.parametrize("body", [
    b"<html>sign in</html>",  # an auth proxy's login page, 200
    b"{}",  # JSON, but no list
    b'{"items": [{"metadata": null}]}',  # a list of things that are no StorageClasses
    b'{"items": 5}',
], ids=["html", "empty-object", "no-classes", "items-number"])
def test_a_server_that_answers_no_storage_class_list_is_left_to_the_provider(body):
    """Before: ValueError/TypeError out of the client's model classes stopped `pulumi up`
    with a traceback, although the check only stops when it knows."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        access = ClusterAccess(yaml.safe_dump(
            _kubeconfig(f"http://127.0.0.1:{server.server_port}")))
        assert check_storage(parse_config(PUSHED), access) is None
    finally:
        server.shutdown()
        server.server_close()


def test_one_classless_volume_binds_one_claim_not_two():
    """Before: one Available classless volume passed both default-class claims (MinIO's
    and MLflow's, the dev stack's), and MLflow's waited Pending forever."""
    error = claims_problem([MINIO, MLFLOW], storage({"slow": False}, classless=1))
    assert error is not None and error.key == "mlflowStorageClass"
    assert "MLflow's volume (PersistentVolumeClaim mlflow-data) would wait Pending" in str(error)
    assert claims_problem([MINIO, MLFLOW], storage({"slow": False}, classless=2)) is None
    # One already bound (to the one volume): the other needs one more.
    assert claims_problem([MINIO, MLFLOW], storage({}, classless=1, bound={"minio-data"})) is None


def test_a_classless_volume_binds_only_a_claim_it_fits():
    """Before: any Available classless volume counted, so a 5Gi one passed MinIO's 10Gi
    claim, which then waited Pending forever (the binder never binds a smaller volume)."""
    error = claims_problem([MINIO], storage(volumes=[volume("5Gi", "small")]))
    assert error is not None and error.key == "minioStorageClass"
    assert ("none of its 1 Available PersistentVolume(s) of no class fits the claim "
            "(ReadWriteOnce, a filesystem, at least 10Gi; the largest: small, 5Gi)") in str(error)
    for unfit in (volume(rwo=False), volume(filesystem=False),
                  volume(reserved_for="mlflow-data")):
        assert claims_problem([MINIO], storage(volumes=[unfit])) is not None, unfit
    assert claims_problem([MINIO], storage(volumes=[volume("10Gi")])) is None
    assert claims_problem([MINIO], storage(volumes=[volume(reserved_for="minio-data")])) is None


def test_each_claim_gets_the_smallest_volume_that_fits_as_the_binder_does():
    """A 1Gi and a 20Gi volume bind MLflow's 1Gi claim and MinIO's 10Gi one, whichever
    comes first; two 1Gi volumes cannot hold MinIO's."""
    volumes = [volume("20Gi", "big"), volume("1Gi", "small")]
    assert claims_problem([MLFLOW, MINIO], storage(volumes=volumes)) is None
    assert claims_problem([MINIO, MLFLOW], storage(volumes=volumes)) is None
    error = claims_problem([MINIO, MLFLOW], storage(volumes=[volume("1Gi", "a"),
                                                              volume("1Gi", "b")]))
    assert error is not None and error.key == "minioStorageClass"


def test_volumes_that_cannot_be_listed_are_assumed_to_fit():
    assert claims_problem([MINIO, MLFLOW], ClusterStorage({}, None, frozenset())) is None


def _api_server(classes: list[dict], claims: dict[str, dict] | None = None):
    """A stand-in API server: these StorageClasses, no volumes, these claims (by name)."""
    import http.server
    import json
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.startswith("/apis/storage.k8s.io/v1/storageclasses"):
                status, body = 200, {"kind": "StorageClassList", "apiVersion":
                                     "storage.k8s.io/v1", "metadata": {}, "items": classes}
            elif self.path.startswith("/api/v1/persistentvolumes"):
                status, body = 200, {"kind": "PersistentVolumeList", "apiVersion": "v1",
                                     "metadata": {}, "items": []}
            elif self.path.split("?")[0].rsplit("/", 1)[-1] in (claims or {}):
                status, body = 200, claims[self.path.split("?")[0].rsplit("/", 1)[-1]]
            else:
                status, body = 404, {"kind": "Status", "apiVersion": "v1", "code": 404,
                                     "status": "Failure", "reason": "NotFound"}
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_the_provider_s_cluster_override_is_the_cluster_asked(tmp_path):
    """`kubernetes:cluster` makes the provider use that kubeconfig cluster with the current
    context. Before, the check ignored it and asked the context's own cluster: here one
    without a default StorageClass, so `pulumi up` stopped although the cluster the stack
    goes to has one."""
    from pulumi.runtime import config as runtime_config

    from infra.config.cluster import cluster_access

    other = _api_server([{"metadata": {"name": "slow"}, "provisioner": "x"}])
    target = _api_server([{"metadata": {"name": "standard", "annotations": {
        "storageclass.kubernetes.io/is-default-class": "true"}}, "provisioner": "x"}])
    kubeconfig = _kubeconfig(f"http://127.0.0.1:{other.server_port}")
    kubeconfig["clusters"].append(
        {"name": "target", "cluster": {"server": f"http://127.0.0.1:{target.server_port}"}})
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    saved = runtime_config.CONFIG.get()
    try:
        runtime_config.set_all_config({"kubernetes:kubeconfig": str(path)})
        with pytest.raises(StackConfigError):  # the context's own cluster: no default
            check_storage(parse_config(PUSHED), cluster_access())
        runtime_config.set_all_config({"kubernetes:kubeconfig": str(path),
                                       "kubernetes:cluster": "target"})
        assert check_storage(parse_config(PUSHED), cluster_access()) is None
        # A cluster the kubeconfig does not have: the provider's error, not ours.
        runtime_config.set_all_config({"kubernetes:kubeconfig": str(path),
                                       "kubernetes:cluster": "absent"})
        assert check_storage(parse_config(PUSHED), cluster_access()) is None
    finally:
        runtime_config.CONFIG.set(saved)
        for server in (other, target):
            server.shutdown()
            server.server_close()


def test_a_bound_claim_whose_class_the_config_changes_is_checked_again():
    """storageClassName is immutable: pulumi-kubernetes replaces a claim whose class
    changes. Before, a Bound claim passed whatever the config named, so a mistyped
    `minioStorageClass` on a running stack replaced MinIO's claim by one of a class that
    does not exist, Pending forever."""
    bound = {"kind": "PersistentVolumeClaim", "apiVersion": "v1",
             "metadata": {"name": "minio-data", "namespace": "trainstack"},
             "spec": {"storageClassName": "standard", "accessModes": ["ReadWriteOnce"]},
             "status": {"phase": "Bound"}}
    server = _api_server([{"metadata": {"name": "standard", "annotations": {
        "storageclass.kubernetes.io/is-default-class": "true"}}, "provisioner": "x"}],
        {"minio-data": bound})
    try:
        access = ClusterAccess(yaml.safe_dump(
            _kubeconfig(f"http://127.0.0.1:{server.server_port}")))
        with pytest.raises(StackConfigError, match="minioStorageClass = 'fsat'"):
            check_storage(parse_config({**PUSHED, "minioStorageClass": "fsat"}), access)
        # Its own class, or none named (the default it got): it stays as it is.
        assert check_storage(parse_config({**PUSHED, "minioStorageClass": "standard"}),
                             access) is None
        assert check_storage(parse_config(PUSHED), access) is None
    finally:
        server.shutdown()
        server.server_close()
