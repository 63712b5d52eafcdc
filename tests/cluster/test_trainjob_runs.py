"""The pods the real Trainer v2 and JobSet controllers made for a `trainingApi: trainjob`
stack, run here as local processes (tests/e2e/cluster.py plays the kubelet and cluster
DNS: PET_MASTER_ADDR, a pod DNS name, is rank 0's local address 127.0.0.1 and its port
29500 a free local port): 2 ranks train until the first checkpoint, the stack's rescale
(delete the TrainJob, then apply workers 3: a new TrainJob) leaves only the new job's
pods, and their 3 ranks resume from that checkpoint and finish. A run started as a
PyTorchJob resumes as a TrainJob the same way.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from infra.workloads import trainjob as tj
from tests.cluster.controlplane import ControlPlane
from tests.cluster.runs_kit import (
    local_cluster,
    resume_and_finish,
    run_buckets,
    train_until_the_first_checkpoint,
    with_downward_api,
)
from tests.cluster.trainjob_kit import (
    CONFIG,
    apply_stack,
    delete_trainjob,
    installed,
    scheduled_pods,
)
from tests.e2e.cluster import LocalCluster, Process
from tests.infra.infra_helpers import pytorchjob
from tests.infra.render import render


@pytest.fixture(scope="module")
def trainer(control_plane: ControlPlane, tmp_path_factory) -> ControlPlane:
    return installed(control_plane, tmp_path_factory.mktemp("trainer-v2"))


def local_processes(cluster: LocalCluster, pods: list[dict[str, Any]]) -> list[Process]:
    """The controller's pods as the kubelet would start them, rank 0 first; cluster DNS:
    PET_MASTER_ADDR is rank 0's address here, its port 29500 rank 0's local port."""
    procs = [cluster.process(with_downward_api(pod)) for pod in pods]
    master_port = procs[0].ports[tj.MASTER_PORT]
    for proc in procs:
        assert re.fullmatch(r"[a-z0-9-]+-node-0-0\.[a-z0-9-]+", proc.env["PET_MASTER_ADDR"])
        proc.env.update(PET_MASTER_ADDR="127.0.0.1", PET_MASTER_PORT=str(master_port))
    assert [p.env["PET_NODE_RANK"] for p in procs] == [str(i) for i in range(len(pods))]
    return procs


def test_a_trainjob_trains_rescales_and_resumes(trainer, s3_store, s3_endpoint, tmp_path):
    cp, logs = trainer, tmp_path / "logs"
    logs.mkdir()
    two = render({**CONFIG, "namespace": "trainjob-run", "workers": "2"})
    first = apply_stack(cp, two)
    name, namespace = first["metadata"]["name"], first["metadata"]["namespace"]
    cluster = local_cluster(two, tmp_path / "pods-2", s3_endpoint)
    run_buckets(cluster, logs)

    # 1. The controller's 2 pods train until the first checkpoint, then the job ends.
    ranks = local_processes(cluster, scheduled_pods(cp, namespace, name, 2))
    assert [p.argv[1:] for p in ranks] == [["-m", "trainer.launch", "-m", "trainer", "train",
                                            "--config", str(tmp_path / "pods-2" / p.name /
                                                            "volumes" / "config" / "train.json")]
                                           for p in ranks]
    run_id, killed_at = train_until_the_first_checkpoint(ranks, s3_store, logs)

    # 2. `workers 3`: the stack deletes the TrainJob, then creates the new one.
    three = render({**CONFIG, "namespace": "trainjob-run", "workers": "3"})
    delete_trainjob(cp, first)
    second = apply_stack(cp, three)
    assert second["metadata"]["name"] != name
    pods = scheduled_pods(cp, namespace, second["metadata"]["name"], 3)
    everything = cp.get("pods", "-n", namespace, "-l", tj.JOBSET_NAME_LABEL)["items"]
    assert {p["metadata"]["uid"] for p in everything} == {p["metadata"]["uid"] for p in pods}

    # 3. Its 3 ranks resume the run from the checkpoint and finish it.
    ranks = local_processes(local_cluster(three, tmp_path / "pods-3", s3_endpoint), pods)
    assert {p.env["PET_NNODES"] for p in ranks} == {"3"}
    resume_and_finish(ranks, logs, run_id, killed_at)


def test_a_run_started_as_a_pytorchjob_resumes_as_a_trainjob(trainer, s3_store, s3_endpoint,
                                                            tmp_path):
    """`trainingApi: trainjob` on a stack whose PyTorchJob is training: the same run
    (same train.json, same store) resumes on Trainer v2. The PyTorchJob's ranks run as
    tests/e2e does (the operator's env from its rendering)."""
    cp, logs = trainer, tmp_path / "logs"
    logs.mkdir()
    config = {**CONFIG, "namespace": "trainjob-migrate", "workers": "2"}
    v1 = render({k: v for k, v in config.items() if k != "trainingApi"})
    cluster = local_cluster(v1, tmp_path / "pods-v1", s3_endpoint)
    run_buckets(cluster, logs)
    run_id, killed_at = train_until_the_first_checkpoint(
        cluster.pytorchjob_processes(pytorchjob(v1)), s3_store, logs)

    v2 = render(config)
    assert v2.objects["ConfigMap/trainstack-train"] == v1.objects["ConfigMap/trainstack-train"]
    job = apply_stack(cp, v2)
    pods = scheduled_pods(cp, job["metadata"]["namespace"], job["metadata"]["name"], 2)
    ranks = local_processes(local_cluster(v2, tmp_path / "pods-v2", s3_endpoint), pods)
    resume_and_finish(ranks, logs, run_id, killed_at)
