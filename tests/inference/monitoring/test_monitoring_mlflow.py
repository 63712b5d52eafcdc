"""With MLFLOW_TRACKING_URI the app also logs each drift report as an artifact of the served
version's MLflow run (a real `mlflow server`, artifacts through it into moto)."""

from __future__ import annotations

import json

from mlflow import MlflowClient

from tests.inference.inference_helpers import V1, serve_app, wait_for_version, wait_until
from tests.inference.modelkit import MODEL_NAME, colour_images, publish_version, write_progress
from tests.inference.monitoring.test_monitoring_app import send

WINDOW = 32


def test_each_report_becomes_an_artifact_of_the_versions_run(s3_store, mlflow_env, tmp_path):
    client = MlflowClient(mlflow_env["MLFLOW_TRACKING_URI"])
    experiment = client.create_experiment(mlflow_env["MLFLOW_EXPERIMENT_NAME"])
    run = client.create_run(experiment).info.run_id
    (tmp_path / "download").mkdir()
    publish_version(s3_store, V1, reference=True, run_id="c0ffee42")
    write_progress(s3_store, "c0ffee42", epoch=4, epochs=4, state="published", version=V1,
                   mlflow=(experiment, run))
    with serve_app(s3_store.url, tmp_path / "cache", monitor_window=WINDOW) as (base, app):
        wait_for_version(base, V1)
        send(base, colour_images(WINDOW, seed=71, brightness=0.4)[0])
        assert app.state.monitor.recorder.flush()
        assert [r.drift for r in app.state.monitor.reports(MODEL_NAME, V1)] == [True]

        def logged():
            return [a.path for a in client.list_artifacts(run, "monitoring")]
        paths = wait_until(logged, "the report in the run's artifacts", deadline_s=60)
    assert len(paths) == 1 and paths[0].endswith(".json")
    local = client.download_artifacts(run, paths[0], str(tmp_path / "download"))
    with open(local) as f:
        report = json.load(f)
    assert report["drift"] is True and report["version"] == V1
