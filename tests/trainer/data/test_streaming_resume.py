"""A dataset larger than the trainer's memory limit streams from its shards; a run killed
mid-epoch with 2 processes resumes that epoch with 3, training every sample of it once."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tests.testkit import free_port
from tests.trainer.image_trees import image_tree
from tests.trainer.trainer_procs import events, kill_when_written, operator_env, start_trainer
from trainer.contract.config import TrainConfig
from trainer.contract.layout import ModelKeys
from trainer.data.ingest import ingest
from trainer.data.streaming.format import index_key
from trainer.data.streaming.position import SAMPLE_TRACE_ENV, EpochPosition
from trainer.data.streaming.source import open_sharded
from trainer.run.train import run_training
from trainer.state.checkpoint import all_checkpoints, load_checkpoint

pytestmark = pytest.mark.slow

SIZE = 8
# Streamed as a dataset larger than memory is (data_loading 'auto' chooses it from the run's
# memory plan, tests/trainer/data/test_memory_budget.py; a limit that leaves no room for
# these 34,560 decoded bytes next to training would depend on the runtime to a few pages).
CONFIG = {"dataset": "imagefolder", "model": "smallcnn", "epochs": 2, "batch_size": 4,
          "lr": 0.05, "seed": 2, "image_size": SIZE, "checkpoint_every_steps": 4,
          "data_loading": "stream"}
KILLED_EPOCH = 1


def kill_at_mid_epoch_checkpoint(procs, epochs_done: int) -> str:
    """Read rank 0's log until a checkpoint inside epoch ``epochs_done + 1`` is written,
    then SIGKILL every rank."""
    return kill_when_written(procs, f"checkpoints/epoch-{epochs_done:04d}+")


def traced(folder, epoch: int, last_step: int | None = None) -> list[int]:
    """Sample ids the ranks traced in ``folder`` for ``epoch`` (up to plan step ``last_step``
    of the epoch's first plan, when given)."""
    ids = []
    for path in folder.glob("rank-*.txt"):
        for line in path.read_text().splitlines():
            e, done, step, *samples = map(int, line.split())
            if e == epoch and (last_step is None or (done == 0 and step <= last_step)):
                ids += samples
    return ids


def test_larger_than_memory_run_killed_mid_epoch_resumes_with_another_world_size(
        local_store, tmp_path):
    local_store.ensure_buckets()
    tree = image_tree(tmp_path / "tree", classes=("bird", "cat", "dog"), per_class=60)
    ingest(local_store, "imagefolder", str(tree), image_size=SIZE, shard_bytes=9 * 3 * SIZE ** 2)
    index = open_sharded(local_store, "datasets/imagefolder", SIZE).index
    config_file = tmp_path / "train.json"
    config_file.write_text(json.dumps(CONFIG))
    args = ["train", "--config", str(config_file), "--store", local_store.url]
    env = {"TRAINSTACK_DATA_CACHE_DIR": str(tmp_path / "cache"),
           "TRAINSTACK_DATA_CACHE_BYTES": str(3 * index.largest_shard_bytes())}

    port, first_trace = free_port(), tmp_path / "trace-2"
    first_trace.mkdir()
    procs = [start_trainer(args, operator_env(rank, 2, port, {**env, SAMPLE_TRACE_ENV:
                                                              str(first_trace)}))
             for rank in (0, 1)]
    first = kill_at_mid_epoch_checkpoint(procs, KILLED_EPOCH - 1)
    assert '"loading": "stream"' in first, first[-3000:]
    cfg = TrainConfig.from_dict(CONFIG)
    run_id = events(first, "start")[0]["run_id"]
    (done, trained), newest = all_checkpoints(local_store, cfg.model_name, run_id)[0]
    assert done == KILLED_EPOCH - 1 and trained > 0, newest
    position = EpochPosition.from_dict(load_checkpoint(local_store, newest).position)
    assert position.plan.done == 0 and position.trained == trained

    second_trace = tmp_path / "trace-3"
    second_trace.mkdir()
    port = free_port()
    procs = [start_trainer(args, operator_env(rank, 3, port, {**env, SAMPLE_TRACE_ENV:
                                                              str(second_trace)}))
             for rank in (0, 1, 2)]
    outputs = [proc.communicate(timeout=300)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], outputs[0][-3000:]
    (resumed,) = events(outputs[0], "resume")
    assert (resumed["saved_world_size"], resumed["world_size"]) == (2, 3)
    assert resumed["samples_trained"] == trained

    counts = Counter(traced(first_trace, KILLED_EPOCH, position.step)
                     + traced(second_trace, KILLED_EPOCH))
    assert sorted(counts) == list(range(index.count("train"))), "a sample was skipped"
    assert set(counts.values()) == {1}, "a sample was trained twice"
    assert [e["epoch"] for e in events(outputs[0], "epoch")] == [1, 2]
    version = events(outputs[0], "done")[0]["version"]
    meta = json.loads(local_store.get_bytes(ModelKeys(cfg.model_name).meta(version)))
    metrics = json.loads(local_store.get_bytes(ModelKeys(cfg.model_name).version_file(
        version, "metrics.json")))
    assert meta["run_id"] == run_id and metrics["world_size"] == 3
    assert all_checkpoints(local_store, cfg.model_name, run_id) == [], "published: none kept"


def test_memory_or_streaming_is_the_same_run(local_store, tmp_path, caplog):
    """Whether a run streams depends on the pod's memory: its result must not."""
    local_store.ensure_buckets()
    ingest(local_store, "imagefolder", str(image_tree(tmp_path / "tree", per_class=20)),
           image_size=SIZE, shard_bytes=9 * 3 * SIZE ** 2)
    assert local_store.exists(index_key("datasets/imagefolder", SIZE))
    digests = {}
    for loading in ("memory", "stream"):
        caplog.clear()
        run_training(TrainConfig.from_dict({**CONFIG, "epochs": 1, "data_loading": loading}),
                     local_store)
        assert f'"loading": "{loading}"' in caplog.text
        (trained,) = [json.loads(r.getMessage()) for r in caplog.records
                      if r.getMessage().startswith('{"event": "trained"')]
        digests[loading] = (trained["run_id"], trained["weights_sha256"])
        for key in local_store.list("models/"):  # train the same run again from scratch
            local_store.delete(key)
    assert digests["memory"] == digests["stream"]


REPRODUCIBLE = {"dataset": "digits", "model": "fastcifar", "epochs": 2, "batch_size": 32,
                "lr": 0.1, "seed": 4, "augment": "crop+flip", "checkpoint_every_steps": 5}


def trained_digests(store, tmp_path, kill_at: str | None = None) -> tuple[list[str], list]:
    """The weights (sha256) every rank of a 2-process run ends with, and its resume events;
    with ``kill_at``, the run is killed once rank 0 writes that checkpoint, then started
    again with 2 processes."""
    store.ensure_buckets()
    config_file = tmp_path / "reproducible.json"
    config_file.write_text(json.dumps(REPRODUCIBLE))
    args = ["train", "--config", str(config_file), "--store", store.url]

    def start() -> list:
        port = free_port()
        return [start_trainer(args, operator_env(rank, 2, port)) for rank in (0, 1)]

    if kill_at is not None:
        kill_when_written(start(), kill_at)
    procs = start()
    outputs = [proc.communicate(timeout=300)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs[0][-3000:]
    return ([events(output, "trained")[0]["weights_sha256"] for output in outputs],
            events(outputs[0], "resume"))


def test_a_run_resumed_mid_epoch_with_the_same_world_size_ends_with_the_same_weights(
        tmp_path):
    """Issue 28 #12: resuming mid-epoch re-dealt the rest of the epoch and re-seeded the
    augmentation, so even at the same world size the weights differed from a run that was
    never stopped. Now the same plan goes on with the same random streams: bit-identical
    on CPU. Stopped in the first epoch, whose checkpoint has epoch 0 (issue 28 #2: it was
    initialised from the data again)."""
    from trainer.store import LocalStore

    uninterrupted, _ = trained_digests(LocalStore(tmp_path / "once"), tmp_path)
    resumed, (resume,) = trained_digests(LocalStore(tmp_path / "killed"), tmp_path,
                                         kill_at="checkpoints/epoch-0000+")
    assert resume["epoch"] == 0 and resume["samples_trained"] > 0, resume
    assert (resume["saved_world_size"], resume["world_size"]) == (2, 2)
    assert uninterrupted[0] == uninterrupted[1] and resumed[0] == resumed[1]
    assert resumed[0] == uninterrupted[0], "the resumed run's weights differ"
