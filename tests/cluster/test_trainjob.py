"""`trainingApi: trainjob` on a real control plane with the real Trainer v2 and JobSet
controllers (tests/cluster/trainer_v2.py), then the pods they made, run here.

The stack's objects (its mock rendering) are applied server-side in dependency order;
the controllers turn the TrainJob into a JobSet, a Job and its pods, which the real
scheduler places on kwok's nodes under the namespace's Pod Security `restricted`. Those
pods (read back from the API server) run as local processes (tests/e2e/cluster.py plays
the kubelet and cluster DNS: PET_MASTER_ADDR, a pod DNS name, is rank 0's local address
127.0.0.1 and its port 29500 a free local port): 2 ranks train until the first checkpoint,
the stack's rescale (delete the TrainJob, then apply workers 3: a new TrainJob) leaves
only the new job's pods, and their 3 ranks resume from that checkpoint and finish.
"""

from __future__ import annotations

import copy
import json
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from infra import trainjob as tj
from tests.cluster import trainer_v2
from tests.cluster.controlplane import ControlPlane
from tests.cluster.nodes import node
from tests.cluster.sockets import sockets_of
from tests.e2e.cluster import LocalCluster, Process
from tests.infra.infra_helpers import pytorchjob, trainjob_pods
from tests.infra.render import Rendering, render
from tests.trainer.trainer_procs import events

EPOCHS = 6
# The TrainJob's pods go to a node of their own (the runtime patch's nodeSelector), which
# reports ephemeral storage as a kubelet does (the pods request their /tmp).
POOL = {"trainstack.test/pool": "trainjob"}
NODE_NAME = "trainstack-trainjob-0"
CONFIG = {"pushImage": "false", "model": "smallcnn", "dataset": "digits",
          "epochs": str(EPOCHS), "batchSize": "32", "learningRate": "0.05",
          "cpuPerWorker": "1", "memoryPerWorker": "2Gi", "mlflow": "false",
          "trainingApi": "trainjob", "nodeSelector": json.dumps(POOL)}
WAIT_S = 240  # generous upper bound for one step on a loaded 2-core machine
CHECKPOINTS = "models/smallcnn-digits/runs/"
# What the kubelet and the controllers add to a pod that the stack's template does not
# set; everything else in the pod must be the stack's (infra_helpers.trainjob_pods).
ADDED_ENV = set(tj.TORCH_ENV) | {"JOB_COMPLETION_INDEX"}
JOBSET = "jobset.sigs.k8s.io/"


