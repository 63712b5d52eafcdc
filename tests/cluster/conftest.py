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
def storage(operator) -> ControlPlane:
    """The operator's control plane with a default StorageClass (no provisioner: the tests
    make a PersistentVolume per claim, tests/cluster/stack_apply.py)."""
    from tests.cluster.stack_apply import default_storage_class

    operator.apply([default_storage_class()])
    return operator
