"""Kueue's real controller (v0.17.0, built from its Go module) admits the stack's training
job whole or not at all, on the cluster tier's control plane, for both training APIs:

- a ClusterQueue whose quota fits two of the three workers leaves the job suspended with
  no pod created, and `pulumi up` says so (with Kueue's reason); raising the quota admits
  it and only then are its pods created, all of them;
- a second stack's job in the same ClusterQueue waits its turn, without a pod, until the
  first job is gone;
- with queueQuota the stack's own queue admits the job, a rescale re-queues the replaced
  job, and `pulumi destroy`'s order leaves no Kueue object behind;
- before anything is registered: a `queue` that does not exist is one line naming the key.
"""

from __future__ import annotations

import json
import logging

import pytest

from infra.config.errors import StackConfigError
from infra.config.keys import parse_config
from infra.preflight.crds import check_crds
from infra.preflight.queue import check_queue
from tests.cluster import queue_kit as kit
from tests.cluster.stack_apply import delete_as_pulumi, volumes_for

WORKERS = "3"


def job_name(job) -> str:
    return job["metadata"]["name"]


@pytest.mark.parametrize("api", ["pytorchjob", "trainjob"])
def test_a_quota_for_two_of_three_workers_holds_the_job_without_a_pod_until_raised(
        queue_plane, api):
    cp, ns, cluster_queue = queue_plane, f"quota-{api}", f"two-of-three-{api}"
    rendering = kit.stack(api, ns, workers=WORKERS, queue="team")
    cp.apply(volumes_for(rendering))
    # Before the platform team made the LocalQueue, `pulumi up` stops at once.
    with pytest.raises(StackConfigError) as missing:
        check_queue(parse_config({**kit.CONFIGS[api], "namespace": ns, "queue": "team"}),
                    kit.access(cp))
    assert missing.value.key == "queue" and "no LocalQueue team in namespace" in str(
        missing.value)
    kit.platform_queue(cp, cluster_queue, pods=2, namespaces=[ns])
    check_queue(parse_config({**kit.CONFIGS[api], "namespace": ns, "queue": "team"}),
                kit.access(cp))
    job = job_name(kit.apply(cp, rendering, api))

    line = kit.decision(cp, api, ns, job)
    assert line.startswith("queued in LocalQueue team, no pod created: ") and \
        "insufficient quota for " in line, line  # whichever resource Kueue checks first
    assert kit.suspended(cp, api, ns, job) and kit.pods_of(cp, api, ns, job) == []

    kit.set_quota(cp, cluster_queue, pods=3)
    admission = kit.admitted(cp, api, ns, job)
    pods = kit.all_pods(cp, api, ns, job, 3)
    assert not kit.suspended(cp, api, ns, job)
    assert kit.decision(cp, api, ns, job).startswith(
        f"admitted by Kueue (ClusterQueue {cluster_queue})")
    # None of them existed before Kueue admitted the job.
    admitted_at = next(c["lastTransitionTime"] for c in admission["status"]["conditions"]
                       if c["type"] == "Admitted")
    assert all(p["metadata"]["creationTimestamp"] >= admitted_at for p in pods)


def test_a_second_stacks_job_waits_its_turn_in_the_same_queue(queue_plane):
    cp, api, cluster_queue = queue_plane, "pytorchjob", "shared"
    first, second = (kit.stack(api, ns, workers="2", queue="team")
                     for ns in ("team-one", "team-two"))
    kit.platform_queue(cp, cluster_queue, pods=2, namespaces=["team-one", "team-two"])
    for rendering in (first, second):
        cp.apply(volumes_for(rendering))
    one = kit.apply(cp, first, api)
    kit.admitted(cp, api, "team-one", job_name(one))
    kit.all_pods(cp, api, "team-one", job_name(one), 2)
    two = kit.apply(cp, second, api)
    assert kit.decision(cp, api, "team-two", job_name(two)).startswith("queued")
    assert kit.pods_of(cp, api, "team-two", job_name(two)) == []

    delete_as_pulumi(cp, one)  # the first run is done (or its stack destroyed)
    kit.admitted(cp, api, "team-two", job_name(two))
    kit.all_pods(cp, api, "team-two", job_name(two), 2)


@pytest.mark.parametrize("api", ["pytorchjob", "trainjob"])
def test_the_stacks_own_queue_admits_requeues_a_rescale_and_destroy_leaves_nothing(
        queue_plane, api):
    cp, ns = queue_plane, f"own-queue-{api}"
    quota = json.dumps({"cpu": "4", "memory": "16Gi"})
    two = kit.stack(api, ns, workers="2", queue="mine", queueQuota=quota)
    cp.apply(volumes_for(two))
    first = kit.apply(cp, two, api)
    kit.admitted(cp, api, ns, job_name(first))
    kit.all_pods(cp, api, ns, job_name(first), 2)

    # `workers 3`: the job is replaced (deleted first), the new one queued and admitted.
    three = kit.stack(api, ns, workers="3", queue="mine", queueQuota=quota)
    delete_as_pulumi(cp, first)
    second = kit.apply(cp, three, api)
    assert job_name(second) != job_name(first)
    assert second["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "mine"
    kit.admitted(cp, api, ns, job_name(second))
    kit.all_pods(cp, api, ns, job_name(second), 3)

    for step in three.destroy_order():  # `pulumi destroy`
        for urn in sorted(step):
            registration = three.resources[urn]
            if registration.custom and registration.inputs and \
                    registration.type.startswith("kubernetes:") and \
                    not registration.type.endswith("Patch"):
                delete_as_pulumi(cp, registration.inputs)
    left = cp.kubectl("get", "resourceflavors.kueue.x-k8s.io,clusterqueues.kueue.x-k8s.io",
                      "-o", "name").stdout.split()
    assert not [name for name in left if name.endswith(f"/trainstack-{ns}")], left
    assert f"namespace/{ns}" not in cp.kubectl("get", "namespace", "-o", "name").stdout.split()


def test_queue_needs_kueue_on_the_cluster(control_plane):
    """The session's own control plane has no Kueue: one line naming the key."""
    with pytest.raises(StackConfigError) as raised:
        check_crds(parse_config({**kit.PYTORCHJOB, "queue": "team"}), kit.access(control_plane))
    assert raised.value.key == "queue" and "install Kueue" in str(raised.value)


def test_pulumi_up_says_where_the_queued_job_waits_and_why(queue_plane, caplog):
    """The program itself (under the engine's mocks, asking the real cluster as `up` does),
    once the job exists: one warning (pulumi.log.warn; under mocks it is a logging record)
    with Kueue's reason, not a silent wait."""
    cp, api, ns = queue_plane, "pytorchjob", "said-queued"
    config = {**kit.CONFIGS[api], "namespace": ns, "workers": "2", "queue": "team"}
    kit.platform_queue(cp, "one-pod", pods=1, namespaces=[ns])
    rendering = kit.stack(api, ns, workers="2", queue="team")
    cp.apply(volumes_for(rendering))
    job = job_name(kit.apply(cp, rendering, api))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        kit.render(config, cluster=kit.access(cp))
    said = [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and job in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(f"training job {job}: queued in "
                                                 "LocalQueue team, no pod created: "), said
    assert "insufficient quota for " in said[0] and "get workloads" in said[0]
