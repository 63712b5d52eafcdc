"""Split a hashed lock for a torch wheel taken from one of PyTorch's own indexes.

PyPI's torch is a CUDA build, and the lock pins it with PyPI's hashes. Where torch comes
from PyTorch's CPU (or a CUDA) index instead, the wheel is ``torch==X+cpu``: a different
file, so the lock's hashes cannot match it. This writes, into OUT_DIR:

- ``torch.txt``: torch and torchvision at the lock's versions plus the variant's local
  label (``torch==2.14.1+cpu``), for ``pip install --no-deps --index-url <PyTorch index>``;
- ``rest.lock``: every other entry of the lock, hashes kept, for
  ``pip install --no-deps --require-hashes``. For ``cpu`` it also leaves out the CUDA
  build's own libraries (nvidia-*, cuda-*, triton), which the CPU wheel does not use;
  ``pip check`` afterwards proves nothing the CPU wheel needs was left out.

Standard library only: the image runs it before anything is installed.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

TORCH_PACKAGES = ("torch", "torchvision")
# Dependencies only PyPI's CUDA build of torch has (the CPU wheel's are sympy, networkx,
# jinja2, fsspec, filelock, typing-extensions).
CUDA_ONLY = re.compile(r"^(nvidia-.+|cuda-.+|triton)$")
ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def entries(lock_text: str) -> list[tuple[str, str, list[str]]]:
    """(normalized name, version, the entry's lines) for each pinned entry of the lock."""
    found: list[tuple[str, str, list[str]]] = []
    for line in lock_text.splitlines():
        match = ENTRY.match(line)
        if match:
            name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
            found.append((name, match.group(2), [line]))
        elif found and line.startswith((" ", "\t")):
            found[-1][2].append(line)
    return found


def split(lock_text: str, variant: str) -> tuple[str, str]:
    """(torch.txt, rest.lock) for torch from the ``variant`` index (``cpu``, ``cu130``)."""
    if not re.fullmatch(r"cpu|cu\d+", variant):
        raise ValueError(f"torch variant {variant!r}: expected cpu or cuNNN (e.g. cu130)")
    pinned = entries(lock_text)
    torch_pins = [f"{name}=={version}+{variant}" for name, version, _ in pinned
                  if name in TORCH_PACKAGES]
    if len(torch_pins) != len(TORCH_PACKAGES):
        raise ValueError(f"the lock pins {torch_pins or 'none'} of {TORCH_PACKAGES}: "
                         "relock (make lock)")
    rest = [lines for name, _, lines in pinned if name not in TORCH_PACKAGES
            and not (variant == "cpu" and CUDA_ONLY.match(name))]
    return ("\n".join(torch_pins) + "\n",
            "".join("\n".join(lines) + "\n" for lines in rest))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lock", type=Path, help="a hashed lock (requirements*.lock)")
    parser.add_argument("variant", help="cpu or cuNNN: the PyTorch index torch comes from")
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    try:
        torch_txt, rest = split(args.lock.read_text(), args.variant)
    except (OSError, ValueError) as e:
        sys.exit(f"torch_split: {e}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "torch.txt").write_text(torch_txt)
    (args.out_dir / "rest.lock").write_text(rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
