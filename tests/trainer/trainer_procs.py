"""Run `python -m trainer` as real processes, the way pods and torchrun run it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DIST_VARS = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK",
             "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID")


def trainer_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    env.update(extra or {})
    return env


def operator_env(rank: int, world: int, port: int, extra=None) -> dict[str, str]:
    """What the Training Operator injects into a PyTorchJob replica (Master = rank 0)."""
    return trainer_env({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                        "WORLD_SIZE": str(world), "RANK": str(rank), **(extra or {})})


def start_trainer(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "trainer", *args], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run_trainer(args: list[str], env: dict[str, str], timeout: float = 300):
    return subprocess.run([sys.executable, "-m", "trainer", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def events(output: str, kind: str | None = None) -> list[dict]:
    """The structured (JSON) log lines of a trainer's output, optionally of one kind."""
    found = []
    for line in output.splitlines():
        start = line.find(': {"event"')
        if start >= 0:
            event = json.loads(line[start + 2:])
            if kind is None or event["event"] == kind:
                found.append(event)
    return found


def kill_when_written(procs: list[subprocess.Popen], marker: str) -> str:
    """Read rank 0's log until it writes a checkpoint whose key holds ``marker``, then
    SIGKILL every rank; returns what rank 0 printed."""
    lines = []
    for line in procs[0].stdout:
        lines.append(line)
        if "checkpoint written" in line and marker in line:
            break
    for proc in procs:
        proc.send_signal(signal.SIGKILL)
    for proc in procs:
        proc.wait(timeout=30)
    assert any(marker in line for line in lines), "".join(lines[-30:])
    return "".join(lines)
