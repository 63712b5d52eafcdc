"""trainstack: read the stack config once, wire the components, export what users need.

Pulumi runs this file with infra/ first on the import path; the components come from the
installed `infra` package (`pip install -e .`, done by requirements.txt), and no module
in infra/ is named like a package it could shadow.
"""

import pulumi

from infra.config import load
from infra.stack import build_stack

settings, minio_password = load()
for key, value in build_stack(settings, minio_password).items():
    pulumi.export(key, value)
