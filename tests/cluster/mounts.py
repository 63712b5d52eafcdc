"""Files at fixed absolute paths, seen by one local process only (a mount namespace).

Some controllers read files a pod would get from its volumes at paths they do not let us
choose: Kueue its metrics serving pair (/etc/kueue/metrics/certs, without its internal
certificate management), Trainer v2's status server the cluster's service account issuer
(/var/run/secrets/kubernetes.io/serviceaccount/token). Run here, such a process gets a
private mount namespace (`unshare --mount`) in which each top folder of those paths is
overlaid by a writable layer on a tmpfs, and the files are copied there: nothing on this
machine's own /etc or /run changes, and nothing is left behind when the process ends.
Needs the rights to make a mount namespace (root, or CAP_SYS_ADMIN): `available()`.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path


def available() -> bool:
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                          capture_output=True, check=False)
    return done.returncode == 0


def with_files(argv: list[str], files: dict[str, bytes], staging: Path) -> list[str]:
    """`argv` run where each of `files` (absolute path -> content) exists, privately."""
    staging.mkdir(parents=True, exist_ok=True)
    layers = staging / "layers"  # the tmpfs: the overlays' upper and work folders
    layers.mkdir(exist_ok=True)
    script = [f"mount -t tmpfs trainstack-private {shlex.quote(str(layers))}"]
    # /var/run/... is /run/...: overlay the folder the path resolves into.
    tops = sorted({"/" + Path(path).resolve().parts[1] for path in files})
    for index, real in enumerate(tops):
        upper, work = layers / f"upper{index}", layers / f"work{index}"
        options = f"lowerdir={real},upperdir={upper},workdir={work}"
        script += [f"mkdir -p {upper} {work}", f"mount -t overlay overlay -o {options} {real}"]
    for index, (path, content) in enumerate(sorted(files.items())):
        source = staging / f"file{index}"
        source.write_bytes(content)
        source.chmod(0o600)
        script += [f"mkdir -p {shlex.quote(str(Path(path).parent))}",
                   f"cp {shlex.quote(str(source))} {shlex.quote(path)}"]
    script.append('exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "sh", "-ec", " && ".join(script),
            "private-files", *(str(a) for a in argv)]
