"""The contract layer (trainer.contract.layout, trainer.contract.schema, trainer.contract.errors): one definition each,
used by the trainer to write and by the app to read."""

from __future__ import annotations

import json

import pytest

from trainer.contract.errors import (
    BucketNotFound,
    ConfigError,
    DatasetError,
    IngestError,
    MetaError,
    ObjectNotFound,
    StoreError,
    TrainstackError,
)
from trainer.contract.layout import (
    ModelKeys,
    checkpoint_epoch,
    cifar10_key,
    is_safe_relative,
    model_name,
    name_of_latest_key,
    name_of_progress_key,
)
from trainer.contract.reporting.progress import RunProgress, mlflow_run_page
from trainer.contract.schema import EpochRecord, MetricsSummary, VersionMeta, VersionMetrics


def test_model_keys_spell_the_documented_layout():
    keys = ModelKeys(model_name("resnet18", "cifar10"))
    assert keys.name == "resnet18-cifar10"
    assert keys.latest == "models/resnet18-cifar10/latest.json"
    assert keys.checkpoint("ab12", 7) == "models/resnet18-cifar10/runs/ab12/checkpoints/epoch-0007.pt"
    assert keys.meta("v1") == "models/resnet18-cifar10/versions/v1/meta.json"
    assert keys.metrics_copy("v1") == "metrics/resnet18-cifar10/v1.json"
    assert cifar10_key() == "datasets/cifar10/cifar-10-python.tar.gz"
    assert checkpoint_epoch(keys.checkpoint("ab12", 123)) == 123
    assert checkpoint_epoch("models/x/runs/r/checkpoints/epoch-7.pt.tmp") is None
    assert name_of_latest_key(keys.latest) == "resnet18-cifar10"
    assert name_of_latest_key("models/x/versions/latest.json") is None
    assert name_of_progress_key(keys.progress("3f2a9c1b07")) == "resnet18-cifar10"
    for other in (keys.latest, keys.meta("v1"), "models/x/progress/a/b.json",
                  "models/x/progress/.json", "models//progress/r.json"):
        assert name_of_progress_key(other) is None, other
    assert keys.version_of_meta_key(keys.meta("v1")) == "v1"
    assert keys.version_of_meta_key("models/resnet18-cifar10/versions/v1/examples/meta.json") is None
    assert keys.progress("ab12") == "models/resnet18-cifar10/progress/ab12.json"
    assert keys.run_of_progress_key(keys.progress("ab12")) == "ab12"
    assert keys.run_of_progress_key("models/resnet18-cifar10/progress/ab/12.json") is None
    assert keys.run_of_progress_key("models/resnet18-cifar10/progress/ab12.json.tmp") is None
    assert keys.run_of_progress_key("models/other-x/progress/ab12.json") is None


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../b", "", "a\\..\\b"])
def test_unsafe_version_paths_are_refused(path):
    assert not is_safe_relative(path)
    with pytest.raises(ValueError):
        ModelKeys("m-d").version_file("v", path)


def test_every_user_error_is_one_base_class():
    for error in (ConfigError, StoreError, ObjectNotFound, BucketNotFound, DatasetError,
                  IngestError, MetaError):
        assert issubclass(error, TrainstackError)
    assert ConfigError("bad", key="workers").key == "workers"
    assert str(ObjectNotFound("object 'x' not found")) == "object 'x' not found"


def a_meta(**changes) -> VersionMeta:
    history = [EpochRecord(1, 1.0, 0.5, 0.9, 0.6, 100.0, 2.0),
               EpochRecord(2, 0.8, 0.6, 0.7, 0.7, 110.0, 2.5)]
    values = {"model": "smallcnn", "dataset": "digits", "version": "20261123T152400Z",
              "run_id": "r1", "classes": ["0", "1"], "input_size": [1, 8, 8], "mean": [0.5],
              "std": [0.25], "train_config": {"epochs": 2},
              "metrics": MetricsSummary.of(history), "created_at": "2026-11-23T15:24:00Z",
              "files": ["model.pt2"], "examples": []}
    return VersionMeta(**{**values, **changes})


def test_meta_written_by_the_trainer_is_read_back_identically():
    meta = a_meta()
    assert meta.metrics == MetricsSummary(test_acc=0.7, test_loss=0.7, epochs=2,
                                          train_seconds=4.5)
    assert VersionMeta.from_json(meta.to_json()) == meta
    assert meta.name == "smallcnn-digits"
    assert meta.downloads == ["model.pt2"]


def test_meta_is_validated_when_written_too():
    with pytest.raises(MetaError, match="input_size"):
        a_meta(input_size=[2, 8, 8])
    with pytest.raises(MetaError, match="files"):
        a_meta(files=["../model.pt2"])


