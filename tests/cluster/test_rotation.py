"""A secret rotation on a real API server, step by step as `pulumi up` takes it
(tests/infra/plan.py derives the steps; the real controllers do the rest): the
Deployments keep their uid and roll to pods that read the new Secret, the bucket and
ingest Jobs keep theirs and their completed pods (the server accepts their unchanged
template; a changed one it would refuse: immutable), the training job runs again under a
new name with only its new pods, and the old versioned Secret is gone."""

from __future__ import annotations

from typing import Any

import pytest

from infra.workloads import trainjob as tj
from tests.cluster import stack_apply, trainjob_kit
from tests.cluster.stack_apply import delete_as_pulumi, namespace_of, volumes_for
from tests.cluster.test_stack_apply import delete_namespace_leaves_nothing, wait_all_placed
from tests.infra.infra_helpers import PASSWORD, PUSHED
from tests.infra.plan import Plan, label, up_plan
from tests.infra.render import Rendering, render
from tests.testkit import WAIT_S

KINDS = {"Deployment": "deployment", "Job": "job.batch"}


def objects_by_label(rendering: Rendering) -> dict[str, dict[str, Any]]:
    return {label(r): r.inputs for r in rendering.resources.values()
            if r.custom and r.type.startswith("kubernetes:") and r.inputs.get("metadata")}


def pulumi_up(cp, plan: Plan, apply_all) -> None:
    """The plan's steps: delete-first replacements deleted, everything applied in
    `pulumi up`'s order (`apply_all`), then the old objects of create-first ones deleted."""
    old, new = objects_by_label(plan.before), objects_by_label(plan.after)
    for name, step in plan.steps.items():
        if step == "replace-delete-first" and name in old:
            delete_as_pulumi(cp, old[name])
    apply_all(cp, plan.after)
    for name, step in plan.steps.items():
        if step == "replace" and name in old and (
                old[name]["metadata"]["name"] != new[name]["metadata"]["name"]):
            delete_as_pulumi(cp, old[name])


def uids(cp, ns: str, rendering: Rendering) -> dict[str, tuple[str, set[str]]]:
    """Each Deployment's and Job's uid, and the uids of its pods."""
    found = {}
    for obj in rendering.objects.values():
        if obj["kind"] in KINDS:
            name = obj["metadata"]["name"]
            found[f"{obj['kind']}/{name}"] = (
                cp.get(KINDS[obj["kind"]], "-n", ns, name)["metadata"]["uid"],
                {p["metadata"]["uid"] for p in pods_of(cp, ns, obj)})
    return found


def pods_of(cp, ns: str, obj: dict[str, Any]) -> list[dict[str, Any]]:
    selector = ",".join(f"{k}={v}" for k, v in obj["spec"]["template"]["metadata"][
        "labels"].items())
    return [p for p in cp.get("pods", "-n", ns, "-l", selector)["items"]
            if "deletionTimestamp" not in p["metadata"]]


