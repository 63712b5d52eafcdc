"""The run's progress record (models/<name>/progress/<run_id>.json), which works
without MLflow: written at the start, after each epoch and once published; whole or not at
all for a reader; never a reason to stop training."""

from __future__ import annotations

import itertools
import logging
import threading

from tests.trainer.tracking_kit import a_run, fresh_state, publish_fake_version, record
from trainer.contract.layout import ModelKeys
from trainer.contract.reporting.progress import RunProgress
from trainer.state.checkpoint import TrainingState
from trainer.tracking.reporting import RunReporter, open_reporter


def read_progress(store, run) -> RunProgress:
    return RunProgress.from_json(store.get_bytes(ModelKeys(run.config.model_name).progress(
        run.run_id)))


def ticking_clock():
    counter = itertools.count()
    return lambda: f"2026-11-23T15:{next(counter):02d}:00Z"


def test_progress_follows_the_run_without_mlflow(local_store):
    local_store.ensure_buckets()
    run = a_run(epochs=3)
    cfg = run.config
    reporter = RunReporter(local_store, cfg, run.run_id, 2, tracker=None, clock=ticking_clock())
    state = fresh_state(run)
    reporter.started(state)
    seen = [read_progress(local_store, run)]
    for epoch in (1, 2, 3):
        state.record_epoch(record(epoch), [[1]], 2)
        reporter.epoch_ended(state)
        seen.append(read_progress(local_store, run))
    version = publish_fake_version(local_store, run, state.history)
    reporter.published(version)
    seen.append(read_progress(local_store, run))

    assert [(p.state, p.epoch, len(p.history)) for p in seen] == [
        ("training", 0, 0), ("training", 1, 1), ("training", 2, 2), ("publishing", 3, 3),
        ("published", 3, 3)]
    assert {p.started_at for p in seen} == {"2026-11-23T15:00:00Z"}
    assert len({p.updated_at for p in seen}) == len(seen)
    assert seen[-1].version == version and seen[-1].history == state.history
    assert {(p.epochs, p.world_size, p.run_id, p.mlflow_run_id) for p in seen} == \
        {(3, 2, run.run_id, None)}


def test_a_restart_keeps_the_start_time_and_shows_the_new_world_size(local_store):
    local_store.ensure_buckets()
    run = a_run(epochs=3)
    cfg = run.config
    first = RunReporter(local_store, cfg, run.run_id, 2, tracker=None, clock=ticking_clock())
    state = fresh_state(run)
    first.started(state)
    state.record_epoch(record(1), [[1]], 2)
    first.epoch_ended(state)

    later = lambda: "2026-11-24T09:00:00Z"
    resumed = TrainingState.fresh(run)
    resumed.epoch, resumed.history = 1, list(state.history)
    RunReporter(local_store, cfg, run.run_id, 1, tracker=None, clock=later).started(resumed)
    progress = read_progress(local_store, run)
    assert (progress.started_at, progress.updated_at) == ("2026-11-23T15:00:00Z", later())
    assert (progress.epoch, progress.world_size) == (1, 1)


def test_a_reader_never_sees_half_a_record(any_store):
    """The record is rewritten in one put; a reader polling meanwhile parses every read."""
    any_store.ensure_buckets()
    run = a_run(epochs=400)
    cfg = run.config
    reporter = RunReporter(any_store, cfg, run.run_id, 2, tracker=None)
    state = fresh_state(run)
    reporter.started(state)
    done, reads, errors = threading.Event(), [], []

    def poll() -> None:
        while not done.is_set():
            try:
                reads.append(read_progress(any_store, run).epoch)
            except Exception as e:  # noqa: BLE001 (any failure to read is what we look for)
                errors.append(e)

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        for epoch in range(1, 121):
            state.record_epoch(record(epoch), [[1]], 2)
            reporter.epoch_ended(state)
    finally:
        done.set()
        reader.join()
    assert errors == [] and reads, errors[:3]
    assert reads == sorted(reads)  # and never backwards


def test_a_store_failure_is_a_warning_only(local_store, caplog):
    run = a_run(epochs=2)
    cfg = run.config  # no buckets: every write fails
    reporter = RunReporter(local_store, cfg, run.run_id, 1, tracker=None)
    state = fresh_state(run)
    with caplog.at_level(logging.WARNING, logger="trainer.tracking.reporting"):
        reporter.started(state)
        state.record_epoch(record(1), [[1]], 1)
        reporter.epoch_ended(state)
    assert "progress record" in caplog.text and "not written" in caplog.text


def test_only_rank_0_reports(local_store):
    local_store.ensure_buckets()
    run = a_run(epochs=2)
    cfg = run.config
    reporter = open_reporter(local_store, run, is_main=False, world_size=2)
    state = fresh_state(run)
    reporter.started(state)
    state.record_epoch(record(1), [[1]], 2)
    reporter.epoch_ended(state)
    assert not local_store.exists(ModelKeys(cfg.model_name).progress(run.run_id))
    rank0 = open_reporter(local_store, run, is_main=True, world_size=2)
    assert rank0.tracker is None  # no MLFLOW_TRACKING_URI
    rank0.epoch_ended(state)
    assert read_progress(local_store, run).epoch == 1
