"""A run that stops with an error says so in its progress record ('failed'), and the app
exports it (trainstack_training_failed, the monitoring alert's signal); a restart that
trains again clears it."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from inference.app import Settings, create_app
from tests.trainer.runs import identity_of
from tests.trainer.trainer_procs import run_trainer, trainer_env
from trainer.contract.config import TrainConfig
from trainer.contract.layout import ModelKeys
from trainer.contract.reporting.progress import RunProgress

ARGS = ["--dataset", "digits", "--model", "smallcnn", "--epochs", "2", "--batch-size", "64"]


def failed_gauge(store_url: str, tmp_path) -> float:
    app = create_app(Settings(store=store_url, cache_dir=tmp_path / "cache", monitor=False))
    with TestClient(app) as client:
        text = client.get("/metrics").text
    found = re.search(r'^trainstack_training_failed\{model="smallcnn-digits"\} (\S+)$', text,
                      re.MULTILINE)
    assert found, "no trainstack_training_failed for the model"
    return float(found.group(1))


def test_a_run_that_fails_reports_failed_until_it_trains_again(local_store, tmp_path):
    assert run_trainer(["buckets", "--store", local_store.url], trainer_env()).returncode == 0
    cfg = TrainConfig(dataset="digits", model="smallcnn", epochs=2, batch_size=64)
    run_id = identity_of(cfg).run_id
    keys = ModelKeys(cfg.model_name)
    blocker = local_store.root / keys.checkpoints(run_id).rstrip("/")
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a folder")  # the first checkpoint cannot be written
    done = run_trainer(["train", "--store", local_store.url, *ARGS], trainer_env())
    assert done.returncode != 0
    record = RunProgress.from_json(local_store.get_bytes(keys.progress(run_id)))
    assert record.state == "failed" and record.epoch == 1  # the epoch trained, not saved
    assert failed_gauge(local_store.url, tmp_path) == 1
    blocker.unlink()
    done = run_trainer(["train", "--store", local_store.url, *ARGS], trainer_env())
    assert done.returncode == 0, done.stdout[-2000:]
    assert RunProgress.from_json(local_store.get_bytes(keys.progress(run_id))).state == (
        "published")
    assert failed_gauge(local_store.url, tmp_path / "again") == 0
