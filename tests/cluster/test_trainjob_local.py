"""The local stand-in for a pod's processes (tests/e2e/cluster.py), as the TrainJob's
pods need it: torchrun starts each worker in a session of its own, and a pod's death
(the kubelet killing its container's cgroup) takes them too. No control plane needed."""

from __future__ import annotations

import os
import signal
import sys
import time

from tests.e2e.cluster import Process

# A stand-in for torchrun: its worker in a new session, whose pid it prints.
LAUNCHER = ("import subprocess, sys, time\n"
            "w = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'],"
            " start_new_session=True)\n"
            "print(w.pid, flush=True)\n"
            "time.sleep(120)\n")


def state(pid: int) -> str | None:
    """The process's state letter (R, S, T stopped, Z zombie), None once reaped."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def poll(predicate, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()


def test_killing_a_pod_kills_the_workers_torchrun_started_in_their_own_sessions(tmp_path):
    pod = Process("rank-0", [sys.executable, "-c", LAUNCHER], dict(os.environ)).start(tmp_path)
    log = tmp_path / "rank-0.log"
    worker = None
    try:
        assert poll(lambda: log.read_text().strip())
        worker = int(log.read_text().split()[0])
        assert os.getpgid(worker) != os.getpgid(pod.pid)  # out of the pod's process group
        pod.send_signal(signal.SIGSTOP)
        assert poll(lambda: state(worker) == "T")
        pod.kill()
        pod.wait(timeout=30)
        assert poll(lambda: state(worker) in (None, "Z"))
    finally:
        pod.kill()
        if worker is not None and state(worker) not in (None, "Z"):
            os.kill(worker, signal.SIGKILL)  # only when the check above failed
