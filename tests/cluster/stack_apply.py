"""Apply what the Pulumi program declares (its mock rendering) to the test control plane.

`apply_stack` applies every object and patch in the order `pulumi up` creates them (the
reverse of Rendering.destroy_order), one step at a time, by server-side apply. The
operator's kustomize children are stand-ins under mocks and are skipped: the `operator`
fixture installed the real overlay. Volumes: the cluster has a default StorageClass with
no provisioner, so a PersistentVolume is made for each claim (static provisioning).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.cluster.controlplane import FIELD_MANAGER, ControlPlane
from tests.infra.render import Rendering
from tests.testkit import WAIT_S

REPO_ROOT = Path(__file__).resolve().parents[2]
PROPAGATION_ANNOTATION = "pulumi.com/deletionPropagationPolicy"
DEFAULT_CLASS = "standard"


def dev_stack_config() -> dict[str, str]:
    """Pulumi.dev.yaml's `trainstack:` keys, as `pulumi config` hands them to the program."""
    config = yaml.safe_load((REPO_ROOT / "Pulumi.dev.yaml").read_text())["config"]
    return {k.split(":", 1)[1]: str(v) for k, v in config.items()
            if k.startswith("trainstack:")}


def creation_steps(rendering: Rendering) -> list[list[dict[str, Any]]]:
    """The rendered objects and patches, in the steps `pulumi up` creates them in."""
    keyed = {**rendering.objects, **rendering.patches}
    steps = []
    for step in reversed(rendering.destroy_order()):
        objects = []
        for urn in sorted(step):
            inputs = rendering.resources[urn].inputs
            meta = inputs.get("metadata") or {}
            key = f"{inputs.get('kind')}/{meta.get('name')}"
            if key in keyed and keyed[key] is inputs:
                objects.append(inputs)
        if objects:
            steps.append(objects)
    return steps


def default_storage_class() -> dict[str, Any]:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": DEFAULT_CLASS, "annotations": {
                "storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "Immediate"}


def volumes_for(rendering: Rendering) -> list[dict[str, Any]]:
    """A PersistentVolume pre-bound to each rendered claim (never mounted: kwok)."""
    volumes = []
    for obj in rendering.objects.values():
        if obj["kind"] != "PersistentVolumeClaim":
            continue
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        volumes.append({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": f"{ns}-{name}"},
            "spec": {"capacity": {"storage": obj["spec"]["resources"]["requests"]["storage"]},
                     "accessModes": obj["spec"]["accessModes"],
                     "storageClassName": obj["spec"].get("storageClassName") or DEFAULT_CLASS,
                     "persistentVolumeReclaimPolicy": "Delete",
                     "claimRef": {"namespace": ns, "name": name},
                     "hostPath": {"path": f"/nonexistent/{ns}/{name}"}},
        })
    return volumes


def apply_stack(cp: ControlPlane, rendering: Rendering) -> list[str]:
    """Apply every step; return what the API server accepted ("kind/name" lines)."""
    accepted = []
    patches = list(rendering.patches.values())
    for step in creation_steps(rendering):
        whole = [o for o in step if not any(o is p for p in patches)]
        if whole:
            accepted += cp.apply(whole).stdout.split()
        for patch in (o for o in step if any(o is p for p in patches)):
            # a patch owns only its own fields: its own field manager, as Pulumi's has
            manager = f"{FIELD_MANAGER}-patch-{patch['metadata']['name']}"
            accepted += cp.apply([patch], field_manager=manager, patch=True).stdout.split()
    return accepted


def resource_of(obj: dict[str, Any]) -> list[str]:
    """kubectl's words for one declared object: `kind.group name [-n namespace]`."""
    meta, api = obj["metadata"], obj["apiVersion"]
    kind = f"{obj['kind'].lower()}.{api.split('/')[0]}" if "/" in api else obj["kind"].lower()
    return [kind, meta["name"], *(["-n", meta["namespace"]] if meta.get("namespace") else [])]


def delete_as_pulumi(cp: ControlPlane, obj: dict[str, Any]) -> None:
    """Delete one declared object as pulumi-kubernetes does: with the propagation its
    `pulumi.com/deletionPropagationPolicy` annotation names (foreground when it names
    none), awaited until the object is gone (the provider's own limit is 10 min)."""
    annotations = obj["metadata"].get("annotations") or {}
    cascade = annotations.get(PROPAGATION_ANNOTATION, "foreground").lower()
    cp.kubectl("delete", *resource_of(obj), f"--cascade={cascade}", "--ignore-not-found",
               "--wait=true", f"--timeout={WAIT_S}s", timeout_s=WAIT_S + 30)


def namespace_of(rendering: Rendering) -> str:
    (ns,) = [o["metadata"]["name"] for o in rendering.objects.values() if o["kind"] == "Namespace"]
    return ns


def expected_pods(rendering: Rendering) -> dict[str, int]:
    """Pods per workload: Deployment -> replicas, Job -> 1, PyTorchJob -> all replicas."""
    expected = {}
    for obj in rendering.objects.values():
        name = obj["metadata"]["name"]
        if obj["kind"] == "Deployment" and obj["metadata"].get("namespace") != "kubeflow":
            expected[f"Deployment/{name}"] = obj["spec"].get("replicas", 1)
        elif obj["kind"] == "Job":
            expected[f"Job/{name}"] = 1
        elif obj["kind"] == "PyTorchJob":
            expected[f"PyTorchJob/{name}"] = sum(
                r.get("replicas", 1) for r in obj["spec"]["pytorchReplicaSpecs"].values())
    return expected


def workload_of(pod: dict[str, Any]) -> str:
    """The workload a pod belongs to, by its labels (the operator's, Jobs', Deployments')."""
    labels = pod["metadata"].get("labels") or {}
    if "training.kubeflow.org/job-name" in labels:
        return f"PyTorchJob/{labels['training.kubeflow.org/job-name']}"
    if "job-name" in labels or "batch.kubernetes.io/job-name" in labels:
        return f"Job/{labels.get('batch.kubernetes.io/job-name') or labels['job-name']}"
    owner = (pod["metadata"].get("ownerReferences") or [{}])[0]
    if owner.get("kind") == "ReplicaSet":
        return f"Deployment/{owner['name'].rsplit('-', 1)[0]}"
    return f"{owner.get('kind')}/{owner.get('name')}"


def placed(pod: dict[str, Any]) -> bool:
    """Admitted, scheduled and (kwok) running or, for a Job's pod, completed."""
    return bool(pod["spec"].get("nodeName")) and pod["status"].get("phase") in (
        "Running", "Succeeded")
