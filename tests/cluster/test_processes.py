"""The tier's processes never outlive the session: not when pytest stops them, and not when
pytest itself is killed (SIGKILL runs no fixture teardown)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# A stand-in for the session: starts one long process the way the control plane starts
# etcd, prints its pid, then waits to be killed.
SESSION = """
    import sys, time
    from pathlib import Path
    from tests.cluster.processes import Processes

    processes = Processes(Path(sys.argv[1]))
    processes.start("sleeper", ["sleep", "300"])
    print(processes.started["sleeper"].pid, flush=True)
    time.sleep(300)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's reaping is left


def test_a_killed_session_takes_its_processes_with_it(tmp_path):
    session = subprocess.Popen([sys.executable, "-c", textwrap.dedent(SESSION), str(tmp_path)],
                               cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    child = int(session.stdout.readline())
    try:
        assert _alive(child)
        os.kill(session.pid, signal.SIGKILL)
        session.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child), "the session's process outlived it"
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)
