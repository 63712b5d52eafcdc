"""The pods the real Training Operator made for a PyTorchJob, run here as local processes
(tests/e2e/cluster.py plays the kubelet; cluster DNS maps the Master's Service name
`<job>-master-0` to 127.0.0.1 and its pytorchjob-port to a free local port). Nothing
else of the env is ours: RANK, WORLD_SIZE and the rest are what the operator wrote into
each pod. 2 ranks train until the first checkpoint, the stack's rescale (delete the
PyTorchJob, then apply `workers 3`: a new job) leaves only the new job's pods, and their
3 ranks resume from that checkpoint and finish.
"""

from __future__ import annotations

from typing import Any

from tests.cluster.controlplane import ControlPlane
from tests.cluster.runs_kit import (
    local_cluster,
    resume_and_finish,
    run_buckets,
    train_until_the_first_checkpoint,
    with_downward_api,
)
from tests.cluster.stack_apply import apply_stack, delete_as_pulumi, volumes_for
from tests.cluster.trainjob_kit import CONFIG, WAIT_S
from tests.e2e.cluster import LocalCluster, Process
from tests.infra.infra_helpers import pytorchjob
from tests.infra.render import Rendering, render

JOB_LABEL = "training.kubeflow.org/job-name"
TYPE_LABEL = "training.kubeflow.org/replica-type"
INDEX_LABEL = "training.kubeflow.org/replica-index"
# The TrainJob tier's run (smallcnn on digits, no MLflow), as a PyTorchJob on the CPU node.
PYTORCHJOB = {k: v for k, v in CONFIG.items() if k not in ("trainingApi", "nodeSelector")}


def job_of(rendering: Rendering) -> tuple[str, str]:
    (job,) = [o for o in rendering.objects.values() if o["kind"] == "PyTorchJob"]
    return job["metadata"]["namespace"], job["metadata"]["name"]


def operator_pods(cp: ControlPlane, namespace: str, job: str, count: int
                  ) -> list[dict[str, Any]]:
    """The job's pods once all are scheduled: the Master first, then Workers by index."""
    def scheduled():
        pods = cp.get("pods", "-n", namespace, "-l", f"{JOB_LABEL}={job}")["items"]
        if len(pods) != count or not all(p["spec"].get("nodeName") for p in pods):
            return None
        return sorted(pods, key=lambda p: (p["metadata"]["labels"][TYPE_LABEL] != "master",
                                           int(p["metadata"]["labels"][INDEX_LABEL])))
    return cp.wait_for(f"{count} scheduled pods of {job}", scheduled, timeout_s=WAIT_S)


def local_ranks(cluster: LocalCluster, pods: list[dict[str, Any]], job: str) -> list[Process]:
    """The operator's pods as processes; only cluster DNS is ours."""
    procs = [cluster.process(with_downward_api(pod)) for pod in pods]
    operator_port = int(procs[0].env["MASTER_PORT"])
    local_port = procs[0].ports[operator_port]
    for rank, proc in enumerate(procs):
        # The operator's env, as it wrote it: no stand-in for RANK or WORLD_SIZE.
        assert proc.env["MASTER_ADDR"] == f"{job}-master-0"
        assert proc.env["MASTER_PORT"] == str(operator_port)
        assert (proc.env["RANK"], proc.env["WORLD_SIZE"]) == (str(rank), str(len(pods)))
        proc.env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(local_port))
        if "PET_MASTER_ADDR" in proc.env:  # v1.8's torchrun-style copies: same DNS, same port
            assert proc.env["PET_MASTER_ADDR"] == f"{job}-master-0"
            proc.env.update(PET_MASTER_ADDR="127.0.0.1", PET_MASTER_PORT=str(local_port))
    return procs


def test_a_pytorchjob_trains_rescales_and_resumes(storage, s3_store, s3_endpoint, tmp_path):
    cp, logs = storage, tmp_path / "logs"
    logs.mkdir()
    two = render({**PYTORCHJOB, "namespace": "pytorchjob-run", "workers": "2"})
    namespace, name = job_of(two)
    cp.apply(volumes_for(two))
    apply_stack(cp, two)
    cluster = local_cluster(two, tmp_path / "pods-2", s3_endpoint)
    run_buckets(cluster, logs)

    # 1. The operator's Master and Worker train until the first checkpoint; the job ends.
    ranks = local_ranks(cluster, operator_pods(cp, namespace, name, 2), name)
    run_id, killed_at = train_until_the_first_checkpoint(ranks, s3_store, logs)

    # 2. `workers 3`: the stack deletes the PyTorchJob, then creates the new one.
    three = render({**PYTORCHJOB, "namespace": "pytorchjob-run", "workers": "3"})
    _, new = job_of(three)
    assert new != name
    delete_as_pulumi(cp, pytorchjob(two))
    apply_stack(cp, three)
    pods = operator_pods(cp, namespace, new, 3)
    everything = cp.get("pods", "-n", namespace, "-l", JOB_LABEL)["items"]
    assert {p["metadata"]["uid"] for p in everything} == {p["metadata"]["uid"] for p in pods}

    # 3. Its 3 ranks resume the run from the checkpoint and finish it.
    ranks = local_ranks(local_cluster(three, tmp_path / "pods-3", s3_endpoint), pods, new)
    resume_and_finish(ranks, logs, run_id, killed_at)
