"""A run is what the data IS and what the model code IS, not only their names.

Re-ingesting other images, another CIFAR source or changing a model's code starts a new
run; a checkpoint that does not fit the model just built is never resumed; ranks that
loaded different data stop with a clear error instead of hanging.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.testkit import free_port
from tests.trainer.cifar_fixtures import make_batches, write_archive
from tests.trainer.image_trees import image_tree
from tests.trainer.trainer_procs import operator_env, start_trainer
from trainer.contract.config import TrainConfig
from trainer.contract.layout import ModelKeys
from trainer.data.ingest import ingest
from trainer.run.train import run_training

pytestmark = pytest.mark.slow

FOLDER_CFG = TrainConfig(dataset="imagefolder", model="smallcnn", epochs=1, batch_size=8,
                         image_size=8, seed=0)


def published_meta(store, cfg: TrainConfig, version: str) -> dict:
    return json.loads(store.get_bytes(ModelKeys(cfg.model_name).meta(version)))


def test_reingested_images_of_the_same_classes_are_trained_as_a_new_run(local_store, tmp_path,
                                                                         caplog):
    local_store.ensure_buckets()
    ingest(local_store, "imagefolder", str(image_tree(tmp_path / "v1", seed=1)))
    first = run_training(FOLDER_CFG, local_store)

    ingest(local_store, "imagefolder", str(image_tree(tmp_path / "v2", seed=2)))
    caplog.clear()
    second = run_training(FOLDER_CFG, local_store)
    assert '"event": "epoch"' in caplog.text, "the new data was not trained on"
    assert second != first
    run_ids = {published_meta(local_store, FOLDER_CFG, v)["run_id"] for v in (first, second)}
    assert len(run_ids) == 2


def test_a_reingest_with_another_class_trains_instead_of_failing_to_resume(local_store, tmp_path):
    local_store.ensure_buckets()
    ingest(local_store, "imagefolder", str(image_tree(tmp_path / "v1", seed=1)))
    run_training(FOLDER_CFG, local_store)

    tree = image_tree(tmp_path / "v2", classes=("bird", "cat", "dog"), seed=1)
    ingest(local_store, "imagefolder", str(tree))
    version = run_training(FOLDER_CFG, local_store)  # was: RuntimeError loading state_dict
    assert published_meta(local_store, FOLDER_CFG, version)["classes"] == ["bird", "cat", "dog"]


def test_another_cifar_source_is_another_run(local_store, tmp_path, caplog):
    cfg = TrainConfig(dataset="cifar10", model="smallcnn", epochs=1, batch_size=25, seed=0)
    local_store.ensure_buckets()
    versions = []
    for seed in (1, 2):
        source = write_archive(tmp_path / f"c{seed}.tar.gz", make_batches(per_class=1, seed=seed))
        ingest(local_store, "cifar10", str(source))
        caplog.clear()
        versions.append(run_training(cfg, local_store))
        assert '"event": "epoch"' in caplog.text
    metas = [published_meta(local_store, cfg, v) for v in versions]
    assert metas[0]["run_id"] != metas[1]["run_id"]


def test_a_checkpoint_that_does_not_fit_the_model_is_never_resumed(local_store, caplog):
    from trainer.contract.config import RunIdentity
    from trainer.data.loading import load_dataset
    from trainer.models.zoo import build_model, model_revision
    from trainer.state.checkpoint import TrainingState, save_checkpoint

    cfg = TrainConfig(dataset="digits", model="smallcnn", epochs=2, batch_size=64, seed=0)
    local_store.ensure_buckets()
    bundle = load_dataset("digits", None, seed=cfg.seed)
    identity = RunIdentity(cfg, bundle.fingerprint, model_revision(cfg.model))
    wrong = build_model("smallcnn", in_channels=1, num_classes=3)  # other parameter shapes
    state = TrainingState(identity=identity.to_dict(), config=cfg.to_dict(), epoch=1)
    state.capture(wrong, torch.optim.SGD(wrong.parameters(), lr=0.1, momentum=0.9))
    save_checkpoint(local_store, ModelKeys(cfg.model_name).checkpoint(identity.run_id, 1), state)

    caplog.clear()
    version = run_training(cfg, local_store)
    epochs = [json.loads(r.message)["epoch"] for r in caplog.records
              if r.message.startswith('{"event": "epoch"')]
    assert epochs == [1, 2], "the run started over instead of resuming a foreign checkpoint"
    assert "does not fit" in caplog.text
    assert published_meta(local_store, cfg, version)["run_id"] == identity.run_id


def test_ranks_that_loaded_different_data_stop_with_a_clear_error(tmp_path):
    """A re-ingest between two ranks' loads: each rank reads its own store here."""
    from trainer.store import LocalStore

    stores = []
    for rank, per_class in ((0, 6), (1, 14)):
        store = LocalStore(tmp_path / f"store{rank}")
        store.ensure_buckets()
        ingest(store, "imagefolder", str(image_tree(tmp_path / f"src{rank}", per_class=per_class)))
        stores.append(store)
    args = ["train", "--dataset", "imagefolder", "--model", "smallcnn", "--epochs", "2",
            "--batch-size", "4"]
    port = free_port()
    procs = [start_trainer([*args, "--store", store.url],
                           operator_env(rank, 2, port, {"TRAINSTACK_DIST_TIMEOUT_S": "60"}))
             for rank, store in enumerate(stores)]
    outputs = [proc.communicate(timeout=240)[0] for proc in procs]
    for proc, output in zip(procs, outputs):
        assert proc.returncode == 1, output[-3000:]
        assert "dataset differs between ranks" in output, output[-3000:]
