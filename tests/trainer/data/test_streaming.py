"""Sharded datasets: epoch plans, the shards an ingest writes, memory and streamed reading
giving the same batches, and bad shards stopping with an error that names them."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from tests.trainer.image_trees import image_tree
from trainer.contract.config import TrainConfig
from trainer.contract.errors import ConfigError, DatasetError
from trainer.data.ingest import ingest
from trainer.data.loading import load_dataset
from trainer.data.streaming.batches import MemoryBatches, StreamBatches
from trainer.data.streaming.format import (
    ShardInfo,
    file_sha256,
    index_key,
    shard_key,
    shards_prefix,
    write_shard,
)
from trainer.data.streaming.plan import EpochPlan
from trainer.data.streaming.position import EpochPosition
from trainer.data.streaming.source import StreamedBundle, open_sharded

PREFIX = "datasets/imagefolder"
SIZE = 8
# 3 x 8 x 8 bytes per image: shards of at most 7 images.
SHARD_BYTES = 7 * 3 * SIZE * SIZE


def trained_ids(plan: EpochPlan, world: int, steps: int | None = None) -> list[tuple]:
    """(shard, position) of every sample each rank's first ``steps`` batches hold."""
    found = []
    for rank in range(world):
        for batch in itertools.islice(plan.batches(rank), steps):
            found += [(shard, p) for shard, begin, end in batch for p in range(begin, end)]
    return found


@pytest.mark.parametrize("sizes, batch, world", [([10] * 7, 4, 1), ([10] * 7, 4, 2),
                                                 ([64, 64, 13], 8, 3), ([1000], 64, 5),
                                                 ([5, 3], 32, 2)])
def test_an_epoch_trains_every_sample_once_in_equal_steps_on_every_rank(sizes, batch, world):
    plan = EpochPlan.fresh(sizes, seed=3, epoch=2, world=world, batch_size=batch)
    ids = trained_ids(plan, world)
    assert sorted(ids) == [(s, p) for s, n in enumerate(sizes) for p in range(n)]
    per_rank = [plan.batch_sizes(rank) for rank in range(world)]
    assert {len(sizes) for sizes in per_rank} == {plan.steps}, "DDP steps together"
    every = [size for sizes in per_rank for size in sizes]
    assert max(every) <= batch and max(every) - min(every) <= 1, every


def test_ranks_read_disjoint_runs_of_shards_that_change_every_epoch():
    sizes = [10] * 12
    plan = EpochPlan.fresh(sizes, seed=0, epoch=1, world=3, batch_size=5)
    shards = [{shard for shard, _, _ in share} for share in plan.shares]
    assert all(len(s) == 4 for s in shards) and len(set().union(*shards)) == 12
    other = EpochPlan.fresh(sizes, seed=0, epoch=2, world=3, batch_size=5)
    assert other.shares != plan.shares
    assert EpochPlan.fresh(sizes, seed=0, epoch=1, world=3, batch_size=5).shares == plan.shares


