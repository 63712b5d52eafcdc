"""MLflow tracking through the loop's call points (trainer.tracking.reporting), against a real
``mlflow server``: each epoch once, params, artifacts, the registered version and its
alias, resumption into the same MLflow run, and outages that never stop training."""

from __future__ import annotations

import logging
import os

import pytest

from tests.testkit import free_port
from tests.trainer.tracking_kit import (
    a_run,
    client,
    fresh_state,
    latest_json_version,
    publish_fake_version,
    runs_of,
    steps_logged,
    train_epochs,
)
from trainer.contract.layout import ModelKeys
from trainer.contract.reporting.mlflow_layout import (
    ALIAS,
    METRIC_KEYS,
    RUN_ID_TAG,
    VERSION_TAG,
    WORLD_SIZES_TAG,
)
from trainer.contract.reporting.progress import RunProgress
from trainer.tracking.reporting import open_reporter
from trainer.tracking.tracker import MLFLOW_HTTP_DEFAULTS

IDLE_S = 180  # generous: the first call imports mlflow, slow on a busy 2-core machine


def reporter_for(store, run, world_size=2):
    reporter = open_reporter(store, run, is_main=True, world_size=world_size)
    assert reporter.tracker is not None
    return reporter


def settle(reporter) -> None:
    assert reporter.tracker.wait_idle(IDLE_S), "the MLflow call never returned"


def progress(store, run) -> RunProgress:
    return RunProgress.from_json(store.get_bytes(ModelKeys(run.config.model_name).progress(
        run.run_id)))


def test_a_run_logs_each_epoch_once_and_registers_its_version(mlflow_env, s3_store, monkeypatch):
    monkeypatch.setenv("TRAINSTACK_TRACKING_TIMEOUT_S", str(IDLE_S))
    s3_store.ensure_buckets()
    run = a_run()
    cfg = run.config
    reporter = reporter_for(s3_store, run)
    state = fresh_state(run)
    reporter.started(state)
    train_epochs(reporter, state, [1, 2])
    reporter.epoch_ended(state)  # reported twice: still logged once
    train_epochs(reporter, state, [3, 4])
    version = publish_fake_version(s3_store, run, state.history)
    reporter.published(version)
    settle(reporter)

    mlflow = client(mlflow_env["MLFLOW_TRACKING_URI"])
    tracked = mlflow.get_run(state.mlflow_run_id)
    assert steps_logged(mlflow, tracked.info.run_id) == {key: [1, 2, 3, 4] for key in METRIC_KEYS}
    history = mlflow.get_metric_history(tracked.info.run_id, "test_acc")
    assert {m.step: m.value for m in history} == {e.epoch: e.test_acc for e in state.history}
    params = tracked.data.params
    assert {k: params[k] for k in cfg.to_dict()} == {k: str(v) for k, v in cfg.to_dict().items()}
    assert params["recipe.schedule"] == cfg.recipe.schedule  # what "auto" meant
    assert params["recipe.label_smoothing"] == str(cfg.recipe.label_smoothing)
    assert params["world_size"] == "2"
    assert int(params["cpus"]) >= 1 and int(params["memory_bytes"]) > 0
    assert params["gpus"].isdigit()
    assert tracked.data.tags[RUN_ID_TAG] == run.run_id and tracked.data.tags[VERSION_TAG] == version
    assert tracked.data.tags["trainstack.data_fingerprint"] == run.data_fingerprint
    assert tracked.data.tags["trainstack.model_revision"] == run.model_revision
    assert tracked.info.status == "FINISHED"

    current = mlflow.get_model_version_by_alias(cfg.model_name, ALIAS)
    assert current.tags[VERSION_TAG] == latest_json_version(s3_store, cfg.model_name) \
        == version
    assert current.run_id == tracked.info.run_id
    from mlflow.artifacts import download_artifacts

    local = download_artifacts(artifact_uri=f"models:/{cfg.model_name}@{ALIAS}",
                               tracking_uri=mlflow_env["MLFLOW_TRACKING_URI"])
    keys = ModelKeys(cfg.model_name)
    for name in ("model.pt2", "meta.json", "metrics.json", "curves.png", "confusion_matrix.png"):
        with open(f"{local}/{name}", "rb") as f:
            assert f.read() == s3_store.get_bytes(keys.version_file(version, name)), name

    record = progress(s3_store, run)
    assert (record.state, record.version, record.epoch, record.epochs) == \
        ("published", version, 4, 4)
    assert record.mlflow_run_id == tracked.info.run_id
    assert record.mlflow_url.endswith(f"/runs/{tracked.info.run_id}")

    # A restart that finds the run published reports it again: nothing doubles.
    again = reporter_for(s3_store, run)
    again.published(version)
    settle(again)
    assert steps_logged(mlflow, tracked.info.run_id) == {key: [1, 2, 3, 4] for key in METRIC_KEYS}
    tagged = mlflow.search_model_versions(
        f"name = '{cfg.model_name}' and tags.`{VERSION_TAG}` = '{version}'")
    assert len(tagged) == 1


