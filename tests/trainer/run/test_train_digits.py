"""End to end in one process: digits to >= 95%, a complete version, no retraining on restart."""

from __future__ import annotations

import json
import re

import pytest

from tests.trainer.runs import identity_of
from trainer.contract.config import TrainConfig
from trainer.run.train import run_training

pytestmark = pytest.mark.slow

CFG = TrainConfig(dataset="digits", model="smallcnn", epochs=6, batch_size=32, lr=0.05, seed=0)


def read_json(store, key):
    return json.loads(store.get_bytes(key))


def test_digits_reach_95_percent_and_publish_a_complete_version(local_store, caplog):
    local_store.ensure_buckets()
    version = run_training(CFG, local_store)
    run_id = identity_of(CFG).run_id
    assert re.fullmatch(rf"\d{{8}}T\d{{6}}Z-{run_id}", version)
    name = CFG.model_name
    assert read_json(local_store, f"models/{name}/latest.json")["version"] == version

    prefix = f"models/{name}/versions/{version}/"
    meta = read_json(local_store, prefix + "meta.json")
    assert meta["metrics"]["test_acc"] >= 0.95, meta["metrics"]
    assert meta["run_id"] == run_id and meta["version"] == version
    assert meta["sequence"] == 1 and meta["model_revision"] == "smallcnn@1"
    assert meta["data_fingerprint"].startswith("sha256:")
    assert meta["classes"] == [str(d) for d in range(10)] and meta["input_size"] == [1, 8, 8]
    assert meta["train_config"] == CFG.to_dict()
    for file_name in meta["files"] + meta["examples"]:
        assert local_store.exists(prefix + file_name), file_name
    assert {re.fullmatch(r"examples/\d+-(\d)\.png", e).group(1) for e in meta["examples"]} == \
        set(meta["classes"])

    metrics = read_json(local_store, prefix + "metrics.json")
    assert [e["epoch"] for e in metrics["epochs"]] == list(range(1, CFG.epochs + 1))
    assert set(metrics["epochs"][0]) == {"epoch", "train_loss", "train_acc", "test_loss",
                                         "test_acc", "seconds", "img_per_s"}
    assert metrics["world_size"] == 1 and metrics["classes"] == meta["classes"]
    matrix = metrics["confusion_matrix"]
    correct = sum(matrix[i][i] for i in range(10)) / sum(map(sum, matrix))
    assert correct == pytest.approx(meta["metrics"]["test_acc"], abs=1e-4)
    assert read_json(local_store, f"metrics/{name}/{version}.json") == metrics

    # A finished, published run started again neither retrains nor publishes again.
    caplog.clear()
    assert run_training(CFG, local_store) == version
    assert '"event": "epoch"' not in caplog.text

    # A finished run whose publication stopped before latest.json finishes that same
    # version, without training.
    (local_store.root / "models" / name / "latest.json").unlink()
    (local_store.root / "metrics" / name / f"{version}.json").unlink()
    caplog.clear()
    assert run_training(CFG, local_store) == version
    assert '"event": "epoch"' not in caplog.text
    assert read_json(local_store, f"models/{name}/latest.json")["version"] == version
    assert read_json(local_store, f"metrics/{name}/{version}.json") == metrics
