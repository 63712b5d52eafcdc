"""Fixtures: a store (local and S3) holding the colour model, and the app serving it."""

from __future__ import annotations

import pytest

from tests.inference.inference_helpers import V1, serve_app, wait_for_version
from tests.inference.modelkit import publish_version


@pytest.fixture
def published_store(any_store):
    """Local or S3 store (both, via any_store) holding version V1 of the colour model."""
    publish_version(any_store, V1)
    return any_store


@pytest.fixture
def app_v1(published_store, tmp_path):
    with serve_app(published_store.url, tmp_path / "cache") as (base, app):
        wait_for_version(base, V1)
        yield base, app
