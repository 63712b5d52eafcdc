"""The control plane itself: real admission, real scheduling onto kwok's nodes, and every
socket it holds on 127.0.0.0/8."""

from __future__ import annotations

import pytest

from infra.workloads.pod import POD_SECURITY_LABELS
from tests.cluster.controlplane import KubectlFailed
from tests.cluster.nodes import CPU_NODE
from tests.cluster.sockets import sockets_of

RESTRICTED_CONTAINER = {
    "name": "c", "image": "registry.example/none:1",
    "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                        "runAsUser": 10001, "capabilities": {"drop": ["ALL"]},
                        "seccompProfile": {"type": "RuntimeDefault"}},
}


def namespace(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": POD_SECURITY_LABELS}}


def pod(name: str, ns: str, container: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
            "spec": {"containers": [container], "automountServiceAccountToken": False}}


def test_a_restricted_pod_is_scheduled_and_marked_running(control_plane):
    control_plane.apply([namespace("cp-smoke")])
    control_plane.apply([pod("ok", "cp-smoke", RESTRICTED_CONTAINER)])

    def running():
        found = control_plane.get("pod", "-n", "cp-smoke", "ok")
        return found if found["status"].get("phase") == "Running" else None

    found = control_plane.wait_for("the pod to run on a kwok node", running)
    assert found["spec"]["nodeName"] == CPU_NODE
    control_plane.kubectl("delete", "namespace", "cp-smoke", "--wait=false")


def test_pod_security_admission_refuses_an_unrestricted_pod(control_plane):
    control_plane.apply([namespace("cp-psa")])
    plain = {"name": "c", "image": "registry.example/none:1"}
    with pytest.raises(KubectlFailed, match='violates PodSecurity "restricted:latest"'):
        control_plane.apply([pod("bad", "cp-psa", plain)])
    control_plane.kubectl("delete", "namespace", "cp-psa", "--wait=false")


def test_no_component_listens_or_dials_beyond_loopback(control_plane):
    seen = {}
    for name, proc in control_plane.processes.started.items():
        seen[name] = sockets_of(proc.pid)
        outside = [s for s in seen[name] if not s.stays_on_loopback()]
        assert outside == [], f"{name} holds sockets beyond 127.0.0.0/8: {outside}"
    # the check sees sockets at all: the API server listens, its clients are connected
    assert any(s.listening for s in seen["kube-apiserver"])
    assert any(not s.listening for s in seen["kube-scheduler"])