def secrets_named(pod: dict[str, Any]) -> set[str]:
    """Every Secret a pod's spec names (env, envFrom, volumes)."""
    spec = pod["spec"]
    names = {v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
    for container in spec["containers"]:
        names |= {e["valueFrom"]["secretKeyRef"]["name"] for e in container.get("env", [])
                  if "secretKeyRef" in e.get("valueFrom", {})}
        names |= {s["secretRef"]["name"] for s in container.get("envFrom", []) if "secretRef" in s}
    return names


def check_rolled(cp, ns: str, first: dict[str, tuple[str, set[str]]], after: Rendering,
                 old_secret: str, new_secret: str) -> None:
    """`first`: uids() before the rotation."""
    for obj in after.objects.values():
        if obj["kind"] == "Deployment":
            name = obj["metadata"]["name"]

            def rolled(obj=obj):
                pods = pods_of(cp, ns, obj)
                named = [secrets_named(p) for p in pods]
                return pods if len(pods) == obj["spec"]["replicas"] and all(
                    old_secret not in n for n in named) else None
            pods = cp.wait_for(f"{name}'s pods without {old_secret}", rolled, timeout_s=WAIT_S,
                               namespace=ns)
            uid = cp.get("deployment", "-n", ns, name)["metadata"]["uid"]
            assert uid == first[f"Deployment/{name}"][0], f"{name} was deleted"
            assert not {p["metadata"]["uid"] for p in pods} & first[f"Deployment/{name}"][1]
            if name == "minio":
                assert all(new_secret in secrets_named(p) for p in pods)
        elif obj["kind"] == "Job":
            key = f"Job/{obj['metadata']['name']}"
            assert uids(cp, ns, after)[key] == first[key], f"{key} ran again"
    gone = cp.kubectl("get", "secret", "-n", ns, old_secret, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr


def versioned_store_secret(rendering: Rendering) -> str:
    (name,) = [o["metadata"]["name"] for o in rendering.objects.values()
               if o["kind"] == "Secret" and o["metadata"]["name"].startswith("minio-credentials-")]
    return name


def test_a_new_minio_password_rolls_the_deployments_and_renames_the_pytorchjob(storage):
    cp = storage
    config = {**PUSHED, "namespace": "ts-rotation", "minioRootPassword": PASSWORD}
    before, after = render(config), render({**config, "minioRootPassword": PASSWORD + "-new"})
    ns = namespace_of(before)
    cp.apply(volumes_for(before))
    stack_apply.apply_stack(cp, before)
    wait_all_placed(cp, before)
    first = uids(cp, ns, before)
    pulumi_up(cp, up_plan(before, after), stack_apply.apply_stack)
    wait_all_placed(cp, after)
    check_rolled(cp, ns, first, after, versioned_store_secret(before),
                 versioned_store_secret(after))
    (old_job,) = [o for o in before.objects.values() if o["kind"] == "PyTorchJob"]
    gone = cp.kubectl("get", "pytorchjob", "-n", ns, old_job["metadata"]["name"], check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr
    delete_namespace_leaves_nothing(cp, ns)


@pytest.fixture(scope="module")
def trainer(control_plane, tmp_path_factory):
    return trainjob_kit.installed(control_plane, tmp_path_factory.mktemp("trainer-v2"))


def test_a_new_minio_password_restarts_the_trainjob_under_a_new_name(trainer, storage):
    """Item 1 of issue 28: the ranks read the credentials at start; the TrainJob's old
    JobSet, deleted in the background, never meets the new one (a new name)."""
    cp = trainer
    config = {**trainjob_kit.CONFIG, "namespace": "ts-rotation-v2", "workers": "2",
              "mlflow": "false", "minioRootPassword": PASSWORD}
    before, after = render(config), render({**config, "minioRootPassword": PASSWORD + "-new"})
    ns = namespace_of(before)
    cp.apply(volumes_for(before))
    old_job = trainjob_kit.apply_stack(cp, before)
    trainjob_kit.scheduled_pods(cp, ns, old_job["metadata"]["name"], 2)
    wait_all_placed(cp, before)
    first = uids(cp, ns, before)
    plan = up_plan(before, after)
    assert plan.steps["TrainJob/trainjob"] == "replace-delete-first"
    pulumi_up(cp, plan, trainjob_kit.apply_stack)
    (new_job,) = [o for o in after.objects.values() if o["kind"] == "TrainJob"]
    name = new_job["metadata"]["name"]
    assert name != old_job["metadata"]["name"]
    pods = trainjob_kit.scheduled_pods(cp, ns, name, 2)
    new_secret = versioned_store_secret(after)
    assert all(new_secret in secrets_named(p) for p in pods)

    def only_new():
        everything = cp.get("pods", "-n", ns, "-l", tj.JOBSET_NAME_LABEL)["items"]
        return {p["metadata"]["labels"][tj.JOBSET_NAME_LABEL] for p in everything} == {name}
    cp.wait_for("only the new TrainJob's pods", only_new, timeout_s=WAIT_S, namespace=ns)
    check_rolled(cp, ns, first, after, versioned_store_secret(before), new_secret)
    delete_namespace_leaves_nothing(cp, ns)
