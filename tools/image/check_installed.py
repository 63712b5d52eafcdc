"""Compare what an image installed (`pip list --format=json` run inside it) with its lock.

Every lock entry whose environment marker holds for Python 3.11 on Linux must be installed
at the lock's version, except the CUDA build's own libraries where torch is PyTorch's CPU
wheel (``+cpu``): that image must carry none of them. Anything else installed must come with
the base image (pip and Debian's own packages of the stand-in), listed so a reader sees it.
Prints one line per finding; exit status 1 on a mismatch.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

from tools.lock.torch_split import CUDA_ONLY, entries

log = logging.getLogger("image-smoke")
# The image's interpreter and platform (the stand-in's and python:3.11-slim's).
IMAGE_ENVIRONMENT = {"python_version": "3.11", "python_full_version": "3.11.2",
                     "sys_platform": "linux", "platform_system": "Linux",
                     "platform_machine": "x86_64", "implementation_name": "cpython"}
# Installed by the base image, not by the lock: the pip that runs the install, and the
# Python packages Debian's python3-pip depends on (the stand-in only).
BASE_IMAGE_PACKAGES = {"pip", "setuptools", "wheel"}


def locked_for_image(lock_text: str) -> dict[str, str]:
    """{name: version} of the lock entries that apply to the image's environment."""
    wanted: dict[str, str] = {}
    for name, version, lines in entries(lock_text):
        marker = lines[0].split(";", 1)[1].rstrip(" \\") if ";" in lines[0] else None
        if marker is None or Marker(marker).evaluate(IMAGE_ENVIRONMENT):
            wanted[name] = version
    return wanted


def compare(wanted: dict[str, str], installed: dict[str, str]) -> list[str]:
    """Problems: a locked distribution missing or at another version; CUDA libraries
    next to PyTorch's CPU wheel."""
    cpu_torch = installed.get("torch", "").endswith("+cpu")
    problems = []
    for name, version in sorted(wanted.items()):
        if cpu_torch and CUDA_ONLY.match(name):
            if name in installed:
                problems.append(f"{name} {installed[name]}: a CUDA library next to the CPU torch")
            continue
        have = installed.get(name)
        if have is None:
            problems.append(f"{name}=={version} from the lock is not installed")
        elif have.split("+")[0] != version:
            problems.append(f"{name} {have} installed, the lock says {version}")
    return problems


def cuda_size(root: Path) -> str:
    """How much of the image the CUDA libraries take (site-packages' nvidia/ and triton/)."""
    dirs = [str(p) for pattern in ("nvidia", "triton", "cuda*")
            for p in root.glob(f"usr/local/lib/python3.11/*-packages/{pattern}")]
    if not dirs:
        return "0"
    out = subprocess.run(["du", "-sc", "--block-size=1", *dirs], check=True,
                         capture_output=True, text=True).stdout
    return f"{int(out.splitlines()[-1].split()[0]) / 1e9:.2f} GB"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="image-smoke: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lock", type=Path)
    parser.add_argument("pip_list", type=Path, help="`pip list --format=json` from the image")
    parser.add_argument("root", type=Path, help="the image's root filesystem (mounted)")
    args = parser.parse_args(argv)
    wanted = locked_for_image(args.lock.read_text())
    installed = {canonicalize_name(d["name"]): d["version"]
                 for d in json.loads(args.pip_list.read_text())}
    problems = compare(wanted, installed)
    for problem in problems:
        log.error("%s", problem)
    extra = sorted(set(installed) - set(wanted))
    unexpected = [name for name in extra if name not in BASE_IMAGE_PACKAGES]
    for name in unexpected:
        log.error("%s %s is installed but not in the lock", name, installed[name])
    from_lock = len(set(installed) & set(wanted))
    log.info("%d distributions installed, all at the lock's versions and hashes%s; "
             "from the base image: %s", from_lock, "" if not problems else " (NOT)",
             ", ".join(f"{n} {installed[n]}" for n in extra) or "none")
    torch = installed.get("torch", "?")
    cuda = [n for n in installed if CUDA_ONLY.match(n)]
    log.info("torch %s: %d CUDA distributions (%s)%s", torch, len(cuda), cuda_size(args.root),
             "" if torch.endswith("+cpu") else
             " - PyPI's torch is the CUDA build; PyTorch's CPU wheel carries none")
    return 1 if problems or unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
