"""Checkpoints: the newest K of a run are kept, none after publication; a store that fails
while one is read is an outage to report, not a damaged checkpoint to skip."""

from __future__ import annotations

import json

import pytest

from trainer.contract.config import TrainConfig
from trainer.contract.errors import StoreError
from trainer.contract.layout import checkpoint_epoch
from trainer.run.train import run_training
from trainer.store import LocalStore

pytestmark = pytest.mark.slow

CFG = {"dataset": "digits", "model": "smallcnn", "epochs": 4, "batch_size": 128, "lr": 0.05,
       "seed": 2}


class StopAtCheckpoint(LocalStore):
    """A real LocalStore; the process "dies" as checkpoint ``epoch`` is written."""

    def __init__(self, root, epoch: int):
        super().__init__(root)
        self.epoch = epoch

    def put_bytes(self, key: str, data: bytes) -> None:
        if checkpoint_epoch(key) == self.epoch:
            raise KeyboardInterrupt(f"killed while writing {key}")
        super().put_bytes(key, data)


class FailingReads(LocalStore):
    """A real LocalStore whose reads of one checkpoint fail as an unreachable S3 does."""

    def __init__(self, root, epoch: int):
        super().__init__(root)
        self.epoch = epoch

    def get_bytes(self, key: str) -> bytes:
        if checkpoint_epoch(key) == self.epoch:
            raise StoreError(f"get {key!r}: s3://minio:9000 unreachable: connection refused")
        return super().get_bytes(key)


def checkpoints(store: LocalStore, cfg: TrainConfig) -> list[int]:
    return sorted(checkpoint_epoch(k) for k in store.list(f"models/{cfg.model_name}/runs/")
                  if checkpoint_epoch(k) is not None)


def killed_at(root, cfg: TrainConfig, epoch: int) -> LocalStore:
    store = StopAtCheckpoint(root, epoch)
    store.ensure_buckets()
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, store)
    return LocalStore(root)


def test_a_run_keeps_its_two_newest_checkpoints_and_none_once_published(tmp_path):
    cfg = TrainConfig(**CFG)  # keep_checkpoints defaults to 2
    store = killed_at(tmp_path / "store", cfg, epoch=4)
    assert checkpoints(store, cfg) == [2, 3]
    run_training(cfg, store)
    assert checkpoints(store, cfg) == [], "a published run needs no checkpoint to resume"


def test_keep_checkpoints_is_configurable_and_not_part_of_the_run(tmp_path):
    cfg = TrainConfig(**CFG, keep_checkpoints=1)
    store = killed_at(tmp_path / "store", cfg, epoch=4)
    assert checkpoints(store, cfg) == [3]
    assert len(store.list(f"models/{cfg.model_name}/runs/")) == 1
    killed_at(tmp_path / "store", TrainConfig(**CFG, keep_checkpoints=3), epoch=4)
    assert checkpoints(store, cfg) == [3], "another keep_checkpoints resumed the same run"


def test_a_store_failure_while_reading_a_checkpoint_is_raised_not_skipped(tmp_path):
    cfg = TrainConfig(**CFG)
    killed_at(tmp_path / "store", cfg, epoch=3)
    with pytest.raises(StoreError, match="unreachable"):
        run_training(cfg, FailingReads(tmp_path / "store", epoch=2))


def test_a_damaged_checkpoint_is_skipped_for_the_one_before_it(tmp_path, caplog):
    cfg = TrainConfig(**CFG)
    store = killed_at(tmp_path / "store", cfg, epoch=3)
    (newest,) = [k for k in store.list(f"models/{cfg.model_name}/runs/")
                 if checkpoint_epoch(k) == 2]
    store.put_bytes(newest, b"PK\x03\x04 not a checkpoint")
    caplog.clear()
    run_training(cfg, store)
    assert f"skipping checkpoint: {newest} cannot be loaded" in caplog.text
    resumed = [json.loads(r.message) for r in caplog.records
               if r.message.startswith('{"event": "resume"')]
    assert [r["epoch"] for r in resumed] == [1]
