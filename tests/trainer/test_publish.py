"""Publication is atomic for readers: latest.json moves only after every file is there."""

from __future__ import annotations

import json
import threading

import pytest
import torch

from trainer.checkpoint import TrainingState
from trainer.config import TrainConfig
from trainer.data import load_dataset
from trainer.models import build_model
from trainer.publish import (
    TrainingResult,
    finish_publication,
    latest_version,
    publish,
    published_version_of,
)
from trainer.schema import EpochRecord
from trainer.storage import LocalStore

CFG = TrainConfig(dataset="digits", model="smallcnn", epochs=1, batch_size=32, seed=0)


class RecordingStore(LocalStore):
    """A real LocalStore that also remembers the order of its writes."""

    def __init__(self, root):
        super().__init__(root)
        self.written: list[str] = []

    def put_bytes(self, key: str, data: bytes) -> None:
        super().put_bytes(key, data)
        self.written.append(key)


def a_result(cfg: TrainConfig = CFG) -> TrainingResult:
    torch.manual_seed(0)
    bundle = load_dataset("digits", None, seed=0)
    model = build_model("smallcnn", in_channels=1, num_classes=10)
    history = [EpochRecord(epoch=1, train_loss=1.0, train_acc=0.5, test_loss=0.9,
                           test_acc=0.6, seconds=1.0, img_per_s=100.0)]
    confusion = [[1 if i == j else 0 for j in range(10)] for i in range(10)]
    state = TrainingState(run_id=cfg.run_id, config=cfg.to_dict(), epoch=1, history=history,
                          confusion=confusion, world_size=1)
    return TrainingResult(cfg, model, bundle, state)


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
    assert published_version_of(store, CFG.model_name, CFG.run_id) is None
    version = publish(store, a_result())
    assert published_version_of(store, CFG.model_name, CFG.run_id) == version
    other = TrainConfig(dataset="digits", model="smallcnn", epochs=1, batch_size=32, seed=1)
    assert published_version_of(store, CFG.model_name, other.run_id) is None


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
    version = published_version_of(store, cfg.model_name, cfg.run_id)
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
    newer = publish(store, a_result(other))
    assert newer > old
    finish_publication(store, CFG.model_name, old)
    assert latest_version(store, CFG.model_name) == newer
    assert store.exists(f"metrics/{CFG.model_name}/{old}.json")
    assert published_version_of(store, CFG.model_name, CFG.run_id) == old
