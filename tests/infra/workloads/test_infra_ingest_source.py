"""Issue 28 #5: the dataset URL of `datasetSourceSecret` never reaches the ingest process's
command line (`ps`, /proc/<pid>/cmdline, the runtime's inspect output on the node): the
Job hands it over in the environment only, and the ingest reads it from there.

The Job's container is run here as the kubelet would run it: its command with every
`$(VAR)` of its env expanded, the Secret's value in the env var its secretKeyRef fills."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from tests.infra.infra_helpers import PUSHED, env_of, secret_ref
from tests.infra.render import render
from tests.testkit import WAIT_S
from tests.trainer.cifar_fixtures import archive_bytes, make_batches
from trainer.contract.env import DATASET_SOURCE_ENV
from trainer.contract.layout import cifar10_key
from trainer.store import LocalStore

REPO_ROOT = Path(__file__).resolve().parents[3]
SECRETS = ("alice", "pw-5521", "sig-77e1")
_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


class _HeldArchive(BaseHTTPRequestHandler):
    """Serves the archive once the test has looked at the process (`release`)."""

    body: ClassVar[bytes] = b""
    requested: ClassVar[threading.Event] = threading.Event()
    release: ClassVar[threading.Event] = threading.Event()

    def do_GET(self):
        self.requested.set()
        self.release.wait(WAIT_S)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def held_server():
    _HeldArchive.body = archive_bytes(make_batches(per_class=1))
    _HeldArchive.requested, _HeldArchive.release = threading.Event(), threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HeldArchive)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], _HeldArchive
    _HeldArchive.release.set()
    server.shutdown()
    server.server_close()


def kubelet_command(command: list[str], defined: dict[str, str]) -> list[str]:
    """`$(VAR)` of a container's env expanded as the kubelet does; others left as typed."""
    return [_REFERENCE.sub(lambda m: defined.get(m.group(1), m.group(0)), arg)
            for arg in command]


def ingest_container(rendering) -> dict:
    spec = rendering.objects["Job/trainstack-ingest-cifar10"]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    return container


def test_the_job_refers_to_the_secret_in_its_env_only():
    container = ingest_container(render({**PUSHED, "datasetSourceSecret": "cifar-mirror"}))
    assert env_of(container)[DATASET_SOURCE_ENV] == secret_ref("cifar-mirror",
                                                               DATASET_SOURCE_ENV)
    command = container["command"]
    assert not [arg for arg in command if "$(" in arg or arg == "--source"], command
    assert command[command.index("--source-env") + 1] == DATASET_SOURCE_ENV


def test_the_url_is_never_on_the_ingest_process_command_line(held_server, tmp_path):
    port, handler = held_server
    url = f"http://alice:pw-5521@127.0.0.1:{port}/mirror/cifar.tar.gz?sig=sig-77e1"
    container = ingest_container(render({**PUSHED, "datasetSourceSecret": "cifar-mirror"}))
    pod_env = {DATASET_SOURCE_ENV: url}  # what the secretKeyRef fills in
    defined = {name: pod_env.get(name, "") for name in env_of(container)}
    command = kubelet_command(container["command"], defined)
    assert command[0] == "python"
    env = {**os.environ, **pod_env, "TRAINSTACK_STORE": str(tmp_path / "store"),
           "PYTHONPATH": str(REPO_ROOT)}
    LocalStore(tmp_path / "store").ensure_buckets()
    process = subprocess.Popen([sys.executable, *command[1:]], cwd=REPO_ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        if not handler.requested.wait(WAIT_S):
            process.kill()
            pytest.fail(f"the ingest never asked for the archive: {process.communicate()[0]}")
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().decode()
        handler.release.set()
        output, _ = process.communicate(timeout=WAIT_S)
    finally:
        if process.poll() is None:
            process.kill()
    for secret in SECRETS:
        assert secret not in cmdline, cmdline.split("\0")
        assert secret not in output, output
    assert process.returncode == 0, output
    store = LocalStore(tmp_path / "store")
    assert store.get_bytes(cifar10_key()) == handler.body


@pytest.mark.parametrize("value", ["", "  \n", None])
def test_an_empty_or_unset_source_variable_is_refused(value, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop(DATASET_SOURCE_ENV, None)
    if value is not None:
        env[DATASET_SOURCE_ENV] = value
    done = subprocess.run([sys.executable, "-m", "trainer", "ingest", "--dataset", "cifar10",
                           "--source-env", DATASET_SOURCE_ENV, "--store",
                           str(tmp_path / "store")], check=False, cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=WAIT_S)
    assert done.returncode == 1, done.stderr
    (line,) = [entry for entry in done.stderr.splitlines() if "ERROR" in entry]
    assert f"--source-env {DATASET_SOURCE_ENV}" in line and "unset or empty" in line


def test_source_and_source_env_are_one_or_the_other():
    from trainer.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["ingest", "--source", "a.tar.gz", "--source-env", "X"])
