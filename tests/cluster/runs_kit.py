"""Running the pods a real training controller made as local processes (tests/e2e/cluster.py
plays the kubelet and cluster DNS): train until the first checkpoint, stop the job as a
replaced job's pods are stopped, resume with another world size and finish. Shared by the
PyTorchJob (Training Operator) and TrainJob (Trainer v2) runs.
"""

from __future__ import annotations

import copy
import re
import signal
from pathlib import Path
from typing import Any

from tests.cluster.sockets import sockets_of
from tests.cluster.trainjob_kit import CHECKPOINTS, EPOCHS, WAIT_S
from tests.e2e.cluster import LocalCluster, Process
from tests.infra.render import Rendering
from tests.testkit import stop, wait_for
from tests.trainer.trainer_procs import events


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
