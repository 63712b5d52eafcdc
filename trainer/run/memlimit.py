"""How much memory this process may use: the cgroup limit (a pod's limits.memory), else RAM.

The trainer refuses a dataset whose decoded images would take more than a share of it,
with a message that says so, instead of being OOM-killed on every restart.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from trainer.contract.errors import ConfigError
from trainer.run.cpus import CGROUP_ROOT

log = logging.getLogger(__name__)

# cgroup v1 reports "no limit" as a huge number (a page-rounded 2**63 - 1).
_UNLIMITED = 1 << 60


# A lower limit the trainer obeys as if it were its cgroup's (benchmarks, tests).
MEMORY_LIMIT_ENV = "TRAINSTACK_MEMORY_LIMIT_BYTES"


def memory_limit_bytes(cgroup_root: Path = CGROUP_ROOT) -> int:
    """The cgroup memory limit (v2 ``memory.max``, v1 ``memory.limit_in_bytes``), or the
    machine's physical memory when there is none; $TRAINSTACK_MEMORY_LIMIT_BYTES if lower."""
    limit = _cgroup_or_physical(cgroup_root)
    raw = os.environ.get(MEMORY_LIMIT_ENV, "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise ConfigError(f"environment variable {MEMORY_LIMIT_ENV}={raw!r} must be a "
                             "positive number of bytes")
        limit = min(limit, int(raw))
    return limit


def _cgroup_or_physical(cgroup_root: Path) -> int:
    for path in (cgroup_root / "memory.max", cgroup_root / "memory" / "memory.limit_in_bytes"):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < _UNLIMITED:
            return int(text)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        log.debug("could not read the physical memory size", exc_info=True)
        return _UNLIMITED
