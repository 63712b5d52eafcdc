"""Whether a run lease's holder is known to have exited, judged only where this process
can see it.

A holder's record names its process as ``<boot id>/<pid namespace>/<pid>/<start time>``
(Linux's ``/proc``). A successor in the same boot of the same machine and the same pid
namespace sees that pid: when no process has it any more, or one that started at another
time (the pid was reused), the holder has exited. Anywhere else (another machine, another
container, a restarted container with a pid namespace of its own, not Linux) nothing is
known, and the successor waits for the lease to expire: a pod's name, a hostname or a pid
alone are shared by processes that are alive at once (a job replaced under the same name,
one job name in two namespaces, two containers with one hostname).

A pid namespace's number may be reused once the namespace is gone; then so are all of its
processes, and the rule above still only ever finds exited holders gone.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

PROC = Path("/proc")
# Fields of /proc/<pid>/stat after the command's closing parenthesis: the state is the
# first (field 3 of proc(5)), the start time in clock ticks after boot the 20th (field 22).
STATE_FIELD, START_FIELD = 0, 19
EXITED_STATES = ("Z", "X")  # a zombie has exited: it only waits for its parent to reap it


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _started(pid: int) -> str | None:
    """Process ``pid``'s start time, None when it does not exist or has exited."""
    stat = _read(PROC / str(pid) / "stat")
    if stat is None:
        return None
    fields = stat.rpartition(")")[2].split()
    if len(fields) <= START_FIELD or fields[STATE_FIELD] in EXITED_STATES:
        return None
    return fields[START_FIELD]


def _namespace() -> str | None:
    """``<boot id>/<pid namespace>`` of this process, None where /proc does not tell."""
    boot = _read(PROC / "sys" / "kernel" / "random" / "boot_id")
    try:
        namespace = os.readlink(PROC / "self" / "ns" / "pid")
    except OSError:
        return None
    if not boot or "/" in boot.strip() or "/" in namespace:
        return None
    return f"{boot.strip()}/{namespace}"


def process_identity() -> str:
    """This process as a lease record names it; "" where it cannot be told (not Linux)."""
    namespace, started = _namespace(), _started(os.getpid())
    if namespace is None or started is None:
        return ""
    return f"{namespace}/{os.getpid()}/{started}"


def known_gone(identity: str) -> bool:
    """Whether the process ``identity`` names has exited, as far as this process can see:
    False unless it ran in this very pid namespace (an empty or foreign identity)."""
    boot, _, rest = identity.partition("/")
    namespace, _, rest = rest.partition("/")
    pid, _, started = rest.partition("/")
    if not pid.isdigit() or not started or _namespace() != f"{boot}/{namespace}":
        return False
    return _started(int(pid)) != started