def test_metrics_round_trip_and_checks():
    history = [EpochRecord(1, 1.0, 0.5, 0.9, 0.6, 100.0, 2.0)]
    metrics = VersionMetrics(epochs=history, confusion_matrix=[[1, 0], [0, 1]],
                             classes=["a", "b"], world_size=2)
    assert VersionMetrics.from_json(metrics.to_json()) == metrics
    with pytest.raises(MetaError, match="confusion_matrix"):
        VersionMetrics(epochs=history, confusion_matrix=[[1]], classes=["a", "b"], world_size=1)
    broken = json.loads(metrics.to_json())
    del broken["epochs"][0]["test_acc"]
    with pytest.raises(MetaError, match="test_acc"):
        VersionMetrics.from_json(json.dumps(broken))


def a_progress(**changes) -> RunProgress:
    values = {"run_id": "r1", "model": "smallcnn", "dataset": "digits", "state": "training",
              "epoch": 2, "epochs": 5, "world_size": 2, "started_at": "2026-11-23T15:24:00Z",
              "updated_at": "2026-11-23T15:25:00Z",
              "history": [EpochRecord(1, 1.0, 0.5, 0.9, 0.6, 100.0, 2.0),
                          EpochRecord(2, 0.8, 0.6, 0.7, 0.7, 110.0, 2.5)]}
    return RunProgress(**{**values, **changes})


def test_progress_record_round_trips_and_readers_ignore_unknown_keys():
    record = a_progress(mlflow_run_id="abc", mlflow_url="http://mlflow:5000/#/x")
    assert RunProgress.from_json(record.to_json()) == record
    newer = json.loads(record.to_json())
    newer["eta_seconds"] = 30  # a newer trainer's field
    newer["history"][0]["lr"] = 0.1
    assert RunProgress.from_json(json.dumps(newer)) == record
    published = a_progress(state="published", epoch=5, version="v1", history=[])
    assert RunProgress.from_json(published.to_json()).version == "v1"


@pytest.mark.parametrize("changes, field", [
    ({"state": "running"}, "state"), ({"epoch": 6}, "epoch"), ({"epochs": 0}, "epochs"),
    ({"world_size": 0}, "world_size"), ({"state": "published"}, "version"),
    ({"version": "v1"}, "version"), ({"run_id": ""}, "run_id"), ({"mlflow_url": 3}, "mlflow_url"),
    ({"mlflow_url": "javascript:alert(1)"}, "mlflow_url"),
    ({"mlflow_run_id": "x/../../admin"}, "mlflow_run_id"),
    ({"mlflow_experiment_id": "1 onclick=x"}, "mlflow_experiment_id"),
    ({"history": [EpochRecord(2, 1.0, 0.5, 0.9, 0.6, 1.0, 1.0),
                  EpochRecord(1, 1.0, 0.5, 0.9, 0.6, 1.0, 1.0)]}, "history"),
])
def test_progress_record_is_validated(changes, field):
    with pytest.raises(MetaError, match=field):
        a_progress(**changes)


@pytest.mark.parametrize("data", [b"{", b"[]", b'{"run_id": "r1"}',
                                  (b'{"run_id": "r", "model": "m", "dataset": "d", "state": '
                                  b'"training", "epoch": 0, "epochs": 1, "world_size": 1, '
                                  b'"started_at": "t", "updated_at": "t", "history": 5}')])
def test_a_broken_progress_record_is_a_meta_error(data):
    with pytest.raises(MetaError):
        RunProgress.from_json(data)


def test_a_runs_mlflow_page_is_built_in_one_place_on_any_base_url():
    run_id = "db83f1c2a0e94b6c8d1f2e3a4b5c6d7e"
    record = a_progress(mlflow_run_id=run_id, mlflow_experiment_id="7",
                        mlflow_url=mlflow_run_page("http://mlflow:5000", "7", run_id))
    assert record.mlflow_page() == f"http://mlflow:5000/#/experiments/7/runs/{run_id}"
    assert record.mlflow_page("https://mlflow.example.org/") == \
        f"https://mlflow.example.org/#/experiments/7/runs/{run_id}"
    assert a_progress().mlflow_page("http://127.0.0.1:5000") is None  # MLflow never answered


@pytest.mark.parametrize("base, experiment, run", [
    ("file:///tmp/mlruns", "1", "abc"), ("javascript:alert(1)//", "1", "abc"),
    ("http://mlflow:5000", "1", "abc/../../x"), ("http://mlflow:5000", "", "abc"),
])
def test_no_mlflow_page_from_a_base_or_id_that_is_not_one(base, experiment, run):
    assert mlflow_run_page(base, experiment, run) is None
