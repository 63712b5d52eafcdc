"""The memory limit and CPU quota of the process's own cgroup (issue 28 item 26): found from
/proc/self/cgroup and /proc/self/mountinfo (v1 and v2), the tightest on the path from the
process's cgroup up to its hierarchy's root; fake trees shaped like /sys/fs/cgroup, and a
real cgroup where this machine lets a test make one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.trainer.trainer_procs import REPO_ROOT
from trainer.limits.cgroup import CgroupView
from trainer.limits.cpus import cgroup_cpu_quota, usable_cpus
from trainer.limits.memlimit import MEMORY_LIMIT_ENV, cgroup_memory_limit, memory_limit_bytes

MIB = 1024 * 1024
V1_UNLIMITED = "9223372036854771712\n"

# What a process in a nested cgroup of a hybrid (v1 controllers + v2 unified) host reads.
V1_PROC = ("12:memory:/batch/job7/step0\n"
           "4:cpu,cpuacct:/batch/job7/step0\n"
           "1:name=systemd:/batch/job7\n"
           "0::/batch/job7\n")
V1_MOUNTS = (
    "31 23 0:28 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n"
    "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd\n"
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
    "50 23 0:50 / /proc rw - proc proc rw\n")
V2_MOUNTS = "29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def v1_tree(root: Path, limits: dict[str, str], quotas: dict[str, str]) -> CgroupView:
    """A hybrid host's tree under ``root``: memory limits and CPU quotas per cgroup path."""
    for path, limit in limits.items():
        write(root / "sys/fs/cgroup/memory" / path / "memory.limit_in_bytes", limit)
    for path, quota in quotas.items():
        write(root / "sys/fs/cgroup/cpu,cpuacct" / path / "cpu.cfs_quota_us", quota)
        write(root / "sys/fs/cgroup/cpu,cpuacct" / path / "cpu.cfs_period_us", "100000\n")
    return CgroupView.parse(V1_PROC, V1_MOUNTS, fs_root=root)


def test_v1_the_tightest_limit_on_the_path_from_the_process_cgroup_up_counts(tmp_path):
    view = v1_tree(tmp_path, {".": V1_UNLIMITED, "batch": V1_UNLIMITED,
                              "batch/job7": f"{512 * MIB}\n",
                              "batch/job7/step0": f"{2048 * MIB}\n"},
                   {".": "-1\n", "batch": "-1\n", "batch/job7": "-1\n",
                    "batch/job7/step0": "150000\n"})
    assert cgroup_memory_limit(view) == 512 * MIB  # the job's, tighter than its step's
    assert cgroup_cpu_quota(view) == 1.5


def test_v1_a_limit_only_on_the_process_own_cgroup_is_seen(tmp_path):
    """The defect: the root says unlimited; the limit is the process's own cgroup's."""
    view = v1_tree(tmp_path, {".": V1_UNLIMITED, "batch/job7/step0": f"{300 * MIB}\n"},
                   {".": "-1\n", "batch/job7/step0": "50000\n"})
    assert cgroup_memory_limit(view) == 300 * MIB
    assert cgroup_cpu_quota(view) == 0.5


def test_v2_nested_limits_and_the_root_without_files(tmp_path):
    cgroup = tmp_path / "sys/fs/cgroup"
    write(cgroup / "cgroup.controllers", "cpu memory\n")  # the root: no memory.max, no cpu.max
    write(cgroup / "user.slice/memory.max", "max\n")
    write(cgroup / "user.slice/cpu.max", "max 100000\n")
    write(cgroup / "user.slice/run-u7.scope/memory.max", f"{400 * MIB}\n")
    write(cgroup / "user.slice/run-u7.scope/cpu.max", "250000 100000\n")
    write(cgroup / "user.slice/run-u7.scope/trainer/memory.max", "max\n")
    write(cgroup / "user.slice/run-u7.scope/trainer/cpu.max", "max 100000\n")
    view = CgroupView.parse("0::/user.slice/run-u7.scope/trainer\n", V2_MOUNTS, fs_root=tmp_path)
    assert cgroup_memory_limit(view) == 400 * MIB
    assert cgroup_cpu_quota(view) == 2.5


def test_v2_in_a_cgroup_namespace_the_container_cgroup_is_the_mount_root(tmp_path):
    """A pod: cgroupns makes its own cgroup "/" and the mount's root; its limits are there."""
    write(tmp_path / "sys/fs/cgroup/memory.max", f"{1024 * MIB}\n")
    write(tmp_path / "sys/fs/cgroup/cpu.max", "200000 100000\n")
    view = CgroupView.parse("0::/\n", V2_MOUNTS, fs_root=tmp_path)
    assert cgroup_memory_limit(view) == 1024 * MIB and cgroup_cpu_quota(view) == 2.0


