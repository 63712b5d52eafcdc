"""Retrains on the real control plane (tests/cluster/test_retrain*.py): a retrain by hand as
a person starts one, its pod run as a local process under the ServiceAccount's own token,
the training jobs it made, and the kubelet's report that their pods have ended."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from infra.workloads.catalog import RETRAIN
from infra.workloads.retrain import CRONJOB
from tests.cluster.controlplane import ControlPlane
from tests.cluster.runs_kit import with_downward_api
from tests.e2e.cluster import LocalCluster, Process
from tests.testkit import WAIT_S
from trainer.contract.lifecycle.retrain import MODEL_LABEL, RetrainRecord

JOB_LABEL = "batch.kubernetes.io/job-name"
REPO_ROOT = Path(__file__).resolve().parents[2]


def this_checkout(proc: Process) -> Process:
    """The process runs this checkout's code, as the image would carry it (a venv installed
    editable from another checkout would otherwise win)."""
    proc.env["PYTHONPATH"] = str(REPO_ROOT)
    return proc


def account_kubeconfig(cp: ControlPlane, namespace: str, path: Path) -> Path:
    """What the retrain pod's projected token gives it: the ServiceAccount's identity (a
    token the API server issues for it, TokenRequest), for this API server."""
    token = cp.kubectl("create", "token", RETRAIN.service_account, "-n", namespace,
                       "--duration=3600s").stdout.strip()
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "retrain",
        "clusters": [{"name": "cp", "cluster": {"server": cp.server,
                                                "certificate-authority": str(cp.ca_file)}}],
        "users": [{"name": "retrain", "user": {"token": token}}],
        "contexts": [{"name": "retrain", "context": {"cluster": "cp", "user": "retrain",
                                                     "namespace": namespace}}]}))
    path.chmod(0o600)
    return path


def retrain_by_hand(cp: ControlPlane, namespace: str, job: str, cronjob: str = CRONJOB
                    ) -> dict[str, Any]:
    """`kubectl create job --from=cronjob/trainstack-retrain <job>`; returns the Job."""
    cp.kubectl("create", "job", f"--from=cronjob/{cronjob}", job, "-n", namespace)
    return cp.get("job", job, "-n", namespace)


def job_pod(cp: ControlPlane, namespace: str, job: str) -> dict[str, Any]:
    """The Job's pod once admitted (Pod Security restricted) and scheduled."""
    def scheduled():
        pods = cp.get("pods", "-n", namespace, "-l", f"{JOB_LABEL}={job}")["items"]
        return pods[0] if pods and pods[0]["spec"].get("nodeName") else None
    return cp.wait_for(f"the pod of Job {job}", scheduled, timeout_s=WAIT_S, namespace=namespace)


def retrain_process(cluster: LocalCluster, pod: dict[str, Any], kubeconfig: Path) -> Process:
    """The retrain pod as the kubelet starts it; it reaches the API server with its
    ServiceAccount's token (KUBECONFIG: a local process cannot have the projected volume's
    path). It reads its training job's state every second instead of every 30."""
    proc = this_checkout(cluster.process(with_downward_api(pod)))
    proc.env["KUBECONFIG"] = str(kubeconfig)
    proc.argv += ["--poll-seconds", "1"]
    return proc


def training_jobs(cp: ControlPlane, namespace: str, kind: str, model: str) -> list[dict]:
    """The retrain training jobs of ``model`` (by the label a retrain puts on them)."""
    return cp.get(kind, "-n", namespace, "-l", f"{MODEL_LABEL}={model}")["items"]


def pods_succeeded(cp: ControlPlane, namespace: str, pods: list[dict[str, Any]]) -> None:
    """What the kubelet reports once the containers exited 0 (kwok never ends a pod that
    no Job owns)."""
    for pod in pods:
        status = {"phase": "Succeeded", "containerStatuses": [
            {"name": c["name"], "image": c["image"], "imageID": "", "ready": False,
             "restartCount": 0, "started": False,
             "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
            for c in pod["spec"]["containers"]]}
        cp.kubectl("patch", "pod", pod["metadata"]["name"], "-n", namespace,
                   "--subresource=status", "--type=merge", "-p", json.dumps({"status": status}))


def record(s3_store, model: str, retrain_id: str) -> RetrainRecord:
    return RetrainRecord.from_json(s3_store.get_bytes(
        f"models/{model}/retrains/{retrain_id}.json"))


def gone(cp: ControlPlane, namespace: str, *selectors: tuple[str, str]) -> bool:
    """Whether no object of the (kind, label selector) pairs is left."""
    return all(not cp.get(kind, "-n", namespace, "-l", selector)["items"]
               for kind, selector in selectors)
