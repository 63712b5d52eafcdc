"""Publication is atomic for readers: latest.json moves only after every file is there."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import pytest
import torch

import trainer.publish.publication
from trainer.contract.config import RunIdentity, TrainConfig
from trainer.contract.layout import ModelKeys
from trainer.contract.schema import EpochRecord
from trainer.data.loading import load_dataset
from trainer.models.zoo import build_model, model_revision
from trainer.publish.latest import latest_version
from trainer.publish.publication import (
    TrainingResult,
    finish_publication,
    publish,
    published_version_of,
)
from trainer.state.checkpoint import TrainingState
from trainer.store import LocalStore

CFG = TrainConfig(dataset="digits", model="smallcnn", epochs=1, batch_size=32, seed=0)


class RecordingStore(LocalStore):
    """A real LocalStore that also remembers the order of its writes."""

    def __init__(self, root):
        super().__init__(root)
        self.written: list[str] = []

    def put_bytes(self, key: str, data: bytes) -> None:
        super().put_bytes(key, data)
        self.written.append(key)

    def put_if_absent(self, key: str, data: bytes) -> str:
        tag = super().put_if_absent(key, data)
        self.written.append(key)
        return tag

    def put_if_match(self, key: str, data: bytes, tag: str) -> str:
        tag = super().put_if_match(key, data, tag)
        self.written.append(key)
        return tag


def a_result(cfg: TrainConfig = CFG) -> TrainingResult:
    torch.manual_seed(0)
    bundle = load_dataset("digits", None, seed=0)
    identity = RunIdentity(cfg, bundle.fingerprint, model_revision(cfg.model))
    model = build_model("smallcnn", in_channels=1, num_classes=10)
    history = [EpochRecord(epoch=1, train_loss=1.0, train_acc=0.5, test_loss=0.9,
                           test_acc=0.6, seconds=1.0, img_per_s=100.0)]
    confusion = [[1 if i == j else 0 for j in range(10)] for i in range(10)]
    state = TrainingState(identity=identity.to_dict(), config=cfg.to_dict(), epoch=1,
                          history=history, confusion=confusion, world_size=1)
    return TrainingResult(identity, model, bundle, state)


def run_id(cfg: TrainConfig = CFG) -> str:
    return a_result(cfg).identity.run_id


def incomplete_versions_seen(store: LocalStore, name: str, stop: threading.Event,
                             seen: set) -> list:
    """Poll latest.json like the app does; return every version seen with missing files."""
    problems = []
    while not stop.is_set():
        if not store.exists(f"models/{name}/latest.json"):
            continue
        version = json.loads(store.get_bytes(f"models/{name}/latest.json"))["version"]
        seen.add(version)
        prefix = f"models/{name}/versions/{version}/"
        if not store.exists(prefix + "meta.json"):
            problems.append((version, "meta.json"))
            continue
        meta = json.loads(store.get_bytes(prefix + "meta.json"))
        missing = [f for f in meta["files"] + meta["examples"] if not store.exists(prefix + f)]
        if missing or not store.exists(f"metrics/{name}/{version}.json"):
            problems.append((version, missing))
    return problems


def test_a_polling_reader_never_sees_a_half_published_version(tmp_path):
    store = RecordingStore(tmp_path / "store")
    store.ensure_buckets()
    result, stop, problems, seen = a_result(), threading.Event(), [], set()
    reader = threading.Thread(target=lambda: problems.extend(
        incomplete_versions_seen(store, CFG.model_name, stop, seen)))
    reader.start()
    try:
        versions = [publish(store, result) for _ in range(2)]
    finally:
        stop.set()
        reader.join(timeout=60)
    assert not problems
    assert versions[0] < versions[1]
    assert versions[0] in seen, "the reader saw the first version before the second replaced it"
    for version in versions:
        written = [k for k in store.written if version in k]
        latest_at = store.written.index(f"models/{CFG.model_name}/latest.json",
                                        store.written.index(written[0]))
        assert latest_at > max(store.written.index(k) for k in written)
    assert store.written[-1] == f"models/{CFG.model_name}/latest.json"


def test_published_version_of_finds_only_this_runs_reached_versions(tmp_path):
    store = LocalStore(tmp_path / "store")
    store.ensure_buckets()
    assert published_version_of(store, CFG.model_name, run_id()) is None
    version = publish(store, a_result())
    assert published_version_of(store, CFG.model_name, run_id()) == version
    other = TrainConfig(dataset="digits", model="smallcnn", epochs=1, batch_size=32, seed=1)
    assert published_version_of(store, CFG.model_name, run_id(other)) is None


class CrashAfterMetaStore(LocalStore):
    """A real LocalStore whose process "dies" right after a version's meta.json is written."""

    def put_bytes(self, key: str, data: bytes) -> None:
        super().put_bytes(key, data)
        if key.endswith("/meta.json"):
            raise KeyboardInterrupt("killed after meta.json")


def crashed_publication(root, cfg: TrainConfig = CFG) -> str:
    store = LocalStore(root)
    store.ensure_buckets()
    with pytest.raises(KeyboardInterrupt):
        publish(CrashAfterMetaStore(root), a_result(cfg))
    version = published_version_of(store, cfg.model_name, run_id(cfg))
    assert version is not None, "a version with meta.json counts as this run's"
    assert latest_version(store, cfg.model_name) is None
    return version


