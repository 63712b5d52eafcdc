"""The stack's own rendered workloads, run as local processes against a real S3 server.

Render with Pulumi's mocks (workers=3) -> bucket Job -> ingest Job (CIFAR-format file
served over HTTP) -> every PyTorchJob replica with the operator's env -> kill the
Master after its first checkpoint -> re-render with workers=1 (a `pulumi config set`)
-> the new job resumes, finishes and publishes -> the inference Deployment's container
serves the version. Every command line, env var and mount comes from the rendered
objects (see cluster.py): if the stack renders a wrong one, this test fails.
"""

from __future__ import annotations

import http.server
import io
import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.e2e.cluster import LocalCluster, Process, container_port
from tests.infra.render import render
from tests.trainer.cifar_fixtures import make_batches, write_archive
from tests.trainer.trainer_procs import events

EPOCHS = 4
# A user's stack config, exactly as `pulumi config set` stores it.
# pushImage false: the image is built where the nodes find it (minikube), no registry.
USER_CONFIG = {"pushImage": "false", "model": "smallcnn", "epochs": str(EPOCHS), "batchSize": "32",
               "learningRate": "0.05", "cpuPerWorker": "1", "memoryPerWorker": "2Gi",
               "minioRootPassword": "e2e-Secret-Passw0rd-4f1c"}
WAIT_S = 240  # generous upper bound for any one step on a loaded 2-core machine


@pytest.fixture(scope="module")
def dataset_url(tmp_path_factory):
    """A CIFAR-format archive served over HTTP on 127.0.0.1, as the ingest source."""
    root = tmp_path_factory.mktemp("http")
    write_archive(root / "cifar-10-python.tar.gz", make_batches(per_class=12, seed=3))
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/cifar-10-python.tar.gz"
    server.shutdown()


def local_cluster(config: dict[str, str], s3_endpoint: str, workdir: Path) -> LocalCluster:
    rendering = render(config)
    port = int(s3_endpoint.rsplit(":", 1)[1])
    services = {("minio", p["port"]): port
                for p in rendering.objects["Service/minio"]["spec"]["ports"] if p["port"] == 9000}
    workdir.mkdir(parents=True, exist_ok=True)
    return LocalCluster(rendering.objects, workdir, services)


def minio_credentials(cluster: LocalCluster) -> tuple[str, str]:
    """What the rendered MinIO server is started with (moto itself accepts any key)."""
    minio = cluster.get("Deployment", "minio")
    env = cluster.process(minio["spec"]["template"]["spec"], pod_name="minio-0",
                          namespace=minio["metadata"]["namespace"]).env
    return env["MINIO_ROOT_USER"], env["MINIO_ROOT_PASSWORD"]


def assert_uses_minio_credentials(cluster: LocalCluster, process: Process) -> None:
    presented = (process.env.get("AWS_ACCESS_KEY_ID"), process.env.get("AWS_SECRET_ACCESS_KEY"))
    assert presented == minio_credentials(cluster), f"{process.name} has the wrong S3 credentials"


def run_job(cluster: LocalCluster, name: str, log_dir: Path) -> str:
    job = cluster.get("Job", name)
    proc = cluster.process(job["spec"]["template"]["spec"], pod_name=name,
                           namespace=job["metadata"]["namespace"])
    assert_uses_minio_credentials(cluster, proc)
    rc = proc.start(log_dir).wait(timeout=WAIT_S)
    output = (log_dir / f"{name}.log").read_text()
    assert rc == 0, f"Job {name} failed ({rc}):\n{output}"
    return output


