"""The stack's own rendered workloads, run as local processes against real S3 servers.

In-cluster MinIO (moto standing in for it behind the `minio` Service): render with
Pulumi's mocks (workers=3) -> bucket Job -> ingest Job (CIFAR-format file served over
HTTP) -> the MLflow server's container (SQLite on its volume, artifacts through the S3 API) ->
every PyTorchJob replica with the operator's env -> kill the Master after its first
checkpoint (once MLflow has its run) -> re-render with workers=1 (a `pulumi config set`)
-> the new job resumes, finishes, publishes and completes the same MLflow run -> the
inference Deployment's container serves the version.

External store: a second moto server on its own endpoint stands in for AWS S3; the stack
runs a prebuilt image with `storeEndpoint`, `storeRegion`, `bucketPrefix` and the user's
own Secret (which exists before the stack and is never rendered) -> buckets, ingest,
the MLflow server, training, a served prediction, all in the prefixed buckets of that
server.

Every command line, env var and mount comes from the rendered objects (see cluster.py):
if the stack renders a wrong one, this test fails.

Every process runs under strace (tests/e2e/traffic.py): each test ends by checking every
connection its workloads made against the rendered NetworkPolicies of both policy modes,
the flows nobody needs against them too, and that breaking the fences is noticed
(tests/e2e/fence_checks.py).
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import io
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import boto3
import pytest
import requests
from PIL import Image

from tests.e2e import fence_checks
from tests.e2e.cluster import LocalCluster, Process, container_port
from tests.e2e.traffic import USER, Recorder, Traffic
from tests.infra.render import render
from tests.testkit import WAIT_S, free_port, stop, wait_for
from tests.trainer.cifar_fixtures import make_batches, write_archive
from tests.trainer.tracking_kit import client, runs_of, steps_logged
from tests.trainer.trainer_procs import events
from trainer.contract.layout import TRACKING_BUCKET
from trainer.contract.reporting.mlflow_layout import (
    ALIAS,
    METRIC_KEYS,
    VERSION_TAG,
    WORLD_SIZES_TAG,
)
from trainer.store import S3Store

EPOCHS = 4
# A user's stack config, exactly as `pulumi config set` stores it.
# pushImage false: the image is built where the nodes find it (minikube), no registry.
USER_CONFIG = {"pushImage": "false", "model": "smallcnn", "epochs": str(EPOCHS), "batchSize": "32",
               "learningRate": "0.05", "cpuPerWorker": "1", "memoryPerWorker": "2Gi",
               "minioRootPassword": "e2e-Secret-Passw0rd-4f1c"}


@pytest.fixture
def recorder(tmp_path) -> Recorder:
    return Recorder(tmp_path / "traces")


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


def local_cluster(config: dict[str, str], workdir: Path, recorder: Recorder,
                  minio_endpoint: str | None = None, existing: dict | None = None,
                  mlflow_port: int | None = None) -> LocalCluster:
    """The rendered objects; `minio_endpoint` is the server standing in for MinIO's pod;
    `mlflow_port` the local port of the MLflow Service (its pod's process listens there)."""
    rendering = render(config)
    services = {}
    if minio_endpoint:
        port = int(minio_endpoint.rsplit(":", 1)[1])
        services = {("minio", p["port"]): port
                    for p in rendering.objects["Service/minio"]["spec"]["ports"]
                    if p["port"] == 9000}
    if mlflow_port:
        (entry,) = rendering.objects["Service/mlflow"]["spec"]["ports"]
        services[("mlflow", entry["port"])] = mlflow_port
    workdir.mkdir(parents=True, exist_ok=True)
    return LocalCluster(rendering.objects, workdir, services, existing or {},
                        tracer=recorder.tracer)


def minio_credentials(cluster: LocalCluster) -> tuple[str, str]:
    """What the rendered MinIO server reads its root user and password from (files of its
    mounted Secret; moto itself accepts any key). A missing file would start MinIO with its
    well-known default credentials: refuse that here."""
    env = cluster.process(cluster.deployment_pod("minio")).env
    files = [Path(env[f"MINIO_ROOT_{part}_FILE"]) for part in ("USER", "PASSWORD")]
    assert all(f.is_file() for f in files), f"MinIO's credential files are missing: {files}"
    return tuple(f.read_text().strip() for f in files)


def assert_credentials(process: Process, expected: tuple[str, str]) -> None:
    presented = (process.env.get("AWS_ACCESS_KEY_ID"), process.env.get("AWS_SECRET_ACCESS_KEY"))
    assert presented == expected, f"{process.name} has the wrong S3 credentials"


def assert_uses_minio_credentials(cluster: LocalCluster, process: Process) -> None:
    assert_credentials(process, minio_credentials(cluster))


def run_job(cluster: LocalCluster, name: str, log_dir: Path,
            credentials: tuple[str, str] | None = None) -> str:
    """Run a rendered Job's pod to completion; it must present `credentials` (default:
    the in-cluster MinIO's)."""
    proc = cluster.process(cluster.job_pod(name))
    assert_credentials(proc, credentials or minio_credentials(cluster))
    rc = proc.start(log_dir).wait(timeout=WAIT_S)
    output = (log_dir / f"{name}.log").read_text()
    assert rc == 0, f"Job {name} failed ({rc}):\n{output}"
    return output


def job_of(cluster: LocalCluster) -> dict:
    (job,) = cluster.of_kind("PyTorchJob")
    return job


@contextlib.contextmanager
def mlflow_server(cluster: LocalCluster, logs: Path, credentials: tuple[str, str]):
    """The rendered MLflow Deployment's container, until the block ends; yields the URL a
    user (the test's client) opens it at."""
    pod = cluster.deployment_pod("mlflow")
    server = cluster.process(pod)
    # The store's credentials reach it as files of the store's Secret, never as env vars.
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(server.env)
    directory = Path(server.env["TRAINSTACK_S3_CREDENTIALS_DIR"])
    assert tuple((directory / k).read_text() for k in ("AWS_ACCESS_KEY_ID",
                                                       "AWS_SECRET_ACCESS_KEY")) == credentials
    container = pod["spec"]["containers"][0]
    probe = container["readinessProbe"]["httpGet"]
    # The test's client stands for `kubectl port-forward` (mlflowAccess port-forward, the
    # default): through the kubelet, which no NetworkPolicy sees, so it is not user traffic.
    base = f"http://127.0.0.1:{server.ports[container_port(container, probe['port'])]}"
    proc = server.start(logs)
    try:
        wait_for(lambda: _get(f"{base}{probe['path']}"), "MLflow to be ready", [proc])
        yield base
    finally:
        stop([proc])


def the_mlflow_run(base: str, experiment: str, run_id: str):
    mlflow = client(base)
    (run,) = runs_of(mlflow, experiment, run_id)
    return mlflow, run


def assert_tracked(base: str, model_name: str, run_id: str, version: str,
                   world_sizes: str) -> None:
    """One MLflow run of `run_id`: every epoch once, the version registered under the
    alias, its files uploaded through the server."""
    mlflow, run = the_mlflow_run(base, model_name, run_id)
    assert steps_logged(mlflow, run.info.run_id) == {
        key: list(range(1, EPOCHS + 1)) for key in METRIC_KEYS}
    assert run.data.tags[WORLD_SIZES_TAG] == world_sizes
    assert mlflow.get_model_version_by_alias(model_name, ALIAS).tags[VERSION_TAG] == version
    files = {f.path for f in mlflow.list_artifacts(run.info.run_id, "model")}
    assert {"model/model.pt2", "model/meta.json"} <= files, files


def test_rendered_stack_trains_resumes_after_rescale_and_serves(
        s3_store, s3_endpoint, dataset_url, tmp_path, recorder):
    config = {**USER_CONFIG, "datasetSource": dataset_url}
    logs = tmp_path / "logs"
    logs.mkdir()

    # 1. workers=3: buckets, ingest, the MLflow server, then Master + 2 Workers at once.
    mlflow_port = free_port()
    three = local_cluster({**config, "workers": "3"}, tmp_path / "pods-3", recorder,
                          s3_endpoint, mlflow_port=mlflow_port)
    cluster = three
    run_job(cluster, "trainstack-buckets", logs)
    run_job(cluster, "trainstack-ingest-cifar10", logs)
    assert s3_store.exists("datasets/cifar10/cifar-10-python.tar.gz")
    assert s3_store.client.bucket_exists(TRACKING_BUCKET)
    with mlflow_server(cluster, logs, minio_credentials(cluster)) as mlflow_url:
        run_id, killed_at = train_and_kill_the_master(cluster, s3_store, logs, mlflow_url)
        cluster = local_cluster({**config, "workers": "1"}, tmp_path / "pods-1", recorder,
                                s3_endpoint, mlflow_port=mlflow_port)
        assert cluster.get("Deployment", "mlflow") == three.get("Deployment", "mlflow")
        version = resume_with_one_worker(cluster, s3_store, logs, run_id, killed_at)
        assert_tracked(mlflow_url, "smallcnn-cifar10", run_id, version, "3,1")

    # 2. The inference Deployment's container serves the just-published version.
    serve_and_predict(cluster, logs, version, minio_credentials(cluster), recorder)

    # 3. Every connection of both phases against the fences of their renderings.
    dataset_port = {int(dataset_url.split(":")[2].split("/")[0]): "the CIFAR-10 download"}
    for phase, workers in ((three, "3"), (cluster, "1")):
        traffic = Traffic.of(phase, recorder, dataset_port)
        job = job_of(phase)["metadata"]["name"]
        expected = [(f"{job}-master-0", "minio-0", 9000), (f"{job}-master-0", "mlflow-0", 5000)]
        if workers == "3":
            expected += [(pod, "minio-0", 9000) for pod in (
                "trainstack-buckets", "trainstack-ingest-cifar10", f"{job}-worker-0",
                f"{job}-worker-1", "mlflow-0")]
            expected += [(f"{job}-worker-{i}", f"{job}-master-0", 23456) for i in (0, 1)]
        else:
            expected += [("inference-0", "minio-0", 9000), (USER.name, "inference-0", 7860)]
        fences = fence_checks.assert_fenced(phase, traffic, {**config, "workers": workers},
                                            expected)
        fence_checks.assert_breaks_are_caught(phase, traffic, fences["ingress"], "minio-0")


def train_and_kill_the_master(cluster: LocalCluster, s3_store, logs: Path, mlflow_url: str
                              ) -> tuple[str, int]:
    """Master + 2 Workers; the Master dies after its first checkpoint, once MLflow has the
    run (a Worker held meanwhile: the Master cannot train on without it)."""
    replicas = cluster.pytorchjob_processes(job_of(cluster))
    assert [p.env["RANK"] for p in replicas] == ["0", "1", "2"]
    for replica in replicas:
        assert_uses_minio_credentials(cluster, replica)
        assert replica.env["MLFLOW_TRACKING_URI"] == mlflow_url
    procs = [p.start(logs) for p in replicas]
    checkpoints = "models/smallcnn-cifar10/runs/"
    try:
        first = wait_for(lambda: [k for k in s3_store.list(checkpoints) if k.endswith(".pt")],
                         "the first checkpoint", procs)
        procs[2].send_signal(signal.SIGSTOP)
        run_id = first[0].removeprefix(checkpoints).split("/")[0]
        wait_for(lambda: runs_of(client(mlflow_url), "smallcnn-cifar10", run_id),
                 "MLflow to have the run", procs[:1])
        procs[0].send_signal(signal.SIGKILL)  # the Master pod dies
    finally:
        procs[2].send_signal(signal.SIGCONT)
        stop(procs)
    saved = sorted(k for k in s3_store.list(checkpoints) if k.endswith(".pt"))
    killed_at = int(saved[-1].rsplit("epoch-", 1)[1].split(".")[0])
    assert killed_at < EPOCHS, "training finished before the Master was killed"
    assert not s3_store.exists("models/smallcnn-cifar10/latest.json")
    first_run = [e for r in replicas for e in events(_log(logs, r), "start")]
    assert {e["world_size"] for e in first_run} == {3} and len(first_run) == 3
    assert first_run[0]["run_id"] == run_id
    return run_id, killed_at


def resume_with_one_worker(cluster: LocalCluster, s3_store, logs: Path, run_id: str,
                           killed_at: int) -> str:
    """`pulumi config set workers 1 && pulumi up`: a new job, resuming the same run; the
    published version."""
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
    return latest["version"]


def serve_and_predict(cluster: LocalCluster, logs: Path, version: str,
                      credentials: tuple[str, str], recorder: Recorder) -> None:
    pod = cluster.deployment_pod("inference")
    app = cluster.process(pod)
    assert_credentials(app, credentials)
    container = pod["spec"]["containers"][0]
    probe = container["readinessProbe"]["httpGet"]
    base = f"http://127.0.0.1:{app.ports[container_port(container, probe['port'])]}"
    recorder.user(base)
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


# --- an external S3 store --------------------------------------------------------------
TEAM_SECRET = "team-s3"
TEAM_KEYS = ("team-e2e-access-key", "team-e2e-secret-key-0f9e8d7c6b")  # the user's Secret
PREFIX = "team-e2e-"
REGION = "eu-west-1"
DIGEST = "sha256:" + "5e" * 32


@pytest.fixture(scope="module")
def external_s3(tmp_path_factory):
    """A second S3 server on its own endpoint: the team's store outside the cluster. Its
    own process, as moto's in-process servers share one backend."""
    port = free_port()
    log = tmp_path_factory.mktemp("external-s3") / "moto.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                   "-p", str(port)], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _get(f"http://127.0.0.1:{port}/moto-api/"), "the external S3 server",
                 [server], timeout=60)
        yield f"127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def users_secret(namespace: str) -> dict:
    """What `kubectl create secret generic team-s3 --from-literal=...` leaves in the cluster."""
    data = dict(zip(("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), TEAM_KEYS, strict=True))
    return {f"Secret/{TEAM_SECRET}": {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": TEAM_SECRET, "namespace": namespace},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}}


def test_external_store_with_prefix_and_users_secret_trains_and_serves(
        external_s3, s3_endpoint, dataset_url, tmp_path, monkeypatch, recorder):
    config = {"buildImage": "false", "image": f"registry.example.com/ml/trainstack@{DIGEST}",
              "storeEndpoint": f"http://{external_s3}", "storeRegion": REGION,
              "bucketPrefix": PREFIX, "storeCredentialsSecret": TEAM_SECRET,
              "model": "smallcnn", "epochs": "2", "batchSize": "32", "learningRate": "0.05",
              "workers": "2", "datasetSource": dataset_url}
    logs = tmp_path / "logs"
    logs.mkdir()
    cluster = local_cluster(config, tmp_path / "pods", recorder,
                            existing=users_secret("trainstack"), mlflow_port=free_port())
    assert not [k for k in cluster.objects if "minio" in k or k.startswith("Secret/")]

    run_job(cluster, "trainstack-buckets", logs, TEAM_KEYS)
    run_job(cluster, "trainstack-ingest-cifar10", logs, TEAM_KEYS)
    replicas = cluster.pytorchjob_processes(job_of(cluster))
    for replica in replicas:
        assert_credentials(replica, TEAM_KEYS)
    with mlflow_server(cluster, logs, TEAM_KEYS) as mlflow_url:
        procs = [r.start(logs) for r in replicas]
        try:
            for replica, proc in zip(replicas, procs, strict=True):
                assert proc.wait(timeout=WAIT_S) == 0, _log(logs, replica)
        finally:
            stop(procs)
        run_id = events(_log(logs, replicas[0]), "start")[0]["run_id"]
        mlflow, run = the_mlflow_run(mlflow_url, "smallcnn-cifar10", run_id)
        assert steps_logged(mlflow, run.info.run_id) == {key: [1, 2] for key in METRIC_KEYS}

    # Everything landed in the team's prefixed buckets, in its region, on its server.
    for key, value in zip(("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), TEAM_KEYS, strict=True):
        monkeypatch.setenv(key, value)
    s3 = boto3.client("s3", endpoint_url=f"http://{external_s3}", region_name=REGION)
    names = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert names == {f"{PREFIX}datasets", f"{PREFIX}models", f"{PREFIX}metrics",
                     f"{PREFIX}mlflow"}
    # MLflow's artifacts: through its server into the team's prefixed bucket.
    uploaded = s3.list_objects_v2(Bucket=f"{PREFIX}mlflow")
    assert any(o["Key"].endswith("/model/model.pt2") for o in uploaded.get("Contents", [])), \
        uploaded.get("Contents")
    assert s3.get_bucket_location(Bucket=f"{PREFIX}models")["LocationConstraint"] == REGION
    in_cluster = boto3.client("s3", endpoint_url=f"http://{s3_endpoint}", region_name=REGION)
    assert not [b for b in in_cluster.list_buckets()["Buckets"] if b["Name"].startswith(PREFIX)]
    store = S3Store(external_s3, bucket_prefix=PREFIX, region=REGION)
    assert store.exists("datasets/cifar10/cifar-10-python.tar.gz")
    (published,) = events(_log(logs, replicas[0]), "published")
    latest = json.loads(store.get_bytes("models/smallcnn-cifar10/latest.json"))
    assert latest["version"] == published["version"]
    assert store.exists(f"metrics/smallcnn-cifar10/{latest['version']}.json")

    serve_and_predict(cluster, logs, latest["version"], TEAM_KEYS, recorder)

    # Every connection against the fences: the store and the download are outside.
    store_port = int(external_s3.rsplit(":", 1)[1])
    outside = {store_port: "the team's S3 store",
               int(dataset_url.split(":")[2].split("/")[0]): "the CIFAR-10 download"}
    traffic = Traffic.of(cluster, recorder, outside)
    job = job_of(cluster)["metadata"]["name"]
    pods = ["trainstack-buckets", "trainstack-ingest-cifar10", f"{job}-master-0",
            f"{job}-worker-0", "inference-0", "mlflow-0"]
    expected = [(pod, "the team's S3 store", store_port) for pod in pods]
    expected += [(f"{job}-worker-0", f"{job}-master-0", 23456),
                 (USER.name, "inference-0", 7860), (f"{job}-master-0", "mlflow-0", 5000)]
    fences = fence_checks.assert_fenced(cluster, traffic, config, expected)
    fence_checks.assert_breaks_are_caught(cluster, traffic, fences["ingress"], None)


def test_the_harness_refuses_a_stack_that_renders_the_users_secret(tmp_path):
    """A stack-made Secret of the same name would overwrite the user's (the check can fail)."""
    rendered = {"Secret/team-s3": users_secret("trainstack")["Secret/team-s3"]}
    with pytest.raises(AssertionError, match="would overwrite the user's objects"):
        LocalCluster(rendered, tmp_path, {}, users_secret("trainstack"))
