"""trainstack: read the stack config once, wire the components, export what users need.

`pulumi up` runs the project root's __main__.py (Pulumi.yaml has no `main`, so Pulumi
installs requirements.txt from the root, which installs this project editable), and that
runs this module.
"""

import pulumi

from infra.config.cluster import cluster_access
from infra.config.keys import load
from infra.preflight.crds import check_crds
from infra.preflight.queue import check_queue
from infra.preflight.storage import check_storage
from infra.stack import build_stack

settings, secrets = load()
# A volume that can never bind would make `up` wait in silence until the provider's timeout;
# a kind the cluster does not know would fail half-way, after the workloads exist.
access = cluster_access()
check_storage(settings, access)
check_crds(settings, access)
check_queue(settings, access)
for key, value in build_stack(settings, secrets, access).items():
    pulumi.export(key, value)
