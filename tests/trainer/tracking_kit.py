"""Helpers of the tracking tests: the loop's call points driven by hand, a published version
written with the trainer's own publication code, and what the MLflow server holds."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from trainer.contract.config import RunIdentity, TrainConfig
from trainer.contract.layout import (
    METRICS_FILE,
    MODEL_FILE,
    VERSION_TIME_FORMAT,
    ModelKeys,
    version_name,
)
from trainer.contract.reporting.mlflow_layout import METRIC_KEYS
from trainer.contract.schema import EpochRecord, MetricsSummary, VersionMeta, VersionMetrics
from trainer.publish.publication import created_at, write_version
from trainer.state.checkpoint import TrainingState

CLASSES = ["0", "1"]
FIGURES = ("curves.png", "confusion_matrix.png")


def a_run(**overrides) -> RunIdentity:
    """A digits run of its own run_id (``seed`` random unless given)."""
    values = {"dataset": "digits", "model": "smallcnn", "epochs": 4, "batch_size": 16,
              "lr": 0.05, "seed": uuid.uuid4().int % 10**6}
    cfg = TrainConfig.from_dict({**values, **overrides})
    return RunIdentity(cfg, data_fingerprint="test-data", model_revision=f"{cfg.model}@test")


def record(epoch: int) -> EpochRecord:
    return EpochRecord(epoch=epoch, train_loss=1.0 / epoch, train_acc=0.5 + epoch / 100,
                       test_loss=1.5 / epoch, test_acc=0.4 + epoch / 100, img_per_s=900.0 + epoch,
                       seconds=2.0 + epoch)


def fresh_state(run: RunIdentity) -> TrainingState:
    return TrainingState.fresh(run)


def train_epochs(reporter, state: TrainingState, epochs, world_size: int = 2) -> None:
    """What the loop does per epoch on rank 0 (after the checkpoint): record, report."""
    for epoch in epochs:
        state.record_epoch(record(epoch), [[1, 0], [0, 1]], world_size)
        reporter.epoch_ended(state)


def publish_fake_version(store, run: RunIdentity, history: list[EpochRecord]) -> str:
    """A complete version (fake model bytes) through trainer.publish.publication.write_version."""
    cfg = run.config
    version = version_name(datetime.now(UTC).strftime(VERSION_TIME_FORMAT), run.run_id)
    metrics = VersionMetrics(epochs=history, confusion_matrix=[[1, 0], [0, 1]],
                             classes=CLASSES, world_size=2)
    files = {MODEL_FILE: b"program " + version.encode(), METRICS_FILE: metrics.to_json(),
             **{name: b"\x89PNG fake " + name.encode() for name in FIGURES}}
    meta = VersionMeta(model=cfg.model, dataset=cfg.dataset, version=version,
                       run_id=run.run_id, classes=CLASSES, input_size=[1, 8, 8], mean=[0.5],
                       std=[0.25], train_config=cfg.to_dict(),
                       metrics=MetricsSummary.of(history), created_at=created_at(version),
                       files=list(files))
    write_version(store, meta, files)
    return version


def latest_json_version(store, model_name: str) -> str:
    return json.loads(store.get_bytes(ModelKeys(model_name).latest))["version"]


def client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def steps_logged(mlflow_client, run_id: str) -> dict[str, list[int]]:
    """Every metric's logged steps, in order, duplicates kept."""
    return {key: sorted(m.step for m in mlflow_client.get_metric_history(run_id, key))
            for key in METRIC_KEYS}


def runs_of(mlflow_client, experiment_name: str, run_id: str) -> list:
    experiment = mlflow_client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    return list(mlflow_client.search_runs([experiment.experiment_id],
                                          f"tags.`trainstack.run_id` = '{run_id}'"))

