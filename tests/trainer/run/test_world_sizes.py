"""Issue 20 #7: ``trainstack.world_sizes`` and the progress record's ``world_size`` name the
world sizes that trained, never one of a job that trained nothing (a re-run of a published
run with more workers, a job that stopped before its first epoch)."""

from __future__ import annotations

import pytest
import torch

from tests.trainer.tracking_kit import (
    a_run,
    client,
    fresh_state,
    publish_fake_version,
    train_epochs,
)
from trainer.contract.layout import ModelKeys
from trainer.contract.reporting.mlflow_layout import WORLD_SIZES_TAG
from trainer.contract.reporting.progress import RunProgress
from trainer.run.distributed import DistEnv
from trainer.run.train import finish_alone
from trainer.tracking.reporting import open_reporter

IDLE_S = 180


@pytest.fixture
def tracked(mlflow_env, s3_store, monkeypatch):
    monkeypatch.setenv("TRAINSTACK_TRACKING_TIMEOUT_S", str(IDLE_S))
    s3_store.ensure_buckets()
    return client(mlflow_env["MLFLOW_TRACKING_URI"]), s3_store


def progress(store, run) -> RunProgress:
    return RunProgress.from_json(store.get_bytes(
        ModelKeys(run.config.model_name).progress(run.run_id)))


def test_rerunning_a_published_run_with_more_workers_adds_no_world_size(tracked):
    mlflow, store = tracked
    run = a_run()
    reporter = open_reporter(store, run, is_main=True, world_size=2)
    state = fresh_state(run)
    reporter.started(state)
    train_epochs(reporter, state, [1, 2, 3, 4], world_size=2)
    version = publish_fake_version(store, run, state.history)
    reporter.published(version)
    assert reporter.tracker.wait_idle(IDLE_S)
    assert mlflow.get_run(state.mlflow_run_id).data.tags[WORLD_SIZES_TAG] == "2"

    # `workers 3` after publication: rank 0 of the new job finds the run published.
    three = DistEnv(rank=0, world_size=3, local_rank=0, local_world_size=1,
                    device=torch.device("cpu"))
    assert finish_alone(store, run, three, None, ("published", version)) == version
    assert mlflow.get_run(state.mlflow_run_id).data.tags[WORLD_SIZES_TAG] == "2"
    assert progress(store, run).world_size == 2


def test_a_job_that_stops_before_its_first_epoch_adds_no_world_size(tracked):
    mlflow, store = tracked
    run = a_run()
    first = open_reporter(store, run, is_main=True, world_size=2)
    state = fresh_state(run)
    first.started(state)
    train_epochs(first, state, [1, 2], world_size=2)
    assert first.tracker.wait_idle(IDLE_S)

    resumed = fresh_state(run)
    resumed.history, resumed.epoch = list(state.history), state.epoch
    resumed.mlflow_run_id = state.mlflow_run_id
    resumed.world_size = 2
    stopped = open_reporter(store, run, is_main=True, world_size=3)
    stopped.started(resumed)  # ...and the job dies before epoch 3 ends
    assert stopped.tracker.wait_idle(IDLE_S)
    assert mlflow.get_run(state.mlflow_run_id).data.tags[WORLD_SIZES_TAG] == "2"

    again = open_reporter(store, run, is_main=True, world_size=3)
    again.started(resumed)
    train_epochs(again, resumed, [3], world_size=3)  # this one trains an epoch
    assert again.tracker.wait_idle(IDLE_S)
    assert mlflow.get_run(state.mlflow_run_id).data.tags[WORLD_SIZES_TAG] == "2,3"
    assert progress(store, run).world_size == 3
