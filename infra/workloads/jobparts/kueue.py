"""Kueue (config `queue`, `queueQuota`): the training job waits in a queue, admitted whole.

With `queue` the training job (PyTorchJob or TrainJob) carries Kueue's queue label and is
created suspended: no pod exists, and none holds resources, until Kueue admits the job
within its ClusterQueue's quota and unsuspends it, and then all its pods are created
together. Suspended by the stack itself, the job waits even where Kueue's mutating webhook
would not run; Kueue's webhook also adds what Kueue needs of a TrainJob (its runtime
patch). A preempted job is suspended again by Kueue: its pods get SIGTERM and stop at a
checkpoint (trainer.run.stopping), and it resumes there once admitted again.

With `queueQuota` (a team without a platform team's queue) the stack declares the three
objects Kueue admits by: a ResourceFlavor and a ClusterQueue, both `trainstack-<namespace>`
(cluster-wide, so named after the namespace the stack owns; the ClusterQueue takes
LocalQueues of that namespace only), and the LocalQueue `queue` in the namespace. The
ClusterQueue covers every resource the training pods request, ephemeral storage included:
Kueue refuses to admit a pod that requests a resource its ClusterQueue does not cover.
`pulumi destroy` deletes them after the job (Kueue keeps a queue while a Workload uses it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.config.quantities import canonical
from infra.workloads.pod import GPU_RESOURCE

API_GROUP = "kueue.x-k8s.io"
API_VERSION = f"{API_GROUP}/v1beta2"
QUEUE_LABEL = f"{API_GROUP}/queue-name"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
# Kueue's names of the integrations (its Configuration's integrations.frameworks).
FRAMEWORKS = {"pytorchjob": "kubeflow.org/pytorchjob", "trainjob": "trainer.kubeflow.org/trainjob"}


def queued(metadata_labels: dict[str, str], spec: dict[str, Any], queue: str | None,
           api: str) -> tuple[dict[str, str], dict[str, Any]]:
    """The job's labels and spec with `queue`: Kueue's label, created suspended (a
    PyTorchJob's runPolicy.suspend, a TrainJob's spec.suspend). Unchanged without."""
    if queue is None:
        return metadata_labels, spec
    if api == "pytorchjob":
        spec = {**spec, "runPolicy": {**spec["runPolicy"], "suspend": True}}
    else:
        spec = {**spec, "suspend": True}
    return {**metadata_labels, QUEUE_LABEL: queue}, spec


def cluster_queue_name(namespace: str) -> str:
    return f"trainstack-{namespace}"


@dataclass
class QueueArgs:
    namespace: pulumi.Input[str]  # the stack's Namespace (created first)
    namespace_name: str  # its name, which the cluster-wide objects are named after
    queue: str  # the LocalQueue's name
    quota: dict[str, Any]  # {"cpu", "memory", "gpus"}: the parsed queueQuota
    storage: str  # the ephemeral storage all the training pods request together
    labels: dict[str, str]


def quota_resources(quota: dict[str, Any], storage: str) -> list[dict[str, str]]:
    """The flavor's resources: queueQuota's, and the pods' ephemeral storage."""
    resources = [{"name": "cpu", "nominalQuota": canonical(str(quota["cpu"]))},
                 {"name": "memory", "nominalQuota": canonical(str(quota["memory"]))},
                 {"name": "ephemeral-storage", "nominalQuota": canonical(storage)}]
    if quota["gpus"]:
        resources.append({"name": GPU_RESOURCE, "nominalQuota": str(quota["gpus"])})
    return resources


class Queue(pulumi.ComponentResource):
    """The ResourceFlavor, ClusterQueue and LocalQueue of `queueQuota`; `local_queue` is
    what the training job waits for."""

    def __init__(self, name: str, args: QueueArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("trainstack:index:Queue", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        shared = cluster_queue_name(args.namespace_name)
        flavor = k8s.apiextensions.CustomResource(
            "resource-flavor", api_version=API_VERSION, kind="ResourceFlavor",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=shared, labels=args.labels),
            spec={}, opts=child)
        resources = quota_resources(args.quota, args.storage)
        cluster_queue = k8s.apiextensions.CustomResource(
            "cluster-queue", api_version=API_VERSION, kind="ClusterQueue",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=shared, labels=args.labels),
            spec={
                "namespaceSelector": {"matchLabels": {
                    NAMESPACE_NAME_LABEL: args.namespace_name}},
                "resourceGroups": [{
                    "coveredResources": [r["name"] for r in resources],
                    "flavors": [{"name": shared, "resources": resources}],
                }],
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[flavor]))
        self.local_queue = k8s.apiextensions.CustomResource(
            "local-queue", api_version=API_VERSION, kind="LocalQueue",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=args.queue, namespace=args.namespace,
                                                labels=args.labels),
            spec={"clusterQueue": shared},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[cluster_queue]))
        # (A custom resource's metadata output is untyped: the names are the inputs'.)
        self.register_outputs({"cluster_queue": shared, "local_queue": args.queue})
