"""What the TrainJob tests on the real control plane share (tests/cluster/test_trainjob*.py):
the stack's config, Trainer v2 and JobSet installed once per control plane (with a node of
their own), and `pulumi up`'s and the rescale's steps against the API server."""

from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from infra.workloads import trainjob as tj
from tests.cluster import trainer_v2
from tests.cluster.components import bin_path
from tests.cluster.controlplane import ControlPlane
from tests.cluster.nodes import node
from tests.cluster.stack_apply import delete_as_pulumi
from tests.infra.render import Rendering
from tests.testkit import WAIT_S

EPOCHS = 6
# The TrainJob's pods go to a node of their own (the runtime patch's nodeSelector), which
# reports ephemeral storage as a kubelet does (the pods request their /tmp).
POOL = {"trainstack.test/pool": "trainjob"}
NODE_NAME = "trainstack-trainjob-0"
CONFIG = {"pushImage": "false", "model": "smallcnn", "dataset": "digits",
          "epochs": str(EPOCHS), "batchSize": "32", "learningRate": "0.05",
          "cpuPerWorker": "1", "memoryPerWorker": "2Gi", "mlflow": "false",
          "trainingApi": "trainjob", "nodeSelector": json.dumps(POOL)}

CHECKPOINTS = "models/smallcnn-digits/runs/"
JOBSET = "jobset.sigs.k8s.io/"  # JobSet's label and annotation prefix

_INSTALLED: weakref.WeakSet = weakref.WeakSet()


def installed(cp: ControlPlane, workdir: Path, status: bool = False) -> ControlPlane:
    """Trainer v2 and JobSet on `cp`, and the TrainJobs' node: once per control plane.
    `status`: Trainer's status server on (`cp.trainer_status` says where)."""
    if cp not in _INSTALLED:
        started = time.monotonic()
        capacity = {"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "200Gi"}
        cp.apply([node(NODE_NAME, capacity, POOL)])
        cp.trainer_status = trainer_v2.install(cp, workdir, status)
        _INSTALLED.add(cp)
        print(f"Trainer v2 {trainer_v2.TRAINER.version} and JobSet "
              f"{trainer_v2.JOBSET.version} ready in {time.monotonic() - started:.1f} s")
    return cp


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


def delete_trainjob(cp: ControlPlane, job: dict[str, Any]) -> None:
    """As pulumi-kubernetes deletes a replaced job (its annotation: in the background),
    then until its pods are gone (the garbage collector's work, after `pulumi up` went on)."""
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    delete_as_pulumi(cp, job)
    cp.wait_for(f"{name}'s pods to be gone", lambda: not pods_of(cp, namespace, name),
                timeout_s=WAIT_S, namespace=namespace)


@contextlib.contextmanager
def jobsets_made(cp: ControlPlane, namespace: str, first: str) -> Iterator[list[str]]:
    """The uids of every JobSet the namespace has while the block runs (a watch from
    before it starts: a JobSet made and deleted between two polls is seen too). `first`:
    the uid of one that already exists, seen once the watch is running."""
    with tempfile.TemporaryFile("w+") as out:
        watch = subprocess.Popen(
            [str(bin_path("kube", "kubectl")), f"--kubeconfig={cp.kubeconfig}", "get",
             "jobsets.jobset.x-k8s.io", "-n", namespace, "--watch", "--output-watch-events",
             "--no-headers", "-o", "custom-columns=TYPE:.type,UID:.object.metadata.uid"],
            stdout=out, stderr=subprocess.STDOUT, text=True)
        uids: list[str] = []

        def seen() -> list[str]:
            out.seek(0)
            lines = [line.split() for line in out.read().splitlines()]
            uids[:] = list(dict.fromkeys(uid for kind, uid in lines if kind == "ADDED"))
            return uids
        try:
            cp.wait_for("the JobSet watch to start", lambda: first in seen())
            yield uids
            time.sleep(1)  # events of the block's last moments
            seen()
        finally:
            watch.terminate()
            watch.wait(timeout=30)


def finished(cp: ControlPlane, namespace: str, name: str) -> str | None:
    conditions = cp.get("trainjob", "-n", namespace, name).get("status", {}).get(
        "conditions", [])
    return next((c["type"] for c in conditions
                 if c["type"] in tj.FINISHED and c["status"] == "True"), None)
