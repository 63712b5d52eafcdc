"""The shard read-ahead on local disk (trainer.data.streaming.cache): the ranks of one pod
share its emptyDir (issue 28 item 4), a killed rank's read-ahead does not outlive it, and
a shard object is read no further than its index entry says (item 10)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.trainer.trainer_procs import REPO_ROOT, trainer_env
from trainer.contract.env import CACHE_BYTES_ENV, CACHE_DIR_ENV
from trainer.contract.errors import DatasetError
from trainer.data.streaming.cache import ShardCache, cache_budget
from trainer.data.streaming.format import ShardInfo, shard_key

KIB, MIB = 1024, 1024 * 1024
SHARD = 100 * KIB
POD_BUDGET = 450 * KIB  # four shards: two per rank when two ranks share it

# A rank's read-ahead, in its own process: it fills up and holds, never releasing, until
# told to close. "full" is the cache's own accounting, read as it is: every shard it
# reserved is on disk and the next does not fit (or none is left).
RANK = """
import json, sys
from trainer.data.streaming.cache import ShardCache, cache_budget
from trainer.data.streaming.format import ShardInfo
from trainer.store import LocalStore

shards = [ShardInfo(**s) for s in json.loads(sys.argv[2])]
cache = ShardCache(LocalStore(sys.argv[1]), shards, *cache_budget())


def full():
    done = len(cache.ready)
    on_disk = sum(shards[n].bytes for n in cache.ready)
    return cache.error is not None or (on_disk == cache.held and (
        done == len(shards) or cache.held + shards[done].bytes > cache.budget))


with cache.condition:
    cache.condition.wait_for(full)
print("full" if cache.error is None else f"error {cache.error}", flush=True)
sys.stdin.readline()
cache.close()
"""


def put_shards(store, count: int, size: int) -> list[ShardInfo]:
    store.ensure_buckets()
    shards = []
    for number in range(count):
        data = bytes([number]) * size
        key = shard_key("datasets/cache-test", 8, "train", number)
        store.put_bytes(key, data)
        shards.append(ShardInfo(key, 1, size, hashlib.sha256(data).hexdigest()))
    return shards


def bytes_under(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def start_rank(store_dir: Path, shards: list[ShardInfo], env: dict) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", RANK, str(store_dir), json.dumps([s.__dict__ for s in shards])],
        cwd=REPO_ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    assert line == "full\n", line + proc.stdout.read()
    return proc


def pod_env(cache: Path, rank: int, local_world: int) -> dict[str, str]:
    return trainer_env({CACHE_DIR_ENV: str(cache), CACHE_BYTES_ENV: str(POD_BUDGET),
                        "WORLD_SIZE": str(local_world), "RANK": str(rank),
                        "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(local_world)})


def test_the_ranks_of_one_pod_hold_at_most_the_pod_budget_between_them(local_store, tmp_path):
    """gpusPerWorker 2: two torchrun processes read ahead into the pod's one emptyDir."""
    shards = put_shards(local_store, 8, SHARD)
    cache = tmp_path / "cache"
    ranks = [start_rank(tmp_path / "store", shards, pod_env(cache, rank, 2)) for rank in (0, 1)]
    try:
        held = bytes_under(cache)  # both read-aheads as full as they get
        assert SHARD * 2 <= held <= POD_BUDGET, f"{held:,} bytes in a {POD_BUDGET:,} budget"
    finally:
        for proc in ranks:
            proc.communicate("\n", timeout=60)
    assert [proc.returncode for proc in ranks] == [0, 0]
    assert bytes_under(cache) == 0


def test_a_killed_ranks_read_ahead_does_not_count_against_its_restart(local_store, tmp_path,
                                                                       monkeypatch):
    """A container restart keeps the pod's emptyDir: what a killed rank read ahead is
    removed by the next read-ahead there, not added to."""
    shards = put_shards(local_store, 8, SHARD)
    cache = tmp_path / "cache"
    killed = start_rank(tmp_path / "store", shards, pod_env(cache, 0, 1))
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=60)
    assert bytes_under(cache) > 0  # what it read ahead is still there
    for name, value in pod_env(cache, 0, 1).items():
        monkeypatch.setenv(name, value)
    restarted = ShardCache(local_store, shards, *cache_budget())
    try:
        restarted.take(0)
        assert bytes_under(cache) <= POD_BUDGET
    finally:
        restarted.close()
    assert bytes_under(cache) == 0


def test_a_shard_that_does_not_fit_the_process_share_says_so(local_store, tmp_path,
                                                             monkeypatch):
    shards = put_shards(local_store, 2, 300 * KIB)
    for name, value in pod_env(tmp_path / "cache", 0, 2).items():
        monkeypatch.setenv(name, value)
    folder, budget = cache_budget()
    assert budget == POD_BUDGET // 2
    with pytest.raises(DatasetError, match=r"a shard of 307,200 bytes does not fit this "
                                           r"process's share of the data cache \(230,400 bytes:"
                                           r" TRAINSTACK_DATA_CACHE_BYTES over 2 local "
                                           r"processes\)"):
        ShardCache(local_store, shards, folder, budget)


class CountingStore:
    """A store read through as it is, counting the bytes its object streams give."""

    def __init__(self, store):
        self.store, self.read = store, 0

    def __getattr__(self, name):
        return getattr(self.store, name)

    @contextlib.contextmanager
    def open_read(self, key):
        with self.store.open_read(key) as stream:
            outer = self

            class Counted:
                def read(self, size=-1):
                    data = stream.read(size)
                    outer.read += len(data)
                    return data

            yield Counted()


def test_a_shard_object_larger_than_its_index_entry_is_not_downloaded(any_store, tmp_path):
    """Index: 1 MiB; budget: 2 MiB; the object: 64 MiB. Reading stops past 1 MiB."""
    any_store.ensure_buckets()
    key = shard_key("datasets/cache-test", 8, "train", 0)
    any_store.put_bytes(key, bytes(64 * MIB))
    indexed = bytes(MIB)
    store = CountingStore(any_store)
    cache = ShardCache(store, [ShardInfo(key, 1, MIB, hashlib.sha256(indexed).hexdigest())],
                       tmp_path / "cache", 2 * MIB)
    try:
        with pytest.raises(DatasetError, match=f"{key}: larger than the 1,048,576 bytes its "
                                               "index entry says"):
            cache.take(0)
        assert store.read <= MIB + 1, f"read {store.read:,} bytes of a 1 MiB shard"
        assert bytes_under(tmp_path / "cache") == 0
    finally:
        cache.close()


def test_a_shard_object_of_its_indexed_size_is_read_whole(any_store, tmp_path):
    shards = put_shards(any_store, 3, 3 * KIB + 7)
    cache = ShardCache(any_store, shards, tmp_path / "cache", 4 * KIB)
    try:
        for number, shard in enumerate(shards):
            assert cache.take(number).read_bytes() == bytes([number]) * shard.bytes
            cache.release(number)
    finally:
        cache.close()
