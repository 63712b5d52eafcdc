"""What a training run's loader holds against the memory it may use (trainer.data.budget):
the dataset in memory only if the whole run fits with it, streamed if only that fits, and
otherwise a stop before anything is read or decoded, in one line naming what the run needs
and memoryPerWorker. Limits here are set around the run's own figures
(trainer.limits.footprint) with TRAINSTACK_MEMORY_LIMIT_BYTES; the real cgroup is
tests/trainer/limits/test_memory_in_cgroup.py's."""

from __future__ import annotations

import pytest

from tests.trainer.image_trees import image_tree
from trainer.contract.errors import ConfigError
from trainer.data.dataset import DatasetBundle
from trainer.data.ingest import ingest
from trainer.data.loading import load_dataset
from trainer.data.streaming.source import StreamedBundle, open_sharded
from trainer.limits.footprint import DECODED_BYTES, MIB, Footprint
from trainer.limits.memlimit import MEMORY_LIMIT_ENV

PREFIX = "datasets/imagefolder"
SIZE = 8
RUN = Footprint("smallcnn", SIZE, 4)


@pytest.fixture
def sharded(local_store, tmp_path, monkeypatch) -> tuple[int, int]:
    """A sharded imagefolder (36 images of 3x8x8, shards of 7): decoded and streamed bytes."""
    monkeypatch.setenv("TRAINSTACK_DATA_CACHE_DIR", str(tmp_path / "cache"))
    local_store.ensure_buckets()
    tree = image_tree(tmp_path / "tree", classes=("bird", "cat", "dog"), per_class=12)
    ingest(local_store, "imagefolder", str(tree), image_size=SIZE, shard_bytes=7 * 3 * SIZE ** 2)
    found = open_sharded(local_store, PREFIX, SIZE)
    return found.index.decoded_bytes(), found.streaming_bytes()


def load(store, limit: int, monkeypatch, **kwargs):
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(limit))
    return load_dataset("imagefolder", store, image_size=SIZE, footprint=RUN, **kwargs)


def test_held_in_memory_when_the_run_fits_with_it_streamed_when_only_that_fits(
        local_store, sharded, monkeypatch):
    decoded, streamed = sharded
    assert streamed < decoded
    assert isinstance(load(local_store, RUN.need(decoded), monkeypatch), DatasetBundle)
    assert isinstance(load(local_store, RUN.need(decoded) - 1, monkeypatch), StreamedBundle)
    assert isinstance(load(local_store, RUN.need(streamed), monkeypatch), StreamedBundle)


def test_a_run_that_fits_neither_way_stops_before_reading_a_shard(local_store, sharded,
                                                                  monkeypatch, tmp_path):
    _, streamed = sharded
    need = RUN.need(streamed)
    with pytest.raises(ConfigError) as stopped:
        load(local_store, need - 1, monkeypatch)
    assert stopped.value.key == "memoryPerWorker"
    message = str(stopped.value)
    assert f"model smallcnn at 8 px, batch_size 4 needs about {-(-need // MIB):,} MiB" in message
    assert f"{PREFIX} streamed" in message and "raise memoryPerWorker" in message
    assert not (tmp_path / "cache").exists(), "no shard was downloaded"


def test_forced_memory_or_stream_is_held_to_the_same_plan(local_store, sharded, monkeypatch):
    decoded, streamed = sharded
    with pytest.raises(ConfigError, match="decoded in memory.*data_loading 'auto' streams it"):
        load(local_store, RUN.need(decoded) - 1, monkeypatch, loading="memory")
    with pytest.raises(ConfigError, match="streamed, a shard|streamed: one shard"):
        load(local_store, RUN.need(streamed) - 1, monkeypatch, loading="stream")
    assert isinstance(load(local_store, RUN.need(streamed), monkeypatch, loading="stream"),
                      StreamedBundle)


def test_the_ranks_of_one_pod_plan_with_their_share_and_are_told_the_pod_total(
        local_store, sharded, monkeypatch):
    decoded, streamed = sharded
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert isinstance(load(local_store, 2 * RUN.need(decoded), monkeypatch), DatasetBundle)
    assert isinstance(load(local_store, 2 * RUN.need(decoded) - 2, monkeypatch),
                      StreamedBundle)
    with pytest.raises(ConfigError, match=r"the pod's limit over its 2 processes\): raise "
                                          r"memoryPerWorker to at least \d+Mi"):
        load(local_store, 2 * RUN.need(streamed) - 2, monkeypatch)


def test_cifar10_that_cannot_fit_is_refused_before_its_archive_is_read(local_store,
                                                                       monkeypatch):
    """The store holds no archive: a refusal that came after reading would say so instead."""
    local_store.ensure_buckets()
    run = Footprint("resnet18", 32, 128)
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(run.need(DECODED_BYTES["cifar10"]) - 1))
    with pytest.raises(ConfigError, match="model resnet18 at 32 px, batch_size 128 needs about"
                                          r".*cifar10 decoded in memory: 176 MiB"):
        load_dataset("cifar10", local_store, footprint=run)


def test_an_imagefolder_without_shards_that_cannot_fit_says_to_ingest_it(local_store,
                                                                         tmp_path,
                                                                         monkeypatch):
    local_store.ensure_buckets()
    image_tree(tmp_path / "tree", per_class=3)
    for path in (tmp_path / "tree").rglob("*.png"):
        local_store.put_file(f"{PREFIX}/{path.parent.name}/{path.name}", path)
    decoded = 6 * 3 * SIZE ** 2
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(RUN.need(decoded) - 1))
    with pytest.raises(ConfigError, match="6 images of 3x8x8 decoded in memory.*ingest it to "
                                          "stream it.*raise memoryPerWorker"):
        load_dataset("imagefolder", local_store, image_size=SIZE, footprint=RUN)
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(RUN.need(decoded)))
    assert len(load_dataset("imagefolder", local_store, image_size=SIZE, footprint=RUN).train)
