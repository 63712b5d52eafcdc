"""Issue 20 #11: half-sent /predict uploads are bounded. Many clients (127.0.0.1 only) each
send part of a 10 MB body and stall: the server's memory stays bounded by its upload
budget, uploads beyond it are refused at once (503), stalled ones dropped (408), and a
normal request still works. The server runs as its own process, so its RSS is its own."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx

from tests.inference.inference_helpers import V1, free_port, wait_until
from tests.inference.modelkit import MODEL_NAME, png, publish_version, solid

MIB = 2**20
CLIENTS = 60
SENT_EACH = 4 * MIB  # of a declared 10 MB body: 240 MiB held if nothing bounds it
BUDGET_MB = 24


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@contextlib.contextmanager
def server(store_url: str, tmp_path: Path, **settings):
    port = free_port()
    code = textwrap.dedent(f"""
        import logging, uvicorn
        from inference.app import Settings, create_app
        logging.basicConfig(level=logging.INFO)
        settings = Settings(store={store_url!r}, host="127.0.0.1", port={port},
                            model_name={MODEL_NAME!r}, poll_seconds=60, torch_threads=1,
                            cache_dir={str(tmp_path / "cache")!r}, **{settings!r})
        uvicorn.run(create_app(settings), host="127.0.0.1", port={port}, log_level="warning")
    """)
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    base = f"http://127.0.0.1:{port}"

    def ready():
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()
        try:
            return httpx.get(f"{base}/readyz").json().get("version") == V1
        except httpx.TransportError:
            return False

    try:
        wait_until(ready, "the server to load the model", deadline_s=600, every=0.3)
        assert predict(base, settings.get("auth_token")).status_code == 200  # warm
        yield port, base, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def predict(base: str, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{base}/predict", files={"file": ("x.png", png(solid("red")),
                                                         "image/png")}, headers=headers,
                      timeout=120)


def start_slow_upload(port: int) -> socket.socket:
    """Headers of a 10 MB multipart upload and its first SENT_EACH bytes; then nothing."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: multipart/form-data; boundary=xyz\r\n"
                 b"Content-Length: 10000000\r\n\r\n"
                 b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\""
                 b"\r\nContent-Type: image/png\r\n\r\n")
    sock.settimeout(120)
    chunk = b"\0" * MIB
    for _ in range(SENT_EACH // MIB):
        try:
            sock.sendall(chunk)
        except OSError:  # refused and closed by the server: stop sending
            break
    return sock


def status_of(sock: socket.socket) -> int:
    """The HTTP status the server answered with (the body was never finished)."""
    head = b""
    with contextlib.suppress(ConnectionResetError):
        while b"\r\n" not in head:
            data = sock.recv(4096)
            if not data:
                break
            head += data
    sock.close()
    assert head.startswith(b"HTTP/1.1 "), head[:100]
    return int(head.split()[1])


def test_many_stalled_uploads_hold_bounded_memory_and_are_dropped(local_store, tmp_path):
    publish_version(local_store, V1)
    with server(local_store.url, tmp_path, upload_memory_mb=BUDGET_MB,
                upload_idle_timeout_s=3.0) as (port, base, pid):
        before = rss(pid)
        sockets = [start_slow_upload(port) for _ in range(CLIENTS)]
        held = rss(pid) - before
        statuses = [status_of(sock) for sock in sockets]  # every one is answered
        assert set(statuses) <= {408, 503}, statuses
        assert 408 in statuses and 503 in statuses  # some admitted then dropped, most refused
        assert predict(base).status_code == 200  # the budget is free again
        metrics = httpx.get(f"{base}/metrics").text
        assert 'trainstack_http_requests_total{endpoint="/predict",status="408"}' in metrics
        budget = [line for line in metrics.splitlines()
                  if line.startswith("trainstack_upload_memory_budget_bytes ")]
        assert [float(line.split()[1]) for line in budget] == [BUDGET_MB * MIB]
        assert "trainstack_upload_memory_reserved_bytes 0.0" in metrics
    # Unbounded, the server held about CLIENTS * SENT_EACH (240 MiB) here.
    print(f"{CLIENTS} stalled uploads of {SENT_EACH // MIB} MiB each, budget {BUDGET_MB} MiB: "
          f"server RSS +{held / MIB:.0f} MiB; answers: {sorted(set(statuses))}")
    assert held < 2 * BUDGET_MB * MIB + 40 * MIB, f"{held / MIB:.0f} MiB held"