def test_a_mount_of_a_subtree_maps_the_process_path_below_its_root(tmp_path):
    """A container without cgroupns (older Docker on v1): its memory hierarchy is mounted
    from /docker/<id>, and /proc/self/cgroup names the full path."""
    mounts = "35 31 0:32 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n"
    write(tmp_path / "sys/fs/cgroup/memory/memory.limit_in_bytes", f"{700 * MIB}\n")
    write(tmp_path / "sys/fs/cgroup/memory/inner/memory.limit_in_bytes", f"{600 * MIB}\n")
    view = CgroupView.parse("5:memory:/docker/abc/inner\n", mounts, fs_root=tmp_path)
    assert cgroup_memory_limit(view) == 600 * MIB
    outside = CgroupView.parse("5:memory:/elsewhere\n", mounts, fs_root=tmp_path)
    assert cgroup_memory_limit(outside) == 700 * MIB  # only the mount's root is visible


def test_without_mountinfo_the_usual_mount_points_are_read(tmp_path):
    write(tmp_path / "sys/fs/cgroup/memory/batch/memory.limit_in_bytes", f"{200 * MIB}\n")
    view = CgroupView.parse("4:memory:/batch\n0::/\n", "", fs_root=tmp_path)
    assert cgroup_memory_limit(view) == 200 * MIB


def test_no_limit_anywhere_is_none_and_the_machine_memory_counts(tmp_path):
    view = v1_tree(tmp_path, {".": V1_UNLIMITED}, {".": "-1\n"})
    assert cgroup_memory_limit(view) is None and cgroup_cpu_quota(view) is None
    assert memory_limit_bytes(view) == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def test_a_folder_laid_out_like_a_container_is_still_accepted(tmp_path):
    """The older call: a path read as the process's cgroup at each hierarchy's root."""
    write(tmp_path / "memory/memory.limit_in_bytes", f"{100 * MIB}\n")
    write(tmp_path / "cpu.max", "300000 100000\n")
    assert memory_limit_bytes(tmp_path) == 100 * MIB and cgroup_cpu_quota(tmp_path) == 3.0


# A real cgroup: made under the test's own, the child moves itself in and reads its limits.
PROBE = """
import json, os, sys
for procs in sys.argv[1:]:
    with open(procs, "w") as f:
        f.write(str(os.getpid()))
from trainer.limits.cpus import cgroup_cpu_quota
from trainer.limits.memlimit import memory_limit_bytes
print(json.dumps({"memory": memory_limit_bytes(), "cpu": cgroup_cpu_quota()}))
"""


def _own_v1_cgroup(controller: str) -> Path | None:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            folder = Path("/sys/fs/cgroup") / controllers / path.lstrip("/")
            return folder if folder.is_dir() else None
    return None


@pytest.fixture
def real_v1_cgroups():
    """Child cgroups of this process's own v1 memory and cpu cgroups (skipped where they
    cannot be made: no v1 controllers, or no permission)."""
    made = []
    name = f"trainstack-test-{uuid.uuid4().hex[:8]}"
    try:
        for controller in ("memory", "cpu"):
            parent = _own_v1_cgroup(controller)
            if parent is None:
                pytest.skip(f"no cgroup v1 {controller} controller here: {Path('/proc/self/cgroup').read_text()!r}")
            try:
                (parent / name).mkdir()
            except OSError as e:
                pytest.skip(f"cannot make a cgroup under {parent}: {e}")
            made.append(parent / name)
        yield made
    finally:
        for folder in reversed(made):
            folder.rmdir()


def test_a_process_in_a_real_cgroup_of_its_own_sees_its_limits(real_v1_cgroups):
    memory, cpu = real_v1_cgroups
    (memory / "memory.limit_in_bytes").write_text(str(256 * MIB))
    (cpu / "cpu.cfs_period_us").write_text("100000")
    (cpu / "cpu.cfs_quota_us").write_text("50000")
    env = {k: v for k, v in os.environ.items() if k != MEMORY_LIMIT_ENV}
    result = subprocess.run([sys.executable, "-c", PROBE, str(memory / "cgroup.procs"),
                             str(cpu / "cgroup.procs")], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout) == {"memory": 256 * MIB, "cpu": 0.5}


def test_usable_cpus_follows_the_quota_of_the_process_cgroup(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    view = v1_tree(tmp_path, {".": V1_UNLIMITED}, {".": "-1\n", "batch/job7/step0": "300000\n"})
    assert usable_cpus(view) == 3
