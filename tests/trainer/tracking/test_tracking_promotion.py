"""The promotion gate and retrains in MLflow (a real server): a candidate's run says why it
is not served (both accuracies, the split), a retrain's run why it was trained (the drift
report), the alias `current` stays on what latest.json names and follows a promotion by
hand."""

from __future__ import annotations

import pytest

from tests.trainer.publish.test_promotion_gate import GOOD, NAME, WORSE
from tests.trainer.tracking_kit import client
from tests.trainer.trainer_procs import events, run_trainer, trainer_env
from trainer.contract.layout import ModelKeys
from trainer.contract.reporting.mlflow_layout import ALIAS, VERSION_TAG
from trainer.contract.reporting.progress import RunProgress
from trainer.contract.schema import VersionMeta

pytestmark = pytest.mark.slow

REPORT = f"metrics/{NAME}/monitoring/reports/v/20261207T000000000000Z-app.json"
RETRAIN = ["--retrain-id", "20261207T120000Z-abc123", "--retrain-reason", "drift",
           "--retrain-report", REPORT]


def trained(store, flags: list[str]) -> dict:
    done = run_trainer(["train", "--store", store.url, *flags], trainer_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (finished,) = events(done.stderr, "done")
    return finished


def test_a_candidate_retrain_tells_mlflow_why_and_the_alias_stays(mlflow_env, s3_store):
    s3_store.ensure_buckets()
    good = trained(s3_store, GOOD)["version"]
    worse = trained(s3_store, [*WORSE, *RETRAIN])
    keys = ModelKeys(NAME)
    meta = VersionMeta.from_json(s3_store.get_bytes(keys.meta(worse["version"])))
    assert meta.promotion.decision == "candidate" and meta.retrain.report == REPORT
    progress = RunProgress.from_json(s3_store.get_bytes(keys.progress(worse["run_id"])))
    assert progress.retrain == meta.retrain

    mlflow = client(mlflow_env["MLFLOW_TRACKING_URI"])
    (run,) = mlflow.search_runs(
        [mlflow.get_experiment_by_name(mlflow_env["MLFLOW_EXPERIMENT_NAME"]).experiment_id],
        filter_string=f"tags.`{VERSION_TAG}` = '{worse['version']}'")
    tags = run.data.tags
    assert tags["trainstack.promotion"] == "candidate"
    assert tags["trainstack.promotion.against"] == good
    assert float(tags["trainstack.promotion.current_acc"]) == meta.promotion.current_acc
    assert float(tags["trainstack.promotion.candidate_acc"]) == meta.promotion.candidate_acc
    assert tags["trainstack.promotion.split"] == meta.data_fingerprint
    assert (tags["trainstack.retrain.reason"], tags["trainstack.retrain.report"]) == (
        "drift", REPORT)

    def aliased() -> str:
        registered = mlflow.get_model_version_by_alias(NAME, ALIAS)
        return registered.tags[VERSION_TAG]

    assert aliased() == good, "the alias follows latest.json, not the candidate"
    done = run_trainer(["promote", "--store", s3_store.url, "--model", NAME, "--version",
                        worse["version"]], trainer_env())
    assert done.returncode == 0, done.stderr[-2000:]
    assert aliased() == worse["version"]
