"""The Training Operator v1.8.1 on a real API server: installed from the overlay the stack
uses, ready, admitting PyTorchJobs through its webhook, and its pods admitted under the
stack's `restricted` namespace."""

from __future__ import annotations

import pytest

from infra.workloads.pod import POD_SECURITY_LABELS
from tests.cluster.controlplane import KubectlFailed


def pytorchjob(name: str, ns: str, workers: int = 1, master_port: int = 23456) -> dict:
    container = {
        "name": "pytorch", "image": "registry.example/trainer:1",
        "ports": [{"name": "pytorchjob-port", "containerPort": master_port}],
        "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                            "runAsUser": 10001, "capabilities": {"drop": ["ALL"]},
                            "seccompProfile": {"type": "RuntimeDefault"}},
    }

    def replicas(n):
        return {"replicas": n, "restartPolicy": "OnFailure",
                "template": {"spec": {"containers": [container]}}}

    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"pytorchReplicaSpecs": {"Master": replicas(1), "Worker": replicas(workers)}}}


def test_the_webhook_refuses_an_invalid_pytorchjob(operator):
    operator.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "op-hook"}}])
    job = pytorchjob("bad", "op-hook")
    job["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] = 2  # one Master at most
    with pytest.raises(KubectlFailed, match="validator.pytorchjob.training-operator"):
        operator.apply([job])


def test_workers_are_admitted_under_restricted_without_the_init_container(operator):
    ns = "op-restricted"
    operator.apply([{"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": ns, "labels": POD_SECURITY_LABELS}}])
    operator.apply([pytorchjob("job", ns, workers=2)])

    def running_pods():
        pods = operator.get("pods", "-n", ns)["items"]
        running = [p for p in pods if p["status"].get("phase") == "Running"]
        return pods if len(running) == 3 else None

    pods = operator.wait_for("the Master and both Workers running", running_pods, 90)
    assert all(not p["spec"].get("initContainers") for p in pods)
    operator.kubectl("delete", "namespace", ns, "--wait=false")


def test_the_operators_default_init_container_is_refused_under_restricted(operator):
    """Why the stack turns it off: v1.8.1's own template, as a Worker pod, server-side."""
    ns = "op-default-init"
    operator.apply([{"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": ns, "labels": POD_SECURITY_LABELS}}])
    worker = pytorchjob("x", ns)["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]
    init = {"name": "init-pytorch", "image": "alpine:3.10", "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", "nslookup x-master-0"]}  # v1.8.1 initcontainer.go
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x-worker-0", "namespace": ns},
           "spec": {**worker["spec"], "initContainers": [init]}}
    with pytest.raises(KubectlFailed, match=r'violates PodSecurity.*container "init-pytorch"'):
        operator.apply([pod], dry_run=True)
    operator.kubectl("delete", "namespace", ns, "--wait=false")
