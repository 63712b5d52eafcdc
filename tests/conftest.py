"""Fixtures shared by every test package: a real S3-protocol server and stores."""

from __future__ import annotations

import logging
import uuid

import pytest

from tests.mlflow_server import ARTIFACT_BUCKET, start_server
from tests.testkit import empty_s3, free_port
from trainer.store import LocalStore, S3Store, Store
from trainer.tracking.tracker import MLFLOW_HTTP_DEFAULTS

# moto's server logs every request at INFO: it buries the test's own output.
logging.getLogger("werkzeug").setLevel(logging.WARNING)

S3_ACCESS_KEY = "trainstack-test-access"
S3_SECRET_KEY = "trainstack-test-secret-0123456789"


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    """``HOST:PORT`` of a moto server (real S3 protocol over HTTP) on 127.0.0.1."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch) -> dict[str, str]:
    """Credentials as the pods get them; returns the env a subprocess needs too."""
    env = {
        "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
        "TRAINSTACK_STORE": f"s3://{s3_endpoint}",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def s3_store(s3_env, s3_endpoint) -> S3Store:
    """A fresh S3 store (emptied first: earlier tests' objects would still be there)."""
    return empty_s3(S3Store(s3_endpoint))


@pytest.fixture
def local_store(tmp_path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture(params=["local", "s3"])
def any_store(request) -> Store:
    """The same test against both implementations of the seam."""
    return request.getfixturevalue(f"{request.param}_store")


@pytest.fixture(autouse=True)
def no_ambient_tracking(monkeypatch):
    """A developer's own MLFLOW_TRACKING_URI never reaches the tests' trainers (mlflow_env
    sets one where a test wants tracking)."""
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory, s3_endpoint):
    """A real ``mlflow server`` on 127.0.0.1 (SQLite, artifacts into moto), once per session."""
    server = start_server(tmp_path_factory.mktemp("mlflow"), free_port(), s3_endpoint,
                          S3_ACCESS_KEY, S3_SECRET_KEY)
    yield server
    server.stop()


@pytest.fixture
def mlflow_env(mlflow_server, s3_store, monkeypatch) -> dict[str, str]:
    """Tracking on, for this test and the processes it starts: the server's URI, an
    experiment of the test's own (runs of equal configs in other tests stay apart), short
    HTTP timeouts; the artifact bucket exists (s3_store emptied moto)."""
    if not s3_store.client.bucket_exists(ARTIFACT_BUCKET):
        s3_store.client.make_bucket(ARTIFACT_BUCKET)
    env = {**MLFLOW_HTTP_DEFAULTS, "MLFLOW_TRACKING_URI": mlflow_server.uri,
           "MLFLOW_EXPERIMENT_NAME": f"test-{uuid.uuid4().hex[:12]}"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env
