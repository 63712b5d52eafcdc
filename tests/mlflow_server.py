"""A real MLflow tracking server on 127.0.0.1 for the tests: SQLite in a temp directory,
artifacts proxied by the server into an S3 bucket of the tests' moto server.

The server is the full ``mlflow`` package, which lives in its own venv (``.venv-mlflow``,
made by ``make test`` from requirements-mlflow-server.txt); the test venv has only the
client (mlflow-skinny), like the image.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVER_ENV = "TRAINSTACK_MLFLOW_SERVER"
ARTIFACT_BUCKET = "mlflow"
# Cold start on a small shared machine: importing the server takes most of it.
START_TIMEOUT_S = 300


def server_executable() -> Path:
    """``$TRAINSTACK_MLFLOW_SERVER`` or ``.venv-mlflow/bin/mlflow`` of this checkout."""
    path = Path(os.environ.get(SERVER_ENV) or REPO_ROOT / ".venv-mlflow" / "bin" / "mlflow")
    if not path.is_file():
        raise FileNotFoundError(f"no MLflow server at {path}: run `make test` (it builds "
                                f".venv-mlflow), or set {SERVER_ENV} to an `mlflow` executable")
    return path


@dataclass
class MlflowServer:
    uri: str
    command: list[str]
    env: dict[str, str]
    root: Path
    process: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def start(self) -> None:
        """Start the server (again: same port, database and artifact bucket) and return
        once it answers /health."""
        with open(self.log_path, "ab") as log_file:
            # Its own session: `mlflow server` runs uvicorn as a child, signalled together.
            self.process = subprocess.Popen(self.command, cwd=self.root, env=self.env,
                                            stdout=log_file, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(self.uri):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mlflow server did not start:\n{self.log_tail()}")
            time.sleep(1.0)

    @contextlib.contextmanager
    def paused(self):
        """The server hangs (SIGSTOP): connections open, nothing answers; resumed after."""
        self._signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self._signal(signal.SIGCONT)

    @contextlib.contextmanager
    def stopped(self):
        """The server is down (connections refused); started again after, with its data."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def _signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    def stop(self) -> None:
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.process.wait(timeout=30)
        # uvicorn's worker may outlive the parent for a moment: the port must be free.
        deadline = time.monotonic() + 30
        while _healthy(self.uri) and time.monotonic() < deadline:
            self._signal(signal.SIGKILL)
            time.sleep(0.5)


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_server(root: Path, port: int, s3_endpoint: str, access_key: str,
                 secret_key: str) -> MlflowServer:
    """``mlflow server`` on 127.0.0.1:``port``; returns once it answers /health."""
    root.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update({"MLFLOW_S3_ENDPOINT_URL": f"http://{s3_endpoint}",
                "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key,
                "AWS_DEFAULT_REGION": "us-east-1"})
    command = [str(server_executable()), "server",
               "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
               "--artifacts-destination", f"s3://{ARTIFACT_BUCKET}/",
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    server = MlflowServer(uri=f"http://127.0.0.1:{port}", command=command, env=env, root=root)
    server.start()
    return server
