"""What `pulumi up` and `pulumi destroy` wait for, and for how long (docs/operations.md)."""

from __future__ import annotations

import copy
import logging

import pytest

from infra.operators.training_operator import CHECKED_RELEASES
from tests.infra.infra_helpers import EXTERNAL, PUSHED, pytorchjob
from tests.infra.render import Rendering, render

DIRECTORY = "kubernetes:kustomize/v2:Directory"
INGEST = "trainstack-ingest-cifar10"
BUCKETS = "trainstack-buckets"


def job_name(rendering: Rendering) -> str:
    return pytorchjob(rendering)["metadata"]["name"]


def test_job_await_timeouts_fit_a_download_and_an_image_pull(default_stack):
    """pulumi-kubernetes waits 10 minutes for a Job by default: too short for a 170 MB
    download after a 1-2 GB image pull on a fresh node."""
    ingest = default_stack.registration("Job", INGEST)
    assert ingest.custom_timeouts == {"create": "30m", "update": "30m"}
    assert default_stack.registration("Job", BUCKETS).custom_timeouts == {
        "create": "15m", "update": "15m"}
    custom = render({**PUSHED, "ingestTimeout": "2h", "bucketsTimeout": "600s"})
    assert custom.registration("Job", INGEST).custom_timeouts["create"] == "2h"
    assert custom.registration("Job", BUCKETS).custom_timeouts["update"] == "600s"


def test_ingest_job_has_ephemeral_storage_for_download_and_unpacking(default_stack):
    """Issue 9, finding 11: a bomb that gets past the trainer's checks fills a bounded
    volume and gets the pod evicted, not the node's disk."""
    pod = default_stack.objects[f"Job/{INGEST}"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    resources = container["resources"]
    assert resources["requests"]["ephemeral-storage"] == "4Gi"
    assert resources["limits"]["ephemeral-storage"] == "4Gi"
    (tmp,) = [v for v in pod["volumes"] if v["name"] == "tmp"]
    assert tmp["emptyDir"] == {"sizeLimit": "4Gi"}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "TMPDIR", "value": "/tmp"} in container["env"]
    big = render({**PUSHED, "dataset": "imagefolder", "datasetSource": "https://e.com/p.tar.gz",
                  "ingestStorage": "40Gi"})
    spec = big.objects["Job/trainstack-ingest-imagefolder"]["spec"]["template"]["spec"]
    assert spec["containers"][0]["resources"]["limits"]["ephemeral-storage"] == "40Gi"
    assert spec["volumes"][0]["emptyDir"]["sizeLimit"] == "40Gi"


def test_a_wait_for_first_consumer_volume_cannot_deadlock_minio(default_stack):
    """The claim binds only once MinIO's pod is scheduled; the pod exists only after the
    claim is created. So the claim is not awaited, and it waits for nothing of MinIO's."""
    pvc = default_stack.registration("PersistentVolumeClaim", "minio-data")
    assert pvc.inputs["metadata"]["annotations"]["pulumi.com/skipAwait"] == "true"
    minio = default_stack.urn_of("Deployment", "minio")
    assert minio not in default_stack.dependencies_of(pvc)
    assert pvc.urn in default_stack.registration("Deployment", "minio").dependencies


