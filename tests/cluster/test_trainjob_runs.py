"""The pods the real Trainer v2 and JobSet controllers made for a `trainingApi: trainjob`
stack, run here as local processes (tests/e2e/cluster.py plays the kubelet and cluster
DNS: PET_MASTER_ADDR, a pod DNS name, is rank 0's local address 127.0.0.1 and its port
29500 a free local port): 2 ranks train until the first checkpoint, the stack's rescale
(delete the TrainJob, then apply workers 3: a new TrainJob) leaves only the new job's
pods, and their 3 ranks resume from that checkpoint and finish. A run started as a
PyTorchJob resumes as a TrainJob the same way.
"""

from __future__ import annotations

import copy
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from infra import trainjob as tj
from tests.cluster.controlplane import ControlPlane
from tests.cluster.sockets import sockets_of
from tests.cluster.trainjob_kit import (
    CHECKPOINTS,
    CONFIG,
    EPOCHS,
    WAIT_S,
    apply_stack,
    delete_trainjob,
    installed,
    scheduled_pods,
)
from tests.e2e.cluster import LocalCluster, Process
from tests.infra.infra_helpers import pytorchjob
from tests.infra.render import Rendering, render
from tests.trainer.trainer_procs import events


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


def with_downward_api(pod: dict[str, Any]) -> dict[str, Any]:
    """The pod with its annotation and label fieldRefs resolved, as the kubelet does."""
    pod = copy.deepcopy(pod)
    meta = pod["metadata"]
    for container in pod["spec"]["containers"]:
        for var in container.get("env", []):
            path = (var.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath", "")
            found = re.fullmatch(r"metadata\.(annotations|labels)\['([^']+)'\]", path)
            if found:
                var.pop("valueFrom")
                var["value"] = meta.get(found.group(1), {}).get(found.group(2), "")
    return pod


def local_cluster(rendering: Rendering, workdir: Path, s3_endpoint: str) -> LocalCluster:
    port = int(s3_endpoint.rsplit(":", 1)[1])
    workdir.mkdir(parents=True, exist_ok=True)
    return LocalCluster(rendering.objects, workdir, {("minio", 9000): port})


def wait_for(predicate, what: str, procs=(), timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        dead = [p for p in procs if p.poll() not in (None, 0)]
        assert not dead, f"a rank died while waiting for {what}"
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def log_of(logs: Path, proc: Process) -> str:
    return (logs / f"{proc.name}.log").read_text()


def run_buckets(cluster: LocalCluster, logs: Path) -> None:
    buckets = cluster.process(cluster.job_pod("trainstack-buckets"))
    assert buckets.start(logs).wait(timeout=WAIT_S) == 0, log_of(logs, buckets)


def train_until_the_first_checkpoint(ranks: list[Process], s3_store, logs: Path
                                     ) -> tuple[str, int]:
    """Every rank trains; once the first checkpoint is saved the job ends (its pods are
    killed, as a replaced job's are). Returns the run and the checkpoint's epoch."""
    procs = [p.start(logs) for p in ranks]
    try:
        saved = wait_for(lambda: [k for k in s3_store.list(CHECKPOINTS) if k.endswith(".pt")],
                         "the first checkpoint", procs)
        procs[-1].send_signal(signal.SIGSTOP)  # rank 0 cannot train on without it
        assert_on_loopback({p.pid: r.name for p, r in zip(procs, ranks, strict=True)},
                           int(ranks[0].env.get("PET_MASTER_PORT") or ranks[0].env["MASTER_PORT"]))
    finally:
        stop(procs)
    run_id = saved[0].removeprefix(CHECKPOINTS).split("/")[0]
    saved = sorted(k for k in s3_store.list(CHECKPOINTS) if k.endswith(".pt"))
    killed_at = int(saved[-1].rsplit("epoch-", 1)[1].split(".")[0])
    assert killed_at < EPOCHS, "training finished before the job was replaced"
    started = [e for p in ranks for e in events(log_of(logs, p), "start")]
    assert {e["world_size"] for e in started} == {len(ranks)} and len(started) == len(ranks)
    return run_id, killed_at


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (torchrun's workers run in sessions of their own)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    tree, frontier = [pid], [pid]
    while frontier:
        current = frontier.pop()
        children = [c for c, parent in parents.items() if parent == current]
        tree += children
        frontier += children
    return tree


def assert_on_loopback(pods: dict[int, str], rendezvous_port: int) -> None:
    """Every connection of every process of the pods (agent, trainer, Gloo) is between
    127.0.0.0/8 addresses, and so is every listening socket but one: torch's TCPStore (the
    rendezvous store rank 0's torchrun hosts, as a PyTorchJob's Master hosts it for
    env://) binds the wildcard address, and torch has no setting for its bind address.
    Nothing connects to it from outside: every rank dials it at 127.0.0.1."""
    held = {name: [s for p in process_tree(pid) for s in sockets_of(p)]
            for pid, name in pods.items()}
    for name, sockets in held.items():
        outside = [s for s in sockets if not s.stays_on_loopback()
                   and not (s.listening and s.local.is_unspecified
                            and s.local_port == rendezvous_port)]
        assert outside == [], f"{name} holds sockets beyond 127.0.0.0/8: {outside}"
    assert any(s.listening for s in next(iter(held.values())))


def resume_and_finish(ranks: list[Process], logs: Path, run_id: str, killed_at: int) -> None:
    """Every rank resumes the run from the checkpoint and the run finishes, published."""
    procs = [p.start(logs) for p in ranks]
    try:
        for proc, rank in zip(procs, ranks, strict=True):
            assert proc.wait(timeout=WAIT_S * 2) == 0, log_of(logs, rank)
    finally:
        stop(procs)
    output = log_of(logs, ranks[0])
    (resumed,) = events(output, "resume")
    assert resumed["run_id"] == run_id and resumed["epoch"] == killed_at
    assert [e["epoch"] for e in events(output, "epoch")] == list(range(killed_at + 1,
                                                                       EPOCHS + 1))
    started = {e["world_size"] for p in ranks for e in events(log_of(logs, p), "start")}
    assert started == {len(ranks)}
    assert events(output, "published")


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
    assert [p.argv[1:] for p in ranks] == [["-m", "trainer", "train", "--config", str(
        tmp_path / "pods-2" / p.name / "volumes" / "config" / "train.json")] for p in ranks]
    run_id, killed_at = train_until_the_first_checkpoint(ranks, s3_store, logs)

    # 2. `workers 3`: the stack deletes the TrainJob, then creates the new one.
    three = render({**CONFIG, "namespace": "trainjob-run", "workers": "3"})
    delete_trainjob(cp, namespace, name)
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
