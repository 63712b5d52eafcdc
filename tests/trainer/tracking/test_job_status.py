"""Rank 0's progress on its training job (trainer/tracking/job_status.py): what it sends,
and that a status server that is down, hangs or is absent never stops or holds training.
The real Trainer v2 status server and the real PyTorchJob annotation: tests/cluster."""

from __future__ import annotations

import http.server
import json
import socket
import ssl
import threading
from pathlib import Path

import pytest

from tests.cluster.certs import Authority
from tests.testkit import free_port
from tests.trainer.tracking_kit import record
from trainer.contract.config import TrainConfig
from trainer.contract.reporting import job_status as contract
from trainer.run.train import run_training
from trainer.tracking import job_status

TOKEN = "projected-token-for-the-test"


class StatusServer:
    """An HTTPS server on 127.0.0.1 that records every request (or holds it, unanswered)."""

    def __init__(self, folder: Path, hang: bool = False):
        authority = Authority("status-test-ca")
        self.ca_file, _ = authority.pair.write(folder, "ca.crt", "ca.key")
        cert, key = authority.serving().write(folder, "tls.crt", "tls.key")
        self.requests: list[tuple[str, str, dict, str]] = []
        self.got = threading.Event()
        self.release = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _record(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.command, self.path, body,
                                       self.headers["Authorization"]))
                outer.got.set()
                if hang:
                    outer.release.wait(60)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"{}")

            do_POST = do_PATCH = _record

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.release.set()
        self.httpd.shutdown()


@pytest.fixture
def token_file(tmp_path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


def test_a_trainjob_reports_progress_metrics_and_eta_to_trainers_status_server(
        tmp_path, token_file):
    server = StatusServer(tmp_path)
    path = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/ns/trainjobs/job/status"
    env = {contract.TRAINER_SERVER_URL_ENV: server.url + path,
           contract.TRAINER_SERVER_CA_ENV: str(server.ca_file),
           contract.TRAINER_SERVER_TOKEN_ENV: str(token_file)}
    ticks = iter(range(0, 10_000, 10))
    status = job_status.JobStatus(job_status.sender_from_env(env), epochs=4,
                                  clock=lambda: float(next(ticks)))
    try:
        status.progressed(0.10)
        status.progressed(0.25)
        status.epoch_ended(1, record(1))
        status.close()
    finally:
        server.stop()
    method, got_path, body, auth = server.requests[-1]
    assert (method, got_path, auth) == ("POST", path, f"Bearer {TOKEN}")
    trainer = body["trainerStatus"]
    assert trainer["progressPercentage"] == 25
    assert trainer["estimatedRemainingSeconds"] > 0
    assert {m["name"]: m["value"] for m in trainer["metrics"]} == {
        "epoch": "1/4", "test_accuracy": f"{record(1).test_acc:.4f}",
        "test_loss": f"{record(1).test_loss:.4f}"}
    assert trainer["lastUpdatedTime"].endswith("Z")


def test_a_pytorchjob_patches_its_own_annotation(tmp_path, token_file):
    server = StatusServer(tmp_path)
    credentials = tmp_path / "api"
    credentials.mkdir()
    (credentials / "token").write_text(TOKEN)
    (credentials / "ca.crt").write_bytes(server.ca_file.read_bytes())
    job = contract.pytorchjob_path("team-a", "train-x")
    env = {contract.PROGRESS_JOB_ENV: job, contract.API_CREDENTIALS_ENV: str(credentials),
           "KUBERNETES_SERVICE_HOST": "127.0.0.1",
           "KUBERNETES_SERVICE_PORT": server.url.rsplit(":", 1)[1]}
    status = job_status.open_job_status(2, env)
    try:
        status.epoch_ended(2, record(2))
        status.close()
    finally:
        server.stop()
    method, got_path, body, auth = server.requests[-1]
    assert (method, got_path, auth) == ("PATCH", job, f"Bearer {TOKEN}")
    value = json.loads(body["metadata"]["annotations"][contract.PROGRESS_ANNOTATION])
    assert value["progressPercentage"] == 100 and value["epoch"] == "2/2"


def test_nothing_reports_without_the_environment():
    """Trainer's TrainJobStatus gate off (no URL in the pod), no job named by the stack."""
    assert job_status.open_job_status(3, {}) is None
    assert job_status.sender_from_env({contract.PROGRESS_JOB_ENV: "/apis/x"}) is None


def test_a_hanging_status_server_holds_the_reporters_thread_never_the_loop(
        tmp_path, token_file):
    server = StatusServer(tmp_path, hang=True)
    env = {contract.TRAINER_SERVER_URL_ENV: server.url + "/status",
           contract.TRAINER_SERVER_CA_ENV: str(server.ca_file),
           contract.TRAINER_SERVER_TOKEN_ENV: str(token_file)}
    status = job_status.open_job_status(2, env)
    try:
        status.epoch_ended(1, record(1))
        assert server.got.wait(30), "the first report never left"
        # The thread is held inside that request: the loop's calls still return at once.
        for step in range(1, 2001):
            status.progressed(0.5 + step / 4000)
        status.epoch_ended(2, record(2))
        status.close(wait_s=0.1)  # the end of the run does not wait for it either
        assert len(server.requests) == 1
    finally:
        server.stop()


def test_training_is_unaffected_when_the_status_server_is_unreachable(
        local_store, token_file, tmp_path, monkeypatch, caplog):
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv(contract.TRAINER_SERVER_URL_ENV, f"https://127.0.0.1:{port}/status")
    monkeypatch.setenv(contract.TRAINER_SERVER_CA_ENV, str(tmp_path / "missing-ca.crt"))
    monkeypatch.setenv(contract.TRAINER_SERVER_TOKEN_ENV, str(token_file))
    local_store.ensure_buckets()
    cfg = TrainConfig.from_dict({"dataset": "digits", "model": "smallcnn", "epochs": 2,
                                 "batch_size": 64, "lr": 0.05, "seed": free_port()})
    caplog.set_level("WARNING", logger="trainer.tracking.job_status")
    version = run_training(cfg, local_store)
    assert version is not None
    warnings = [r for r in caplog.records if "was not reported" in r.getMessage()
                and f":{port}/" in r.getMessage()]  # not another test's reporter
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
