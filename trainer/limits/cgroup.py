"""This process's own cgroup: the folders whose limits apply to it, in every hierarchy.

A limit is set on the cgroup a process runs in, or on any cgroup above it: a pod's on the
container's cgroup (which cgroupns shows as the hierarchy's root), a ``systemd-run -p
MemoryMax=`` or batch scheduler's on a cgroup nested deep below the root, whose own files
say "no limit". So the limits are read on the whole path from the process's cgroup
(``/proc/self/cgroup``) up to the root of the hierarchy as it is mounted here
(``/proc/self/mountinfo``), in the unified v2 hierarchy and in the v1 hierarchy of the
controller, and the tightest counts. Stdlib only.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
PROC_SELF_MOUNTINFO = Path("/proc/self/mountinfo")
UNIFIED = ""  # the v2 hierarchy's "controller" in /proc/self/cgroup ("0::/path")
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class _Mount:
    root: PurePosixPath  # the cgroup the mount shows at its top
    point: Path


@dataclass(frozen=True)
class CgroupView:
    """For each hierarchy this process is in: its cgroup's folder and every folder above it
    up to the mount's top (the ones that exist), the process's own first."""

    v2: tuple[Path, ...] = ()
    v1: dict[str, tuple[Path, ...]] = field(default_factory=dict)

    def folders(self, controller: str) -> list[tuple[int, Path]]:
        """``(version, folder)`` whose limit files for ``controller`` apply to this process."""
        return [(2, f) for f in self.v2] + [(1, f) for f in self.v1.get(controller, ())]

    @classmethod
    def of(cls, cgroup_root: CgroupView | Path | None) -> CgroupView:
        """What the limit readers take: None for this process's own cgroups; a Path for a
        folder laid out like a container's /sys/fs/cgroup (:meth:`flat`)."""
        if cgroup_root is None:
            return cls.of_this_process()
        return cgroup_root if isinstance(cgroup_root, CgroupView) else cls.flat(cgroup_root)

    @classmethod
    def of_this_process(cls) -> CgroupView:
        try:
            membership = PROC_SELF_CGROUP.read_text()
        except OSError:  # not Linux, or no /proc: the flat layout, as a container shows it
            return cls.flat(CGROUP_ROOT)
        try:
            mounts = PROC_SELF_MOUNTINFO.read_text()
        except OSError:
            mounts = ""
        return cls.parse(membership, mounts)

    @classmethod
    def flat(cls, root: Path) -> CgroupView:
        """A folder laid out like a container's /sys/fs/cgroup, the process's cgroup at the
        top of each hierarchy (v2 files in it, v1 ones in ``<root>/<controller>``)."""
        return cls((root,), {c: (root / c,) for c in ("memory", "cpu")})

    @classmethod
    def parse(cls, membership: str, mountinfo: str, fs_root: Path = Path("/")) -> CgroupView:
        """From the text of /proc/self/cgroup and /proc/self/mountinfo; mount points are read
        under ``fs_root`` (tests give a folder shaped like the real tree)."""
        v2_mounts, v1_mounts = _cgroup_mounts(mountinfo, fs_root)
        if not v2_mounts and not v1_mounts:  # no mountinfo: the usual places
            v2_mounts = [_Mount(PurePosixPath("/"), fs_root / CGROUP_ROOT.relative_to("/"))]
        v2: tuple[Path, ...] = ()
        v1: dict[str, tuple[Path, ...]] = {}
        for line in membership.splitlines():
            parts = line.split(":", 2)
            if len(parts) != 3:
                continue
            _, controllers, path = parts
            if controllers == UNIFIED:
                v2 = _path_folders(PurePosixPath(path), v2_mounts)
                continue
            for controller in controllers.split(","):
                mounts = v1_mounts.get(controller) or [_Mount(
                    PurePosixPath("/"), fs_root / CGROUP_ROOT.relative_to("/") / controllers)]
                v1[controller] = _path_folders(PurePosixPath(path), mounts)
        return cls(v2, v1)


def _unescape(field_text: str) -> str:
    """mountinfo writes a space in a path as \\040 (and tab, newline, backslash alike)."""
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field_text)


def _cgroup_mounts(mountinfo: str, fs_root: Path) -> tuple[list[_Mount], dict[str, list[_Mount]]]:
    """The cgroup2 mounts, and the v1 mounts of each controller."""
    v2: list[_Mount] = []
    v1: dict[str, list[_Mount]] = {}
    for line in mountinfo.splitlines():
        before, sep, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        root = PurePosixPath(_unescape(fields[3]))
        point = fs_root / _unescape(fields[4]).lstrip("/")
        if tail[0] == "cgroup2":
            v2.append(_Mount(root, point))
        elif tail[0] == "cgroup":
            for option in tail[2].split(","):
                v1.setdefault(option, []).append(_Mount(root, point))
    return v2, v1


def _path_folders(path: PurePosixPath, mounts: list[_Mount]) -> tuple[Path, ...]:
    """The existing folders from ``path``'s cgroup up to the top of the mount showing it."""
    for mount in mounts:
        try:
            below = path.relative_to(mount.root)
        except ValueError:
            continue
        if ".." in below.parts:
            continue
        folders, here = [], mount.point / below
        while True:
            if here.is_dir():
                folders.append(here)
            if here == mount.point:
                return tuple(folders)
            here = here.parent
    # Not below any mount's top (another cgroup namespace): only the mounts' tops are seen.
    return tuple(m.point for m in mounts[:1] if m.point.is_dir())


def read_limit_file(path: Path) -> str | None:
    """The file's text, stripped; None when it is absent or unreadable."""
    try:
        return path.read_text().strip()
    except OSError:
        return None
