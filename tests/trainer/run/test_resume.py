"""A run killed right after a checkpoint resumes, with another world size, where it stopped."""

from __future__ import annotations

import json
import signal

import pytest

from tests.testkit import free_port
from tests.trainer.runs import identity_of
from tests.trainer.trainer_procs import (
    events,
    kill_when_written,
    operator_env,
    run_trainer,
    start_trainer,
    trainer_env,
)
from trainer.contract.config import TrainConfig
from trainer.contract.layout import ModelKeys
from trainer.state.checkpoint import checkpoint_epochs

pytestmark = pytest.mark.slow

KILL_AFTER_EPOCH = 2
CONFIG = {"dataset": "digits", "model": "smallcnn", "epochs": 5, "batch_size": 16,
          "lr": 0.05, "seed": 1, "log_every": 20}


def kill_after_checkpoint(procs, epoch: int) -> str:
    """Read rank 0's log until checkpoint ``epoch`` is written, then SIGKILL every rank."""
    return kill_when_written(procs, f"checkpoints/epoch-{epoch:04d}.pt")


@pytest.mark.parametrize("store_kind", ["s3"])
def test_killed_run_resumes_at_next_epoch_with_one_process(store_kind, request, tmp_path):
    store = request.getfixturevalue(f"{store_kind}_store")
    store.ensure_buckets()
    store_env = request.getfixturevalue("s3_env") if store_kind == "s3" else {}
    config_file = tmp_path / "train.json"
    config_file.write_text(json.dumps(CONFIG))
    args = ["train", "--config", str(config_file), "--store", store.url]
    cfg = TrainConfig.from_dict(CONFIG)
    run_id = identity_of(cfg).run_id

    port = free_port()
    procs = [start_trainer(args, operator_env(rank, 2, port, store_env)) for rank in (0, 1)]
    first = kill_after_checkpoint(procs, KILL_AFTER_EPOCH)
    assert all(proc.returncode == -signal.SIGKILL for proc in procs)
    assert not store.list(f"models/{cfg.model_name}/versions/")
    saved = [epoch for epoch, _ in checkpoint_epochs(store, cfg.model_name, run_id)]
    newest = max(saved)
    assert KILL_AFTER_EPOCH <= newest < CONFIG["epochs"], saved
    assert events(first, "progress"), "non-TTY runs log JSON progress lines"

    second = run_trainer(args, trainer_env(store_env))
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    log = second.stdout + second.stderr
    run_ids = {e["run_id"] for e in events(first, "start") + events(log, "start")}
    assert run_ids == {run_id}
    (resumed,) = events(log, "resume")
    assert resumed["epoch"] == newest
    assert (resumed["saved_world_size"], resumed["world_size"]) == (2, 1)
    trained_epochs = [e["epoch"] for e in events(log, "epoch")]
    assert trained_epochs == list(range(newest + 1, CONFIG["epochs"] + 1))

    assert checkpoint_epochs(store, cfg.model_name, run_id) == [], "published: none kept"
    version = events(log, "done")[0]["version"]
    assert events(log, "done")[0]["run_id"] == run_id
    metrics = json.loads(store.get_bytes(ModelKeys(cfg.model_name).version_file(
        version, "metrics.json")))
    assert [e["epoch"] for e in metrics["epochs"]] == list(range(1, CONFIG["epochs"] + 1))
    assert metrics["world_size"] == 1
