"""Start the control plane's processes, wait for them, and stop exactly those.

Each process runs in its own session (its own process group), logs to `<logs>/<name>.log`
and is stopped by its own id: SIGTERM to its group, then SIGKILL after a grace period.
Should pytest itself be killed (a cancelled CI job, Ctrl-C twice), Linux sends each of them
SIGTERM (PR_SET_PDEATHSIG, set by setpriv), so no etcd or API server outlives the session.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import urllib3
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)
STOP_GRACE_S = 10
# What a readiness probe raises while its target is still starting: connection refused or
# reset (OSError, urllib3), a 404 or 503 from an API server that is not serving yet.
NOT_UP_YET = (OSError, urllib3.exceptions.HTTPError, ApiException)


class StartupFailed(RuntimeError):
    pass


# util-linux's setpriv (Essential in Debian) sets the signal and execs the process (same
# pid); a preexec_fn would run Python between fork and exec in a threaded pytest.
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "TERM", "--"]


class Processes:
    def __init__(self, logs: Path):
        self.logs = logs
        self.logs.mkdir(parents=True, exist_ok=True)
        self.started: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        out = (self.logs / f"{name}.log").open("ab")
        self.started[name] = subprocess.Popen(
            [*DIE_WITH_PARENT, *(str(a) for a in argv)], stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})}, start_new_session=True)
        out.close()
        log.info("started %s (pid %d)", name, self.started[name].pid)

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.logs / f"{name}.log"
        text = path.read_text(errors="replace").splitlines() if path.exists() else []
        return "\n".join(text[-lines:])

    def wait_until(self, name: str, ready: Callable[[], bool], timeout_s: float) -> None:
        """Poll `ready` until true; fail early (with the log's tail) if `name` exits."""
        deadline = time.monotonic() + timeout_s
        while True:
            proc = self.started[name]
            if proc.poll() is not None:
                raise StartupFailed(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")
            try:
                if ready():
                    return
            except NOT_UP_YET as error:
                last = error
            else:
                last = None
            if time.monotonic() > deadline:
                raise StartupFailed(f"{name} not ready after {timeout_s}s ({last!r}):\n"
                                    f"{self.tail(name)}")
            time.sleep(0.3)

    def stop(self, name: str) -> None:
        proc = self.started.pop(name)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.info("stopped %s (exit %s)", name, proc.returncode)

    def stop_all(self) -> None:
        """Stop in reverse start order: clients before the API server, etcd last."""
        for name in reversed(list(self.started)):
            self.stop(name)