def test_up_never_waits_for_training(default_stack):
    """The PyTorchJob is not awaited, and the app waits for nothing training does: its
    readiness (/readyz) is 200 "waiting" until the first model is published."""
    job = default_stack.registration("PyTorchJob", job_name(default_stack))
    assert job.inputs["metadata"]["annotations"]["pulumi.com/skipAwait"] == "true"
    app = default_stack.registration("Deployment", "inference")
    waits_for = set()
    frontier = {app.urn}
    while frontier:  # everything the app's creation waits for, transitively
        nxt = set().union(*(default_stack.dependencies_of(default_stack.resources[u])
                            for u in frontier)) - waits_for
        waits_for |= nxt
        frontier = nxt
    for kind, name in (("PyTorchJob", job_name(default_stack)), ("Job", INGEST),
                       ("ConfigMap", "trainstack-train")):
        assert default_stack.urn_of(kind, name) not in waits_for, name
    assert not [u for u in waits_for if default_stack.resources[u].type == DIRECTORY]
    probe = app.inputs["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert probe["httpGet"]["path"] == "/readyz"
    assert "customTimeouts" not in app.inputs and app.custom_timeouts == {}  # 10 min default


def steps_of(rendering: Rendering) -> dict[str, int]:
    return {rendering.resources[u].name: i for i, step in enumerate(rendering.destroy_order())
            for u in step}


def test_destroy_deletes_the_pytorchjob_while_the_operator_still_runs(default_stack):
    """The engine deletes a resource only after everything depending on it; a dependency
    on a component (the operator's kustomize Directory) counts for its children."""
    step = steps_of(default_stack)
    job = step["pytorchjob"]
    for operator_object in ("training-operator-kubeflow/training-operator",
                            "training-operator-pytorchjobs.kubeflow.org"):
        assert job < step[operator_object], operator_object
    # ... and before the store it writes to and the Secret its pods read.
    for name in ("minio", "minio-credentials", "minio-data", BUCKETS, INGEST):
        assert job < step[name], name
    assert step["namespace"] == max(step.values())  # the namespace last, when it is empty


def test_destroy_order_of_the_whole_stack(default_stack):
    """The order docs/operations.md states."""
    order = [sorted(default_stack.resources[u].name for u in s
                    if default_stack.resources[u].custom)
             for s in default_stack.destroy_order()]
    order = [s for s in order if s]
    # the PyTorchJob (created after the MLflow server: its rank 0 logs there)
    assert order[0] == ["pytorchjob"]
    assert order[1] == ["inference", "mlflow"]  # the app's and MLflow's Services
    # the app's and MLflow's Deployments (MLflow writes to MinIO), the ingest Job
    assert order[2] == ["inference", "mlflow", INGEST]
    # the bucket Job; the patch that mounts the operator's init-container template
    assert order[3] == sorted([BUCKETS, "training-operator-init-template"])
    # MinIO's Deployment (its pods are gone before the volume); the template's ConfigMap;
    # the job's progress RoleBinding, then its Role (after the job: rank 0 may patch it)
    assert order[4] == ["job-progress-binding", "minio", "training-operator-init-container"]
    assert set(order[5]) >= {"job-progress-role", "minio-credentials",
                             "training-operator-kubeflow/training-operator",
                             "training-operator-pytorchjobs.kubeflow.org"}
    assert order[-1] == ["namespace"] or "namespace" in order[-1]


def test_a_dependency_on_the_operator_covers_its_children(default_stack):
    """The engine's rule for a component dependency (its children registered before)."""
    job = default_stack.registration("PyTorchJob", job_name(default_stack))
    directory = default_stack.by_type(DIRECTORY)[0].urn
    children = default_stack.descendants(directory)
    assert len(children) == 2 and directory in job.dependencies
    assert children <= default_stack.dependencies_of(job)


def test_the_destroy_order_check_can_fail(default_stack):
    """Were the operator to depend on the job instead, the job would outlive it."""
    broken = copy.deepcopy(default_stack)
    job = broken.registration("PyTorchJob", job_name(default_stack))
    directory = broken.by_type(DIRECTORY)[0].urn
    job.dependencies = [d for d in job.dependencies if d != directory]
    for child in broken.descendants(directory):
        broken.resources[child].dependencies.append(job.urn)
        broken.resources[child].order = job.order + 1
    step = steps_of(broken)
    assert step["pytorchjob"] > step["training-operator-kubeflow/training-operator"]


def test_destroy_with_an_external_store_deletes_workloads_then_the_namespace():
    rendering = render(EXTERNAL)
    step = steps_of(rendering)
    assert step["pytorchjob"] < step[BUCKETS] and step[INGEST] < step[BUCKETS]
    assert step["namespace"] == max(step.values())


@pytest.mark.parametrize("version", sorted(CHECKED_RELEASES))
def test_checked_operator_releases_are_pinned_by_commit(version, caplog):
    with caplog.at_level(logging.WARNING):
        rendering = render({**PUSHED, "trainingOperatorVersion": version})
    (directory,) = rendering.by_type(DIRECTORY)
    assert directory.inputs["directory"].endswith(f"?ref={CHECKED_RELEASES[version]}")
    assert not [r for r in caplog.records if "not checked" in r.getMessage()]


def test_an_unchecked_v1_release_is_fetched_by_tag_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        rendering = render({**PUSHED, "trainingOperatorVersion": "v1.9.1"})
    (directory,) = rendering.by_type(DIRECTORY)
    assert directory.inputs["directory"].endswith("overlays/standalone?ref=v1.9.1")
    assert any("v1.9.1 was not checked" in r.getMessage() for r in caplog.records)
