"""The fake nodes kwok keeps alive: one CPU node and one GPU node shaped like a GPU stack's.

The GPU node carries what the NVIDIA GPU operator / device plugin put on real GPU nodes:
an `nvidia.com/gpu` capacity, the `nvidia.com/gpu.present` and `nvidia.com/gpu.product`
labels (GPU feature discovery) and the `nvidia.com/gpu` NoSchedule taint most managed GPU
node pools carry, so only pods that tolerate it land there.
"""

from __future__ import annotations

from typing import Any

from tests.cluster.controlplane import KWOK_NODE_ANNOTATION, ControlPlane

CPU_NODE = "trainstack-cpu-0"
GPU_NODE = "trainstack-gpu-0"
GPUS_PER_NODE = 4
GPU_LABELS = {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


def node(name: str, capacity: dict[str, str], labels: dict[str, str] | None = None,
         taints: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "annotations": {KWOK_NODE_ANNOTATION: "fake"},
                     "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                "kubernetes.io/arch": "amd64", "type": "kwok",
                                **(labels or {})}},
        "spec": {"taints": taints or []},
        "status": {"capacity": capacity, "allocatable": capacity},
    }


def test_nodes() -> list[dict[str, Any]]:
    return [
        node(CPU_NODE, {"cpu": "32", "memory": "128Gi", "pods": "110",
                        "ephemeral-storage": "500Gi"}),
        node(GPU_NODE, {"cpu": "32", "memory": "256Gi", "pods": "110",
                        "ephemeral-storage": "500Gi",
                        "nvidia.com/gpu": str(GPUS_PER_NODE)}, GPU_LABELS, [GPU_TAINT]),
    ]


def add_nodes(cp: ControlPlane) -> None:
    """Create the nodes and wait until kwok reports them Ready."""
    cp.kubectl("create", "-f", "-", input=_as_list(test_nodes()))

    def all_ready() -> bool:
        nodes = cp.get("nodes")["items"]
        return len(nodes) == 2 and all(
            any(c["type"] == "Ready" and c["status"] == "True"
                for c in n.get("status", {}).get("conditions", [])) for n in nodes)

    cp.wait_for("kwok's nodes to be Ready", all_ready, timeout_s=60)


def _as_list(items: list[dict[str, Any]]) -> str:
    import json

    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
