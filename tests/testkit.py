"""Small helpers every test package shares."""

from __future__ import annotations

import socket
import subprocess
import time

WAIT_S = 240  # generous upper bound for any one step on a loaded 2-core machine


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def empty_s3(store):
    """Remove every bucket of an S3Store: moto keeps one state per process, shared by all
    its servers, so a test's server still holds earlier tests' objects."""
    for bucket in store.client.list_buckets():
        for obj in store.client.list_objects(bucket.name, recursive=True):
            store.client.remove_object(bucket.name, obj.object_name)
        store.client.remove_bucket(bucket.name)
    return store


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
    """Kill what still runs and reap all of them."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
