"""trainstack: read the stack config once, wire the components, export what users need."""

import sys
from pathlib import Path

# Pulumi runs this file with infra/ first on sys.path; import the components as the
# `infra` package from the project root instead, so no module here shadows another.
_ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _ROOT / "infra"]
sys.path.insert(0, str(_ROOT))

import pulumi

from infra.config import load
from infra.stack import build_stack

settings, minio_password = load()
for key, value in build_stack(settings, minio_password).items():
    pulumi.export(key, value)