@pytest.mark.parametrize("id_in_checkpoint", [True, False])
def test_a_resumed_run_continues_its_mlflow_run(mlflow_env, s3_store, monkeypatch,
                                                 id_in_checkpoint):
    """Killed after epoch 2, resumed with another world size: one MLflow run, each epoch
    once. Without the id in the checkpoint (a crash before it got there) the run is found
    by its tag."""
    monkeypatch.setenv("TRAINSTACK_TRACKING_TIMEOUT_S", str(IDLE_S))
    s3_store.ensure_buckets()
    run = a_run()
    first = reporter_for(s3_store, run, world_size=2)
    state = fresh_state(run)
    first.started(state)
    train_epochs(first, state, [1, 2])
    settle(first)
    mlflow_run_id = state.mlflow_run_id
    assert mlflow_run_id

    resumed = fresh_state(run)
    resumed.history, resumed.epoch = list(state.history), state.epoch
    resumed.mlflow_run_id = mlflow_run_id if id_in_checkpoint else None
    second = reporter_for(s3_store, run, world_size=1)
    second.started(resumed)
    train_epochs(second, resumed, [3, 4], world_size=1)
    second.published(publish_fake_version(s3_store, run, resumed.history))
    settle(second)

    mlflow = client(mlflow_env["MLFLOW_TRACKING_URI"])
    runs = runs_of(mlflow, mlflow_env["MLFLOW_EXPERIMENT_NAME"], run.run_id)
    assert [r.info.run_id for r in runs] == [mlflow_run_id]
    assert resumed.mlflow_run_id == mlflow_run_id
    assert steps_logged(mlflow, mlflow_run_id) == {key: [1, 2, 3, 4] for key in METRIC_KEYS}
    tracked = mlflow.get_run(mlflow_run_id)
    assert tracked.data.params["world_size"] == "2"  # MLflow params keep the first start's value
    assert tracked.data.tags[WORLD_SIZES_TAG] == "2,1"


def test_a_fresh_start_adopts_only_a_run_without_epochs(mlflow_env, s3_store, monkeypatch):
    """A first attempt that died before its first checkpoint left an empty MLflow run: the
    next start takes it over. A run that logged epochs (its checkpoints since deleted) is
    not reused by a run that trains from scratch: its values would mix."""
    monkeypatch.setenv("TRAINSTACK_TRACKING_TIMEOUT_S", str(IDLE_S))
    s3_store.ensure_buckets()
    run = a_run()
    empty = reporter_for(s3_store, run)
    empty.started(fresh_state(run))
    settle(empty)
    adopter = reporter_for(s3_store, run)
    state = fresh_state(run)
    adopter.started(state)
    settle(adopter)
    assert state.mlflow_run_id == empty.tracker.run_id

    train_epochs(adopter, state, [1])
    settle(adopter)
    scratch = reporter_for(s3_store, run)
    restarted = fresh_state(run)
    scratch.started(restarted)
    settle(scratch)
    assert restarted.mlflow_run_id not in (None, state.mlflow_run_id)


