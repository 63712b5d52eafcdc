"""Fixtures for the Pulumi program's tests: renderings under Pulumi's mocks."""

from __future__ import annotations

import pytest

from tests.infra.infra_helpers import PASSWORD, PUSHED
from tests.infra.render import Rendering, render


@pytest.fixture(scope="module")
def default_stack() -> Rendering:
    return render(PUSHED)


@pytest.fixture(scope="module")
def gpu_stack() -> Rendering:
    return render({**PUSHED, "workers": "3", "gpusPerWorker": "2", "minioRootPassword": PASSWORD})
