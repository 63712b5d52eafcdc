"""Where tools/controlplane/build.sh put each component (tools/controlplane/components.txt).

    bin_path("kube", "kube-apiserver")    -> ~/.cache/trainstack/controlplane/kube-v1.34.2/bin/...
    component_root("training-operator")   -> the folder with its bin/ and manifests/
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPONENTS_FILE = REPO_ROOT / "tools" / "controlplane" / "components.txt"


def cache_root() -> Path:
    base = os.environ.get("TRAINSTACK_CACHE") or Path.home() / ".cache" / "trainstack"
    return Path(base) / "controlplane"


def versions() -> dict[str, str]:
    """Component name -> pinned version, as components.txt lists them."""
    found: dict[str, str] = {}
    for line in COMPONENTS_FILE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, version = line.split()[:2]
            found[name] = version
    return found


def component_root(name: str) -> Path:
    return cache_root() / f"{name}-{versions()[name]}"


class ComponentMissing(RuntimeError):
    pass


def bin_path(component: str, binary: str | None = None) -> Path:
    path = component_root(component) / "bin" / (binary or component)
    if not path.is_file():
        raise ComponentMissing(f"{path} is missing: run `make controlplane` "
                               "(tools/controlplane/build.sh) first")
    return path
