"""The stack's Kueue wiring (config `queue`, `queueQuota`; infra/workloads/jobparts/kueue.py).

`declare` makes the objects queueQuota asks for, before the training job; `announce`
makes `pulumi up` say, once the job exists, whether Kueue admitted it or where it waits
and why (infra/preflight/queue.py asks the cluster), instead of leaving a suspended job
to look like a silent wait; `exports` tells how to follow the queue afterwards.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pulumi

from infra import gitops
from infra.config.cluster import ClusterAccess
from infra.config.stack_config import StackConfig
from infra.workloads import pod
from infra.workloads.jobparts.kueue import Queue, QueueArgs
from infra.workloads.training import pods_storage


def declare(cfg: StackConfig, namespace: pulumi.Input[str], render) -> Queue | None:
    """queueQuota's ResourceFlavor, ClusterQueue and LocalQueue (None without it)."""
    if cfg.queue is None or cfg.queue_quota is None:
        return None
    storage = pods_storage(cfg.data_cache_size, cfg.workers)  # the whole job's
    return Queue("queue", QueueArgs(namespace=namespace, namespace_name=cfg.namespace,
                                    queue=cfg.queue, quota=cfg.queue_quota, storage=storage,
                                    labels=pod.labels("queue")),
                 opts=gitops.options("queue", render))


def announce(cfg: StackConfig, job: pulumi.CustomResource, name: pulumi.Input[str],
             cluster: ClusterAccess | None) -> None:
    """Once the job `name` is created (not in a preview, not when rendering YAML, not
    without a `cluster` to ask): one line of what Kueue did with it. The program waits for
    it (every Output is awaited)."""
    if cfg.queue is None or cfg.render_yaml_to or cluster is None \
            or pulumi.runtime.is_dry_run():
        return
    from infra.preflight.queue import report_admission

    def report(created: list[Any]) -> Any:
        return asyncio.to_thread(report_admission, cluster, cfg.namespace,
                                 cfg.training_api, created[1], cfg.queue)

    # The job's id resolves once the provider created it.
    pulumi.Output.all(job.id, name).apply(report)


def exports(cfg: StackConfig) -> dict[str, Any]:
    if cfg.queue is None:
        return {}
    return {"queueStatus": f"kubectl -n {cfg.namespace} get workloads.kueue.x-k8s.io -o wide"}