def test_a_hung_server_never_holds_an_epoch_and_missed_epochs_come_later(
        mlflow_env, mlflow_server, s3_store, monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    monkeypatch.setenv("TRAINSTACK_TRACKING_TIMEOUT_S", "1")
    s3_store.ensure_buckets()
    run = a_run(epochs=5)
    cfg = run.config
    reporter = reporter_for(s3_store, run)
    tracker = reporter.tracker
    state = fresh_state(run)
    reporter.started(state)
    settle(reporter)
    train_epochs(reporter, state, [1])
    settle(reporter)

    caplog.set_level(logging.WARNING, logger="trainer.tracking.tracker")
    with mlflow_server.paused():
        train_epochs(reporter, state, [2])
        assert not tracker.wait_idle(0), "epoch 2 returned only once MLflow answered"
        train_epochs(reporter, state, [3])  # MLflow still busy: epoch 3 does not wait
        assert tracker.wait_idle(IDLE_S)  # the client's own timeouts end the call
        train_epochs(reporter, state, [4])
        assert tracker.wait_idle(IDLE_S)
        progress_during = progress(s3_store, run)
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 1, [r.getMessage() for r in caplog.records]  # warned once
    assert progress_during.epoch == 4  # the store's record does not depend on MLflow

    train_epochs(reporter, state, [5])
    reporter.published(publish_fake_version(s3_store, run, state.history))
    settle(reporter)
    assert any("answers again" in r.getMessage() for r in caplog.records)
    mlflow = client(mlflow_env["MLFLOW_TRACKING_URI"])
    assert steps_logged(mlflow, state.mlflow_run_id) == \
        {key: [1, 2, 3, 4, 5] for key in METRIC_KEYS}
    current = mlflow.get_model_version_by_alias(cfg.model_name, ALIAS)
    assert current.tags[VERSION_TAG] == latest_json_version(s3_store, cfg.model_name)


def test_an_unreachable_server_changes_nothing_but_a_warning(local_store, monkeypatch, caplog):
    for key, value in {**MLFLOW_HTTP_DEFAULTS, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                       "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
                       "TRAINSTACK_TRACKING_TIMEOUT_S": str(IDLE_S)}.items():
        monkeypatch.setenv(key, value)
    local_store.ensure_buckets()
    run = a_run(epochs=3)
    reporter = reporter_for(local_store, run)
    state = fresh_state(run)
    caplog.set_level(logging.WARNING, logger="trainer.tracking.tracker")
    reporter.started(state)
    train_epochs(reporter, state, [1, 2, 3])
    version = publish_fake_version(local_store, run, state.history)
    reporter.published(version)
    settle(reporter)
    assert len([r for r in caplog.records if "failed" in r.getMessage()]) == 1
    record = progress(local_store, run)
    assert (record.state, record.version, record.mlflow_run_id) == ("published", version, None)
    assert [e.epoch for e in record.history] == [1, 2, 3]


def test_the_alias_follows_latest_json(mlflow_env, s3_store, monkeypatch):
    """The alias names the registered version latest.json names, also when another run
    moves latest.json while the alias is being set; never a version MLflow lacks."""
    monkeypatch.setenv("TRAINSTACK_TRACKING_TIMEOUT_S", str(IDLE_S))
    s3_store.ensure_buckets()
    versions = []
    for _ in range(2):
        run = a_run()
        cfg = run.config
        reporter = reporter_for(s3_store, run)
        state = fresh_state(run)
        reporter.started(state)
        train_epochs(reporter, state, [1, 2, 3, 4])
        versions.append(publish_fake_version(s3_store, run, state.history))
        reporter.published(versions[-1])
        settle(reporter)
    mlflow = client(mlflow_env["MLFLOW_TRACKING_URI"])
    name = cfg.model_name

    def aliased() -> str:
        return mlflow.get_model_version_by_alias(name, ALIAS).tags[VERSION_TAG]

    assert aliased() == versions[1] == latest_json_version(s3_store, cfg.model_name)
    from trainer.tracking.mlflow_run import MlflowRuns

    runs = MlflowRuns(mlflow_env["MLFLOW_TRACKING_URI"])
    answers = iter([versions[0], versions[1], versions[1], versions[1]])  # moved after 1st read
    runs.follow_latest(name, lambda: next(answers))
    assert aliased() == versions[1]
    runs.follow_latest(name, lambda: "20990101T000000Z-unregistered")
    assert aliased() == versions[1]


def test_the_checkpoint_carries_the_mlflow_run_id(local_store):
    """The id survives a checkpoint; a checkpoint written before it existed still loads."""
    import io

    import torch

    from trainer.state.checkpoint import load_checkpoint, save_checkpoint

    local_store.ensure_buckets()
    run = a_run()
    state = fresh_state(run)
    state.mlflow_run_id = "0123abcd"
    save_checkpoint(local_store, "models/x/a.pt", state)
    assert load_checkpoint(local_store, "models/x/a.pt").mlflow_run_id == "0123abcd"
    for old in (None, 42):
        raw = state.to_checkpoint()
        if old is None:
            del raw["mlflow_run_id"]
        else:
            raw["mlflow_run_id"] = old
        buffer = io.BytesIO()
        torch.save(raw, buffer)
        local_store.put_bytes("models/x/old.pt", buffer.getvalue())
        loaded = load_checkpoint(local_store, "models/x/old.pt")
        assert loaded.mlflow_run_id is None and loaded.run_id == run.run_id


@pytest.mark.parametrize("value", ["abc", "0", "-3", "nan", "inf"])
def test_a_bad_tracking_timeout_is_a_config_error_naming_it(value, monkeypatch):
    from trainer.contract.errors import ConfigError
    from trainer.tracking.tracker import TIMEOUT_ENV, tracking_timeout

    monkeypatch.setenv(TIMEOUT_ENV, value)
    with pytest.raises(ConfigError, match=TIMEOUT_ENV):
        tracking_timeout()


@pytest.mark.parametrize("given, expected", [(None, "true"), ("false", "false")])
def test_the_client_sends_no_usage_report_unless_asked(given, expected, monkeypatch):
    """Set before mlflow is imported; a user's own choice stands."""
    from trainer.contract.reporting.mlflow_layout import RunInfo
    from trainer.tracking.tracker import Tracker

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", given or "")  # restored after the test
    if given is None:
        monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY")
    Tracker(RunInfo(run_id="r", model_name="m-d", params={}), "http://127.0.0.1:9")
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == expected