@pytest.fixture(scope="module")
def trainer(control_plane: ControlPlane, tmp_path_factory) -> ControlPlane:
    started = time.monotonic()
    capacity = {"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "200Gi"}
    control_plane.apply([node(NODE_NAME, capacity, POOL)])
    trainer_v2.install(control_plane, tmp_path_factory.mktemp("trainer-v2"))
    print(f"Trainer v2 {trainer_v2.TRAINER.version} and JobSet {trainer_v2.JOBSET.version} "
          f"ready in {time.monotonic() - started:.1f} s")
    return control_plane


def apply_stack(cp: ControlPlane, rendering: Rendering) -> dict[str, Any]:
    """What `pulumi up` applies, in its order: the namespace, everything but the job,
    the TrainJob (after its runtime and the Jobs it waits for). Returns the TrainJob."""
    objects = list(rendering.objects.values())
    (namespace,) = [o for o in objects if o["kind"] == "Namespace"]
    (job,) = [o for o in objects if o["kind"] == "TrainJob"]
    cp.apply([namespace])
    cp.apply([o for o in objects if o is not namespace and o is not job])
    cp.apply([job])
    return job


def pods_of(cp: ControlPlane, namespace: str, job: str) -> list[dict[str, Any]]:
    pods = cp.get("pods", "-n", namespace, "-l", f"{tj.JOBSET_NAME_LABEL}={job}")["items"]
    return sorted(pods, key=lambda p: int(p["metadata"]["labels"][tj.COMPLETION_INDEX_LABEL]))


def scheduled_pods(cp: ControlPlane, namespace: str, job: str, count: int
                   ) -> list[dict[str, Any]]:
    def ready():
        pods = pods_of(cp, namespace, job)
        return pods if len(pods) == count and all(p["spec"].get("nodeName") for p in pods) \
            else None
    return cp.wait_for(f"{count} scheduled pods of {job}", ready, timeout_s=WAIT_S)


def delete_trainjob(cp: ControlPlane, namespace: str, job: str) -> None:
    """As pulumi-kubernetes deletes a replaced job: foreground, awaited (its pods go)."""
    cp.kubectl("delete", "trainjob", job, "-n", namespace, "--cascade=foreground",
               "--wait=true", "--timeout=120s")
    cp.wait_for(f"{job}'s pods to be gone", lambda: not pods_of(cp, namespace, job),
                timeout_s=WAIT_S)


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_the_controllers_make_the_pods_the_stack_declares(trainer: ControlPlane):
    cp, config = trainer, {**CONFIG, "namespace": "trainjob-admitted", "workers": "2"}
    rendering = render(config)
    job = apply_stack(cp, rendering)
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    labels = cp.get("namespace", namespace)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    pods = scheduled_pods(cp, namespace, name, 2)
    expected = trainjob_pods(rendering.objects, job)
    for rank, (pod, want) in enumerate(zip(pods, expected, strict=True)):
        assert pod["metadata"]["name"].startswith(f"{name}-{tj.NODE}-0-{rank}-")
        assert want["metadata"]["labels"].items() <= pod["metadata"]["labels"].items()
        spec, want_spec = pod["spec"], want["spec"]
        for key in ("serviceAccountName", "automountServiceAccountToken", "securityContext",
                    "restartPolicy", "nodeSelector"):
            assert spec.get(key) == want_spec.get(key), key
        assert [{k: v for k, v in vol.items() if k != "configMap"} for vol in spec["volumes"]] \
            == [{k: v for k, v in vol.items() if k != "configMap"}
                for vol in want_spec["volumes"]]
        (container,), (want_container,) = spec["containers"], want_spec["containers"]
        for key in ("name", "image", "command", "resources", "securityContext",
                    "volumeMounts", "imagePullPolicy"):
            assert container.get(key) == want_container.get(key), key
        env = env_of(container)
        assert {k: v for k, v in env.items() if k not in ADDED_ENV} == env_of(want_container)
        # The torch plugin's env, and none of the torch env torchrun sets itself.
        assert env["PET_NNODES"] == "2" and env["PET_NPROC_PER_NODE"] == "1"
        assert env["PET_MASTER_ADDR"] == f"{name}-{tj.NODE}-0-0.{name}"
        assert env["PET_MASTER_PORT"] == str(tj.MASTER_PORT)
        assert env["PET_NODE_RANK"]["fieldRef"]["fieldPath"] == (
            f"metadata.annotations['{tj.COMPLETION_INDEX_LABEL}']")
        assert pod["metadata"]["annotations"][tj.COMPLETION_INDEX_LABEL] == str(rank)
        assert not {"MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE"} & set(env)
        # Rank 0's DNS name: the JobSet's headless Service and the pod's hostname.
        assert (spec["hostname"], spec["subdomain"]) == (f"{name}-{tj.NODE}-0-{rank}", name)
        assert spec["nodeName"] == NODE_NAME
    cp.get("service", "-n", namespace, name)
    # kwok completes Job pods: the TrainJob reaches a condition `pulumi`'s docs tell to wait for.
    status = cp.wait_for("the TrainJob to finish", lambda: _finished(cp, namespace, name),
                         timeout_s=WAIT_S)
    assert status == "Complete"


def _finished(cp: ControlPlane, namespace: str, name: str) -> str | None:
    conditions = cp.get("trainjob", "-n", namespace, name).get("status", {}).get(
        "conditions", [])
    return next((c["type"] for c in conditions
                 if c["type"] in tj.FINISHED and c["status"] == "True"), None)


def test_the_controllers_listen_and_dial_on_loopback_only(trainer: ControlPlane):
    for name in ("trainer-controller-manager", "jobset-controller"):
        sockets = sockets_of(trainer.processes.started[name].pid)
        assert [s for s in sockets if not s.stays_on_loopback()] == [], name
        assert any(s.listening for s in sockets) and any(not s.listening for s in sockets)


def test_a_failed_pod_restarts_every_rank_until_max_restarts(trainer: ControlPlane):
    """The stack's runtime on the real JobSet: one failed pod fails its Job (backoffLimit
    0) and JobSet recreates every rank's pod, up to maxRestarts; then the TrainJob is
    Failed. The pods wait unscheduled (a node pool no node has), so whether one fails is
    this test's to say: it sets a pod's phase as a kubelet would."""
    cp = trainer
    config = {**CONFIG, "namespace": "trainjob-failing", "workers": "2",
              "nodeSelector": json.dumps({"trainstack.test/pool": "none"})}
    job = apply_stack(cp, render(config))
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    max_restarts = cp.get("trainingruntime", "-n", namespace, tj.RUNTIME)[
        "spec"]["template"]["spec"]["failurePolicy"]["maxRestarts"]
    seen: set[str] = set()
    for attempt in range(max_restarts + 1):
        def ranks_of_attempt(attempt=attempt):
            pods = [p for p in pods_of(cp, namespace, name)
                    if p["metadata"]["labels"][f"{JOBSET}restart-attempt"] == str(attempt)
                    and "deletionTimestamp" not in p["metadata"]]
            return pods if len(pods) == 2 else None
        pods = cp.wait_for(f"every rank's pod of attempt {attempt}", ranks_of_attempt,
                           timeout_s=WAIT_S)
        uids = {p["metadata"]["uid"] for p in pods}
        assert not uids & seen  # every rank got a new pod, not only the failed one
        seen |= uids
        assert _finished(cp, namespace, name) is None
        cp.kubectl("patch", "pod", pods[1]["metadata"]["name"], "-n", namespace,
                   "--subresource=status", "--type=merge", "-p",
                   json.dumps({"status": {"phase": "Failed"}}))
    assert cp.wait_for("the TrainJob to fail", lambda: _finished(cp, namespace, name),
                       timeout_s=WAIT_S) == "Failed"
    assert cp.get("jobset", "-n", namespace, name)["status"]["restarts"] == max_restarts


@pytest.mark.parametrize(("env", "refused"), [
    ({"name": "PET_NNODES", "value": "4"}, "must not have reserved envs"),
    ({"name": "PET_MASTER_ADDR", "value": "elsewhere"}, "must not have reserved envs"),
])
def test_the_webhook_refuses_the_torch_env_in_the_trainjob(trainer, env, refused):
    cp = trainer
    rendering = render({**CONFIG, "namespace": "trainjob-refused"})
    job = apply_stack(cp, rendering)
    broken = copy.deepcopy(job)
    broken["metadata"]["name"] += "-x"
    broken["spec"]["trainer"]["env"].append(env)
    out = cp.apply([broken], dry_run=True, check=False)
    assert out.returncode != 0 and refused in out.stderr, out.stderr


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
