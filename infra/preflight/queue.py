"""Kueue around `pulumi up` (config `queue`): its queue before, the job's place after.

Before anything is registered, `check_queue`: a `queue` the stack does not declare
(no `queueQuota`) must be a LocalQueue of the namespace on the cluster, or the job would
wait in a queue that does not exist: one line naming the key instead. Its ClusterQueue
should cover every resource the training pods request (Kueue never admits a pod asking
for one it does not cover): a warning, as Kueue's configuration may leave some out.
(Kueue's CRDs themselves: infra/preflight/crds.py.)

Once the suspended job exists, `report_admission` says what Kueue did with it: admitted
(its pods start together), or queued with Kueue's own reason (such as the quota it lacks),
or no Workload at all (Kueue does not manage the kind). `pulumi up` does not wait for
admission, which may take hours.
"""

from __future__ import annotations

import time
from typing import Any

import pulumi

from infra.config.cluster import ClusterAccess
from infra.config.errors import StackConfigError
from infra.config.stack_config import StackConfig
from infra.preflight.cluster import TIMEOUT_S, UNANSWERED, connect, reason
from infra.workloads.jobparts.kueue import API_GROUP, FRAMEWORKS
from infra.workloads.pod import GPU_RESOURCE

VERSION = "v1beta2"
REPORT_WAIT_S = 30.0  # for Kueue to make the job's Workload and decide on it
POLL_S = 1.0
KINDS = {"pytorchjob": "PyTorchJob", "trainjob": "TrainJob"}


def requested_resources(cfg: StackConfig) -> list[str]:
    """What a training pod requests (infra/workloads/pod.py resources)."""
    return ["cpu", "memory", "ephemeral-storage",
            *([GPU_RESOURCE] if cfg.gpus_per_worker > 0 else [])]


def check_queue(cfg: StackConfig, access: ClusterAccess) -> None:
    """StackConfigError when `queue` names no LocalQueue of the namespace; returns when it
    does, when the stack declares it, or when the cluster cannot be asked."""
    if cfg.queue is None or cfg.queue_quota is not None or cfg.render_yaml_to:
        return
    from kubernetes import client

    api = connect(access, "queue check")
    if api is None:
        return
    with api:
        custom = client.CustomObjectsApi(api)
        try:
            local = custom.get_namespaced_custom_object(
                API_GROUP, VERSION, cfg.namespace, "localqueues", cfg.queue,
                _request_timeout=TIMEOUT_S)
        except UNANSWERED as exc:
            if getattr(exc, "status", None) != 404:
                pulumi.log.info(f"the LocalQueue of queue was not checked ({reason(exc)})")
                return
            raise StackConfigError(
                f"invalid config trainstack:queue = '{cfg.queue}': the cluster has no "
                f"LocalQueue {cfg.queue} in namespace {cfg.namespace}: ask for one (a "
                "LocalQueue of your team's ClusterQueue), or set queueQuota for the stack to "
                "declare it", key="queue") from None
        _warn_uncovered(cfg, custom, local)


def _warn_uncovered(cfg: StackConfig, custom, local: dict[str, Any]) -> None:
    cluster_queue = (local.get("spec") or {}).get("clusterQueue", "")
    try:
        queue = custom.get_cluster_custom_object(API_GROUP, VERSION, "clusterqueues",
                                                 cluster_queue, _request_timeout=TIMEOUT_S)
    except UNANSWERED as exc:
        pulumi.log.info(f"ClusterQueue {cluster_queue} was not checked ({reason(exc)})")
        return
    covered = {name for group in (queue.get("spec") or {}).get("resourceGroups") or []
               for name in group.get("coveredResources") or []}
    missing = [name for name in requested_resources(cfg) if name not in covered]
    if missing:
        pulumi.log.warn(
            f"trainstack:queue '{cfg.queue}': its ClusterQueue {cluster_queue} does not cover "
            f"{', '.join(missing)}, which the training pods request: unless Kueue is set to "
            "ignore it, Kueue will never admit the training job")


def report_admission(access: ClusterAccess, namespace: str, api: str, job: str,
                     queue: str, wait_s: float = REPORT_WAIT_S) -> str | None:
    """Log, and return, one line on what Kueue did with the job (None: not asked)."""
    client = connect(access, "admission report")
    if client is None:
        return None
    with client:
        line = describe_admission(client, namespace, api, job, queue, wait_s)
    (pulumi.log.info if line.startswith("admitted") else pulumi.log.warn)(
        f"training job {job}: {line}")
    return line


def describe_admission(api_client, namespace: str, api: str, job: str, queue: str,
                       wait_s: float = REPORT_WAIT_S) -> str:
    """What Kueue did with the job, once it decided or after `wait_s`."""
    from kubernetes import client

    custom = client.CustomObjectsApi(api_client)
    deadline = time.monotonic() + wait_s
    workload = None
    while True:
        try:
            workload = workload_of(custom, namespace, KINDS[api], job)
        except UNANSWERED as exc:
            return f"its place in the queue is unknown ({reason(exc)})"
        decided = workload is not None and _decision(workload)
        if decided or time.monotonic() >= deadline:
            break
        time.sleep(POLL_S)
    follow = f"kubectl -n {namespace} get workloads.kueue.x-k8s.io -o wide"
    if workload is None:
        return (f"created suspended in LocalQueue {queue}, but Kueue made no Workload for it "
                f"in {wait_s:g} s: Kueue must run with {FRAMEWORKS[api]} in its "
                f"integrations.frameworks, or the job never starts ({follow})")
    admitted, message = _decision(workload) or (False, "Kueue has not decided yet")
    if admitted:
        cluster_queue = (workload.get("status", {}).get("admission") or {}).get("clusterQueue")
        return f"admitted by Kueue (ClusterQueue {cluster_queue}): its pods start together"
    return (f"queued in LocalQueue {queue}, no pod created: {message}. It starts, all its "
            f"pods at once, when Kueue admits it ({follow})")


def workload_of(custom, namespace: str, kind: str, job: str) -> dict[str, Any] | None:
    """The Workload Kueue made for the job (the one its ownerReferences name)."""
    found = custom.list_namespaced_custom_object(API_GROUP, VERSION, namespace, "workloads",
                                                 _request_timeout=TIMEOUT_S)
    for workload in found.get("items") or []:
        owners = workload["metadata"].get("ownerReferences") or []
        if any(o.get("kind") == kind and o.get("name") == job for o in owners):
            return workload
    return None


def _decision(workload: dict[str, Any]) -> tuple[bool, str] | None:
    """(admitted, Kueue's message) once Kueue decided on the Workload; None before."""
    conditions = {c["type"]: c for c in workload.get("status", {}).get("conditions") or []}
    if conditions.get("Admitted", {}).get("status") == "True":
        return True, conditions["Admitted"].get("message", "")
    pending = conditions.get("QuotaReserved")
    if pending is not None and pending.get("status") == "False":
        return False, pending.get("message") or pending.get("reason", "")
    return None
