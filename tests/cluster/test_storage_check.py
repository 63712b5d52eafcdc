"""A cluster without a default StorageClass: the stack stops with one line naming the key,
instead of `pulumi up` waiting in silence on MinIO's Pending claim (infra/preflight/storage.py),
asked of the real API server the way the provider reaches it (`kubernetes:kubeconfig`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from infra.config.cluster import ClusterAccess
from infra.config.errors import StackConfigError
from infra.config.keys import parse_config
from infra.preflight.storage import DEFAULT_CLASS_ANNOTATIONS, check_storage
from tests.infra.infra_helpers import PUSHED
from tests.test_package import run_program
from tests.testkit import WAIT_S

FAST = "ts-check-fast"


def _class(name: str) -> dict:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": name}, "provisioner": "example.com/none",
            "volumeBindingMode": "WaitForFirstConsumer"}


@contextmanager
def no_default_class(cp) -> Iterator[None]:
    """The cluster's StorageClasses, none of them default, for the duration (other tests'
    default class, tests/cluster/stack_apply.py, is marked default again after)."""
    defaults = [item["metadata"]["name"] for item in cp.get("storageclass")["items"]
                if any((item["metadata"].get("annotations") or {}).get(a) == "true"
                       for a in DEFAULT_CLASS_ANNOTATIONS)]
    cp.apply([_class(FAST)])

    def mark(value: str) -> None:
        for name in defaults:
            cp.kubectl("annotate", "storageclass", name, "--overwrite",
                       *(f"{a}={value}" for a in DEFAULT_CLASS_ANNOTATIONS))

    mark("false")
    try:
        yield
    finally:
        mark("true")
        cp.kubectl("delete", "storageclass", FAST, "--ignore-not-found")


@pytest.fixture
def access(control_plane) -> ClusterAccess:
    return ClusterAccess(kubeconfig=str(control_plane.kubeconfig))


def test_no_default_class_stops_the_stack_naming_the_key(control_plane, access):
    with no_default_class(control_plane), pytest.raises(StackConfigError) as stopped:
        check_storage(parse_config(PUSHED), access)
    assert stopped.value.key == "minioStorageClass"
    assert "would wait Pending forever: the cluster has no default StorageClass" in str(
        stopped.value)
    assert FAST in str(stopped.value)  # the classes the cluster does have


def test_named_classes_that_exist_pass_and_a_missing_one_is_named(control_plane, access):
    with no_default_class(control_plane):
        check_storage(parse_config({**PUSHED, "minioStorageClass": FAST, "mlflowStorageClass": FAST}),
                      access)
        with pytest.raises(StackConfigError, match="trainstack:mlflowStorageClass = 'gone'"):
            check_storage(parse_config({**PUSHED, "minioStorageClass": FAST,
                                        "mlflowStorageClass": "gone"}), access)


def test_a_kubeconfig_given_as_content_reaches_the_same_cluster(control_plane):
    access = ClusterAccess(kubeconfig=control_plane.kubeconfig.read_text())
    with no_default_class(control_plane), pytest.raises(StackConfigError):
        check_storage(parse_config(PUSHED), access)


def test_a_classless_available_volume_lets_the_claim_bind(control_plane, access):
    volume = {"apiVersion": "v1", "kind": "PersistentVolume",
              "metadata": {"name": "ts-check-static"},
              "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"],
                       "storageClassName": "", "hostPath": {"path": "/nonexistent/static"}}}
    with no_default_class(control_plane):
        control_plane.apply([volume])
        try:
            control_plane.wait_for("the volume Available", lambda: control_plane.get(
                "pv", "ts-check-static").get("status", {}).get("phase") == "Available")
            check_storage(parse_config({**PUSHED, "mlflow": "false"}), access)  # one claim
            # Two claims (MinIO's and MLflow's), one volume: MLflow's would wait forever.
            with pytest.raises(StackConfigError) as stopped:
                check_storage(parse_config(PUSHED), access)
            assert stopped.value.key == "mlflowStorageClass"
        finally:
            control_plane.kubectl("delete", "pv", "ts-check-static", "--ignore-not-found")


def test_a_classless_volume_smaller_than_the_claim_stops_the_stack(control_plane, access):
    """The real binder never binds a volume smaller than the claim: MinIO's 10Gi claim
    stays Pending beside an Available 5Gi volume of no class (its event says so), and the
    check stops the stack before that. Before, any such volume passed."""
    cp, ns = control_plane, "ts-check-size"
    small = {"apiVersion": "v1", "kind": "PersistentVolume",
             "metadata": {"name": "ts-check-small"},
             "spec": {"capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteOnce"],
                      "storageClassName": "", "hostPath": {"path": "/nonexistent/small"}}}
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": {"name": "minio-data", "namespace": ns},
             "spec": {"accessModes": ["ReadWriteOnce"],
                      "resources": {"requests": {"storage": "10Gi"}}}}
    with no_default_class(cp):
        cp.apply([small, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}])
        try:
            cp.wait_for("the volume Available", lambda: cp.get("pv", "ts-check-small").get(
                "status", {}).get("phase") == "Available")
            config = parse_config({**PUSHED, "mlflow": "false", "namespace": ns})
            with pytest.raises(StackConfigError) as stopped:
                check_storage(config, access)
            assert "none of its 1 Available PersistentVolume(s) of no class fits the claim " \
                   "(ReadWriteOnce, a filesystem, at least 10Gi; the largest: " \
                   "ts-check-small, 5Gi)" in str(stopped.value)
            cp.apply([claim])
            cp.wait_for("the binder's verdict on the claim", lambda: any(
                e["reason"] == "FailedBinding" for e in cp.get(
                    "events", "-n", ns, "--field-selector",
                    "involvedObject.name=minio-data")["items"]))
            assert cp.get("pvc", "-n", ns, "minio-data")["status"]["phase"] == "Pending"
            assert cp.get("pv", "ts-check-small")["status"]["phase"] == "Available"
            # With the claim's size, the same volume binds it, and the check passes.
            cp.kubectl("delete", "pv", "ts-check-small")
            cp.apply([{**small, "spec": {**small["spec"], "capacity": {"storage": "10Gi"}}}])
            check_storage(config, access)
            cp.wait_for("the claim Bound", lambda: cp.get("pvc", "-n", ns, "minio-data")[
                "status"]["phase"] == "Bound", timeout_s=WAIT_S)
        finally:
            cp.kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=false")
            cp.kubectl("delete", "pv", "ts-check-small", "--ignore-not-found", "--wait=false")


def test_the_program_stops_before_registering_anything(control_plane):
    """`pulumi up` as the CLI runs it, with the provider's kubeconfig: one error line."""
    with no_default_class(control_plane):
        result = run_program({"trainstack:image": "registry.example.com/t/trainer",
                              "kubernetes:kubeconfig": str(control_plane.kubeconfig)})
    assert result.returncode != 0
    # Every claim that would wait, in one error (issue 28 #24): MinIO's and MLflow's.
    assert ("MinIO's volume (PersistentVolumeClaim minio-data) and MLflow's volume "
            "(PersistentVolumeClaim mlflow-data) would wait Pending forever") in (
        result.stderr), result.stderr[-2000:]
    assert "kubernetes:apps/v1:Deployment" not in result.stdout
