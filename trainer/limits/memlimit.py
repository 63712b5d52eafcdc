"""How much memory this process may use: its cgroup's limit (a pod's limits.memory), else RAM.

The limit is that of the process's own cgroup, or of any cgroup above it, whichever is
tightest (trainer.limits.cgroup): a pod's, a ``systemd-run -p MemoryMax=`` scope's, a batch
job's. The ranks of one pod (torchrun: LOCAL_WORLD_SIZE processes) share that limit, so
each plans with its share (:func:`process_memory_bytes`). The trainer refuses a dataset
whose decoded images would take more than a part of that, with a message that says so,
instead of being OOM-killed on every restart.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from trainer.contract.errors import ConfigError
from trainer.limits.cgroup import CgroupView, read_limit_file

log = logging.getLogger(__name__)

# cgroup v1 reports "no limit" as a huge number (a page-rounded 2**63 - 1).
_UNLIMITED = 1 << 60

# A lower limit the trainer obeys as if it were its cgroup's (benchmarks, tests).
MEMORY_LIMIT_ENV = "TRAINSTACK_MEMORY_LIMIT_BYTES"
# How many processes of this job share the pod (torchrun sets it; one without torchrun).
LOCAL_PROCESSES_ENV = "LOCAL_WORLD_SIZE"


def memory_limit_bytes(cgroup_root: CgroupView | Path | None = None) -> int:
    """The memory limit of this process's cgroup (the tightest from it up to the root), or
    the machine's physical memory when there is none; $TRAINSTACK_MEMORY_LIMIT_BYTES if lower.

    ``cgroup_root``: where to read (default: this process's own cgroups; CgroupView.of)."""
    limit = cgroup_memory_limit(cgroup_root)
    if limit is None:
        limit = _physical_memory()
    raw = os.environ.get(MEMORY_LIMIT_ENV, "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise ConfigError(f"environment variable {MEMORY_LIMIT_ENV}={raw!r} must be a "
                             "positive number of bytes")
        limit = min(limit, int(raw))
    return limit


def cgroup_memory_limit(cgroup_root: CgroupView | Path | None = None) -> int | None:
    """The tightest memory limit on the path from this process's cgroup up to the root
    (v2 ``memory.max``, v1 ``memory.limit_in_bytes``); None when none is set."""
    limits = []
    for version, folder in CgroupView.of(cgroup_root).folders("memory"):
        text = read_limit_file(folder / ("memory.max" if version == 2
                                         else "memory.limit_in_bytes"))
        if text and text.isdigit() and int(text) < _UNLIMITED:
            limits.append(int(text))
    return min(limits, default=None)


def local_processes() -> int:
    """How many processes of the job run in this pod and share its limits ($LOCAL_WORLD_SIZE,
    which torchrun sets; 1 for a process that is no rank of a job, as in
    trainer.run.distributed.process_env)."""
    raw = os.environ.get(LOCAL_PROCESSES_ENV, "").strip()
    if not raw or not ("WORLD_SIZE" in os.environ and "RANK" in os.environ):
        return 1
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"environment variable {LOCAL_PROCESSES_ENV}={raw!r} must be a "
                          "positive integer (the processes torchrun starts in this pod)")
    return int(raw)


def process_memory_bytes() -> int:
    """This process's share of the pod's memory limit: the limit over its local processes."""
    return memory_limit_bytes() // local_processes()


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        log.debug("could not read the physical memory size", exc_info=True)
        return _UNLIMITED