def wait_for(predicate, what: str, procs=(), timeout: float = WAIT_S):
    """Poll until ``predicate()`` is truthy; fail early if a watched process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        dead = [p for p in procs if p.poll() not in (None, 0)]
        assert not dead, f"a process died while waiting for {what}: {[p.args for p in dead]}"
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def job_of(cluster: LocalCluster) -> dict:
    (job,) = cluster.of_kind("PyTorchJob")
    return job


def test_rendered_stack_trains_resumes_after_rescale_and_serves(
        s3_store, s3_endpoint, dataset_url, tmp_path):
    config = {**USER_CONFIG, "datasetSource": dataset_url}
    logs = tmp_path / "logs"
    logs.mkdir()

    # 1. workers=3: buckets, ingest, then Master + 2 Workers at once.
    cluster = local_cluster({**config, "workers": "3"}, s3_endpoint, tmp_path / "pods-3")
    run_job(cluster, "trainstack-buckets", logs)
    run_job(cluster, "trainstack-ingest-cifar10", logs)
    assert s3_store.exists("datasets/cifar10/cifar-10-python.tar.gz")

    replicas = cluster.pytorchjob_processes(job_of(cluster))
    assert [p.env["RANK"] for p in replicas] == ["0", "1", "2"]
    for replica in replicas:
        assert_uses_minio_credentials(cluster, replica)
    procs = [p.start(logs) for p in replicas]
    checkpoints = "models/smallcnn-cifar10/runs/"
    try:
        first = wait_for(lambda: [k for k in s3_store.list(checkpoints) if k.endswith(".pt")],
                         "the first checkpoint", procs)
        procs[0].send_signal(signal.SIGKILL)  # the Master pod dies
    finally:
        stop(procs)
    saved = sorted(k for k in s3_store.list(checkpoints) if k.endswith(".pt"))
    killed_at = int(saved[-1].rsplit("epoch-", 1)[1].split(".")[0])
    assert killed_at < EPOCHS, "training finished before the Master was killed"
    assert not s3_store.exists("models/smallcnn-cifar10/latest.json")
    first_run = [e for r in replicas for e in events(_log(logs, r), "start")]
    assert {e["world_size"] for e in first_run} == {3} and len(first_run) == 3
    run_id = first_run[0]["run_id"]
    assert first[0].startswith(f"{checkpoints}{run_id}/")

    # 2. `pulumi config set workers 1 && pulumi up`: a new job, resuming the same run.
    cluster = local_cluster({**config, "workers": "1"}, s3_endpoint, tmp_path / "pods-1")
    (master,) = cluster.pytorchjob_processes(job_of(cluster))
    assert master.env["WORLD_SIZE"] == "1"
    assert master.start(logs).wait(timeout=WAIT_S) == 0, _log(logs, master)
    output = _log(logs, master)
    (resumed,) = events(output, "resume")
    assert resumed["run_id"] == run_id and resumed["epoch"] == killed_at
    trained_epochs = [e["epoch"] for e in events(output, "epoch")]
    assert trained_epochs == list(range(killed_at + 1, EPOCHS + 1))
    (published,) = events(output, "published")
    latest = json.loads(s3_store.get_bytes("models/smallcnn-cifar10/latest.json"))
    assert latest["version"] == published["version"]

    # 3. The inference Deployment's container serves the just-published version.
    serve_and_predict(cluster, logs, latest["version"])


def serve_and_predict(cluster: LocalCluster, logs: Path, version: str) -> None:
    deployment = cluster.get("Deployment", "inference")
    app = cluster.process(deployment["spec"]["template"]["spec"], pod_name="inference-0",
                          namespace=deployment["metadata"]["namespace"])
    assert_uses_minio_credentials(cluster, app)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    probe = container["readinessProbe"]["httpGet"]
    base = f"http://127.0.0.1:{app.ports[container_port(container, probe['port'])]}"
    proc = app.start(logs)
    try:
        wait_for(lambda: _get(f"{base}{probe['path']}"), "the app to be ready", [proc])
        image = io.BytesIO()
        Image.new("RGB", (32, 32), (200, 40, 40)).save(image, format="PNG")
        reply = requests.post(f"{base}/predict", files={"file": ("red.png", image.getvalue(),
                                                                 "image/png")}, timeout=60)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["model_version"] == version
        assert abs(sum(body["probabilities"].values()) - 1) < 1e-3
        assert body["prediction"] in body["probabilities"]
        metrics = requests.get(f"{base}/metrics", timeout=10).text
        counted = [line for line in metrics.splitlines()
                   if line.startswith("trainstack_predictions_total")
                   and f'model_version="{version}"' in line]
        assert counted and float(counted[0].rsplit(" ", 1)[1]) >= 1, metrics
        assert requests.get(f"{base}/healthz", timeout=10).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _get(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.ConnectionError:
        return False


def _log(logs: Path, process: Process) -> str:
    return (logs / f"{process.name}.log").read_text()
