"""A run's progress where `kubectl` looks, from the pods the real controllers made, run
here as local processes (tests/e2e/cluster.py plays the kubelet; this test also plays its
part of filling projected volumes: a token from the API server's TokenRequest, bound to
the pod, and the CA):

- a TrainJob with Trainer v2's TrainJobStatus gate on: rank 0 posts to the real status
  server, which checks the token (audience, issuer, namespace) and writes
  `status.trainerStatus`, read with the stack's `progress` export;
- a PyTorchJob: rank 0 patches its job's annotation with the token of the trainer's
  ServiceAccount, whose Role may patch that one job and nothing else.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.cluster import queue_kit as kit
from tests.cluster.runs_kit import local_cluster, log_of, run_buckets
from tests.cluster.stack_apply import volumes_for
from tests.cluster.test_pytorchjob_runs import local_ranks, operator_pods
from tests.cluster.test_trainjob_runs import local_processes
from tests.cluster.trainjob_kit import scheduled_pods
from tests.testkit import WAIT_S, stop
from trainer.contract.reporting import job_status as contract

EPOCHS = "2"


def pod_token(cp, namespace: str, pod: dict, audience: str | None = None) -> str:
    """What the kubelet puts in a projected serviceAccountToken volume."""
    meta = pod["metadata"]
    args = ["create", "token", pod["spec"]["serviceAccountName"], "-n", namespace,
            "--bound-object-kind=Pod", f"--bound-object-name={meta['name']}",
            f"--bound-object-uid={meta['uid']}"]
    if audience:
        args.append(f"--audience={audience}")
    return cp.kubectl(*args).stdout.strip()


def run_to_the_end(ranks, logs: Path) -> None:
    procs = [rank.start(logs) for rank in ranks]
    try:
        for proc, rank in zip(procs, ranks, strict=True):
            assert proc.wait(timeout=WAIT_S * 2) == 0, log_of(logs, rank)[-3000:]
    finally:
        stop(procs)


def shown(cp, command: str) -> dict:
    """Run the stack's `progress` export as a user would (its kubectl is the tier's)."""
    args = re.fullmatch(r"kubectl (.*) -o jsonpath='(.*)'", command)
    assert args, command
    out = cp.kubectl(*args.group(1).split(), "-o", f"jsonpath={args.group(2)}").stdout
    return json.loads(out)


def test_a_trainjobs_progress_reaches_its_status_through_trainers_status_server(
        queue_plane, s3_store, s3_endpoint, tmp_path):
    cp, ns, logs = queue_plane, "progress-trainjob", tmp_path / "logs"
    logs.mkdir()
    rendering = kit.stack("trainjob", ns, workers="2", epochs=EPOCHS)
    cp.apply(volumes_for(rendering))
    job = kit.apply(cp, rendering, "trainjob")["metadata"]["name"]
    cluster = local_cluster(rendering, tmp_path / "pods", s3_endpoint)
    run_buckets(cluster, logs)
    pods = scheduled_pods(cp, ns, job, 2)
    ranks = local_processes(cluster, pods)
    ca = cp.get("configmap", f"{job}-tls-config", "-n", ns)["data"]["ca.crt"]
    audience = f"trainer.kubeflow.org/v1alpha1/namespaces/{ns}/trainjobs/{job}/status"
    for pod, rank in zip(pods, ranks, strict=True):
        url = rank.env[contract.TRAINER_SERVER_URL_ENV]  # what Trainer put in the pod
        assert re.fullmatch(rf"https://[a-z0-9.-]+\.svc:\d+/apis/trainer\.kubeflow\.org/"
                            rf"v1alpha1/namespaces/{ns}/trainjobs/{job}/status", url)
        # Cluster DNS: the status server's Service is the controller's port here.
        rank.env[contract.TRAINER_SERVER_URL_ENV] = re.sub(
            r"https://[^/]+", f"https://127.0.0.1:{cp.trainer_status.port}", url)
        Path(rank.env[contract.TRAINER_SERVER_TOKEN_ENV]).write_text(
            pod_token(cp, ns, pod, audience))
        Path(rank.env[contract.TRAINER_SERVER_CA_ENV]).write_text(ca)
    run_to_the_end(ranks, logs)
    assert "was not reported" not in log_of(logs, ranks[0])

    status = cp.get("trainjob", job, "-n", ns)["status"]["trainerStatus"]
    assert status["progressPercentage"] == 100
    metrics = {m["name"]: m["value"] for m in status["metrics"]}
    assert metrics["epoch"] == f"{EPOCHS}/{EPOCHS}" and float(metrics["test_accuracy"]) > 0.5
    assert status["lastUpdatedTime"]
    assert shown(cp, rendering.exports["progress"]) == status


def test_a_pytorchjobs_rank_0_annotates_its_job_and_may_patch_nothing_else(
        queue_plane, s3_store, s3_endpoint, tmp_path):
    cp, ns, logs = queue_plane, "progress-pytorchjob", tmp_path / "logs"
    logs.mkdir()
    rendering = kit.stack("pytorchjob", ns, workers="2", epochs=EPOCHS)
    cp.apply(volumes_for(rendering))
    job = kit.apply(cp, rendering, "pytorchjob")["metadata"]["name"]
    cluster = local_cluster(rendering, tmp_path / "pods", s3_endpoint)
    run_buckets(cluster, logs)
    pods = operator_pods(cp, ns, job, 2)
    ranks = local_ranks(cluster, pods, job)
    for pod, rank in zip(pods, ranks, strict=True):
        credentials = Path(rank.env[contract.API_CREDENTIALS_ENV])
        (credentials / "token").write_text(pod_token(cp, ns, pod))
        (credentials / "ca.crt").write_bytes(cp.ca_file.read_bytes())
        rank.env.update(KUBERNETES_SERVICE_HOST="127.0.0.1", KUBERNETES_SERVICE_PORT=str(cp.port))
    run_to_the_end(ranks, logs)
    assert "was not reported" not in log_of(logs, ranks[0])

    annotation = cp.get("pytorchjob", job, "-n", ns)["metadata"]["annotations"][
        contract.PROGRESS_ANNOTATION]
    progress = json.loads(annotation)
    assert progress["progressPercentage"] == 100 and progress["epoch"] == f"{EPOCHS}/{EPOCHS}"
    assert float(progress["test_accuracy"]) > 0.5
    assert shown(cp, rendering.exports["progress"]) == progress
    # Least privilege: that job, patched only.
    account = f"--as=system:serviceaccount:{ns}:trainer"
    def can(*args: str) -> str:
        return cp.kubectl("auth", "can-i", *args, "-n", ns, account, check=False).stdout.strip()
    assert can("patch", f"pytorchjobs.kubeflow.org/{job}") == "yes"
    assert can("patch", "pytorchjobs.kubeflow.org/another-job") == "no"
    assert can("delete", f"pytorchjobs.kubeflow.org/{job}") == "no"
    assert can("get", "secrets") == "no"