@pytest.mark.parametrize("first, second, stop", [(2, 3, 3), (3, 2, 1), (2, 1, 4), (1, 4, 7)])
def test_the_rest_of_a_stopped_epoch_trains_each_sample_once_with_another_world_size(
        first, second, stop):
    sizes = [13, 13, 13, 9]
    plan = EpochPlan.fresh(sizes, seed=1, epoch=1, world=first, batch_size=4)
    before = trained_ids(plan, first, stop)
    rest = plan.rest(stop, second)
    # And stopped again, half-way through the rest, back to the first world size.
    again = rest.rest(rest.steps // 2, first)
    after = trained_ids(rest, second, rest.steps // 2) + trained_ids(again, first)
    assert sorted(before + after) == [(s, p) for s, n in enumerate(sizes) for p in range(n)]
    assert rest.done == len(before) and again.trained(again.steps) == sum(sizes)
    assert EpochPlan.from_dict(json.loads(json.dumps(rest.to_dict()))) == rest


@pytest.mark.parametrize("world, stop", [(1, 2), (2, 3), (3, 1), (3, 2)])
def test_a_stopped_epoch_resumed_with_the_same_world_size_goes_on_with_the_same_plan(
        world, stop):
    """Issue 28 #12: the rest used to be dealt out afresh even to the same world size, so
    the steps after a resume were numbered (and their augmentation seeded) anew."""
    plan = EpochPlan.fresh([13, 13, 13, 8], seed=1, epoch=2, world=world, batch_size=4)
    stopped = EpochPosition(plan, stop, [1.0, 2.0, 3.0], 4.0)
    saved = EpochPosition.from_dict(json.loads(json.dumps(stopped.to_dict())))
    resumed = saved.for_world(world)
    assert (resumed.plan, resumed.step, resumed.totals) == (plan, stop, [1.0, 2.0, 3.0])
    seeds = {plan.step_seed(7, rank, step) for rank in range(world)
             for step in range(1, plan.steps + 1)}
    assert len(seeds) == world * plan.steps, "every rank and step draws its own numbers"
    other = saved.for_world(world + 1)  # another world size: the rest dealt afresh
    assert other.step == 0 and other.plan.done == plan.trained(stop)
    assert plan.step_seed(7, 0, 1) != other.plan.step_seed(7, 0, 1)


def test_fewer_samples_left_than_ranks_is_a_clear_error():
    with pytest.raises(DatasetError, match="2 training samples left for 3 ranks"):
        EpochPlan.fresh([2], seed=0, epoch=1, world=3, batch_size=4)


@pytest.fixture
def sharded_store(any_store, tmp_path):
    any_store.ensure_buckets()
    tree = image_tree(tmp_path / "tree", classes=("bird", "cat", "dog"), per_class=12)
    ingest(any_store, "imagefolder", str(tree), image_size=SIZE, shard_bytes=SHARD_BYTES)
    return any_store


def test_ingest_writes_size_bounded_shards_and_an_index_of_the_dataset(sharded_store):
    index = open_sharded(sharded_store, PREFIX, SIZE).index
    assert index.classes == ["bird", "cat", "dog"] and index.image_size == SIZE
    assert index.count("train") + index.count("test") == 36
    assert [sum(c) for c in (index.class_counts["train"], index.class_counts["test"])] == [
        index.count("train"), index.count("test")]
    assert all(s.count <= 7 for split in ("train", "test") for s in index.shards[split])
    assert len(index.shards["train"]) == -(-index.count("train") // 7)
    memory = load_dataset("imagefolder", sharded_store, image_size=SIZE, loading="memory")
    streamed = load_dataset("imagefolder", sharded_store, image_size=SIZE, loading="stream")
    assert isinstance(streamed, StreamedBundle)
    assert memory.fingerprint == streamed.fingerprint == index.fingerprint
    assert (memory.mean, memory.std) == (tuple(index.mean), tuple(index.std))
    assert index.source_fingerprint in index.fingerprint
    # Each shard mixes the classes: the ingest shuffles before cutting.
    assert len(set(memory.train.labels[:7].tolist())) > 1


def test_memory_and_streamed_batches_are_the_same(sharded_store):
    memory = MemoryBatches(load_dataset("imagefolder", sharded_store, image_size=SIZE,
                                        loading="memory"), torch.device("cpu"))
    stream = StreamBatches(load_dataset("imagefolder", sharded_store, image_size=SIZE,
                                        loading="stream").sharded, torch.device("cpu"))
    assert memory.shard_sizes == stream.shard_sizes
    plan = EpochPlan.fresh(memory.shard_sizes, seed=5, epoch=3, world=2, batch_size=4)
    for rank in (0, 1):
        pairs = zip(memory.train(plan, rank, 1, 5), stream.train(plan, rank, 1, 5), strict=True)
        for (m_pixels, m_index, m_labels, m_ids), (s_pixels, s_index, s_labels, s_ids) in pairs:
            assert torch.equal(m_ids, s_ids) and torch.equal(m_labels, s_labels)
            assert torch.equal(m_pixels[m_index], s_pixels[s_index])
    tested = [labels for rank in (0, 1) for _, labels in stream.test(rank, 2, 3)]
    assert torch.equal(torch.cat(tested).sort().values, memory.test_labels.sort().values)


def test_training_config_keeps_its_run_id_and_checks_the_new_fields():
    before = TrainConfig(dataset="imagefolder", model="smallcnn")
    assert "data_loading" not in before.defining_fields()
    assert "checkpoint_every_steps" not in before.defining_fields()
    with pytest.raises(ConfigError, match="data_loading: 'stream' reads an imagefolder"):
        TrainConfig(dataset="digits", data_loading="stream")
    with pytest.raises(ConfigError, match="checkpoint_every_steps: must be an integer >= 0"):
        TrainConfig(checkpoint_every_steps=-1)


def _stream_all(store) -> None:
    bundle = load_dataset("imagefolder", store, image_size=SIZE, loading="stream")
    batches = StreamBatches(bundle.sharded, torch.device("cpu"))
    plan = EpochPlan.fresh(batches.shard_sizes, seed=0, epoch=1, world=1, batch_size=8)
    for _ in batches.train(plan, 0, 0, 0):
        pass


def test_a_corrupt_shard_stops_training_with_its_name(sharded_store):
    key = shard_key(PREFIX, SIZE, "train", 2)
    data = bytearray(sharded_store.get_bytes(key))
    data[700] ^= 0xFF
    sharded_store.put_bytes(key, bytes(data))
    with pytest.raises(DatasetError, match=f"{key}: corrupt shard"):
        _stream_all(sharded_store)


def test_a_shard_whose_arrays_are_not_what_its_index_says_is_refused_before_it_is_read(
        sharded_store, tmp_path):
    """Its digest matches its index entry (an index written for it), its pixels do not: the
    header is checked before an array of its size is allocated or read."""
    index = open_sharded(sharded_store, PREFIX, SIZE).index
    shard = index.shards["train"][1]
    path = tmp_path / "other.tar"
    write_shard(path, "other", np.zeros((shard.count, 3, 2 * SIZE, 2 * SIZE), np.uint8),
                np.zeros(shard.count, np.int64))
    sharded_store.put_file(shard.key, path)
    index.shards["train"][1] = ShardInfo(shard.key, shard.count, path.stat().st_size,
                                         file_sha256(path))
    sharded_store.put_bytes(index_key(PREFIX, SIZE), index.to_json())
    with pytest.raises(DatasetError, match=rf"{shard.key}: holds a uint8 C array of "
                                           rf"\({shard.count}, 3, 16, 16\)"):
        _stream_all(sharded_store)


def test_a_shard_missing_from_the_index_stops_training_with_its_name(sharded_store):
    stray = shard_key(PREFIX, SIZE, "train", 99)
    sharded_store.put_bytes(stray, sharded_store.get_bytes(shard_key(PREFIX, SIZE, "train", 0)))
    with pytest.raises(DatasetError, match=f"{stray}: a shard missing from the index"):
        _stream_all(sharded_store)


def test_a_shard_the_index_lists_but_the_store_lacks_stops_training_with_its_name(
        sharded_store):
    key = shard_key(PREFIX, SIZE, "train", 1)
    sharded_store.delete(key)
    with pytest.raises(DatasetError, match=f"{key}: listed in the shard index but missing"):
        _stream_all(sharded_store)


def test_an_index_from_another_dataset_version_stops_with_its_name(sharded_store, tmp_path):
    old_index = sharded_store.get_bytes(index_key(PREFIX, SIZE))
    ingest(sharded_store, "imagefolder", str(image_tree(tmp_path / "v2", seed=7)),
           image_size=SIZE, shard_bytes=SHARD_BYTES)
    sharded_store.put_bytes(index_key(PREFIX, SIZE), old_index)
    with pytest.raises(DatasetError, match=f"{index_key(PREFIX, SIZE)}: is from another "
                                           "dataset version"):
        _stream_all(sharded_store)


def test_a_reingest_with_fewer_images_leaves_no_stray_shard(sharded_store, tmp_path):
    ingest(sharded_store, "imagefolder", str(image_tree(tmp_path / "small", per_class=3)),
           image_size=SIZE, shard_bytes=SHARD_BYTES)
    index = open_sharded(sharded_store, PREFIX, SIZE).index
    listed = {s.key for split in ("train", "test") for s in index.shards[split]}
    stored = {k for k in sharded_store.list(shards_prefix(PREFIX, SIZE)) if k.endswith(".tar")}
    assert stored == listed
    _stream_all(sharded_store)


def test_the_ranks_of_one_pod_decide_memory_or_stream_on_their_share_of_its_memory(
        sharded_store, monkeypatch):
    """36 images of 3x8x8 decode to 6,912 bytes: a quarter of 40,000 holds them, a quarter of
    half of it (two torchrun processes in the pod) does not."""
    monkeypatch.setenv("TRAINSTACK_MEMORY_LIMIT_BYTES", "40000")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    alone = load_dataset("imagefolder", sharded_store, image_size=SIZE)
    assert not isinstance(alone, StreamedBundle)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    shared = load_dataset("imagefolder", sharded_store, image_size=SIZE)
    assert isinstance(shared, StreamedBundle)
    with pytest.raises(DatasetError, match="more than the 5,000 this process may hold"):
        load_dataset("imagefolder", sharded_store, image_size=SIZE, loading="memory")


def test_training_at_a_size_the_shards_were_not_written_at_says_to_ingest_at_it(
        sharded_store, monkeypatch, caplog):
    """Shards at 8px, training at 16px: 36 files decode to 27,648 bytes. Past this process's
    share of memory: one line saying to ingest at 16px, before anything is decoded."""
    monkeypatch.setenv("TRAINSTACK_MEMORY_LIMIT_BYTES", "40000")
    with pytest.raises(DatasetError) as refused:
        load_dataset("imagefolder", sharded_store, image_size=16)
    message = str(refused.value)
    assert "\n" not in message
    assert "no shards at 16px (its shards are at 8px)" in message, message
    assert "python -m trainer ingest --dataset imagefolder --image-size 16" in message, message
    with pytest.raises(DatasetError, match=r"data_loading: 'stream', but datasets/imagefolder: "
                                           r"no shards at 16px \(its shards are at 8px\)"):
        load_dataset("imagefolder", sharded_store, image_size=16, loading="stream")
    # Within it, the files are decoded at 16px, and the log says streaming needs an ingest.
    monkeypatch.setenv("TRAINSTACK_MEMORY_LIMIT_BYTES", str(1 << 30))
    bundle = load_dataset("imagefolder", sharded_store, image_size=16)
    assert tuple(bundle.train.images.shape[1:]) == (3, 16, 16)
    assert "no shards at 16px (its shards are at 8px): decoding its files" in caplog.text
