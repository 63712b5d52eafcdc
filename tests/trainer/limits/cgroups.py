"""Real cgroups for the tests, made under the test process's own (v1 or v2, whichever the
machine has), or a reason why none can be made here (the test then skips)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

PROC_SELF_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def own_v1_cgroup(controller: str) -> Path | None:
    """This process's cgroup folder in the v1 hierarchy of ``controller``, if mounted."""
    for line in PROC_SELF_CGROUP.read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            folder = CGROUP_ROOT / controllers / path.lstrip("/")
            return folder if folder.is_dir() else None
    return None


def own_v2_cgroup() -> Path | None:
    """This process's cgroup folder in the unified (v2) hierarchy, if it is mounted there."""
    for line in PROC_SELF_CGROUP.read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "" and (CGROUP_ROOT / "cgroup.controllers").is_file():
            folder = CGROUP_ROOT / path.lstrip("/")
            return folder if folder.is_dir() else None
    return None


@contextlib.contextmanager
def memory_cgroup(limit_bytes: int) -> Iterator[Path]:
    """A new memory cgroup under this process's own, limited to ``limit_bytes``; yields the
    ``cgroup.procs`` file a process joins it by (``echo $$ > procs`` before it execs). Raises
    CgroupUnavailable, saying why, where none can be made."""
    name = f"trainstack-test-{uuid.uuid4().hex[:8]}"
    v1 = own_v1_cgroup("memory")
    if v1 is not None:
        folder, limit_file = v1 / name, "memory.limit_in_bytes"
    else:
        v2 = own_v2_cgroup()
        if v2 is None:
            raise CgroupUnavailable(f"no memory cgroup (v1 or v2) here: "
                                    f"{PROC_SELF_CGROUP.read_text()!r}")
        if "memory" not in (v2 / "cgroup.subtree_control").read_text().split():
            raise CgroupUnavailable(f"{v2}: the memory controller is not delegated to its "
                                    "children (cgroup.subtree_control)")
        folder, limit_file = v2 / name, "memory.max"
    try:
        folder.mkdir()
    except OSError as e:
        raise CgroupUnavailable(f"cannot make a cgroup under {folder.parent}: {e}") from None
    try:
        (folder / limit_file).write_text(str(limit_bytes))
        yield folder / "cgroup.procs"
    finally:
        folder.rmdir()


class CgroupUnavailable(Exception):
    """No memory cgroup can be made here; the message says why."""