def test_a_restart_finishes_a_publication_cut_short_after_meta_json(tmp_path):
    version = crashed_publication(tmp_path / "store")
    store = LocalStore(tmp_path / "store")
    finish_publication(store, CFG.model_name, version)
    assert latest_version(store, CFG.model_name) == version
    metrics = json.loads(store.get_bytes(f"metrics/{CFG.model_name}/{version}.json"))
    assert metrics["epochs"][0]["test_acc"] == 0.6
    finish_publication(store, CFG.model_name, version)  # repeating it changes nothing
    assert latest_version(store, CFG.model_name) == version


def test_finishing_an_old_publication_never_moves_latest_back(tmp_path):
    root = tmp_path / "store"
    old = crashed_publication(root)
    store = LocalStore(root)
    other = TrainConfig(dataset="digits", model="smallcnn", epochs=1, batch_size=32, seed=1)
    newer = publish(store, a_result(other))  # completed after the old one's meta.json
    finish_publication(store, CFG.model_name, old)
    assert latest_version(store, CFG.model_name) == newer
    assert store.exists(f"metrics/{CFG.model_name}/{old}.json")
    assert published_version_of(store, CFG.model_name, run_id()) == old


def a_run(seed: int, test_acc: float) -> TrainingResult:
    """A finished run of its own (the seed makes its run_id) with a recognisable accuracy."""
    result = a_result(TrainConfig(dataset="digits", model="smallcnn", epochs=1, batch_size=32,
                                  seed=seed))
    result.state.history[0] = dataclasses.replace(result.state.history[0], test_acc=test_acc)
    return result


def assert_version_is_the_runs_own(store, version: str, result: TrainingResult) -> None:
    keys = ModelKeys(CFG.model_name)
    meta = json.loads(store.get_bytes(keys.meta(version)))
    metrics = json.loads(store.get_bytes(keys.version_file(version, "metrics.json")))
    assert meta["run_id"] == result.state.run_id
    assert meta["metrics"]["test_acc"] == metrics["epochs"][0]["test_acc"] \
        == result.state.history[0].test_acc, f"{version} mixes two runs' files"


def test_two_runs_finishing_in_the_same_second_get_a_version_each(tmp_path, monkeypatch):
    # Two pods, here two threads: torch.export is not thread-safe, so exports take turns.
    export, exporting = trainer.publish.publication.export_program, threading.Lock()

    def export_in_turn(*args):
        with exporting:
            return export(*args)

    monkeypatch.setattr(trainer.publish.publication, "export_program", export_in_turn)
    store = LocalStore(tmp_path / "store")
    store.ensure_buckets()
    results = [a_run(seed, acc) for seed, acc in ((10, 0.25), (11, 0.75))]
    together = threading.Barrier(len(results))

    def publish_now(result):
        together.wait()
        return publish(store, result)

    time.sleep(1.05 - time.time() % 1)  # both start early in the same UTC second
    with ThreadPoolExecutor(len(results)) as pool:
        versions = list(pool.map(publish_now, results))
    assert len(set(versions)) == 2, versions
    assert sorted(versions) == sorted(versions, key=lambda v: v[:16])  # still sortable by time
    for version, result in zip(versions, results):
        assert_version_is_the_runs_own(store, version, result)


class LaggingClock(datetime):
    """The clock of a pod that runs an hour behind."""

    @classmethod
    def now(cls, tz=None):
        return datetime.now(tz) - timedelta(hours=1)


def test_a_pod_with_a_slow_clock_still_becomes_latest(any_store, monkeypatch, caplog):
    store = any_store
    store.ensure_buckets()
    first = publish(store, a_run(12, 0.5))
    monkeypatch.setattr("trainer.publish.publication.datetime", LaggingClock)
    caplog.clear()
    second = publish(store, a_run(13, 0.6))
    assert second < first, "the lagging clock names the later version earlier"
    assert latest_version(store, CFG.model_name) == second
    (line,) = [json.loads(r.message) for r in caplog.records if '"event": "latest"' in r.message]
    assert line["moved"] is True and line["version"] == second


class PausingStore(LocalStore):
    """A real LocalStore whose writes of one key, from one thread, wait for a signal."""

    def __init__(self, root, key: str, thread_name: str):
        super().__init__(root)
        self.key, self.thread_name = key, thread_name
        self.reached, self.release = threading.Event(), threading.Event()

    def _pause(self, key: str) -> None:
        if key == self.key and threading.current_thread().name == self.thread_name:
            self.reached.set()
            assert self.release.wait(timeout=120)

    def put_bytes(self, key, data):
        self._pause(key)
        super().put_bytes(key, data)

    def put_if_absent(self, key, data):
        self._pause(key)
        return super().put_if_absent(key, data)

    def put_if_match(self, key, data, tag):
        self._pause(key)
        return super().put_if_match(key, data, tag)


def test_a_delayed_latest_write_of_an_older_publication_never_moves_latest_back(tmp_path,
                                                                                  caplog):
    store = PausingStore(tmp_path / "store", ModelKeys(CFG.model_name).latest, "older")
    store.ensure_buckets()
    older = threading.Thread(target=lambda: publish(store, a_run(14, 0.5)), name="older")
    older.start()
    assert store.reached.wait(timeout=120), "the older publication never reached latest.json"
    newer = publish(store, a_run(15, 0.6))  # complete, latest.json moved
    store.release.set()
    older.join(timeout=120)
    assert latest_version(store, CFG.model_name) == newer
    moves = [json.loads(r.message) for r in caplog.records if '"event": "latest"' in r.message]
    assert [m["moved"] for m in moves] == [True, False]
