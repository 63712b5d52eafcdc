"""Quantities in the form the API server writes back (infra/config/quantities.py): a TrainJob
re-applied with another spelling of the same quantity is refused as a change of its
immutable spec.trainer (seen on the real Trainer v2 webhook: `6144Mi` stored as `6Gi`)."""

import pytest

from infra.config.quantities import canonical
from tests.infra.infra_helpers import pytorchjob
from tests.infra.render import render


@pytest.mark.parametrize(("given", "server"), [
    ("6144Mi", "6Gi"), ("2Gi", "2Gi"), ("1536Mi", "1536Mi"), ("0.5Gi", "512Mi"),
    ("1.5", "1500m"), ("1000m", "1"), ("500m", "500m"), ("2000", "2k"), ("3000M", "3G"),
    ("512", "512"), ("0", "0"), ("1e3", "1k"),
])
def test_canonical_is_what_the_server_writes_back(given, server):
    assert canonical(given) == server


def test_rendered_pod_quantities_are_canonical():
    job = pytorchjob(render({"pushImage": "false", "cpuPerWorker": "1.5",
                             "memoryPerWorker": "3072Mi", "dataCacheSize": "4Gi"}))
    for replica in job["spec"]["pytorchReplicaSpecs"].values():
        (container,) = replica["template"]["spec"]["containers"]
        for amounts in container["resources"].values():
            assert amounts["cpu"] == "1500m" and amounts["memory"] == "3Gi"
            assert amounts["ephemeral-storage"] == "6Gi"  # /tmp 2Gi + the data cache 4Gi
