"""How many CPUs this process may really use: affinity mask capped by the cgroup quota.

A pod limited to 2 CPUs on a 64-core node sees 64 cores in ``os.cpu_count()``; sizing
thread pools from that oversubscribes the quota and the kernel throttles the pod. The
quota is that of the process's own cgroup or of any above it, whichever is tightest
(trainer.limits.cgroup). The trainer and the app size their threads from :func:`usable_cpus`.
Stdlib only.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

from trainer.limits.cgroup import CgroupView, read_limit_file

log = logging.getLogger(__name__)


def usable_cpus(cgroup_root: CgroupView | Path | None = None) -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (pods).
    ``cgroup_root``: where to read (default: this process's own cgroups; CgroupView.of)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def cgroup_cpu_quota(cgroup_root: CgroupView | Path | None = None) -> float | None:
    """CPUs' worth of time this process may use (limits.cpu of a pod): the tightest quota
    from its cgroup up to the root (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` over
    ``cpu.cfs_period_us``); None if unlimited."""
    quotas = []
    for version, folder in CgroupView.of(cgroup_root).folders("cpu"):
        try:
            quota = _v2_quota(folder) if version == 2 else _v1_quota(folder)
        except ValueError:
            log.debug("could not read the CPU quota in %s", folder, exc_info=True)
            continue
        if quota is not None:
            quotas.append(quota)
    return min(quotas, default=None)


def _v2_quota(folder: Path) -> float | None:
    text = read_limit_file(folder / "cpu.max")
    if not text:
        return None
    quota, period = text.split()[:2]
    return None if quota == "max" else int(quota) / int(period)


def _v1_quota(folder: Path) -> float | None:
    quota, period = (read_limit_file(folder / name) for name in ("cpu.cfs_quota_us",
                                                                 "cpu.cfs_period_us"))
    if not quota or not period or int(quota) <= 0:
        return None
    return int(quota) / int(period)
