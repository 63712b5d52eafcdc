"""Memory held by half-sent ``POST /predict`` uploads (issue 20 #11), with and without the
upload limits.

Starts the app (its own process, 127.0.0.1 only) on a small published model, opens
``--clients`` connections that each send the headers of a 10 MB multipart upload and
``--sent-mib`` MiB of its body, then stall; prints the server's RSS before and after, and
what each stalled client was answered. Two configurations: the defaults (upload budget
128 MiB, idle timeout 10 s) and "unbounded" (a budget and timeouts too large to matter,
what the app did before the limits existed).

    .venv/bin/python bench/slow_uploads.py --clients 60 --sent-mib 9
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

log = logging.getLogger("bench.slow_uploads")
MIB = 2**20
VERSION = "20260101T000000Z"


def publish_small_model(store_dir: Path) -> str:
    from trainer.contract.layout import METRICS_FILE, MODEL_FILE, model_name
    from trainer.contract.schema import EpochRecord, MetricsSummary, VersionMeta, VersionMetrics
    from trainer.models.zoo import build_model
    from trainer.publish.publication import created_at, export_program, write_version
    from trainer.store import LocalStore

    store = LocalStore(store_dir)
    store.ensure_buckets()
    classes = [str(i) for i in range(10)]
    history = [EpochRecord(1, 1.0, 0.5, 1.0, 0.5, 100.0, 1.0)]
    metrics = VersionMetrics(epochs=history, confusion_matrix=[], classes=classes, world_size=1)
    meta = VersionMeta(model="smallcnn", dataset="digits", version=VERSION, run_id="bench",
                       classes=classes, input_size=[1, 8, 8], mean=[0.5], std=[0.25],
                       train_config={}, metrics=MetricsSummary.of(history),
                       created_at=created_at(VERSION), files=[MODEL_FILE, METRICS_FILE])
    model = build_model("smallcnn", in_channels=1, num_classes=10)
    write_version(store, meta, {MODEL_FILE: export_program(model, (1, 8, 8)),
                                METRICS_FILE: metrics.to_json()})
    return model_name("smallcnn", "digits")


@contextlib.contextmanager
def server(store: Path, name: str, settings: dict):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = textwrap.dedent(f"""
        import uvicorn
        from inference.app import Settings, create_app
        settings = Settings(store={str(store)!r}, host="127.0.0.1", port={port},
                            model_name={name!r}, poll_seconds=60, torch_threads=1, **{settings!r})
        uvicorn.run(create_app(settings), host="127.0.0.1", port={port}, log_level="warning")
    """)
    proc = subprocess.Popen([sys.executable, "-c", code])
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/readyz").json().get("status") == "ready":
                    break
            time.sleep(0.5)
        else:
            raise SystemExit("the server did not get ready")
        yield port, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def stall(port: int, sent_mib: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10000000\r\n"
                 b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n"
                 b"Content-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\n")
    for _ in range(sent_mib):
        try:
            sock.sendall(b"\0" * MIB)
        except OSError:
            break
    return sock


def answer(sock: socket.socket, deadline: float) -> str:
    """The status the server answered with by ``deadline`` (time.monotonic())."""
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        head = sock.recv(64)
    except (TimeoutError, ConnectionResetError):
        head = b""
    sock.close()
    return head.split()[1].decode() if head.startswith(b"HTTP/1.1 ") else "none (still held)"


def measure(store: Path, name: str, label: str, settings: dict, args) -> None:
    with server(store, name, settings) as (port, pid):
        before = rss(pid)
        sockets = [stall(port, args.sent_mib) for _ in range(args.clients)]
        time.sleep(2)  # let the server read what was sent
        held = rss(pid)
        deadline = time.monotonic() + args.answer_wait_s  # one wait for all of them
        answers = [answer(sock, deadline) for sock in sockets]
    counts = {a: answers.count(a) for a in sorted(set(answers))}
    print(f"{label}: {args.clients} clients x {args.sent_mib} MiB sent of 10 MB, stalled: "
          f"server RSS {before / MIB:.0f} -> {held / MIB:.0f} MiB (+{(held - before) / MIB:.0f} "
          f"MiB); answers {counts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=60)
    parser.add_argument("--sent-mib", type=int, default=9)
    parser.add_argument("--answer-wait-s", type=float, default=20.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-slow-uploads-") as tmp:
        store = Path(tmp)
        name = publish_small_model(store)
        measure(store, name, "limits (defaults)", {}, args)
        measure(store, name, "unbounded", {"upload_memory_mb": 10**6,
                                           "upload_idle_timeout_s": 3600.0,
                                           "upload_read_timeout_s": 3600.0}, args)


if __name__ == "__main__":
    main()
