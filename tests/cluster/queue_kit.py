"""What the Kueue tests on the real control plane share: a platform team's queue, the
stack applied as `pulumi up` applies it, the job's pods and Workload, Kueue's decision."""

from __future__ import annotations

import json
from typing import Any

from infra.config.cluster import ClusterAccess
from infra.preflight.cluster import api_client
from infra.preflight.queue import describe_admission, workload_of
from tests.cluster import trainjob_kit
from tests.cluster.controlplane import ControlPlane
from tests.cluster.stack_apply import apply_stack, namespace_of
from tests.cluster.test_pytorchjob_runs import JOB_LABEL, PYTORCHJOB
from tests.infra.render import Rendering, render
from tests.testkit import WAIT_S

CONFIGS = {"pytorchjob": PYTORCHJOB, "trainjob": trainjob_kit.CONFIG}
KINDS = {"pytorchjob": "PyTorchJob", "trainjob": "TrainJob"}
POD_LABELS = {"pytorchjob": JOB_LABEL, "trainjob": "jobset.sigs.k8s.io/jobset-name"}
FLAVOR = "default-flavor"
# What one training pod requests (PYTORCHJOB / trainjob_kit.CONFIG): 1 CPU, 2Gi, 6Gi disk.
PER_POD = {"cpu": 1, "memory": 2, "ephemeral-storage": 6}


def stack(api: str, namespace: str, **config: str) -> Rendering:
    return render({**CONFIGS[api], "namespace": namespace, **config})


def access(cp: ControlPlane) -> ClusterAccess:
    return ClusterAccess(kubeconfig=str(cp.kubeconfig))


def platform_queue(cp: ControlPlane, cluster_queue: str, pods: int,
                   namespaces: list[str], local_queue: str = "team") -> None:
    """What a platform team gives: a ClusterQueue with room for `pods` training pods and a
    LocalQueue of it in each namespace (the namespaces exist first)."""
    cp.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
              for ns in namespaces])
    cp.apply([{"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor",
               "metadata": {"name": FLAVOR}, "spec": {}}])
    cp.apply([cluster_queue_object(cluster_queue, pods)])
    cp.apply([{"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
               "metadata": {"name": local_queue, "namespace": ns},
               "spec": {"clusterQueue": cluster_queue}} for ns in namespaces])


def cluster_queue_object(name: str, pods: int) -> dict[str, Any]:
    quota = [{"name": "cpu", "nominalQuota": str(PER_POD["cpu"] * pods)},
             {"name": "memory", "nominalQuota": f"{PER_POD['memory'] * pods}Gi"},
             {"name": "ephemeral-storage",
              "nominalQuota": f"{PER_POD['ephemeral-storage'] * pods}Gi"}]
    return {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue",
            "metadata": {"name": name},
            "spec": {"namespaceSelector": {}, "resourceGroups": [{
                "coveredResources": [r["name"] for r in quota],
                "flavors": [{"name": FLAVOR, "resources": quota}]}]}}


def apply(cp: ControlPlane, rendering: Rendering, api: str) -> dict[str, Any]:
    """`pulumi up`'s steps; returns the training job as the stack declared it."""
    if api == "trainjob":
        return trainjob_kit.apply_stack(cp, rendering)
    apply_stack(cp, rendering)
    (job,) = [o for o in rendering.objects.values() if o["kind"] == "PyTorchJob"]
    return job


def pods_of(cp: ControlPlane, api: str, namespace: str, job: str) -> list[dict[str, Any]]:
    return cp.get("pods", "-n", namespace, "-l", f"{POD_LABELS[api]}={job}")["items"]


def workload(cp: ControlPlane, api: str, namespace: str, job: str) -> dict[str, Any] | None:
    from kubernetes import client

    return workload_of(client.CustomObjectsApi(cp.api), namespace, KINDS[api], job)


def decision(cp: ControlPlane, api: str, namespace: str, job: str) -> str:
    """Kueue's decision as `pulumi up` reports it (infra/preflight/queue.py), once made."""
    with api_client(access(cp)) as client:
        return describe_admission(client, namespace, api, job, "team", wait_s=WAIT_S)


def admitted(cp: ControlPlane, api: str, namespace: str, job: str) -> dict[str, Any]:
    def found():
        got = workload(cp, api, namespace, job)
        conditions = {c["type"]: c["status"] for c in
                      (got or {}).get("status", {}).get("conditions") or []}
        return got if conditions.get("Admitted") == "True" else None
    return cp.wait_for(f"Kueue to admit {job}", found, timeout_s=WAIT_S, namespace=namespace)


def all_pods(cp: ControlPlane, api: str, namespace: str, job: str, count: int
             ) -> list[dict[str, Any]]:
    def ready():
        pods = pods_of(cp, api, namespace, job)
        return pods if len(pods) == count else None
    return cp.wait_for(f"{count} pods of {job}", ready, timeout_s=WAIT_S, namespace=namespace)


def suspended(cp: ControlPlane, api: str, namespace: str, job: str) -> bool:
    obj = cp.get(KINDS[api].lower(), job, "-n", namespace)
    spec = obj["spec"]
    return bool(spec["runPolicy"].get("suspend") if api == "pytorchjob" else spec.get("suspend"))


def set_quota(cp: ControlPlane, cluster_queue: str, pods: int) -> None:
    cp.kubectl("patch", "clusterqueue.kueue.x-k8s.io", cluster_queue, "--type=merge", "-p",
               json.dumps({"spec": cluster_queue_object(cluster_queue, pods)["spec"]}))


def namespace(rendering: Rendering) -> str:
    return namespace_of(rendering)
