"""The cluster tier's fixtures: one real control plane per session (tests/cluster).

    def test_x(control_plane):      # a ControlPlane with kwok's nodes (controlplane.py)
    def test_y(operator):           # the same, plus the Training Operator running
"""

from __future__ import annotations

import pytest

from tests.cluster.controlplane import ControlPlane
from tests.cluster.nodes import add_nodes


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/cluster/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory) -> ControlPlane:
    with ControlPlane.started(tmp_path_factory.mktemp("controlplane")) as cp:
        add_nodes(cp)
        yield cp


@pytest.fixture(scope="session")
def operator(control_plane, tmp_path_factory) -> ControlPlane:
    """The control plane with the Training Operator installed as the stack installs it,
    reading the init-container template the stack mounts for it."""
    from infra.operators.training_operator import NO_INIT_CONTAINERS
    from tests.cluster.operator import install

    install(control_plane, NO_INIT_CONTAINERS, tmp_path_factory.mktemp("operator"))
    return control_plane


@pytest.fixture(scope="session")
def queue_plane(tmp_path_factory) -> ControlPlane:
    """A control plane of its own with Kueue (its webhooks on every job of the kinds it
    manages stay out of the other tests'), the Training Operator, Trainer v2 with its
    status server (`.trainer_status`; the service account issuer is then this server's
    URL) and a default StorageClass."""
    from infra.operators.training_operator import NO_INIT_CONTAINERS
    from tests.cluster import kueue
    from tests.cluster.operator import install
    from tests.cluster.stack_apply import default_storage_class
    from tests.cluster.trainjob_kit import installed

    if not kueue.built():
        pytest.skip("Kueue is not built (make controlplane) or no mount namespace may be made")
    workdir = tmp_path_factory.mktemp("queue-plane")
    for part in ("controlplane", "operator", "trainer-v2", "kueue"):
        (workdir / part).mkdir()
    with ControlPlane.started(workdir / "controlplane", discoverable_issuer=True) as cp:
        add_nodes(cp)
        install(cp, NO_INIT_CONTAINERS, workdir / "operator")
        cp.apply([default_storage_class()])
        installed(cp, workdir / "trainer-v2", status=True)
        kueue.install(cp, workdir / "kueue")
        yield cp


@pytest.fixture(scope="session")
def storage(operator) -> ControlPlane:
    """The operator's control plane with a default StorageClass (no provisioner: the tests
    make a PersistentVolume per claim, tests/cluster/stack_apply.py)."""
    from tests.cluster.stack_apply import default_storage_class

    operator.apply([default_storage_class()])
    return operator
