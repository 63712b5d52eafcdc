"""Issue 20 #6, MLflow side: each registered model version points at its own files, even
where two versions of one run were published into one MLflow run (two jobs of the run at
once, before run leases existed; a version deleted from the store and published again)."""

from __future__ import annotations

import time

from tests.trainer.tracking_kit import (
    a_run,
    client,
    fresh_state,
    publish_fake_version,
    train_epochs,
)
from trainer.contract.layout import MODEL_FILE, ModelKeys
from trainer.contract.reporting.mlflow_layout import VERSION_TAG
from trainer.tracking.reporting import open_reporter

IDLE_S = 180


def test_two_versions_of_one_mlflow_run_keep_their_own_files(mlflow_env, s3_store, monkeypatch):
    monkeypatch.setenv("TRAINSTACK_TRACKING_TIMEOUT_S", str(IDLE_S))
    # Uploads on a busy test machine: patient HTTP calls, or the test tests the load.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    s3_store.ensure_buckets()
    run = a_run()
    first = open_reporter(s3_store, run, is_main=True, world_size=2)
    state = fresh_state(run)
    first.started(state)
    train_epochs(first, state, [1, 2, 3, 4])
    assert first.tracker.wait_idle(IDLE_S)

    second = open_reporter(s3_store, run, is_main=True, world_size=2)
    twin = fresh_state(run)  # resumed from the same checkpoint: the same MLflow run
    twin.history, twin.epoch, twin.mlflow_run_id = list(state.history), 4, state.mlflow_run_id
    second.started(twin)
    assert second.tracker.wait_idle(IDLE_S)

    versions = []
    for reporter in (first, second):
        versions.append(publish_fake_version(s3_store, run, state.history))
        reporter.published(versions[-1])
        assert reporter.tracker.wait_idle(IDLE_S)
        time.sleep(1.1)  # version names are per second
    assert versions[0] != versions[1]

    mlflow = client(mlflow_env["MLFLOW_TRACKING_URI"])
    from mlflow.artifacts import download_artifacts

    keys = ModelKeys(run.config.model_name)
    for version in versions:
        (registered,) = mlflow.search_model_versions(
            f"name = '{run.config.model_name}' and tags.`{VERSION_TAG}` = '{version}'")
        local = download_artifacts(
            artifact_uri=f"models:/{run.config.model_name}/{registered.version}",
            tracking_uri=mlflow_env["MLFLOW_TRACKING_URI"])
        with open(f"{local}/{MODEL_FILE}", "rb") as f:
            assert f.read() == s3_store.get_bytes(keys.version_file(version, MODEL_FILE)), version
