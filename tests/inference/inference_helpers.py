"""Helpers for the inference tests: run the real app under uvicorn in this process."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


V1, V2 = "20261123T152400Z", "20261124T101500Z"


def wait_until(check, what: str, deadline_s: float = 90.0, every: float = 0.1):
    """Poll ``check`` until it returns something truthy (a wait, not a timed assertion)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        result = check()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"gave up waiting for {what}")


@contextlib.contextmanager
def serve_app(store_url: str, cache_dir: Path, **overrides):
    """Run ``create_app`` under uvicorn in a thread; yields (base URL, app)."""
    import uvicorn

    from inference.app import Settings, create_app

    settings = Settings(store=store_url, poll_seconds=0.2, cache_dir=cache_dir,
                        torch_threads=1, concurrency=8, **overrides)
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on",
                                           timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, "uvicorn to start")
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def wait_for_version(base: str, version: str) -> None:
    def ready():
        r = httpx.get(f"{base}/readyz")
        return r.status_code == 200 and r.json()["version"] == version
    wait_until(ready, f"version {version} to be served")


